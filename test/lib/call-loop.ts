/**
 * A caller in its own process (for tests inside network namespaces, where the test process cannot reach a
 * gateway's API): makes `count` Calls to one peer through a gateway's public API, one every `everyMs`
 * (each waits for the previous to end), and prints one JSON line per call:
 * `CALL {"i":0,"atMs":0,"ms":123,"code":"OK","tier":"RELAY","via":"...","requestId":"...","attempts":["RELAY SUCCESS 12 ms"]}`,
 * then `DONE`. Usage: node call-loop.ts HOST:PORT PEER_ID METHOD COUNT EVERY_MS DEADLINE_MS [TIER...]
 * (TIER: DIRECT, RELAY or NATS restricts the call to those tiers).
 */
import { create } from '@bufbuild/protobuf'
import { ValueSchema } from '@bufbuild/protobuf/wkt'
import { Code, ConnectError, createClient } from '@connectrpc/connect'
import { createGrpcTransport } from '@connectrpc/connect-node'
import { durationToMs } from '@stargate/shared/clock'
import { AttemptOutcome, CallRequestSchema, GatewayService, Tier } from '@stargate/shared/gen/gateway'

const [target, peerId, method, countArg, everyArg, deadlineArg, ...tierArgs] = process.argv.slice(2)
if (target == null || peerId == null || method == null || countArg == null || everyArg == null || deadlineArg == null) {
  process.stderr.write('usage: call-loop.ts HOST:PORT PEER_ID METHOD COUNT EVERY_MS DEADLINE_MS [TIER...]\n')
  process.exit(2)
}
const tiers = tierArgs.map((t) => {
  const tier = Tier[t as keyof typeof Tier]
  if (tier == null) throw new Error(`unknown tier ${t}`)
  return tier
})
const client = createClient(GatewayService, createGrpcTransport({ baseUrl: `http://${target}` }))
const startedAtMs = Date.now()

for (let i = 0; i < Number(countArg); i++) {
  const dueAtMs = startedAtMs + i * Number(everyArg)
  if (Date.now() < dueAtMs) await new Promise((r) => setTimeout(r, dueAtMs - Date.now()))
  const t0 = performance.now()
  const line: Record<string, unknown> = { i, atMs: Date.now() - startedAtMs }
  try {
    const res = await client.call(
      create(CallRequestSchema, {
        peerId,
        method,
        payload: { case: 'json', value: create(ValueSchema, { kind: { case: 'numberValue', value: i } }) },
        options: { allowedTiers: tiers },
      }),
      { timeoutMs: Number(deadlineArg) },
    )
    const won = res.attempts.find((a) => a.outcome === AttemptOutcome.SUCCESS)
    Object.assign(line, {
      ms: Math.round(performance.now() - t0),
      code: 'OK',
      tier: Tier[res.tier],
      via: won?.via ?? '',
      requestId: res.requestId,
      attempts: res.attempts.map(
        (a) =>
          `${Tier[a.tier]} ${AttemptOutcome[a.outcome]} ${a.duration != null ? durationToMs(a.duration) : 0} ms${a.reason !== '' ? `: ${a.reason}` : ''}`,
      ),
    })
  } catch (err: unknown) {
    const e = ConnectError.from(err)
    Object.assign(line, { ms: Math.round(performance.now() - t0), code: Code[e.code], message: e.rawMessage })
  }
  process.stdout.write(`CALL ${JSON.stringify(line)}\n`)
}
process.stdout.write('DONE\n')
