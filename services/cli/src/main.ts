import { writeFile } from 'node:fs/promises'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { GATEWAY_FLAGS, runGateway } from '@stargate/gateway/cli'
import { RELAY_FLAGS, runRelay } from '@stargate/relay/cli'
import { messageOf } from '@stargate/shared/errors'
import { peerIdOf, writeIdentity } from '@stargate/shared/identity'
import { type FlagSpec, helpText, parseFlags, str, UsageError } from '@stargate/shared/options'
import { STARGATE_VERSION } from '@stargate/shared/version'
import { DEV_FLAGS, runDev } from './dev.ts'

interface Command {
  summary: string
  flags: FlagSpec[]
  run: (flags: ReturnType<typeof parseFlags>) => Promise<void>
}

const KEYGEN_FLAGS: FlagSpec[] = [
  { name: 'out', type: 'string', description: 'file to write the new Ed25519 identity to (required)' },
  { name: 'force', type: 'boolean', description: 'overwrite an existing file' },
]

const COMMANDS: Record<string, Command> = {
  gateway: { summary: 'Run a gateway: the local gRPC API plus the direct, relay and NATS tiers.', flags: GATEWAY_FLAGS, run: runGateway },
  relay: { summary: 'Run a Circuit Relay v2 relay with an admin gRPC API.', flags: RELAY_FLAGS, run: runRelay },
  keygen: {
    summary: 'Create an Ed25519 identity file and print its peer id.',
    flags: KEYGEN_FLAGS,
    run: async (flags) => {
      const out = str(flags, 'out')
      if (out == null) throw new UsageError('--out FILE is required')
      if (flags.force !== true) {
        try {
          await writeFile(out, '', { flag: 'wx' })
        } catch {
          throw new UsageError(`${out} exists; pass --force to overwrite it`)
        }
      }
      const key = await generateKeyPair('Ed25519')
      await writeIdentity(out, key)
      process.stdout.write(`${peerIdOf(key)}\n`)
    },
  },
  dev: {
    summary: 'Start the local stack: nats-server, a relay, two gateways with an echo handler, and a gRPC service exposed by one.',
    flags: DEV_FLAGS,
    run: runDev,
  },
}

function usage(): string {
  const lines = ['Usage: stargate <command> [flags]', '', 'Commands:']
  for (const [name, c] of Object.entries(COMMANDS)) lines.push(`  ${name.padEnd(10)} ${c.summary}`)
  lines.push('', 'Run "stargate <command> --help" for the flags of a command. Every flag can also be set as STARGATE_<FLAG>.')
  lines.push('"stargate --version" prints the version.')
  return lines.join('\n')
}

/** Runs the CLI; resolves to the exit code for short commands (long-running ones exit on signals). */
export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv
  if (name === '--version' || name === '-v') {
    process.stdout.write(`stargate ${STARGATE_VERSION}\n`)
    return 0
  }
  if (name == null || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(`${usage()}\n`)
    return name == null ? 2 : 0
  }
  const command = COMMANDS[name]
  if (command == null) {
    process.stderr.write(`stargate: unknown command "${name}"\n\n${usage()}\n`)
    return 2
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(`${helpText(name, command.summary, command.flags)}\n`)
    return 0
  }
  try {
    await command.run(parseFlags(command.flags, rest))
    return 0
  } catch (err: unknown) {
    if (err instanceof UsageError || err instanceof RangeError) {
      process.stderr.write(`stargate ${name}: ${err.message}\nRun "stargate ${name} --help" for usage.\n`)
      return 2
    }
    process.stderr.write(`stargate ${name}: ${messageOf(err)}\n`)
    return 1
  }
}
