import { type FlagSpec, type ParsedFlags, str, UsageError } from '@stargate/shared/options'
import { DEV_PORTS, startDevStack } from './dev-stack.ts'

/** Flags of `stargate dev`. */
export const DEV_FLAGS: FlagSpec[] = [
  { name: 'dir', type: 'string', description: 'state directory for identities and logs', defaultText: '.stargate/dev' },
  { name: 'no-nats', type: 'boolean', description: 'do not start nats-server (the NATS tier is off)' },
  {
    name: 'ports',
    type: 'string',
    description:
      `fixed: the documented ports (gateway A's API 127.0.0.1:${DEV_PORTS.gatewayA}, B's ${DEV_PORTS.gatewayB}, relay ${DEV_PORTS.relay}, ` +
      `its admin API ${DEV_PORTS.relayAdmin}, EchoService ${DEV_PORTS.echoService}, NATS ${DEV_PORTS.nats}); ` +
      '0: ports the system chooses (beside a running stack), shown in the printed commands',
    defaultText: 'fixed',
  },
]

/** `stargate dev`: the local stack, until Ctrl-C. */
export async function runDev(flags: ParsedFlags): Promise<void> {
  const ports = str(flags, 'ports') ?? 'fixed'
  if (ports !== 'fixed' && ports !== '0') throw new UsageError(`--ports must be "fixed" or 0, got "${ports}"`)
  await startDevStack({
    dir: str(flags, 'dir') ?? '.stargate/dev',
    nats: flags['no-nats'] !== true,
    ports: ports === 'fixed' ? 'fixed' : 'free',
  })
}
