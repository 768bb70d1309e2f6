import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { authGate, loadApiSecurity, loadAuthTokens, parseTokenFile, TokenAuthenticator } from './auth.ts'
import { Code, StargateError } from './errors.ts'

function expectUnauthenticated(fn: () => unknown, re?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof StargateError)
    assert.equal(err.code, Code.Unauthenticated)
    if (re != null) assert.match(err.message, re)
    return true
  })
}

const dir = await mkdtemp(join(tmpdir(), 'stargate-auth-'))
after(() => rm(dir, { recursive: true, force: true }))

describe('auth', () => {
  it('auth - accepts any configured token, case-insensitive scheme', () => {
    const auth = new TokenAuthenticator(['alpha', 'beta'])
    auth.check('Bearer alpha')
    auth.check('bearer beta')
    auth.check('Bearer   beta  ')
  })

  it('auth - missing, malformed and wrong tokens are UNAUTHENTICATED with a hint', () => {
    const auth = new TokenAuthenticator(['alpha'])
    expectUnauthenticated(() => auth.check(undefined), /authorization: Bearer <token>/)
    expectUnauthenticated(() => auth.check(''), /requires a token/)
    expectUnauthenticated(() => auth.check('alpha'), /malformed/)
    expectUnauthenticated(() => auth.check('Basic alpha'), /malformed/)
    expectUnauthenticated(() => auth.check('Bearer alph'), /invalid API token/)
    expectUnauthenticated(() => auth.check('Bearer alphaa'), /invalid API token/)
    expectUnauthenticated(() => auth.check('Bearer alpha extra'), /malformed/)
  })

  it('auth - refuses an empty token set (auth must never be on with no way in)', () => {
    assert.throws(() => new TokenAuthenticator(['', '  ']), StargateError)
  })

  it('auth - the gate refuses every service without a token, tunnelled requests included', () => {
    const gate = authGate(new TokenAuthenticator(['alpha']), { healthOpen: true })
    const req = (service: string, header: Record<string, string>, tunnelled = false) => ({
      service,
      method: 'M',
      header: new Headers(header),
      tunnelled,
    })
    expectUnauthenticated(() => gate(req('stargate.v1.GatewayService', {})))
    gate(req('stargate.v1.GatewayService', { authorization: 'Bearer alpha' }))
    expectUnauthenticated(() => gate(req('routeguide.RouteGuide', {}, true)), /authorization: Bearer/)
    gate(req('routeguide.RouteGuide', { authorization: 'Bearer alpha' }, true))
  })

  it('auth - health (while open) and local reflection need no token; reflection passed to a peer does', () => {
    const open = authGate(new TokenAuthenticator(['alpha']), { healthOpen: true })
    const closed = authGate(new TokenAuthenticator(['alpha']), { healthOpen: false })
    const req = (service: string, tunnelled = false) => ({ service, method: 'M', header: new Headers(), tunnelled })
    open(req('grpc.health.v1.Health'))
    expectUnauthenticated(() => closed(req('grpc.health.v1.Health')))
    for (const gate of [open, closed]) {
      gate(req('grpc.reflection.v1.ServerReflection'))
      gate(req('grpc.reflection.v1alpha.ServerReflection'))
      expectUnauthenticated(() => gate(req('grpc.reflection.v1.ServerReflection', true)))
    }
  })

  it('auth - token files: one per line, comments and blanks ignored', async () => {
    assert.deepEqual(parseTokenFile('# tokens\n a1 \r\n\nb2\n#c3\n'), ['a1', 'b2'])
    const file = join(dir, 'tokens')
    await writeFile(file, 'fromfile\n')
    assert.deepEqual(await loadAuthTokens({ tokenFile: file, tokens: ['fromenv', ' '] }), ['fromenv', 'fromfile'])
    assert.deepEqual(await loadAuthTokens({}), [])
  })

  it('auth - an unreadable or empty token file stops start-up', async () => {
    await assert.rejects(loadAuthTokens({ tokenFile: join(dir, 'missing') }), /cannot read --auth-token-file/)
    const empty = join(dir, 'empty')
    await writeFile(empty, '# nothing\n\n')
    await assert.rejects(loadAuthTokens({ tokenFile: empty }), /holds no token/)
    await assert.rejects(loadAuthTokens({ tokens: ['a b'] }), /whitespace/)
  })

  it('auth - loadApiSecurity: nothing configured is plaintext without auth; bad files stop start-up', async () => {
    assert.deepEqual(await loadApiSecurity({ authHealthOpen: true }), {})
    const withTokens = await loadApiSecurity({ authHealthOpen: false, authTokens: ['alpha'] })
    assert.equal(typeof withTokens.gate, 'function')
    assert.equal(withTokens.tls, undefined)
    const notPem = join(dir, 'not.pem')
    await writeFile(notPem, 'not a certificate\n')
    await assert.rejects(loadApiSecurity({ authHealthOpen: true, tlsCertFile: notPem }), /--tls-cert.*--tls-key/)
    await assert.rejects(
      loadApiSecurity({ authHealthOpen: true, tlsCertFile: notPem, tlsKeyFile: join(dir, 'nokey') }),
      /cannot read --tls-key/,
    )
    await assert.rejects(
      loadApiSecurity({ authHealthOpen: true, tlsCertFile: notPem, tlsKeyFile: notPem }),
      (err: unknown) => err instanceof StargateError && err.code === Code.FailedPrecondition && /invalid TLS files/.test(err.message),
    )
  })
})
