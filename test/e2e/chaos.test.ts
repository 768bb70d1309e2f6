/**
 * Chaos: steady load (50 concurrent callers) while the relay, nats-server and the target gateway are
 * killed (SIGKILL) and restarted. Every call must end with success or a clear status within its deadline,
 * no call may hang, no request may run twice, and the caller's file descriptors and memory must come back
 * near their baseline. Bounded: CHAOS_DURATION_MS (default 60 s) of load, every loop bounded in count.
 */
import assert from 'node:assert/strict'
import { readdirSync } from 'node:fs'
import { describe, it } from 'node:test'
import { fromJson } from '@bufbuild/protobuf'
import { ValueSchema } from '@bufbuild/protobuf/wkt'
import { Code, ConnectError } from '@connectrpc/connect'
import { Tier } from '@stargate/shared/gen/gateway'
import { eventually } from '../lib/eventually.ts'
import { freePort, Harness, type Proc } from '../lib/harness.ts'
import { liveHeapMB, rssMiB } from '../lib/memory.ts'

const DURATION_MS = Number(process.env.CHAOS_DURATION_MS ?? 60_000)
const CALLERS = 50
const CALL_DEADLINE_MS = 10_000
const MAX_CALLS_PER_CALLER = 5_000
// ABORTED: the target was killed while running the request, and its journal refuses to run it again.
// UNIMPLEMENTED: the restarted target answered before its Serve client had registered the method again.
const CLEAR_STATUSES = new Set([Code.Unavailable, Code.DeadlineExceeded, Code.Aborted, Code.ResourceExhausted, Code.Unimplemented])

function fds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length
}

/**
 * The success bar, over the calls the transport had to deliver: a restarting target's own answers (ABORTED
 * for requests it had started before the kill, UNIMPLEMENTED until its Serve client registered again) are
 * correct answers, not lost calls. Quiet 2-core runs measure 99.9 %+; runs on a machine loaded to 10 measured
 * 99.2 %; 98 % keeps margin, and a regression that loses calls during a kill (a few hundred) still fails.
 */
const MIN_SUCCESS_RATE = 0.98
/** Statuses a restarting target answers itself. */
const TARGET_ANSWERS = new Set(['Aborted', 'Unimplemented'])

describe('chaos', () => {
  it('chaos - 50 callers while relay, NATS and target are killed and restarted: no hang, no duplicate, clear statuses', async () => {
    const h = new Harness()
    try {
      const natsPort = await freePort()
      const relayPort = await freePort()
      const targetPort = await freePort()
      let nats = await h.nats(natsPort)
      let relay = await h.relay(['--port', String(relayPort)], { name: 'relay' })
      const relayIdentity = relay.identity
      const targetArgs = ['--p2p-listen', `/ip4/127.0.0.1/tcp/${targetPort}`, '--relay', relay.multiaddr, '--nats', nats.url]
      let target = await h.gateway(targetArgs, { name: 'target' })
      const targetIdentity = target.identity
      const caller = await h.gateway(
        [
          '--peer',
          `${target.peerId}=/ip4/127.0.0.1/tcp/${targetPort}`,
          '--relay',
          relay.multiaddr,
          '--nats',
          nats.url,
          '--backoff-base-ms',
          '500',
          '--tier-cooldown-ms',
          '3000',
        ],
        { name: 'caller', env: { NODE_OPTIONS: '--heapsnapshot-signal=SIGUSR2' } },
      )
      const servers: Proc[] = [await h.serveClient(target.api, ['echo'])]
      const pid = caller.proc.child.pid!
      const heapMB = (): Promise<number> => h.tmp().then((dir) => liveHeapMB(pid, dir, () => caller.client.getStatus({})))

      const outcomes: Array<{ code: string; ms: number; tier?: Tier }> = []
      let hangs = 0
      let stop = false
      const worker = async (w: number): Promise<void> => {
        for (let n = 0; n < MAX_CALLS_PER_CALLER && !stop; n++) {
          const t0 = Date.now()
          const call = caller.client.call(
            {
              peerId: target.peerId,
              method: 'echo',
              payload: { case: 'json', value: fromJson(ValueSchema, { w, n }) },
              idempotencyKey: `chaos-${w}-${n}`,
              // half the callers may not use the direct path, so the relay and NATS carry load too
              options: w % 2 === 0 ? {} : { allowedTiers: [Tier.RELAY, Tier.NATS] },
            },
            { timeoutMs: CALL_DEADLINE_MS },
          )
          let timer: NodeJS.Timeout | undefined
          const hang = new Promise<'hang'>((resolve) => {
            timer = setTimeout(() => resolve('hang'), CALL_DEADLINE_MS + 5_000)
          })
          const r = await Promise.race([
            call.then(
              (res) => ({ code: 'OK', tier: res.tier }),
              (err: unknown) => ({ code: Code[ConnectError.from(err).code] ?? 'UNKNOWN' }),
            ),
            hang,
          ])
          clearTimeout(timer)
          if (r === 'hang') {
            hangs++
            return
          }
          outcomes.push({ ...r, ms: Date.now() - t0 })
          if (r.code !== 'OK') await new Promise((res) => setTimeout(res, 100))
        }
      }
      // warm the paths the workers use, then the live heap before the load
      for (let n = 0; n < 200; n++) {
        const payload = { case: 'json' as const, value: fromJson(ValueSchema, { n }) }
        await caller.client.call({ peerId: target.peerId, method: 'echo', payload, idempotencyKey: `warm-${n}` })
        await caller.client.call({
          peerId: target.peerId,
          method: 'echo',
          payload,
          idempotencyKey: `warm-relay-${n}`,
          options: { allowedTiers: [Tier.RELAY, Tier.NATS] },
        })
      }
      const heapBaselineMB = await heapMB()
      const started = Date.now()
      const load = Promise.all(Array.from({ length: CALLERS }, (_, w) => worker(w)))
      const at = (ms: number) => new Promise((res) => setTimeout(res, Math.max(0, started + ms - Date.now())))

      // warm-up, then the baseline of the caller process
      await at(DURATION_MS * 0.1)
      const baseline = { fds: fds(pid), rssMiB: rssMiB(pid), calls: outcomes.length }

      await at(DURATION_MS * 0.15)
      await relay.proc.stop('SIGKILL')
      await at(DURATION_MS * 0.27)
      relay = await h.relay(['--port', String(relayPort)], { identity: relayIdentity, name: 'relay-again' })

      await at(DURATION_MS * 0.4)
      await nats.proc.stop('SIGKILL')
      await at(DURATION_MS * 0.52)
      nats = await h.nats(natsPort)

      await at(DURATION_MS * 0.62)
      await target.proc.stop('SIGKILL')
      await at(DURATION_MS * 0.72)
      target = await h.gateway(targetArgs, { identity: targetIdentity, name: 'target-again' })
      servers.push(await h.serveClient(target.api, ['echo']))

      await at(DURATION_MS)
      stop = true
      await load

      // nothing done twice: every request id ran at most once across all handler processes
      const runs = new Map<string, number>()
      for (const s of servers) {
        for (const line of s.stdout) {
          const [tag, , id] = line.split(' ')
          if (tag === 'HANDLED' && id != null) runs.set(id, (runs.get(id) ?? 0) + 1)
        }
      }
      const duplicates = [...runs.values()].filter((n) => n > 1).length

      // Every call the workers made has settled at the client; the caller gateway may still be ending some (a
      // call the client gave up on runs until its deadline there). Resources are compared once it has none.
      const settleStartedAtMs = Date.now()
      await eventually('the caller gateway has no call in flight', async () => (await caller.client.getStatus({})).inflightCalls === 0, {
        timeoutMs: CALL_DEADLINE_MS * 2,
        intervalMs: 200,
        giveUp: () => (caller.proc.running ? undefined : 'the caller gateway exited'),
        context: () => `calls that hung at the client: ${hangs}\n${caller.proc.dump()}`,
      })
      const settledAfterMs = Date.now() - settleStartedAtMs
      assert.ok(caller.proc.running, `the caller gateway is still running\n${caller.proc.dump()}`)
      const after = { fds: fds(pid), rssMiB: rssMiB(pid), heapMB: await heapMB() }

      const byCode = new Map<string, number>()
      for (const o of outcomes) byCode.set(o.code, (byCode.get(o.code) ?? 0) + 1)
      const ok = byCode.get('OK') ?? 0
      const byTier = new Map<string, number>()
      for (const o of outcomes) if (o.tier != null) byTier.set(Tier[o.tier], (byTier.get(Tier[o.tier]) ?? 0) + 1)
      const slowest = Math.max(...outcomes.map((o) => o.ms))
      const toDeliver = outcomes.filter((o) => !TARGET_ANSWERS.has(o.code)).length
      const deliveredRate = ok / toDeliver
      const figures = {
        durationS: DURATION_MS / 1000,
        callers: CALLERS,
        calls: outcomes.length,
        succeeded: ok,
        successRate: Number((ok / outcomes.length).toFixed(4)),
        deliveredRate: Number(deliveredRate.toFixed(4)),
        successBar: MIN_SUCCESS_RATE,
        statuses: Object.fromEntries(byCode),
        servedByTier: Object.fromEntries(byTier),
        hangs,
        duplicateExecutions: duplicates,
        slowestCallMs: slowest,
        callerIdleAfterLoadMs: settledAfterMs,
        callerBackgroundFailuresLogged: caller.proc.stderr.filter((l) => /(uncaught exception|unhandled rejection): exiting/.test(l))
          .length,
        callerFds: { baseline: baseline.fds, after: after.fds },
        callerRssMiB: { baseline: Math.round(baseline.rssMiB), after: Math.round(after.rssMiB) },
        callerLiveHeapMB: { beforeLoad: Number(heapBaselineMB.toFixed(1)), after: Number(after.heapMB.toFixed(1)) },
      }
      process.stdout.write(`\nCHAOS FIGURES ${JSON.stringify(figures, null, 2)}\n`)

      assert.equal(hangs, 0, 'no call hung past its deadline')
      assert.equal(duplicates, 0, 'no request ran twice')
      for (const o of outcomes) {
        if (o.code === 'OK') continue
        assert.ok(CLEAR_STATUSES.has(Code[o.code as keyof typeof Code] as Code), `a failed call ended with a clear status, got ${o.code}`)
        assert.ok(o.ms <= CALL_DEADLINE_MS + 2_000, `a failed call ended within its deadline (${o.ms} ms)`)
      }
      assert.ok(
        deliveredRate >= MIN_SUCCESS_RATE,
        `at least ${MIN_SUCCESS_RATE * 100} % of the calls to deliver succeeded (${ok}/${toDeliver})`,
      )
      assert.ok(after.fds <= baseline.fds + 40, `file descriptors back near baseline (${baseline.fds} → ${after.fds})`)
      assert.ok(after.rssMiB <= baseline.rssMiB * 2 + 64, `RSS bounded (${baseline.rssMiB} → ${after.rssMiB} MiB)`)
      assert.ok(
        after.heapMB <= heapBaselineMB * 1.2 + 8,
        `live heap back near its level before the load (${heapBaselineMB.toFixed(1)} → ${after.heapMB.toFixed(1)} MB)`,
      )
    } catch (err: unknown) {
      throw new Error(`${err instanceof Error ? err.message : String(err)}\n${h.dump()}`)
    } finally {
      await h.close()
    }
  })
})
