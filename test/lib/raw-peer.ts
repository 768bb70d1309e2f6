/**
 * A bare libp2p peer in the test process, speaking /stargate/call/1.0.0 to a real gateway with the
 * protocol's own frames: a fresh identity per instance, as an attacker (or many) would have.
 */
import { create, type MessageInitShape, toBinary } from '@bufbuild/protobuf'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import type { Stream } from '@libp2p/interface'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { decodePeerFrame } from '@stargate/shared/envelope'
import { encodeFrame, FrameDecoder } from '@stargate/shared/framing'
import { PeerFrameSchema, type PeerRequestSchema, type PeerResponse } from '@stargate/shared/gen/envelope'
import { createLibp2p, type Libp2p } from 'libp2p'

export const CALL_PROTOCOL = '/stargate/call/1.0.0'

export type RequestInit = Omit<MessageInitShape<typeof PeerRequestSchema>, 'exchangeId' | '$typeName'>

/** What came back for a batch of requests: counts by outcome ("ok" or the gRPC code) and one message each. */
export interface Outcomes {
  counts: Map<string, number>
  messages: Map<string, string>
}

export class RawPeer {
  readonly node: Libp2p

  private constructor(node: Libp2p) {
    this.node = node
  }

  static async create(): Promise<RawPeer> {
    return new RawPeer(await createLibp2p({ transports: [tcp()], connectionEncrypters: [noise()], streamMuxers: [yamux()] }))
  }

  get peerId(): string {
    return this.node.peerId.toString()
  }

  /** Opens a call stream to a gateway's multiaddr. */
  async open(addr: string): Promise<CallStream> {
    return new CallStream(await this.node.dialProtocol(multiaddr(addr), CALL_PROTOCOL))
  }

  async stop(): Promise<void> {
    await this.node.stop()
  }
}

/** One /stargate/call/1.0.0 stream: requests pipelined over it, responses matched by exchange id. */
export class CallStream {
  readonly stream: Stream
  private readonly decoder = new FrameDecoder({ maxFrameBytes: 8 << 20 })
  private readonly pending = new Map<bigint, (res: PeerResponse) => void>()
  private nextExchange = 1n

  constructor(stream: Stream) {
    this.stream = stream
    stream.addEventListener('message', (evt) => {
      const data = evt.data instanceof Uint8Array ? evt.data : evt.data.subarray()
      for (const bytes of this.decoder.push(data)) {
        const frame = decodePeerFrame(bytes)
        if (frame.kind.case !== 'response') continue
        const done = this.pending.get(frame.kind.value.exchangeId)
        this.pending.delete(frame.kind.value.exchangeId)
        done?.(frame.kind.value)
      }
    })
  }

  /** Sends raw bytes (for malformed or partial frames). */
  async sendRaw(bytes: Uint8Array): Promise<void> {
    if (!this.stream.send(bytes)) await this.stream.onDrain()
  }

  /** One request, one response. */
  async call(req: RequestInit): Promise<PeerResponse> {
    const [res] = await this.callMany([req], 1)
    return res!
  }

  /**
   * Sends every request, pipelined with at most `window` unanswered (frames written together leave in one
   * send), and resolves with the responses in request order.
   */
  async callMany(requests: RequestInit[], window: number): Promise<PeerResponse[]> {
    const out: PeerResponse[] = new Array(requests.length)
    let next = 0
    let answered = 0
    let wake: (() => void) | undefined
    const closed = new Promise<never>((_, reject) =>
      this.stream.addEventListener('close', () => reject(new Error(`stream closed after ${answered} of ${requests.length} responses`)), {
        once: true,
      }),
    )
    closed.catch(() => {})
    while (answered < requests.length) {
      const frames: Uint8Array[] = []
      while (next < requests.length && next - answered < window) {
        const i = next++
        const exchangeId = this.nextExchange++
        this.pending.set(exchangeId, (res) => {
          out[i] = res
          answered++
          wake?.()
        })
        const frame = create(PeerFrameSchema, { kind: { case: 'request', value: { ...requests[i], exchangeId } } })
        frames.push(encodeFrame(toBinary(PeerFrameSchema, frame)))
      }
      if (frames.length > 0) await this.sendRaw(Buffer.concat(frames))
      if (answered < requests.length) {
        await Promise.race([
          new Promise<void>((resolve) => {
            wake = resolve
          }),
          closed,
        ])
      }
    }
    return out
  }
}

/** Counts responses by outcome ("ok" or the gRPC code number), keeping one message per code. */
export function outcomes(responses: PeerResponse[]): Outcomes {
  const counts = new Map<string, number>()
  const messages = new Map<string, string>()
  for (const r of responses) {
    const key = r.result.case === 'error' ? String(r.result.value.code) : 'ok'
    counts.set(key, (counts.get(key) ?? 0) + 1)
    if (r.result.case === 'error' && !messages.has(key)) messages.set(key, r.result.value.message)
  }
  return { counts, messages }
}
