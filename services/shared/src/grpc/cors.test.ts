/**
 * CORS: the policy alone, then the API server answering what a browser sends (preflights, Connect and gRPC-Web
 * requests with an Origin) over HTTP/1.1 and HTTP/2, with plain node:http and node:http2 requests. The browser
 * itself is in test/e2e/browser.test.ts.
 */
import assert from 'node:assert/strict'
import { type IncomingHttpHeaders as H1Headers, request as h1request } from 'node:http'
import { type IncomingHttpHeaders as H2Headers, connect as h2connect } from 'node:http2'
import { after, before, describe, it } from 'node:test'
import { authGate, TokenAuthenticator } from '../auth.ts'
import { stargateDescriptorSets } from '../descriptors.ts'
import { createLogger, type LogLevel } from '../log.ts'
import { CORS_ALLOWED_HEADERS, CORS_EXPOSED_HEADERS, CorsPolicy, corsOriginProblem } from './cors.ts'
import { API_SERVER_DEFAULTS, ApiServer, type ApiServerOptions } from './server.ts'
import { FRAME_PREFIX_BYTES, frameLength } from './wire.ts'

const PAGE = 'http://127.0.0.1:8080'
const OTHER = 'http://127.0.0.2:8080'
const TOKEN = 'cors-test-token'

describe('cors - policy', () => {
  it('cors - origins must be * or exactly what a browser sends as Origin', () => {
    for (const ok of ['*', 'http://localhost:8080', 'https://app.example.com', 'http://[::1]:3000']) {
      assert.equal(corsOriginProblem(ok), undefined, ok)
    }
    assert.match(corsOriginProblem('https://app.example.com/') ?? '', /use "https:\/\/app\.example\.com"/)
    assert.match(corsOriginProblem('https://app.example.com:443') ?? '', /use "https:\/\/app\.example\.com"/)
    assert.match(corsOriginProblem('https://app.example.com/ui') ?? '', /no path/)
    assert.match(corsOriginProblem('HTTPS://App.example.com') ?? '', /use "https:\/\/app\.example\.com"/)
    assert.match(corsOriginProblem('app.example.com') ?? '', /scheme:\/\/host\[:port\]/)
    assert.match(corsOriginProblem('ftp://example.com') ?? '', /http:\/\/ or https:\/\//)
    assert.throws(() => new CorsPolicy([PAGE, 'example.com'], 1), /CORS origin "example.com" is not an origin/)
  })

  it('cors - a listed origin is allowed and varies by origin; an unlisted one gets nothing but Vary', () => {
    const p = new CorsPolicy([PAGE], 60)
    assert.deepEqual(p.preflight('OPTIONS', PAGE, 'POST'), {
      'access-control-allow-origin': PAGE,
      'access-control-allow-methods': 'POST, GET',
      'access-control-allow-headers': CORS_ALLOWED_HEADERS.join(', '),
      'access-control-max-age': '60',
      vary: 'Origin',
    })
    assert.equal(p.preflight('OPTIONS', OTHER, 'POST'), undefined)
    assert.equal(p.preflight('OPTIONS', undefined, 'POST'), undefined, 'no Origin: not a CORS preflight')
    assert.equal(p.preflight('OPTIONS', PAGE, undefined), undefined, 'no Access-Control-Request-Method: not a preflight')
    assert.equal(p.preflight('POST', PAGE, 'POST'), undefined)
    assert.deepEqual(p.response(PAGE), {
      'access-control-allow-origin': PAGE,
      'access-control-expose-headers': CORS_EXPOSED_HEADERS.join(', '),
      vary: 'Origin',
    })
    assert.deepEqual(p.response(OTHER), { vary: 'Origin' })
    assert.deepEqual(p.response(undefined), { vary: 'Origin' })
  })

  it('cors - * allows any origin literally, without credentials and without Vary', () => {
    const p = new CorsPolicy([PAGE, '*'], 60)
    assert.equal(p.allowsAnyOrigin, true)
    const pre = p.preflight('OPTIONS', 'https://anything.example', 'POST')
    assert.equal(pre?.['access-control-allow-origin'], '*')
    assert.equal(pre?.vary, undefined)
    assert.equal(pre?.['access-control-allow-credentials'], undefined)
    // authorization must be listed by name: a wildcard in Allow-Headers would not cover it.
    assert.ok(pre?.['access-control-allow-headers']?.split(', ').includes('authorization'))
    assert.deepEqual(p.response(OTHER)['access-control-allow-origin'], '*')
  })
})

// ---------------------------------------------------------------- the API server

interface Answer {
  status: number
  headers: Record<string, string>
  body: Buffer
}

interface Req {
  method: string
  path: string
  headers: Record<string, string>
  body?: Uint8Array | string
}

/** One request over HTTP/1.1 (node:http, a fresh connection). */
function http1(addr: string, req: Req): Promise<Answer> {
  const [host, port] = addr.split(':') as [string, string]
  return new Promise((resolve, reject) => {
    const r = h1request({ host, port: Number(port), method: req.method, path: req.path, headers: req.headers, agent: false }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: flat(res.headers), body: Buffer.concat(chunks) }))
      res.on('error', reject)
    })
    r.on('error', reject)
    r.end(req.body)
  })
}

/** One request over HTTP/2 (node:http2, prior knowledge, as the API port accepts it without TLS). */
function http2(addr: string, req: Req): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const session = h2connect(`http://${addr}`)
    session.on('error', reject)
    const stream = session.request({ ':method': req.method, ':path': req.path, ...req.headers }, { endStream: req.body == null })
    let status = 0
    let headers: Record<string, string> = {}
    const chunks: Buffer[] = []
    stream.on('response', (h) => {
      status = Number(h[':status'])
      headers = flat(h)
    })
    stream.on('data', (c: Buffer) => chunks.push(c))
    stream.on('end', () => {
      session.close()
      resolve({ status, headers, body: Buffer.concat(chunks) })
    })
    stream.on('error', reject)
    if (req.body != null) stream.end(req.body)
  })
}

function flat(h: H1Headers | H2Headers): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [k, v] of Object.entries(h)) if (v != null && !k.startsWith(':')) out[k] = Array.isArray(v) ? v.join(', ') : String(v)
  return out
}

const corsHeaderNames = (a: Answer): string[] => Object.keys(a.headers).filter((k) => k.startsWith('access-control-'))

const HEALTH_CHECK = '/grpc.health.v1.Health/Check'

/** What Chromium sends before a cross-origin Connect or gRPC-Web POST (never with the token). */
const preflight = (origin: string, requestHeaders: string): Req => ({
  method: 'OPTIONS',
  path: HEALTH_CHECK,
  headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': requestHeaders },
})

/** A Connect unary call (JSON) as connect-web sends it. */
const connectCall = (origin: string, token?: string): Req => ({
  method: 'POST',
  path: HEALTH_CHECK,
  headers: {
    origin,
    'content-type': 'application/json',
    'connect-protocol-version': '1',
    ...(token != null ? { authorization: `Bearer ${token}` } : {}),
  },
  body: '{}',
})

/** A gRPC-Web unary call (binary, an empty HealthCheckRequest) as connect-web sends it. */
const grpcWebCall = (origin: string, token?: string): Req => ({
  method: 'POST',
  path: HEALTH_CHECK,
  headers: {
    origin,
    'content-type': 'application/grpc-web+proto',
    'x-grpc-web': '1',
    'x-user-agent': 'connect-es/2',
    ...(token != null ? { authorization: `Bearer ${token}` } : {}),
  },
  body: new Uint8Array([0, 0, 0, 0, 0]),
})

/** The grpc-status of a gRPC-Web response: in the headers (trailers-only) or in the trailer frame of the body. */
function grpcWebStatus(a: Answer): string | undefined {
  if (a.headers['grpc-status'] != null) return a.headers['grpc-status']
  let at = 0
  while (at + FRAME_PREFIX_BYTES <= a.body.length) {
    const len = frameLength(a.body, at)
    const end = at + FRAME_PREFIX_BYTES + len
    if ((a.body[at] as number) & 0x80) return /grpc-status:\s*(\d+)/i.exec(a.body.subarray(at + FRAME_PREFIX_BYTES, end).toString())?.[1]
    at = end
  }
  return undefined
}

describe('cors - API server over HTTP/1.1 and HTTP/2', () => {
  const servers: ApiServer[] = []
  const warnings: string[] = []
  let listed: string
  let any: string
  let off: string

  async function start(options: Partial<ApiServerOptions>, level: LogLevel = 'silent'): Promise<string> {
    const server = new ApiServer({
      services: [],
      descriptorSets: stargateDescriptorSets(),
      log: createLogger('test:cors', { level, write: (line) => warnings.push(line) }),
      ...options,
    })
    servers.push(server)
    const { port } = await server.listen('127.0.0.1', 0)
    return `127.0.0.1:${port}`
  }

  before(async () => {
    const gate = authGate(new TokenAuthenticator([TOKEN]), { healthOpen: false })
    listed = await start({ corsAllowOrigins: [PAGE], gate })
    any = await start({ corsAllowOrigins: ['*'] }, 'warn')
    off = await start({ gate })
  })
  after(async () => {
    await Promise.all(servers.map((s) => s.stop(0)))
  })

  for (const [name, send] of [
    ['HTTP/1.1', http1],
    ['HTTP/2', http2],
  ] as const) {
    it(`cors - ${name}: a preflight from a listed origin is answered without the token`, async () => {
      for (const requested of [
        'content-type,connect-protocol-version,authorization',
        'content-type,x-grpc-web,x-user-agent,authorization',
        'content-type,x-grpc-web,x-user-agent,authorization,stargate-peer',
      ]) {
        const a = await send(listed, preflight(PAGE, requested))
        assert.equal(a.status, 204)
        assert.equal(a.headers['access-control-allow-origin'], PAGE)
        assert.deepEqual(a.headers['access-control-allow-methods']?.split(', '), ['POST', 'GET'])
        assert.deepEqual(a.headers['access-control-allow-headers']?.split(', '), [
          'content-type',
          'connect-protocol-version',
          'connect-timeout-ms',
          'x-grpc-web',
          'x-user-agent',
          'grpc-timeout',
          'authorization',
          'stargate-peer',
          'stargate-idempotency-key',
        ])
        assert.equal(a.headers['access-control-max-age'], String(API_SERVER_DEFAULTS.corsMaxAgeSeconds))
        assert.equal(a.headers['access-control-allow-credentials'], undefined)
        assert.equal(a.headers.vary, 'Origin')
        assert.equal(a.body.length, 0)
      }
    })

    it(`cors - ${name}: an unlisted origin gets no CORS header, on the preflight and on the call`, async () => {
      const pre = await send(listed, preflight(OTHER, 'content-type,authorization'))
      assert.deepEqual(corsHeaderNames(pre), [], JSON.stringify(pre.headers))
      assert.notEqual(pre.status, 204)
      // The server still answers (a browser then withholds the answer from the page; curl is not a browser).
      const call = await send(listed, connectCall(OTHER, TOKEN))
      assert.equal(call.status, 200)
      assert.deepEqual(corsHeaderNames(call), [])
      assert.equal(call.headers.vary, 'Origin')
    })

    it(`cors - ${name}: Connect calls from a listed origin carry the CORS headers, errors included`, async () => {
      const ok = await send(listed, connectCall(PAGE, TOKEN))
      assert.equal(ok.status, 200, ok.body.toString())
      assert.deepEqual(JSON.parse(ok.body.toString()), { status: 'SERVING' })
      assert.equal(ok.headers['access-control-allow-origin'], PAGE)
      const denied = await send(listed, connectCall(PAGE))
      assert.equal(denied.status, 401)
      assert.equal((JSON.parse(denied.body.toString()) as { code: string }).code, 'unauthenticated')
      assert.equal(denied.headers['access-control-allow-origin'], PAGE)
      assert.deepEqual(denied.headers['access-control-expose-headers']?.split(', '), [
        'grpc-status',
        'grpc-message',
        'grpc-status-details-bin',
        'content-encoding',
        'connect-content-encoding',
        'stargate-peer',
        'stargate-tier',
      ])
      // An unknown path answers 404 to the page, not an opaque CORS failure.
      const missing = await send(listed, { ...connectCall(PAGE, TOKEN), path: '/no.such.Service/Method' })
      assert.equal(missing.status, 404)
      assert.equal(missing.headers['access-control-allow-origin'], PAGE)
    })

    it(`cors - ${name}: gRPC-Web calls from a listed origin carry the CORS headers; the status is readable`, async () => {
      const ok = await send(listed, grpcWebCall(PAGE, TOKEN))
      assert.equal(ok.status, 200)
      assert.equal(grpcWebStatus(ok), '0')
      assert.equal(ok.headers['access-control-allow-origin'], PAGE)
      const denied = await send(listed, grpcWebCall(PAGE))
      assert.equal(grpcWebStatus(denied), '16', 'UNAUTHENTICATED')
      assert.equal(denied.headers['access-control-allow-origin'], PAGE)
      assert.ok(denied.headers['access-control-expose-headers']?.split(', ').includes('grpc-status'))
      assert.ok(denied.headers['access-control-expose-headers']?.split(', ').includes('grpc-message'))
    })

    it(`cors - ${name}: * answers every origin with a literal *`, async () => {
      const pre = await send(any, preflight('https://elsewhere.example', 'content-type'))
      assert.equal(pre.status, 204)
      assert.equal(pre.headers['access-control-allow-origin'], '*')
      assert.equal(pre.headers.vary, undefined)
      assert.equal(pre.headers['access-control-allow-credentials'], undefined)
      const call = await send(any, connectCall('https://elsewhere.example'))
      assert.equal(call.status, 200)
      assert.equal(call.headers['access-control-allow-origin'], '*')
    })

    it(`cors - ${name}: without --cors-allow-origin nothing changes: no preflight answer, no CORS header`, async () => {
      const pre = await send(off, preflight(PAGE, 'content-type'))
      assert.notEqual(pre.status, 204)
      assert.deepEqual(corsHeaderNames(pre), [])
      assert.equal(pre.headers.vary, undefined)
      const call = await send(off, connectCall(PAGE, TOKEN))
      assert.equal(call.status, 200)
      assert.deepEqual(corsHeaderNames(call), [])
    })
  }

  it('cors - * without auth is logged as a warning at start', () => {
    assert.ok(
      warnings.some((l) => /"level":"warn".*CORS allows every origin \(\*\) and the API needs no token/.test(l)),
      warnings.join('\n'),
    )
  })
})
