import type { GatewayHandle, Harness, RelayHandle } from '../lib/harness.ts'

export interface Stack {
  relay: RelayHandle
  /** Gateway A: direct libp2p listener plus the relay. */
  a: GatewayHandle
  /** Gateway B: no libp2p listener of its own, reachable only through its reservation on the relay. */
  b: GatewayHandle
}

/** The `npm start` topology on free ports: a relay, gateway A, and gateway B reachable only through the relay. */
export async function startStack(h: Harness): Promise<Stack> {
  const relay = await h.relay()
  const common = ['--relay', relay.multiaddr, '--relay-health-interval-ms', '500']
  const b = await h.gateway(common, { name: 'gateway-b' })
  const a = await h.gateway(['--p2p-listen', '/ip4/127.0.0.1/tcp/0', ...common], { name: 'gateway-a' })
  await b.proc.waitFor(/"msg":"reserved on relay"/)
  await a.proc.waitFor(/"msg":"relay healthy"/)
  return { relay, a, b }
}
