// Container health check: one grpc.health.v1 Check against HOST:PORT (argv[2]) for SERVICE (argv[3], default
// "" = the whole server). Exits 0 when SERVING, 1 otherwise. Used by the Dockerfiles' HEALTHCHECK and compose.
import { credentials, makeGenericClientConstructor } from '@grpc/grpc-js'
import { service } from 'grpc-health-check'

const [target = '127.0.0.1:50051', name = ''] = process.argv.slice(2)
const Health = makeGenericClientConstructor(service, 'Health')
const client = new Health(target, credentials.createInsecure())
client.check({ service: name }, { deadline: Date.now() + 3000 }, (err, res) => {
  client.close()
  if (err != null) {
    process.stderr.write(`unhealthy: ${target}: ${err.message}\n`)
    process.exit(1)
  }
  if (res?.status !== 'SERVING') {
    process.stderr.write(`unhealthy: ${target} ${name || '(server)'} is ${res?.status}\n`)
    process.exit(1)
  }
  process.exit(0)
})
