/**
 * The real-process topology of the tunnelling end-to-end tests: EchoService servers (Go, Python, Node) each
 * behind its own callee gateway, and one caller gateway A that the Go and Python clients point at.
 *
 *   clients ─► A ─┬─ relay ─► B-go     (no libp2p listener: reachable only through its relay reservation) ─► Go server
 *                 ├─ relay ─► B-python (the same)                                                     ─► Python server
 *                 └─ direct ─► B-node  (libp2p listener, no relay: reachable only directly)            ─► Node server
 *
 * A routes stargate.test.v1.EchoService to B-go by --route; a client's stargate-peer header picks any B.
 * A second caller gateway, A-direct, routes it to B-node by --route (so routing by --route is shown over
 * both tiers).
 */
import type { Tier } from '@stargate/shared/gen/gateway'
import type { GatewayHandle, Harness, RelayHandle } from '../lib/harness.ts'
import { ECHO_SERVICE, type EchoServer, type EchoServerLang, prepareEchoPrograms, startEchoServer } from './echo-programs.ts'

export interface TunnelStack {
  relay: RelayHandle
  servers: Record<EchoServerLang, EchoServer>
  /** The callee gateway in front of each server. */
  b: Record<EchoServerLang, GatewayHandle>
  /** The caller gateway. */
  a: GatewayHandle
  /** A caller gateway whose --route goes to B-node (direct). */
  aDirect: GatewayHandle
}

/** --expose of the echo service toward a server. */
export function exposeFlag(server: EchoServer): string[] {
  return ['--expose', `${ECHO_SERVICE}=${server.addr}`]
}

export async function startTunnelStack(h: Harness): Promise<TunnelStack> {
  const [relay] = await Promise.all([h.relay(), prepareEchoPrograms()])
  const servers = {} as Record<EchoServerLang, EchoServer>
  for (const lang of ['go', 'python', 'node'] as const) servers[lang] = await startEchoServer(h, lang)
  const viaRelay = ['--relay', relay.multiaddr, '--relay-health-interval-ms', '500']
  const b = {
    go: await h.gateway([...viaRelay, ...exposeFlag(servers.go)], { name: 'gateway-b-go' }),
    python: await h.gateway([...viaRelay, ...exposeFlag(servers.python)], { name: 'gateway-b-python' }),
    node: await h.gateway(['--p2p-listen', '/ip4/127.0.0.1/tcp/0', ...exposeFlag(servers.node)], { name: 'gateway-b-node' }),
  }
  const nodeAddr = b.node.multiaddrs.find((m) => m.includes('/127.0.0.1/tcp/'))!
  const a = await h.gateway(
    [
      '--p2p-listen',
      '/ip4/127.0.0.1/tcp/0',
      ...viaRelay,
      '--peer',
      `${b.node.peerId}=${nodeAddr}`,
      '--route',
      `${ECHO_SERVICE}=${b.go.peerId}`,
    ],
    { name: 'gateway-a' },
  )
  const aDirect = await h.gateway(['--peer', `${b.node.peerId}=${nodeAddr}`, '--route', `${ECHO_SERVICE}=${b.node.peerId}`], {
    name: 'gateway-a-direct',
  })
  for (const g of [b.go, b.python]) {
    await g.proc.waitFor(/"msg":"reserved on relay"/)
  }
  await a.proc.waitFor(/"msg":"relay healthy"/)
  return { relay, servers, b, a, aDirect }
}

/** The tier of A's last successful call to a peer (GetPeerMetrics.connection_type). */
export async function lastTier(a: GatewayHandle, peerId: string): Promise<Tier | undefined> {
  const { peers } = await a.client.getPeerMetrics({ peerId })
  return peers.find((p) => p.peerId === peerId)?.connectionType
}
