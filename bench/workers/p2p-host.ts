/**
 * A benchmark worker process hosting one or many minimal libp2p nodes, driven over the IPC channel of
 * child_process.fork (one JSON request, one JSON reply, matched by `seq`). Used for the raw libp2p echo
 * listener, the relay capacity run (many reservations and circuits from few processes) and lightweight
 * peers speaking /stargate/call/1.0.0 for the gateway's RSS-per-pooled-peer figure.
 */
import type { Stream } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import type { Libp2p } from 'libp2p'
import { CALL_PROTOCOL, onFrames, writeFrame } from '../../services/gateway/src/peer/frames.ts'
import { createBenchNode, ECHO_PROTOCOL, handleEcho, MuxEchoClient } from '../lib/p2p.ts'

export type HostRequest =
  | { op: 'start'; count: number; listenTcp: boolean; relay?: string; protocol: 'echo' | 'call'; parallel?: number; deadlineMs?: number }
  | { op: 'circuits'; relay: string; targets: string[]; parallel?: number; deadlineMs?: number }
  | { op: 'connect'; addrs: string[]; protocol: string }
  | { op: 'held' }
  | { op: 'rss' }
  | { op: 'stop' }

export interface StartedNode {
  peerId: string
  addrs: string[]
}

const nodes: Libp2p[] = []
/** Nodes in the order they were reported to the parent (ready and, with a relay, reserved). */
const ready: Libp2p[] = []
const held: Stream[] = []

/** Runs fn over items, `parallel` at a time; starts nothing new after deadlineMs (epoch ms). */
async function pool<T>(items: T[], parallel: number, deadline: number, fn: (item: T, i: number) => Promise<void>): Promise<string[]> {
  const errors: string[] = []
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < items.length && Date.now() < deadline) {
      const i = next++
      try {
        await fn(items[i]!, i)
      } catch (err: unknown) {
        errors.push(err instanceof Error ? err.message : String(err))
      }
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, parallel) }, () => worker()))
  return errors
}

function handleCall(node: Libp2p): Promise<void> {
  const me = node.peerId.toString()
  return node.handle(
    CALL_PROTOCOL,
    (stream) => {
      onFrames(
        stream,
        { maxFrameBytes: 8 * 1024 * 1024 },
        (frame) => {
          if (frame.kind.case !== 'request') return
          const req = frame.kind.value
          const result =
            req.payload.case === 'json'
              ? { case: 'json' as const, value: req.payload.value }
              : { case: 'data' as const, value: req.payload.value ?? new Uint8Array() }
          writeFrame(stream, {
            kind: { case: 'response', value: { exchangeId: req.exchangeId, requestId: req.requestId, responderPeerId: me, result } },
          }).catch(() => {})
        },
        () => stream.abort(new Error('malformed frame')),
      )
    },
    { runOnLimitedConnection: true, maxInboundStreams: 4096, maxOutboundStreams: 4096 },
  )
}

async function waitForCircuit(node: Libp2p, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs
  while (!node.getMultiaddrs().some((m) => m.toString().includes('/p2p-circuit'))) {
    if (Date.now() > end) throw new Error(`no reservation within ${timeoutMs} ms`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

async function start(req: Extract<HostRequest, { op: 'start' }>): Promise<{ nodes: StartedNode[]; errors: string[]; ms: number }> {
  const t0 = Date.now()
  const out: StartedNode[] = []
  const deadline = Date.now() + (req.deadlineMs ?? 60_000)
  const errors = await pool(
    Array.from({ length: req.count }, (_, i) => i),
    req.parallel ?? 20,
    deadline,
    async () => {
      const listen: string[] = []
      if (req.listenTcp) listen.push('/ip4/127.0.0.1/tcp/0')
      if (req.relay != null) listen.push(`${req.relay}/p2p-circuit`)
      const node = await createBenchNode({ listen, maxConnections: 1024 })
      nodes.push(node)
      if (req.protocol === 'echo') await handleEcho(node)
      else await handleCall(node)
      if (req.relay != null) await waitForCircuit(node, Math.max(1_000, Math.min(60_000, deadline - Date.now())))
      out.push({ peerId: node.peerId.toString(), addrs: node.getMultiaddrs().map((m) => m.toString()) })
      ready.push(node)
    },
  )
  return { nodes: out, errors: errors.slice(0, 5).concat(errors.length > 5 ? [`... ${errors.length} errors`] : []), ms: Date.now() - t0 }
}

/**
 * Ready node i dials target i through the relay, opens an echo stream, makes one round trip and keeps it
 * open. The parent passes targets that are not dialers themselves, so no pair is dialled both ways (libp2p
 * would reuse the existing relayed connection instead of opening a second circuit).
 */
async function circuits(req: Extract<HostRequest, { op: 'circuits' }>): Promise<{ opened: number; errors: string[]; ms: number }> {
  const t0 = Date.now()
  let opened = 0
  const errors = await pool(req.targets, req.parallel ?? 20, Date.now() + (req.deadlineMs ?? 60_000), async (target, i) => {
    const node = ready[i % ready.length]!
    const conn = await node.dial(multiaddr(`${req.relay}/p2p-circuit/p2p/${target}`), { signal: AbortSignal.timeout(40_000) })
    const stream = await conn.newStream(ECHO_PROTOCOL, { runOnLimitedConnection: true, signal: AbortSignal.timeout(40_000) })
    held.push(stream)
    await new MuxEchoClient(stream).call(new Uint8Array(16))
    opened++
  })
  return { opened, errors: errors.slice(0, 5).concat(errors.length > 5 ? [`... ${errors.length} errors`] : []), ms: Date.now() - t0 }
}

/**
 * The raw baseline of memory per pooled peer, in this (fresh) process: one node dials every address and
 * opens one stream on each connection, like an idle pooled channel; RSS is read after settling.
 */
async function connectAll(
  req: Extract<HostRequest, { op: 'connect' }>,
): Promise<{ connected: number; rssBefore: number; rssAfter: number }> {
  const node = await createBenchNode({ maxConnections: req.addrs.length + 64 })
  nodes.push(node)
  await new Promise((r) => setTimeout(r, 1_000))
  const rssBefore = process.memoryUsage().rss
  let connected = 0
  for (const a of req.addrs) {
    const conn = await node.dial(multiaddr(a), { signal: AbortSignal.timeout(10_000) })
    held.push(await conn.newStream(req.protocol, { signal: AbortSignal.timeout(10_000) }))
    connected++
  }
  await new Promise((r) => setTimeout(r, 1_500))
  return { connected, rssBefore, rssAfter: process.memoryUsage().rss }
}

async function run(req: HostRequest): Promise<unknown> {
  switch (req.op) {
    case 'start':
      return start(req)
    case 'circuits':
      return circuits(req)
    case 'connect':
      return connectAll(req)
    case 'held':
      return { held: held.length, open: held.filter((x) => x.status === 'open').length, statuses: [...new Set(held.map((x) => x.status))] }
    case 'rss':
      return { rssBytes: process.memoryUsage().rss }
    case 'stop':
      await Promise.allSettled(nodes.map((n) => n.stop()))
      setImmediate(() => process.exit(0))
      return { stopped: nodes.length }
  }
}

process.on('message', (msg: { seq: number; req: HostRequest }) => {
  run(msg.req).then(
    (value) => process.send?.({ seq: msg.seq, value }),
    (err: unknown) => process.send?.({ seq: msg.seq, error: err instanceof Error ? err.message : String(err) }),
  )
})
process.on('disconnect', () => process.exit(0))
process.send?.({ seq: 0, value: 'ready' })
