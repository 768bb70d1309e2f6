/**
 * A scriptable Circuit Relay v2 *client* for relay tests, run as a child process (`node test/lib/relay-client.ts`):
 * real js-libp2p nodes (TCP, Noise, Yamux, circuitRelayTransport — what the gateway uses) that reserve on a
 * relay, dial each other through it and push known byte counts. Driven by JSON lines on stdin
 * (`{"id":1,"cmd":"nodes","count":2}`), answering JSON lines on stdout (`{"id":1,"ok":true,...}` or
 * `{"id":1,"error":"..."}`), plus unsolicited `{"event":...}` lines. Use it through RelayClient (relay-client-driver.ts).
 *
 * Test protocols served by every node (both allowed on limited connections):
 * - /stargate-test/echo/1.0.0: echoes every byte back.
 * - /stargate-test/traffic/1.0.0: reads a 4-byte big-endian count N, then the upload until the writer closes,
 *   then sends N bytes and closes.
 *
 * Besides the js-libp2p client, `connectRaw` speaks the hop protocol's CONNECT itself (many circuits from one
 * node to one target, as an attacker would), and `stopMode` swaps a node's STOP handler for one that never
 * answers or one that accepts and holds the stream without upgrading it.
 */

import { createInterface } from 'node:readline'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { identify } from '@libp2p/identify'
import type { Connection, Libp2p, Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { type TCPSocketOptions, tcp } from '@libp2p/tcp'
import { pbStream } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import { HOP_CODEC, HopMessageCodec, HopType, STOP_CODEC, Status, StopMessageCodec, StopType } from '@stargate/relay/circuit-pb'
import { createLibp2p } from 'libp2p'

const ECHO = '/stargate-test/echo/1.0.0'
const TRAFFIC = '/stargate-test/traffic/1.0.0'
const CHUNK = 16 * 1024

interface Request {
  id: number
  cmd: string
  [k: string]: unknown
}

const nodes: Libp2p[] = []
const streams = new Map<number, { stream: Stream; conn: Connection; received: number; waiters: Array<() => void> }>()
let nextHandle = 1
/** Raw circuits kept open by connectRaw (hold) and streams held by the 'accept' STOP handler. */
const held = new Map<number, Stream>()
const STATUS_NAMES = new Map<number, string>(Object.entries(Status).map(([k, v]) => [v, k]))

function out(msg: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(msg)}\n`)
}

function message(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err)
}

async function sendAll(stream: Stream, total: number, fill: number): Promise<void> {
  const chunk = new Uint8Array(CHUNK).fill(fill)
  let left = total
  while (left > 0) {
    const n = Math.min(CHUNK, left)
    left -= n
    if (!stream.send(n === CHUNK ? chunk : chunk.subarray(0, n))) await stream.onDrain()
  }
}

async function makeNode(localAddress?: string): Promise<Libp2p> {
  // net.connect's localAddress, passed through by @libp2p/tcp: dial from another loopback address (127.0.0.2…)
  const dialOpts = localAddress == null ? undefined : ({ localAddress } as TCPSocketOptions)
  const node = await createLibp2p({
    privateKey: await generateKeyPair('Ed25519'),
    addresses: { listen: [] },
    transports: [tcp({ dialOpts }), circuitRelayTransport({ reservationCompletionTimeout: 10_000 })],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionManager: { maxConnections: 50 },
    // Thousands of nodes share one CPU-starved process: no client-side ping-and-abort of relay connections.
    connectionMonitor: { enabled: false },
    services: { identify: identify() },
  })
  await node.handle(
    ECHO,
    (stream) => {
      stream.addEventListener('message', (e) => {
        if (!stream.send(e.data)) stream.pause()
      })
      stream.addEventListener('drain', () => stream.resume())
      stream.addEventListener('remoteCloseWrite', () => {
        stream.close().catch(() => {})
      })
    },
    { runOnLimitedConnection: true },
  )
  await node.handle(
    TRAFFIC,
    (stream) => {
      let header: Uint8Array | undefined
      stream.addEventListener('message', (e) => {
        if (header == null) header = e.data.subarray().subarray(0, 4)
      })
      stream.addEventListener('remoteCloseWrite', () => {
        const want = header == null ? 0 : new DataView(header.buffer, header.byteOffset, 4).getUint32(0)
        sendAll(stream, want, 0xbb)
          .then(() => stream.close())
          .catch((err: unknown) => stream.abort(err as Error))
      })
    },
    { runOnLimitedConnection: true },
  )
  return node
}

/** Reserves a slot on the relay (circuitRelayTransport's listen on <relay>/p2p-circuit). */
async function reserve(node: Libp2p, relay: string): Promise<string[]> {
  const tm = (node as unknown as { components: { transportManager: { listen(a: unknown[]): Promise<void> } } }).components.transportManager
  await tm.listen([multiaddr(`${relay}/p2p-circuit`)])
  return node.getMultiaddrs().map((m) => m.toString())
}

/**
 * Dials the relay and waits until identify ran on the connection: the relay's libp2p resets all streams of a
 * connection that opens more than 10 before it is fully set up (MaxEarlyStreamsError), and a flood opens more.
 */
async function dialIdentified(n: Libp2p, relay: string): Promise<Connection> {
  const ma = multiaddr(relay)
  const relayId = peerIdFromString(ma.getComponents().findLast((c) => c.name === 'p2p')?.value ?? '')
  let onIdentify: ((e: CustomEvent<{ peerId: { equals(p: unknown): boolean } }>) => void) | undefined
  const identified = new Promise<void>((resolve) => {
    onIdentify = (e) => {
      if (e.detail.peerId.equals(relayId)) resolve()
    }
    n.addEventListener('peer:identify', onIdentify)
  })
  try {
    const conn = await n.dial(ma)
    const known = await n.peerStore.get(relayId).then(
      (p) => p.protocols.length > 0,
      () => false,
    )
    if (!known)
      await Promise.race([identified, new Promise((_, reject) => setTimeout(() => reject(new Error('relay not identified')), 10_000))])
    return conn
  } finally {
    n.removeEventListener('peer:identify', onIdentify)
  }
}

async function pool<T>(items: T[], concurrency: number, fn: (t: T) => Promise<void>): Promise<void> {
  let i = 0
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (i < items.length) await fn(items[i++]!)
    }),
  )
}

function node(req: Request, key = 'node'): Libp2p {
  const n = nodes[req[key] as number]
  if (n == null) throw new Error(`no node ${String(req[key])}`)
  return n
}

const commands: Record<string, (req: Request) => Promise<Record<string, unknown>>> = {
  /** Creates `count` nodes (dialing from `localAddress` when given). */
  async nodes(req) {
    const count = req.count as number
    const created: string[] = []
    for (let i = 0; i < count; i++) {
      const n = await makeNode(req.localAddress as string | undefined)
      nodes.push(n)
      created.push(n.peerId.toString())
    }
    return { peerIds: created, first: nodes.length - count }
  },
  async reserve(req) {
    return { multiaddrs: await reserve(node(req), req.relay as string) }
  },
  /** Reserves with nodes[from..to) at the given concurrency; reports successes and error messages. */
  async reserveMany(req) {
    const idx = Array.from({ length: (req.to as number) - (req.from as number) }, (_, k) => (req.from as number) + k)
    let ok = 0
    const errors: string[] = []
    const started = Date.now()
    let retried = 0
    await pool(idx, (req.concurrency as number) ?? 20, async (i) => {
      // A client starved of CPU can time out (js-libp2p's 5 s listen timeout); `retries` retries those.
      for (let attempt = 0; ; attempt++) {
        try {
          await reserve(nodes[i]!, req.relay as string)
          ok++
          return
        } catch (err: unknown) {
          if (attempt < ((req.retries as number) ?? 0) && /TimeoutError|aborted/.test(message(err))) {
            retried++
            continue
          }
          errors.push(message(err))
          return
        }
      }
    })
    return { reserved: ok, errors, retried, ms: Date.now() - started }
  },
  /** Plain connections from nodes[from..to) to the relay, all at once. */
  async connectMany(req) {
    const idx = Array.from({ length: (req.to as number) - (req.from as number) }, (_, k) => (req.from as number) + k)
    let ok = 0
    const errors: string[] = []
    await Promise.all(
      idx.map(async (i) => {
        try {
          await nodes[i]!.dial(multiaddr(req.relay as string), { signal: AbortSignal.timeout(10_000) })
          ok++
        } catch (err: unknown) {
          errors.push(message(err))
        }
      }),
    )
    return { connected: ok, errors }
  },
  /** One traffic exchange through the relay: uploads `up` bytes, downloads `down` bytes. */
  async traffic(req) {
    const target = `${req.relay as string}/p2p-circuit/p2p/${req.target as string}`
    const stream = await node(req).dialProtocol(multiaddr(target), TRAFFIC, { runOnLimitedConnection: true })
    let received = 0
    const done = new Promise<void>((resolve, reject) => {
      stream.addEventListener('message', (e) => {
        received += e.data.byteLength
      })
      stream.addEventListener('remoteCloseWrite', () => resolve())
      stream.addEventListener('close', (e) => (e.error != null ? reject(e.error) : resolve()))
    })
    const header = new Uint8Array(4)
    new DataView(header.buffer).setUint32(0, req.down as number)
    stream.send(header)
    await sendAll(stream, req.up as number, 0xaa)
    await stream.close()
    await done
    return { sent: (req.up as number) + 4, received }
  },
  /** Opens a relayed connection plus an echo stream and keeps both open; events tell when they close. */
  async open(req) {
    const target = `${req.relay as string}/p2p-circuit/p2p/${req.target as string}`
    const stream = await node(req).dialProtocol(multiaddr(target), ECHO, { runOnLimitedConnection: true })
    const conn = node(req)
      .getConnections()
      .find((c) => c.streams.includes(stream))
    if (conn == null) throw new Error('no connection for the stream')
    const handle = nextHandle++
    const entry = { stream, conn, received: 0, waiters: [] as Array<() => void> }
    streams.set(handle, entry)
    stream.addEventListener('message', (e) => {
      entry.received += e.data.byteLength
      for (const w of entry.waiters.splice(0)) w()
    })
    stream.addEventListener('close', (e) => {
      out({ event: 'stream-closed', handle, error: e.error == null ? undefined : message(e.error) })
      for (const w of entry.waiters.splice(0)) w()
    })
    return {
      handle,
      limits: conn.limits != null,
      limitSeconds: conn.limits?.seconds,
      limitBytes: conn.limits?.bytes?.toString(),
      remoteAddr: conn.remoteAddr.toString(),
    }
  },
  /** Sends `bytes` on an open echo stream and waits until they all came back. */
  async send(req) {
    const e = streams.get(req.handle as number)
    if (e == null) throw new Error('no such handle')
    const want = e.received + (req.bytes as number)
    await sendAll(e.stream, req.bytes as number, 0xcc)
    while (e.received < want) {
      if (e.stream.status !== 'open') throw new Error(`stream ${e.stream.status} after ${e.received}/${want} bytes echoed`)
      await new Promise<void>((resolve) => e.waiters.push(resolve))
    }
    return { echoed: e.received }
  },
  /** Closes a relayed connection opened with `open`. */
  async close(req) {
    const e = streams.get(req.handle as number)
    if (e == null) throw new Error('no such handle')
    await e.conn.close()
    return {}
  },
  /**
   * CONNECTs from `node` to `target` through `relay`, `count` of them at once, each on its own hop stream of one
   * connection; reports each status (and how long it took). With `hold`, accepted circuits stay open (handles).
   */
  async connectRaw(req) {
    const n = node(req)
    const conn = await dialIdentified(n, req.relay as string)
    const target = peerIdFromString(req.target as string).toMultihash().bytes
    const results = await Promise.all(
      Array.from({ length: (req.count as number) ?? 1 }, async () => {
        const started = performance.now()
        let stream: Stream | undefined
        try {
          stream = await conn.newStream(HOP_CODEC, { maxOutboundStreams: 10_000 })
          const hop = pbStream(stream, { maxDataLength: 4096 }).pb(HopMessageCodec)
          await hop.write({ type: HopType.CONNECT, peer: { id: target, addrs: [] } })
          const res = await hop.read({ signal: AbortSignal.timeout(30_000) })
          const status = STATUS_NAMES.get(res.status ?? -1) ?? String(res.status)
          const ms = Math.round(performance.now() - started)
          if (status === 'OK' && req.hold === true) {
            const handle = nextHandle++
            held.set(handle, hop.unwrap().unwrap() as Stream)
            return { status, ms, handle }
          }
          stream.abort(new Error('done'))
          return { status, ms }
        } catch (err: unknown) {
          stream?.abort(err as Error)
          return { status: `error: ${message(err)}`, ms: Math.round(performance.now() - started) }
        }
      }),
    )
    const statuses: Record<string, number> = {}
    for (const r of results) statuses[r.status] = (statuses[r.status] ?? 0) + 1
    return { statuses, results, handles: results.flatMap((r) => (r.handle == null ? [] : [r.handle])) }
  },
  /** Ends circuits held by connectRaw. */
  async release(req) {
    for (const h of req.handles as number[]) {
      held.get(h)?.abort(new Error('released'))
      held.delete(h)
    }
    return {}
  },
  /**
   * Replaces the node's STOP handler: 'silent' reads the STOP CONNECT and never answers (a reservation holder
   * gone unresponsive), 'accept' answers OK and holds the stream (no connection upgrade, so a circuit stays open).
   * Events tell when the node's connection to a peer closes.
   */
  async stopMode(req) {
    const n = node(req)
    const mode = req.mode as 'silent' | 'accept'
    let stops = 0
    await n.handle(
      STOP_CODEC,
      (stream) => {
        stops++
        const stop = pbStream(stream, { maxDataLength: 4096 }).pb(StopMessageCodec)
        stop
          .read()
          .then(async () => {
            out({ event: 'stop', node: req.node, mode, n: stops })
            if (mode === 'silent') return
            await stop.write({ type: StopType.STATUS, status: Status.OK })
            const handle = nextHandle++
            held.set(handle, stream)
            stream.addEventListener('close', () => held.delete(handle))
          })
          .catch(() => {})
      },
      { force: true, runOnLimitedConnection: true, maxInboundStreams: 10_000 },
    )
    n.addEventListener('connection:close', (e) => {
      out({ event: 'connection-closed', node: req.node, peer: e.detail.remotePeer.toString() })
    })
    return {}
  },
  async stop() {
    await Promise.all(nodes.map((n) => n.stop()))
    setImmediate(() => process.exit(0))
    return {}
  },
}

createInterface({ input: process.stdin }).on('line', (line) => {
  const req = JSON.parse(line) as Request
  const fn = commands[req.cmd]
  if (fn == null) {
    out({ id: req.id, error: `unknown command ${req.cmd}` })
    return
  }
  fn(req).then(
    (res) => out({ id: req.id, ok: true, ...res }),
    (err: unknown) => out({ id: req.id, error: message(err) }),
  )
})
process.stdin.on('end', () => process.exit(0))
out({ event: 'ready', pid: process.pid })
