// `helm test` of the chart (and the deployment-run test): checks a running installation end to end.
//   1. every relay's admin API answers grpc.health.v1 SERVING (whole server and stargate.v1.RelayService);
//   2. every gateway answers SERVING, reports its peer id, and holds a reservation on a healthy relay;
//   3. the first gateway pings the second (itself when there is one) with the built-in `ping`, and the answer
//      names the target's peer id.
// Configured by environment (the chart's test Pod sets it):
//   STARGATE_TEST_GATEWAYS      comma-separated HOST:PORT of gateway APIs (at least one)
//   STARGATE_TEST_RELAY_ADMINS  comma-separated HOST:PORT of relay admin APIs (may be empty)
//   STARGATE_TEST_DEADLINE_MS   how long to wait for everything to come up (default 120000)
//   STARGATE_TEST_TOKEN         API bearer token, when the gateways require one
//   STARGATE_TEST_CA_FILE       PEM CA of the gateway APIs: speak TLS (certificates checked against it)
// Prints one line per check and exits 0 when all pass, 1 with the reason otherwise.
import { readFileSync } from 'node:fs'
import { fromJson, toJson } from '@bufbuild/protobuf'
import { ValueSchema } from '@bufbuild/protobuf/wkt'
import { type Client, createClient, type Interceptor } from '@connectrpc/connect'
import { createGrpcTransport } from '@connectrpc/connect-node'
import { GatewayService, Tier } from '@stargate/shared/gen/gateway'
import { Health, HealthCheckResponse_ServingStatus as ServingStatus } from '@stargate/shared/gen/health'

const list = (name: string): string[] =>
  (process.env[name] ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
const gateways = list('STARGATE_TEST_GATEWAYS')
const relayAdmins = list('STARGATE_TEST_RELAY_ADMINS')
const deadlineAtMs = Date.now() + Number(process.env.STARGATE_TEST_DEADLINE_MS ?? 120_000)
const token = process.env.STARGATE_TEST_TOKEN ?? ''
const caFile = process.env.STARGATE_TEST_CA_FILE ?? ''
const ca = caFile !== '' ? readFileSync(caFile) : undefined
const RETRY_MS = 1_000

function fail(message: string): never {
  process.stderr.write(`FAIL ${message}\n`)
  process.exit(1)
}

/** Runs check until it resolves or the deadline passes (the installation may still be starting). */
async function eventually<T>(what: string, check: () => Promise<T>): Promise<T> {
  for (;;) {
    try {
      return await check()
    } catch (err: unknown) {
      const reason = err instanceof Error ? err.message : String(err)
      if (Date.now() + RETRY_MS > deadlineAtMs) fail(`${what}: ${reason}`)
      await new Promise((r) => setTimeout(r, RETRY_MS))
    }
  }
}

const auth: Interceptor = (next) => (req) => {
  if (token !== '') req.header.set('authorization', `Bearer ${token}`)
  return next(req)
}

function transport(target: string, tls: boolean) {
  return createGrpcTransport({
    baseUrl: `${tls ? 'https' : 'http'}://${target}`,
    nodeOptions: tls && ca != null ? { ca } : {},
    interceptors: [auth],
  })
}

async function healthCheck(target: string, name: string, tls: boolean): Promise<void> {
  const res = await createClient(Health, transport(target, tls)).check({ service: name }, { timeoutMs: 5_000 })
  if (res.status !== ServingStatus.SERVING) throw new Error(`${name || '(server)'} is ${ServingStatus[res.status]}`)
}

function gatewayClient(target: string): Client<typeof GatewayService> {
  return createClient(GatewayService, transport(target, ca != null))
}

if (gateways.length === 0) fail('STARGATE_TEST_GATEWAYS names no gateway')

for (const admin of relayAdmins) {
  for (const name of ['', 'stargate.v1.RelayService']) {
    await eventually(`relay ${admin} health ${name || '(server)'}`, () => healthCheck(admin, name, false))
  }
  process.stdout.write(`PASS relay ${admin} is SERVING\n`)
}

const peers: string[] = []
for (const target of gateways) {
  await eventually(`gateway ${target} health`, () => healthCheck(target, '', ca != null))
  const client = gatewayClient(target)
  const status = await eventually(`gateway ${target} GetStatus`, () => client.getStatus({}, { timeoutMs: 5_000 }))
  peers.push(status.peerId)
  if (relayAdmins.length > 0) {
    const relay = await eventually(`gateway ${target} reservation on a healthy relay`, async () => {
      const { relays } = await client.getRelayHealth({}, { timeoutMs: 5_000 })
      const held = relays.find((r) => r.isHealthy && r.reserved)
      if (held == null) {
        throw new Error(`no healthy relay with a reservation yet: ${relays.map((r) => `${r.relayAddr} ${r.lastError}`).join('; ')}`)
      }
      return held
    })
    process.stdout.write(`PASS gateway ${target} ${status.peerId} is SERVING, reserved on relay ${relay.relayPeerId}\n`)
  } else {
    process.stdout.write(`PASS gateway ${target} ${status.peerId} is SERVING\n`)
  }
}

const from = gateways[0] as string
const toIndex = gateways.length > 1 ? 1 : 0
const to = peers[toIndex] as string
const nonce = `helm-test-${process.pid}-${Date.now()}`
const res = await eventually(`ping from ${from} to ${to}`, () =>
  gatewayClient(from).call(
    { peerId: to, method: 'ping', payload: { case: 'json', value: fromJson(ValueSchema, { nonce }) } },
    { timeoutMs: 20_000 },
  ),
)
const answer = res.payload.case === 'json' ? (toJson(ValueSchema, res.payload.value) as { peerId?: string; echo?: { nonce?: string } }) : {}
if (answer.peerId !== to || answer.echo?.nonce !== nonce) fail(`ping from ${from} to ${to}: unexpected answer ${JSON.stringify(answer)}`)
process.stdout.write(`PASS ping ${peers[0]} -> ${to} answered through tier ${Tier[res.tier]}\n`)
