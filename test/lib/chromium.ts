import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type BrowserContext, chromium } from 'playwright-core'
import { tool } from './tools.ts'

/** Debian's chromium package (never a browser download): installed by scripts/ensure-tools.sh (TOOLS=chromium). */
export const CHROMIUM = '/usr/bin/chromium'
export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run']

/**
 * Makes sure Debian's chromium is installed (apt-get through scripts/ensure-tools.sh when it is missing).
 * Returns why it cannot be had, or undefined when CHROMIUM is there.
 */
export function chromiumUnavailable(): string | undefined {
  if (existsSync(CHROMIUM)) return undefined
  try {
    tool('chromium')
  } catch (err: unknown) {
    return `Debian's chromium is not installed and scripts/ensure-tools.sh could not install it (apt-get install chromium needs apt-get and root or sudo): ${err instanceof Error ? err.message : String(err)}`
  }
  return existsSync(CHROMIUM) ? undefined : `${CHROMIUM} is still missing after installing the chromium package`
}

/**
 * Headless Chromium driven by playwright-core, with a fresh profile that is deleted on close. Launch waits on
 * the browser's own start-up (the DevTools pipe), with a generous timeout for a loaded machine.
 */
export async function launchChromium(options: { ignoreHTTPSErrors?: boolean } = {}): Promise<{
  context: BrowserContext
  close: () => Promise<void>
}> {
  const profile = await mkdtemp(join(tmpdir(), 'stargate-chromium-'))
  // launchPersistentContext is playwright's way to pass --user-data-dir.
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 180_000,
    ignoreHTTPSErrors: options.ignoreHTTPSErrors === true,
  })
  return {
    context,
    close: async () => {
      await context.close().catch(() => undefined)
      await rm(profile, { recursive: true, force: true })
    },
  }
}
