import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { create, fromJson, toBinary, toJson } from '@bufbuild/protobuf'
import { timestampFromMs, ValueSchema } from '@bufbuild/protobuf/wkt'
import { Code, ConnectError } from '@connectrpc/connect'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { decodePeerFrame } from '@stargate/shared/envelope'
import { PeerFrameSchema, type PresenceRecord } from '@stargate/shared/gen/envelope'
import { NatsState, Tier } from '@stargate/shared/gen/gateway'
import { loadOrCreateIdentity } from '@stargate/shared/identity'
import { signPresence, verifyPresence } from '@stargate/shared/presence-sign'
import { Sealer } from '@stargate/shared/seal'
import { connect, type Msg, type NatsConnection, nkeys } from 'nats'
import { eventually } from '../lib/eventually.ts'
import { freePort, type GatewayHandle, Harness, type Proc } from '../lib/harness.ts'

const json = (v: unknown) => ({ case: 'json' as const, value: fromJson(ValueSchema, v as never) })

/** A sealed ping request from `sealer` to `recipient`, as a gateway's NATS tier would send it. */
function sealedPing(sealer: Sealer, recipient: string, requestId: string): Uint8Array {
  const frame = toBinary(
    PeerFrameSchema,
    create(PeerFrameSchema, {
      kind: {
        case: 'request',
        value: {
          requestId,
          method: 'ping',
          callerPeerId: sealer.peerId,
          tier: Tier.NATS,
          exchangeId: 1n,
          timeout: { seconds: 30n },
          payload: { case: 'data', value: new Uint8Array(16) },
        },
      },
    }),
  )
  return sealer.seal(frame, recipient)
}

/** Publishes sealed requests with reply subjects it listens on, keeping at most `window` unanswered. */
class Flooder {
  replies = 0
  private sent = 0
  private readonly nc: NatsConnection
  private readonly inbox: string
  private wake?: () => void

  constructor(nc: NatsConnection, inbox: string) {
    this.nc = nc
    this.inbox = inbox
    nc.subscribe(`${inbox}.>`, {
      callback: () => {
        this.replies++
        this.wake?.()
      },
    })
  }

  async send(subject: string, data: Uint8Array, window = 1_500): Promise<void> {
    while (this.sent - this.replies >= window) {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no answer for 60 s with ${this.sent - this.replies} outstanding`)), 60_000)
        this.wake = () => {
          if (this.sent - this.replies < window / 2) {
            clearTimeout(timer)
            this.wake = undefined
            resolve()
          }
        }
      })
    }
    this.nc.publish(subject, data, { reply: `${this.inbox}.${++this.sent}` })
  }

  /** Resolves once `count` answers arrived in total. */
  async answered(count: number): Promise<void> {
    await this.nc.flush()
    while (this.replies < count) {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${this.replies} answers of ${count} after 60 s`)), 60_000)
        this.wake = () => {
          if (this.replies >= count) {
            clearTimeout(timer)
            resolve()
          }
        }
      })
    }
  }
}

describe('NATS sealing under attack', () => {
  const h = new Harness()
  let a: GatewayHandle
  let b: GatewayHandle
  let bServe: Proc
  let spy: NatsConnection
  let metricsPort: number
  const captured: Msg[] = []
  const MAX_SESSIONS = 64

  before(async () => {
    const nats = await h.nats()
    spy = await connect({ servers: nats.url })
    metricsPort = await freePort()
    b = await h.gateway(
      ['--nats', nats.url, '--metrics-listen', `127.0.0.1:${metricsPort}`, '--nats-replay-max-sessions', String(MAX_SESSIONS)],
      {
        name: 'b',
      },
    )
    a = await h.gateway(['--nats', nats.url], { name: 'a' })
    bServe = await h.serveClient(b.api)
    spy.subscribe(`stargate.call.${b.peerId}`, { callback: (_err, msg) => captured.push(msg) })
    await spy.flush()
  })
  after(async () => {
    await spy.close()
    await h.close()
  })

  const runs = (requestId: string): number => bServe.stdout.filter((l) => l.startsWith('HANDLED ') && l.split(' ')[2] === requestId).length

  async function refused(reason: string): Promise<number> {
    const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text()
    const m = new RegExp(`stargate_nats_refused(?:_total)?\\{[^}]*reason="${reason}"[^}]*\\} (\\d+)`).exec(text)
    return m == null ? 0 : Number(m[1])
  }

  /** Waits until B's /metrics (the refusal counters have no other outlet) satisfy cond. */
  const untilMetrics = (cond: () => Promise<boolean>, what: string): Promise<boolean> =>
    eventually(what, cond, { timeoutMs: 60_000, intervalMs: 200 })

  it('sealed - 200 000 messages from fresh identities and a full replay guard: a captured request replayed is not run again', async () => {
    const key = `captured-${Date.now()}`
    const res = await a.client.call({
      peerId: b.peerId,
      method: 'echo',
      payload: json({ n: 1 }),
      idempotencyKey: key,
      options: { allowedTiers: [Tier.NATS] },
    })
    assert.equal(res.tier, Tier.NATS)
    assert.equal(runs(key), 1)
    await spy.flush()
    const request = captured.find((m) => m.reply != null && m.reply !== '')
    assert.ok(request != null, 'the sealed request was seen on NATS')

    const flood = await connect({ servers: spy.getServer() })
    try {
      const flooder = new Flooder(flood, '_INBOX.flood')
      const subject = `stargate.call.${b.peerId}`
      // Eight fresh identities open one session each (as a gateway would): B now tracks A's and these.
      const identities = await Promise.all(Array.from({ length: 8 }, () => generateKeyPair('Ed25519')))
      const sealers = identities.map((k) => new Sealer(k))
      for (const [i, s] of sealers.entries()) await flooder.send(subject, sealedPing(s, b.peerId, `flood-${i}-0`))
      await flooder.answered(8)

      // Fill the replay guard: fresh identities, a new session (sealer) per message, 16 each (the per-sender
      // limit). 1 + 8 + 64 sessions for 64 places: the last 9 are refused, and no tracked session is evicted.
      const fillers: PrivateKey[] = await Promise.all(Array.from({ length: 4 }, () => generateKeyPair('Ed25519')))
      for (const [i, k] of fillers.entries()) {
        for (let j = 0; j < 16; j++) await flooder.send(subject, sealedPing(new Sealer(k), b.peerId, `fill-${i}-${j}`))
      }
      const overflow = 1 + 8 + 4 * 16 - MAX_SESSIONS
      await flooder.answered(8 + 4 * 16 - overflow)
      await untilMetrics(async () => (await refused('full')) >= overflow, `${overflow} refusals as full`)
      assert.equal(await refused('full'), overflow)

      // Replay inside the window: refused by the seal as a replay (A's session was not evicted to make room).
      const answers: Msg[] = []
      const sub = spy.subscribe('_INBOX.attacker.>', { callback: (_err, m) => answers.push(m) })
      spy.publish(request.subject, request.data, { reply: '_INBOX.attacker.1' })
      await untilMetrics(async () => (await refused('replay')) >= 1, 'the first replay refused')
      assert.equal(runs(key), 1)

      // 200 000 unique messages on the established sessions: accepted and answered although the guard is
      // full (fail closed refuses new sessions only).
      const perIdentity = 25_000
      const started = Date.now()
      for (let n = 1; n <= perIdentity; n++) {
        for (const [i, s] of sealers.entries()) await flooder.send(subject, sealedPing(s, b.peerId, `flood-${i}-${n}`))
      }
      await flooder.answered(8 + 4 * 16 - overflow + 8 * perIdentity)
      const floodMs = Date.now() - started

      // The captured request again: refused (as a replay, or as stale once its minute is over).
      const before = (await refused('replay')) + (await refused('stale'))
      spy.publish(request.subject, request.data, { reply: '_INBOX.attacker.2' })
      await untilMetrics(async () => (await refused('replay')) + (await refused('stale')) > before, 'the second replay refused')
      await spy.flush()
      assert.equal(runs(key), 1, 'the handler ran the captured request once')
      assert.equal(answers.length, 0, 'no answer to a replay')
      sub.unsubscribe()

      // A is still served: its session is tracked, the guard refuses only new sessions.
      const again = await a.client.call({ peerId: b.peerId, method: 'echo', payload: json(2), options: { allowedTiers: [Tier.NATS] } })
      assert.equal(again.tier, Tier.NATS)
      console.log(
        `# flood: ${8 * perIdentity} messages in ${floodMs} ms (${Math.round((8 * perIdentity * 1000) / floodMs)}/s) answered; ` +
          `refused: full ${await refused('full')}, replay ${await refused('replay')}, stale ${await refused('stale')}`,
      )
    } finally {
      await flood.close()
    }
  })
})

describe('NATS answers and presence records', () => {
  const h = new Harness()
  let a: GatewayHandle
  let b: GatewayHandle
  let nc: NatsConnection
  const presence: Array<{ bytes: Uint8Array; record: PresenceRecord }> = []
  let arrived: (() => void) | undefined

  /** The first presence record of peerId seen on NATS that matches, as published (bytes). */
  async function recordOf(peerId: string, match: (r: PresenceRecord) => boolean): Promise<Uint8Array> {
    for (;;) {
      const found = presence.find((p) => p.record.peerId === peerId && match(p.record))
      if (found != null) return found.bytes
      await new Promise<void>((resolve) => {
        arrived = resolve
      })
    }
  }

  before(async () => {
    const nats = await h.nats()
    nc = await connect({ servers: nats.url })
    nc.subscribe('stargate.presence', {
      callback: (_err, msg) => {
        void verifyPresence(msg.data).then((record) => {
          presence.push({ bytes: msg.data, record })
          arrived?.()
        })
      },
    })
    await nc.flush()
    b = await h.gateway(['--nats', nats.url], { name: 'b' })
    a = await h.gateway(['--nats', nats.url], { name: 'a' })
  })
  after(async () => {
    await nc.close()
    await h.close()
  })

  /**
   * A responder holding the identity of peer X (a compromised or misbehaving target): it answers A's
   * requests first with a correctly sealed response for another request id, then (when `genuine`) with
   * the real one.
   */
  async function forgingResponder(genuine: boolean): Promise<{ peerId: string; stop: () => void }> {
    const x = new Sealer(await generateKeyPair('Ed25519'))
    const sub = nc.subscribe(`stargate.call.${x.peerId}`, {
      callback: (_err, msg) => {
        const opened = x.open(msg.data)
        const frame = decodePeerFrame(opened.frame)
        if (frame.kind.case !== 'request') return
        const req = frame.kind.value
        const answer = (requestId: string, who: string): Uint8Array =>
          x.seal(
            toBinary(
              PeerFrameSchema,
              create(PeerFrameSchema, {
                kind: {
                  case: 'response',
                  value: { requestId, exchangeId: req.exchangeId, responderPeerId: x.peerId, result: json({ who }) },
                },
              }),
            ),
            opened.senderPeerId,
          )
        msg.respond(answer(`${req.requestId}-other`, 'forged'))
        if (genuine) msg.respond(answer(req.requestId, 'genuine'))
      },
    })
    await nc.flush()
    return { peerId: x.peerId, stop: () => sub.unsubscribe() }
  }

  it('nats - an answer sealed by the target for another request id is dropped; the genuine answer settles the call', async () => {
    const x = await forgingResponder(true)
    try {
      const res = await a.client.call({
        peerId: x.peerId,
        method: 'echo',
        payload: json(1),
        options: { allowedTiers: [Tier.NATS], maxRetries: 0 },
      })
      assert.deepEqual(toJson(ValueSchema, res.payload.value as never), { who: 'genuine' })
      await a.proc.waitFor(/dropped NATS answer.*is for request .*-other/)
    } finally {
      x.stop()
    }
  })

  it('nats - with only a forged answer the call fails with DEADLINE_EXCEEDED within its deadline', async () => {
    const x = await forgingResponder(false)
    try {
      const started = Date.now()
      const err = await a.client
        .call(
          { peerId: x.peerId, method: 'echo', payload: json(1), options: { allowedTiers: [Tier.NATS], maxRetries: 0 } },
          { timeoutMs: 2_000 },
        )
        .then(
          () => assert.fail('a forged answer must not be taken'),
          (e: unknown) => ConnectError.from(e),
        )
      const tookMs = Date.now() - started
      console.log(`# forged-only answer: ${Code[err.code]} after ${tookMs} ms: ${err.rawMessage}`)
      assert.equal(err.code, Code.DeadlineExceeded)
      assert.ok(tookMs < 2_000 + 1_500, `${tookMs} ms`)
    } finally {
      x.stop()
    }
  })

  async function discover(capability: string): Promise<string[]> {
    return (await a.client.discover({ capability })).peers.map((p) => p.peerId)
  }

  it('presence - a replayed older record of a peer is ignored; a stale one too', async () => {
    // B's first records announce no capability; a Serve client then makes B announce "echo".
    const old = await recordOf(b.peerId, (r) => r.capabilities.length === 0)
    const serve = await h.serveClient(b.api)
    await eventually('A learned that B serves echo', async () => (await discover('echo')).includes(b.peerId), 30_000)
    nc.publish('stargate.presence', old)
    await a.proc.waitFor(/ignored presence record older than the newest one seen/)
    assert.ok((await discover('echo')).includes(b.peerId), 'the older record did not replace the newer one')

    const { privateKey } = await loadOrCreateIdentity(b.identity)
    const stale = await signPresence(
      { capabilities: ['stale-capability'], issuedAt: timestampFromMs(Date.now() - 10 * 60_000), sequence: 2n ** 62n },
      privateKey,
    )
    nc.publish('stargate.presence', stale)
    await a.proc.waitFor(/ignored stale presence record/)
    assert.deepEqual(await discover('stale-capability'), [])
    assert.ok((await discover('echo')).includes(b.peerId))
    await serve.stop()
  })
})

describe('NATS credentials and TLS', () => {
  const h = new Harness()
  after(() => h.close())

  /** A test CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl. */
  async function certificates(dir: string): Promise<Record<'ca' | 'serverCert' | 'serverKey' | 'clientCert' | 'clientKey', string>> {
    const f = (name: string) => join(dir, name)
    const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' })
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes']
    ssl('req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '1', '-subj', '/CN=stargate test CA')
    await writeFile(f('server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n')
    await writeFile(f('client.ext'), 'extendedKeyUsage=clientAuth\n')
    for (const who of ['server', 'client']) {
      ssl('req', ...ec, '-keyout', f(`${who}.key`), '-out', f(`${who}.csr`), '-subj', `/CN=stargate test ${who}`)
      ssl(
        'x509',
        '-req',
        '-in',
        f(`${who}.csr`),
        '-CA',
        f('ca.pem'),
        '-CAkey',
        f('ca.key'),
        '-CAcreateserial',
        '-days',
        '1',
        '-out',
        f(`${who}.pem`),
        '-extfile',
        f(`${who}.ext`),
      )
    }
    return {
      ca: f('ca.pem'),
      serverCert: f('server.pem'),
      serverKey: f('server.key'),
      clientCert: f('client.pem'),
      clientKey: f('client.key'),
    }
  }

  it('nats auth - users with a password (from a file) and an nkey (seed file), over TLS with client certificates: a call crosses', async () => {
    const dir = await h.tmp()
    const pem = await certificates(dir)
    const user = nkeys.createUser()
    await writeFile(join(dir, 'b.nk'), `${new TextDecoder().decode(user.getSeed())}\n`)
    await writeFile(join(dir, 'a.password'), 'pass for a\n')
    const nats = await h.nats({
      config: [
        `tls { cert_file: "${pem.serverCert}", key_file: "${pem.serverKey}", ca_file: "${pem.ca}", verify: true, timeout: 5 }`,
        'authorization { users = [',
        '  { user: "gateway-a", password: "pass for a" }',
        `  { nkey: "${user.getPublicKey()}" }`,
        '] }',
      ].join('\n'),
    })
    const tls = ['--nats-tls-ca', pem.ca, '--nats-tls-cert', pem.clientCert, '--nats-tls-key', pem.clientKey]
    const b = await h.gateway(['--nats', nats.url, '--nats-nkey', join(dir, 'b.nk'), ...tls], { name: 'b' })
    const a = await h.gateway(['--nats', nats.url, '--nats-user', 'gateway-a', '--nats-password-file', join(dir, 'a.password'), ...tls], {
      name: 'a',
    })
    await h.serveClient(b.api)
    const res = await a.client.call({
      peerId: b.peerId,
      method: 'echo',
      payload: json({ over: 'tls' }),
      options: { allowedTiers: [Tier.NATS] },
    })
    assert.equal(res.tier, Tier.NATS)
    assert.deepEqual(toJson(ValueSchema, res.payload.value as never), { over: 'tls' })
    const status = (await a.client.getStatus({})).nats
    assert.equal(status?.state, NatsState.CONNECTED)
    assert.equal(status?.connectedServer, `127.0.0.1:${nats.port}`)

    // A wrong password (from the environment) is refused: logged, the gateway stays up and reports it.
    const c = await h.gateway(['--nats', nats.url, '--nats-user', 'gateway-a', ...tls], {
      name: 'c',
      env: { STARGATE_NATS_PASSWORD: 'wrong' },
    })
    const [refusedLine] = await c.proc.waitFor(/^.*nats connect failed.*Authorization Violation.*$/i)
    console.log(`# wrong password: ${refusedLine}`)
    assert.equal((await c.client.getStatus({})).nats?.state, NatsState.DISCONNECTED)
    // Without a client certificate the TLS server refuses the connection.
    const d = await h.gateway(
      ['--nats', nats.url, '--nats-user', 'gateway-a', '--nats-password-file', join(dir, 'a.password'), '--nats-tls-ca', pem.ca],
      {
        name: 'd',
      },
    )
    const [noCertLine] = await d.proc.waitFor(/^.*nats (connect failed|error|disconnected).*$/)
    console.log(`# no client certificate: ${noCertLine}`)
    assert.notEqual((await d.client.getStatus({})).nats?.state, NatsState.CONNECTED)
  })

  /** A NATS JWT (what nsc writes): claims signed by the issuer's nkey, for an operator-mode test server. */
  function natsJwt(issuer: ReturnType<typeof nkeys.createOperator>, subject: string, nats: Record<string, unknown>): string {
    const claims: Record<string, unknown> = {
      iat: Math.floor(Date.now() / 1000),
      iss: issuer.getPublicKey(),
      sub: subject,
      nats: { ...nats, version: 2 },
    }
    claims.jti = createHash('sha256').update(JSON.stringify(claims)).digest('hex')
    const head = Buffer.from(JSON.stringify({ typ: 'JWT', alg: 'ed25519-nkey' })).toString('base64url')
    const body = Buffer.from(JSON.stringify(claims)).toString('base64url')
    return `${head}.${body}.${Buffer.from(issuer.sign(new TextEncoder().encode(`${head}.${body}`))).toString('base64url')}`
  }

  it('nats auth - credentials files (user JWT and nkey seed) against an operator-mode nats-server', async () => {
    const dir = await h.tmp()
    const operator = nkeys.createOperator()
    const account = nkeys.createAccount()
    const unlimited = { subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1 }
    const nats = await h.nats({
      config: [
        `operator: ${natsJwt(operator, operator.getPublicKey(), { type: 'operator' })}`,
        'resolver: MEMORY',
        `resolver_preload: { ${account.getPublicKey()}: ${natsJwt(operator, account.getPublicKey(), { type: 'account', limits: unlimited })} }`,
      ].join('\n'),
    })
    const credsFile = async (name: string): Promise<string> => {
      const user = nkeys.createUser()
      const jwt = natsJwt(account, user.getPublicKey(), { type: 'user', pub: {}, sub: {}, subs: -1, data: -1, payload: -1 })
      const seed = new TextDecoder().decode(user.getSeed())
      const file = join(dir, `${name}.creds`)
      await writeFile(
        file,
        `-----BEGIN NATS USER JWT-----\n${jwt}\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n${seed}\n------END USER NKEY SEED------\n`,
      )
      return file
    }
    const b = await h.gateway(['--nats', nats.url, '--nats-creds', await credsFile('b')], { name: 'b' })
    const a = await h.gateway(['--nats', nats.url], { name: 'a', env: { STARGATE_NATS_CREDS: await credsFile('a') } })
    const res = await a.client.call({ peerId: b.peerId, method: 'ping', payload: json(1), options: { allowedTiers: [Tier.NATS] } })
    assert.equal(res.tier, Tier.NATS)
    // Without credentials the same server refuses the connection.
    const c = await h.gateway(['--nats', nats.url], { name: 'c' })
    await c.proc.waitFor(/nats connect failed.*Authorization Violation/i)
  })

  it('nats auth - a token from the environment or a file', async () => {
    const dir = await h.tmp()
    await writeFile(join(dir, 'token'), 't0ken-for-stargate\n')
    const nats = await h.nats({ config: 'authorization { token: "t0ken-for-stargate" }' })
    const b = await h.gateway(['--nats', nats.url, '--nats-token-file', join(dir, 'token')], { name: 'b' })
    const a = await h.gateway(['--nats', nats.url], { name: 'a', env: { STARGATE_NATS_TOKEN: 't0ken-for-stargate' } })
    const res = await a.client.call({ peerId: b.peerId, method: 'ping', payload: json(1), options: { allowedTiers: [Tier.NATS] } })
    assert.equal(res.tier, Tier.NATS)
  })
})
