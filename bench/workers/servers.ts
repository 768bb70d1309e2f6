/**
 * Raw baseline servers in their own process. Usage: node servers.ts grpc|connect|api|echo|nats [NATS_URL]
 * grpc: grpc-js answering stargate.v1.GatewayService/Call with the request payload (echo).
 * connect: the same echo on connect-node (gRPC protocol over HTTP/2), for the API-server choice.
 * api: the same echo on Stargate's own API server (services/shared/src/grpc/server.ts), as the gateway runs it.
 * echo: the tunnel benchmark's backend, stargate.test.v1.EchoService on grpc-js (test/lib/echo.ts).
 * nats: a NATS responder on subject bench.echo that answers with the request data.
 * Prints "READY <port>" once serving.
 */
import { createServer } from 'node:http2'
import type { AddressInfo } from 'node:net'
import { create } from '@bufbuild/protobuf'
import { connectNodeAdapter } from '@connectrpc/connect-node'
import * as grpc from '@grpc/grpc-js'
import { stargateDescriptorSets } from '@stargate/shared/descriptors'
import { CallResponseSchema, GatewayService } from '@stargate/shared/gen/gateway'
import { ApiServer } from '@stargate/shared/grpc/server'
import { createLogger } from '@stargate/shared/log'
import { connect } from 'nats'
import { EchoBackend } from '../../test/lib/echo.ts'
import { CALL_DEFINITION } from '../lib/grpc.ts'

const [mode, natsUrl] = process.argv.slice(2)
process.on('SIGTERM', () => process.exit(0))

if (mode === 'grpc') {
  const server = new grpc.Server({ 'grpc.max_receive_message_length': 16 * 1024 * 1024 })
  server.addService(CALL_DEFINITION, {
    call: (call: grpc.ServerUnaryCall<{ payload: unknown }, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      cb(null, create(CallResponseSchema, { payload: call.request.payload as never }))
    },
  })
  server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => {
    if (err != null) throw err
    process.stdout.write(`READY ${port}\n`)
  })
} else if (mode === 'connect') {
  const server = createServer(
    connectNodeAdapter({
      routes: (router) => {
        router.service(GatewayService, { call: (req) => ({ payload: req.payload }) })
      },
    }),
  )
  server.listen(0, '127.0.0.1', () => process.stdout.write(`READY ${(server.address() as AddressInfo).port}\n`))
} else if (mode === 'api') {
  const server = new ApiServer({
    services: [{ service: GatewayService, impl: { call: (req: { payload: unknown }) => ({ payload: req.payload }) } }],
    descriptorSets: stargateDescriptorSets(),
    log: createLogger('bench-api'),
  })
  const { port } = await server.listen('127.0.0.1', 0)
  process.stdout.write(`READY ${port}\n`)
} else if (mode === 'echo') {
  const port = await new EchoBackend().start()
  process.stdout.write(`READY ${port}\n`)
} else if (mode === 'nats' && natsUrl != null) {
  const nc = await connect({ servers: natsUrl })
  nc.subscribe('bench.echo', { callback: (err, msg) => (err == null ? msg.respond(msg.data) : undefined) })
  await nc.flush()
  process.stdout.write('READY 0\n')
} else {
  process.stderr.write('usage: servers.ts grpc|connect|api|echo|nats [NATS_URL]\n')
  process.exit(2)
}
