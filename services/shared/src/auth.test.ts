import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { authGate, loadApiSecurity, loadAuthTokens, parseTokenFile, scopeAllows, scopeText, TokenAuthenticator } from './auth.ts'
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

  it('auth - a scoped token may make a tunnelled call only when its call: patterns allow the method', () => {
    const gate = authGate(new TokenAuthenticator(parseTokenFile('s methods=call:routeguide.RouteGuide.*\nwide\n')), { healthOpen: true })
    const req = (service: string, token: string, tunnelled = true) => ({
      service,
      method: 'GetFeature',
      header: new Headers({ authorization: `Bearer ${token}` }),
      tunnelled,
    })
    gate(req('routeguide.RouteGuide', 's'))
    assert.throws(
      () => gate(req('other.Service', 's')),
      (e: unknown) =>
        e instanceof StargateError && e.code === Code.PermissionDenied && /may not call "other\.Service\.GetFeature"/.test(e.rawMessage),
    )
    gate(req('other.Service', 'wide'))
    // local methods are checked by their handlers (Call's method is in its request)
    gate(req('stargate.v1.GatewayService', 's', false))
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
    assert.deepEqual(parseTokenFile('# tokens\n a1 \r\n\nb2\n#c3\nd#4 # comment\n'), [{ token: 'a1' }, { token: 'b2' }, { token: 'd#4' }])
    const file = join(dir, 'tokens')
    await writeFile(file, 'fromfile\n')
    assert.deepEqual(await loadAuthTokens({ tokenFile: file, tokens: ['fromenv', ' '] }), [{ token: 'fromenv' }, { token: 'fromfile' }])
    assert.deepEqual(await loadAuthTokens({}), [])
  })

  it('auth - a scoped token may serve and call only what its scope lists; an unscoped one everything', () => {
    const [scoped, open, callOnly] = parseTokenFile(
      's3cret methods=serve:a.*,call:ping,call:b.x # scoped\nplain\t# not\nc2 methods=call:*\n',
    )
    const auth = new TokenAuthenticator([scoped!, open!, callOnly!])
    const s = auth.check('Bearer s3cret')
    assert.ok(scopeAllows(s, 'serve', 'a.x'))
    assert.ok(!scopeAllows(s, 'serve', 'b.x'))
    assert.ok(scopeAllows(s, 'call', 'ping'))
    assert.ok(scopeAllows(s, 'call', 'b.x'))
    assert.ok(!scopeAllows(s, 'call', 'a.x'))
    assert.equal(scopeText(s), 'methods=serve:a.*,call:ping,call:b.x')
    const o = auth.check('Bearer plain')
    assert.ok(scopeAllows(o, 'serve', 'anything') && scopeAllows(o, 'call', 'anything'))
    assert.equal(scopeText(o), 'every method')
    // a kind the scope does not list is not allowed at all
    assert.ok(!scopeAllows(auth.check('Bearer c2'), 'serve', 'a.x'))
    // the identity is the token's digest, the same for every request with that token, distinct per token
    assert.equal(auth.check('Bearer s3cret').id, s.id)
    assert.notEqual(o.id, s.id)
    assert.ok(!(s.id ?? '').includes('s3cret'))
  })

  it('auth - a bad scope or a token repeated with another scope names the line', () => {
    assert.throws(() => parseTokenFile('ok\nt methods=serve:a*\n', 'f'), /--auth-token-file f line 2: .*"\*" is allowed only/)
    assert.throws(() => parseTokenFile('t methods=write:a\n', 'f'), /line 1: "write:a" in methods= must be serve:PATTERN or call:PATTERN/)
    assert.throws(() => parseTokenFile('t roles=admin\n', 'f'), /line 1: unknown "roles=admin"/)
    assert.throws(() => parseTokenFile('t methods=serve:a\nx\nt methods=serve:b\n', 'f'), /line 3: the token of line 1 again/)
    assert.deepEqual(parseTokenFile('t methods=serve:a\nt methods=serve:a\n').length, 2, 'the same line twice is harmless')
    assert.throws(() => new TokenAuthenticator(['t', ...parseTokenFile('t methods=call:a\n')]), /configured twice with different scopes/)
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
