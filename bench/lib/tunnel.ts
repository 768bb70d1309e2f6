/**
 * The tunnel benchmark's client: an unmodified grpc-js client of stargate.test.v1.EchoService (the test
 * proto, test/lib/echo.ts), pointed either at the backend itself (the baseline) or at a caller gateway with
 * a `stargate-peer` header naming the gateway that exposes the backend. Unary calls, and bulk streams in
 * both directions for MB/s.
 */
import * as grpc from '@grpc/grpc-js'
import { EchoClient } from '../../test/lib/echo.ts'

type Client = grpc.Client & Record<string, (...args: unknown[]) => grpc.ClientUnaryCall & grpc.ClientDuplexStream<unknown, unknown>>

/** The bulk message of the stream runs: 64 KiB. */
export const STREAM_MESSAGE_BYTES = 64 * 1024

const DEADLINE_MS = 120_000

export class EchoCaller {
  private readonly client: Client
  private readonly metadata: grpc.Metadata
  private readonly bulk = new Uint8Array(STREAM_MESSAGE_BYTES).fill(7)
  private readonly small = new Uint8Array(64).fill(7)

  /** `peer`: the stargate-peer header (the callee gateway's peer id); none when calling the backend itself. */
  constructor(target: string, peer?: string) {
    this.client = new EchoClient(target, grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': -1,
      'grpc.max_send_message_length': -1,
    }) as unknown as Client
    this.metadata = new grpc.Metadata()
    if (peer != null) this.metadata.set('stargate-peer', peer)
  }

  /** One unary call with a 64-byte payload. */
  unary(): Promise<void> {
    return new Promise((resolve, reject) =>
      this.client.unary({ payload: this.small }, this.metadata.clone(), { deadline: Date.now() + DEADLINE_MS }, (err: unknown) =>
        err != null ? reject(err) : resolve(),
      ),
    )
  }

  /** A server stream of `count` 64 KiB messages; resolves with the bytes received. */
  download(count: number): Promise<number> {
    return new Promise((resolve, reject) => {
      let bytes = 0
      const call = this.client.serverStream({ payload: this.bulk, responseCount: count }, this.metadata.clone(), {
        deadline: Date.now() + DEADLINE_MS,
      }) as unknown as grpc.ClientReadableStream<{ payload: Uint8Array }>
      call.on('data', (m: { payload: Uint8Array }) => {
        bytes += m.payload.byteLength
      })
      call.on('error', reject)
      call.on('end', () => resolve(bytes))
    })
  }

  /** A client stream of `count` 64 KiB messages (written as fast as flow control allows); resolves with the bytes the backend counted. */
  upload(count: number): Promise<number> {
    return new Promise((resolve, reject) => {
      const call = this.client.clientStream(
        this.metadata.clone(),
        { deadline: Date.now() + DEADLINE_MS },
        (err: unknown, res: { receivedBytes: bigint }) => (err != null ? reject(err) : resolve(Number(res.receivedBytes))),
      ) as unknown as grpc.ClientWritableStream<{ payload: Uint8Array }>
      let sent = 0
      const pump = (): void => {
        while (sent < count) {
          sent++
          if (!call.write({ payload: this.bulk })) {
            call.once('drain', pump)
            return
          }
        }
        call.end()
      }
      pump()
    })
  }

  close(): void {
    this.client.close()
  }
}
