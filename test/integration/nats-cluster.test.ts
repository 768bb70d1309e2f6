import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { fromJson } from '@bufbuild/protobuf'
import { ValueSchema } from '@bufbuild/protobuf/wkt'
import { Code, ConnectError } from '@connectrpc/connect'
import { NatsState, Tier } from '@stargate/shared/gen/gateway'
import { type GatewayHandle, Harness, type Proc } from '../lib/harness.ts'

const json = (v: unknown) => ({ case: 'json' as const, value: fromJson(ValueSchema, v as never) })
const CALL_DEADLINE_MS = 5_000
const WORKERS = 4

interface Outcome {
  id: string
  startMs: number
  endMs: number
  code?: Code
  message?: string
}

describe('NATS cluster', () => {
  const h = new Harness()
  let nodes: Awaited<ReturnType<Harness['natsCluster']>>
  let a: GatewayHandle
  let b: GatewayHandle
  let serve: Proc

  before(async () => {
    nodes = await h.natsCluster(3)
    const [n1, n2, n3] = nodes as [(typeof nodes)[0], (typeof nodes)[0], (typeof nodes)[0]]
    // A knows only n1 and must discover the others; B is given n2 and n3 as one comma-separated flag.
    a = await h.gateway(['--nats', n1.url], { name: 'a' })
    b = await h.gateway(['--nats', `${n2.url},${n3.url}`], { name: 'b' })
    serve = await h.serveClient(b.api)
  })
  after(() => h.close())

  it('cluster - SIGKILL of the caller gateway’s NATS server: calls go on through another member, none runs twice, failures are clear and within their deadline', async () => {
    const hostPort = (n: { port: number }) => `127.0.0.1:${n.port}`
    const before = (await a.client.getStatus({})).nats!
    assert.equal(before.state, NatsState.CONNECTED)
    assert.equal(before.connectedServer, hostPort(nodes[0]!))
    assert.equal(before.connectedServerName, 'n1')
    for (const n of nodes) assert.ok(before.knownServers.includes(hostPort(n)), `${hostPort(n)} discovered: ${before.knownServers}`)

    const outcomes: Outcome[] = []
    let stop = false
    let successes = 0
    let onSuccess: (() => void) | undefined
    const worker = async (w: number): Promise<void> => {
      for (let i = 0; !stop; i++) {
        const id = `w${w}-${i}-${Date.now()}`
        const o: Outcome = { id, startMs: Date.now(), endMs: 0 }
        try {
          await a.client.call(
            { peerId: b.peerId, method: 'echo', payload: json({ id }), idempotencyKey: id, options: { allowedTiers: [Tier.NATS] } },
            { timeoutMs: CALL_DEADLINE_MS },
          )
          successes++
          onSuccess?.()
        } catch (err: unknown) {
          const e = ConnectError.from(err)
          o.code = e.code
          o.message = e.rawMessage
        }
        o.endMs = Date.now()
        outcomes.push(o)
      }
    }
    const successesReach = (n: number, what: string): Promise<void> =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          stop = true
          const recent = outcomes.slice(-3).map((o) => `${o.code != null ? Code[o.code] : 'ok'} ${o.message ?? ''}`)
          reject(new Error(`${what}: ${successes} of ${n} calls succeeded within 60 s; last: ${recent.join(' | ')}\n${h.dump()}`))
        }, 60_000)
        onSuccess = () => {
          if (successes < n) return
          clearTimeout(timer)
          resolve()
        }
        onSuccess()
      })
    const workers = Array.from({ length: WORKERS }, (_, w) => worker(w))

    await successesReach(200, 'before the kill')
    const killedAtMs = Date.now()
    await nodes[0]!.proc.stop('SIGKILL')
    const okBeforeKill = successes
    // Go on until 200 more calls succeeded, all of them started after the kill.
    await successesReach(okBeforeKill + 200 + WORKERS * 4, 'after the kill')
    stop = true
    await Promise.all(workers)

    const [reconnected] = await a.proc.waitFor(/^.*"nats reconnected".*$/)
    const reconnectedAtMs = Date.parse((JSON.parse(reconnected!) as { time: string }).time)
    const after = (await a.client.getStatus({})).nats!
    assert.equal(after.state, NatsState.CONNECTED)
    assert.ok([hostPort(nodes[1]!), hostPort(nodes[2]!)].includes(after.connectedServer), after.connectedServer)

    const handled = new Map<string, number>()
    for (const line of serve.stdout) {
      const [word, , requestId] = line.split(' ')
      if (word === 'HANDLED' && requestId != null) handled.set(requestId, (handled.get(requestId) ?? 0) + 1)
    }
    const failed = outcomes.filter((o) => o.code != null)
    for (const o of outcomes) {
      const runs = handled.get(o.id) ?? 0
      if (o.code == null) assert.equal(runs, 1, `${o.id} succeeded and ran ${runs} times`)
      else assert.ok(runs <= 1, `${o.id} failed and ran ${runs} times`)
    }
    for (const o of failed) {
      assert.ok(o.code === Code.Unavailable || o.code === Code.DeadlineExceeded, `${o.id}: ${Code[o.code!]} ${o.message}`)
      assert.ok((o.message ?? '').length > 0, `${o.id} has a message`)
      assert.ok(o.endMs - o.startMs <= CALL_DEADLINE_MS + 1_500, `${o.id} took ${o.endMs - o.startMs} ms`)
    }
    const afterKill = outcomes.filter((o) => o.startMs >= killedAtMs)
    const okAfterKill = afterKill.filter((o) => o.code == null)
    assert.ok(okAfterKill.length >= 200, `${okAfterKill.length} calls succeeded after the kill`)
    // Once calls succeed again, they keep succeeding: nothing failed among the last 100 calls.
    const last = [...outcomes].sort((x, y) => x.startMs - y.startMs).slice(-100)
    assert.deepEqual(
      last.filter((o) => o.code != null).map((o) => `${Code[o.code!]} ${o.message}`),
      [],
    )
    const answeredAt = outcomes
      .filter((o) => o.code == null)
      .map((o) => o.endMs)
      .sort((x, y) => x - y)
    const longestGapMs = Math.max(...answeredAt.slice(1).map((t, i) => t - answeredAt[i]!))
    const inFlightAtKill = outcomes.filter((o) => o.startMs < killedAtMs && o.endMs >= killedAtMs)
    const byCode = Object.entries(Object.groupBy(failed, (o) => Code[o.code!]!)).map(([code, list]) => `${code} ${list?.length}`)
    const slowest = Math.max(...outcomes.map((o) => o.endMs - o.startMs))
    console.log(
      [
        `# NATS cluster failover (3 nodes, ${WORKERS} callers, deadline ${CALL_DEADLINE_MS} ms): ${outcomes.length} calls, ${successes} ok, failed: ${byCode.join(', ') || 'none'}`,
        `#   A moved ${before.connectedServer} (n1) -> ${after.connectedServer} (${after.connectedServerName}), reconnected +${reconnectedAtMs - killedAtMs} ms after the kill`,
        `#   calls slower than 1 s: ${outcomes.filter((o) => o.endMs - o.startMs > 1_000).length} (a call that finds NATS reconnecting is retried after the router's backoff)`,
        `#   calls in flight at the kill: ${inFlightAtKill.length} (${inFlightAtKill.filter((o) => o.code == null).length} ok, slowest ${Math.max(0, ...inFlightAtKill.map((o) => o.endMs - o.startMs))} ms)`,
        `#   longest time without a successful answer: ${longestGapMs} ms`,
        `#   slowest call overall: ${slowest} ms; request ids run twice: ${[...handled.values()].filter((n) => n > 1).length}`,
        ...failed.slice(0, 5).map((o) => `#   failure: ${Code[o.code!]} after ${o.endMs - o.startMs} ms: ${o.message}`),
      ].join('\n'),
    )
  })
})
