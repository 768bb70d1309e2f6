// Container health check: one grpc.health.v1 Check against HOST:PORT (argv[2]) for SERVICE (argv[3], default
// "" = the whole server). Exits 0 when SERVING, 1 otherwise. Used by the Dockerfiles' HEALTHCHECK and compose.
import { createClient } from '@connectrpc/connect'
import { createGrpcTransport } from '@connectrpc/connect-node'
import { Health, HealthCheckResponse_ServingStatus as Status } from '@stargate/shared/gen/health'

const [target = '127.0.0.1:50051', name = ''] = process.argv.slice(2)
const health = createClient(Health, createGrpcTransport({ baseUrl: `http://${target}` }))
try {
  const res = await health.check({ service: name }, { timeoutMs: 3000 })
  if (res.status !== Status.SERVING) {
    process.stderr.write(`unhealthy: ${target} ${name || '(server)'} is ${Status[res.status]}\n`)
    process.exit(1)
  }
  process.exit(0)
} catch (err) {
  process.stderr.write(`unhealthy: ${target}: ${err instanceof Error ? err.message : String(err)}\n`)
  process.exit(1)
}
