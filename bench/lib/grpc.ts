/**
 * grpc-js plumbing shared by the raw baselines and the Stargate runs: one generic client/server
 * definition of stargate.v1.GatewayService/Call serialised with protobuf-es, so the raw echo and the
 * gateway are called by the same client code with the same messages.
 */
import { create, fromBinary, type MessageInitShape, toBinary } from '@bufbuild/protobuf'
import * as grpc from '@grpc/grpc-js'
import { type CallRequest, CallRequestSchema, type CallResponse, CallResponseSchema } from '@stargate/shared/gen/gateway'

export const CALL_DEFINITION = {
  call: {
    path: '/stargate.v1.GatewayService/Call',
    requestStream: false,
    responseStream: false,
    requestSerialize: (m: CallRequest): Buffer => Buffer.from(toBinary(CallRequestSchema, m)),
    requestDeserialize: (b: Buffer): CallRequest => fromBinary(CallRequestSchema, b),
    responseSerialize: (m: CallResponse): Buffer => Buffer.from(toBinary(CallResponseSchema, m)),
    responseDeserialize: (b: Buffer): CallResponse => fromBinary(CallResponseSchema, b),
  },
} satisfies grpc.ServiceDefinition

const CallClient = grpc.makeGenericClientConstructor(CALL_DEFINITION, 'GatewayService')

/** A grpc-js client of GatewayService/Call with a promise API. */
export class CallClientJs {
  private readonly client: grpc.Client

  constructor(hostPort: string) {
    this.client = new CallClient(hostPort, grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': 16 * 1024 * 1024,
      'grpc.max_send_message_length': 16 * 1024 * 1024,
    })
  }

  /** One unary call; timeoutMs sets the gRPC deadline (Infinity: no deadline). */
  call(req: MessageInitShape<typeof CallRequestSchema>, timeoutMs = 30_000): Promise<CallResponse> {
    const msg = create(CallRequestSchema, req)
    return new Promise((resolve, reject) => {
      ;(
        this.client as unknown as Record<string, grpc.requestCallback<CallResponse> | unknown> & {
          call: (m: CallRequest, md: grpc.Metadata, o: grpc.CallOptions, cb: grpc.requestCallback<CallResponse>) => void
        }
      ).call(msg, new grpc.Metadata(), Number.isFinite(timeoutMs) ? { deadline: Date.now() + timeoutMs } : {}, (err, res) => {
        if (err != null || res == null) reject(err ?? new Error('empty response'))
        else resolve(res)
      })
    })
  }

  close(): void {
    this.client.close()
  }
}
