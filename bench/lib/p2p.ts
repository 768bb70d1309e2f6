/**
 * Minimal libp2p nodes for the raw baselines and the capacity runs: the same packages as the gateway
 * (tcp + noise + yamux, circuitRelayTransport, identify), one echo protocol, and the two ways of
 * carrying calls compared by the bench: one multiplexed long-lived stream vs one stream per call.
 */
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { identify } from '@libp2p/identify'
import { FaultTolerance, type Stream } from '@libp2p/interface'
import { tcp } from '@libp2p/tcp'
import { encodeFrame, FrameDecoder } from '@stargate/shared/framing'
import { noiseCrypto } from '@stargate/shared/noise-crypto'
import { createLibp2p, type Libp2p } from 'libp2p'

/** The raw echo protocol: the listener writes back every byte it reads. */
export const ECHO_PROTOCOL = '/stargate-bench/echo/1.0.0'

const MAX_FRAME_BYTES = 8 * 1024 * 1024

export async function createBenchNode(opts: { listen?: string[]; maxConnections?: number } = {}): Promise<Libp2p> {
  return createLibp2p({
    addresses: { listen: opts.listen ?? [] },
    transportManager: { faultTolerance: FaultTolerance.NO_FATAL },
    transports: [tcp(), circuitRelayTransport({ reservationCompletionTimeout: 20_000 })],
    connectionEncrypters: [noise({ crypto: noiseCrypto })],
    streamMuxers: [yamux({ maxMessageSize: 256 * 1024 })],
    connectionManager: { maxConnections: opts.maxConnections ?? 256, inboundConnectionThreshold: 10_000, dialTimeout: 20_000 },
    services: { identify: identify() },
  })
}

function toBytes(data: Uint8Array | { subarray(): Uint8Array }): Uint8Array {
  return data instanceof Uint8Array ? data : data.subarray()
}

/** Registers the echo protocol: bytes are written back as they arrive; the stream closes when the remote does. */
export async function handleEcho(node: Libp2p): Promise<void> {
  await node.handle(
    ECHO_PROTOCOL,
    (stream) => {
      stream.addEventListener('message', (evt) => {
        stream.send(evt.data)
      })
      stream.addEventListener('remoteCloseWrite', () => {
        stream.close().catch(() => {})
      })
    },
    { runOnLimitedConnection: true, maxInboundStreams: 4096, maxOutboundStreams: 4096 },
  )
}

/** Frame body: 8-byte call id, then the payload. */
function encodeCall(id: number, payload: Uint8Array): Uint8Array {
  const body = new Uint8Array(8 + payload.byteLength)
  new DataView(body.buffer).setFloat64(0, id)
  body.set(payload, 8)
  return encodeFrame(body)
}

function callId(frame: Uint8Array): number {
  return new DataView(frame.buffer, frame.byteOffset, frame.byteLength).getFloat64(0)
}

/** Calls multiplexed by id on one long-lived stream (the design of services/gateway/src/peer/channel.ts). */
export class MuxEchoClient {
  readonly stream: Stream
  private readonly pending = new Map<number, { resolve: () => void; reject: (e: Error) => void }>()
  private next = 1

  constructor(stream: Stream) {
    this.stream = stream
    const decoder = new FrameDecoder({ maxFrameBytes: MAX_FRAME_BYTES })
    stream.addEventListener('message', (evt) => {
      for (const f of decoder.push(toBytes(evt.data))) {
        const id = callId(f)
        const p = this.pending.get(id)
        this.pending.delete(id)
        p?.resolve()
      }
    })
    stream.addEventListener('close', () => {
      for (const p of this.pending.values()) p.reject(new Error('stream closed'))
      this.pending.clear()
    })
  }

  async call(payload: Uint8Array): Promise<void> {
    const id = this.next++
    const done = new Promise<void>((resolve, reject) => this.pending.set(id, { resolve, reject }))
    if (!this.stream.send(encodeCall(id, payload))) await this.stream.onDrain()
    await done
  }
}

/** One call on a fresh stream: open, write one frame, read one frame, close both ends. */
export async function streamPerCallEcho(open: () => Promise<Stream>, payload: Uint8Array): Promise<void> {
  const stream = await open()
  const decoder = new FrameDecoder({ maxFrameBytes: MAX_FRAME_BYTES })
  const got = new Promise<void>((resolve, reject) => {
    stream.addEventListener('message', (evt) => {
      if (decoder.push(toBytes(evt.data)).length > 0) resolve()
    })
    stream.addEventListener('close', () => reject(new Error('stream closed before the reply')))
  })
  stream.send(encodeCall(1, payload))
  await got
  await stream.close()
}

/** Resident set size of a process in bytes, from /proc (0 when unavailable). */
export async function rssOf(pid: number): Promise<number> {
  return procStatusBytes(pid, 'VmRSS')
}

/**
 * The anonymous part of a process's resident set in bytes (RssAnon: heaps, JIT code, malloc), from /proc (0
 * when unavailable). The rest of RSS is mostly the node binary's text, file-backed and shared by every Node
 * process on the host.
 */
export async function rssAnonOf(pid: number): Promise<number> {
  return procStatusBytes(pid, 'RssAnon')
}

async function procStatusBytes(pid: number, field: 'VmRSS' | 'RssAnon'): Promise<number> {
  const { readFile } = await import('node:fs/promises')
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8')
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)
    return m == null ? 0 : Number(m[1]) * 1024
  } catch {
    return 0
  }
}

/** CPU time (user + system) a process has used, in ms, from /proc/<pid>/stat (0 when unavailable). */
export async function cpuMsOf(pid: number): Promise<number> {
  const { readFile } = await import('node:fs/promises')
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    // fields[11] = utime, fields[12] = stime (clock ticks; 100 Hz on Linux)
    return (Number(fields[11]) + Number(fields[12])) * 10
  } catch {
    return 0
  }
}
