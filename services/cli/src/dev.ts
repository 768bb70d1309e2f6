import type { FlagSpec, ParsedFlags } from '@stargate/shared/options'
import { startDevStack } from './dev-stack.ts'

/** Flags of `stargate dev`. */
export const DEV_FLAGS: FlagSpec[] = [
  { name: 'dir', type: 'string', description: 'state directory for identities and logs', defaultText: '.stargate/dev' },
  { name: 'no-nats', type: 'boolean', description: 'do not start nats-server (the NATS tier is off)' },
]

/** `stargate dev`: the local stack, until Ctrl-C. */
export async function runDev(flags: ParsedFlags): Promise<void> {
  await startDevStack({ dir: typeof flags.dir === 'string' ? flags.dir : '.stargate/dev', nats: flags['no-nats'] !== true })
}
