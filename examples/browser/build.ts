/**
 * Builds the example page: bundles app.ts with its dependencies (@connectrpc/connect-web, the generated
 * GatewayService) into one ES module, dist/app.js, next to index.html. Serve this folder with any static server.
 *
 *   node examples/browser/build.ts [OUTDIR]     # default examples/browser/dist
 */
import { copyFile, mkdir } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { build } from 'esbuild'

const HERE = import.meta.dirname

/** Bundles app.ts into `dir`/dist/app.js and, unless `dir` is this folder, copies index.html there too. */
export async function buildExample(dir: string = HERE): Promise<{ dir: string; bytes: number }> {
  const result = await build({
    entryPoints: [join(HERE, 'app.ts')],
    outfile: join(dir, 'dist', 'app.js'),
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    minify: true,
    sourcemap: true,
    metafile: true,
    logLevel: 'warning',
  })
  if (resolve(dir) !== resolve(HERE)) {
    await mkdir(dir, { recursive: true })
    await copyFile(join(HERE, 'index.html'), join(dir, 'index.html'))
  }
  const bytes = Object.entries(result.metafile.outputs).find(([f]) => f.endsWith('app.js'))?.[1].bytes ?? 0
  return { dir, bytes }
}

if (process.argv[1] != null && resolve(process.argv[1]) === resolve(import.meta.filename)) {
  const out = resolve(process.argv[2] ?? HERE)
  const { bytes } = await buildExample(out)
  process.stdout.write(`built ${join(out, 'dist', 'app.js')} (${bytes} bytes); serve ${out} with any static server\n`)
}
