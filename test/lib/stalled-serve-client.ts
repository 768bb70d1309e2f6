/**
 * A Serve client that registers a method and then stops reading its stream, as a stuck or hostile client
 * would: a raw HTTP/2 gRPC stream (node:http2, no gRPC library in the way) whose readable side is paused
 * once the gateway confirmed the registration, so HTTP/2 flow control stops the gateway's writes and
 * calls pile up in the gateway's Serve queue.
 *
 * Usage: node stalled-serve-client.ts HOST:PORT METHOD. Prints "READY <peer id>" once registered, then
 * "STALLED" and reads nothing more until killed.
 */
import { connect } from 'node:http2'
import { create, fromBinary, toBinary } from '@bufbuild/protobuf'
import { ServeRequestSchema, ServeResponseSchema } from '@stargate/shared/gen/gateway'
import { encodeFrame, FrameParser } from '@stargate/shared/grpc/wire'

const [target, method] = process.argv.slice(2)
if (target == null || method == null) {
  process.stderr.write('usage: stalled-serve-client.ts HOST:PORT METHOD\n')
  process.exit(2)
}

const session = connect(`http://${target}`)
session.on('error', (err) => {
  process.stderr.write(`session error: ${err.message}\n`)
  process.exit(1)
})
const stream = session.request({
  ':method': 'POST',
  ':path': '/stargate.v1.GatewayService/Serve',
  'content-type': 'application/grpc',
  te: 'trailers',
})
stream.write(
  encodeFrame(toBinary(ServeRequestSchema, create(ServeRequestSchema, { kind: { case: 'register', value: { methods: [method] } } }))),
)
const parser = new FrameParser(Number.MAX_SAFE_INTEGER)
stream.on('data', (chunk: Buffer) => {
  const [frame] = parser.push(chunk)
  if (frame == null) return
  const first = fromBinary(ServeResponseSchema, frame.data)
  if (first.kind.case !== 'registered') {
    process.stderr.write(`expected a registration, got ${first.kind.case}\n`)
    process.exit(1)
  }
  process.stdout.write(`READY ${first.kind.value.peerId}\n`)
  // From here on nothing is read: the stream's buffer fills, the gateway's window closes.
  stream.pause()
  stream.removeAllListeners('data')
  process.stdout.write('STALLED\n')
})
stream.on('close', () => {
  process.stderr.write(`stream closed (status ${String(stream.rstCode)})\n`)
  process.exit(1)
})
