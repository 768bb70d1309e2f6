/**
 * Web clients of a tunnelled service, in process and without a browser: the API server (CORS for one listed
 * origin, bearer-token gate) hands requests for a service it does not serve to the tunnel ingress (the
 * gateway's webIngress hook) → TunnelClient → in-memory link → TunnelServer → egress → a grpc-js
 * EchoService backend. connect-node clients send what connect-web sends from a page (an Origin header),
 * over HTTP/1.1 and HTTP/2. The browser itself is in test/e2e/browser.test.ts.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { Code, ConnectError, createClient } from '@connectrpc/connect'
import { createConnectTransport, createGrpcWebTransport } from '@connectrpc/connect-node'
import { authGate, TokenAuthenticator } from '@stargate/shared/auth'
import { stargateDescriptorSets } from '@stargate/shared/descriptors'
import { ApiServer, type RefusedRequest } from '@stargate/shared/grpc/server'
import { createLogger } from '@stargate/shared/log'
import { webIngress } from '../../services/gateway/src/tunnel/web.ts'
import { EchoService } from '../gen/stargate/test/v1/echo_pb.js'
import { EchoBackend, generatedPayload } from '../lib/echo.ts'
import { TunnelStack } from '../lib/tunnel-stack.ts'

const PAGE = 'http://127.0.0.1:8080'
const TOKEN = 'tunnel-web-token'
const HTTP_VERSIONS = ['1.1', '2'] as const

/** The response headers of a call, as a plain object (lower-case names). */
function record(h: Headers): Record<string, string> {
  const out: Record<string, string> = {}
  h.forEach((v, k) => {
    out[k] = v
  })
  return out
}

/** The CORS headers a page needs to read an answer: its origin allowed, and what it reads exposed. */
function assertCors(headers: Record<string, string>, what: string): void {
  assert.equal(headers['access-control-allow-origin'], PAGE, `${what}: ${JSON.stringify(headers)}`)
  const exposed = headers['access-control-expose-headers']?.split(', ') ?? []
  for (const h of ['grpc-status', 'grpc-message', 'stargate-peer', 'stargate-tier']) assert.ok(exposed.includes(h), `${what}: exposes ${h}`)
}

describe('tunnel web - Connect and gRPC-Web clients of a tunnelled service through the API server', () => {
  const echo = new EchoBackend()
  let stack: TunnelStack
  let api: ApiServer
  let base: string
  /** What the API server reported as refused by the gate (what telemetry records). */
  const refused: RefusedRequest[] = []

  before(async () => {
    const port = await echo.start()
    stack = await new TunnelStack({ expose: [`${EchoService.typeName}=127.0.0.1:${port}`] }).start()
    api = new ApiServer({
      services: [],
      descriptorSets: stargateDescriptorSets(),
      log: createLogger('test:tunnel-web', { level: 'silent' }),
      gate: authGate(new TokenAuthenticator([TOKEN]), { healthOpen: false }),
      onRefused: (r) => refused.push(r),
      corsAllowOrigins: [PAGE],
      unknownService: (stream, headers, rawHeaders) => void stack.ingress.handle(stream, headers, rawHeaders),
      unknownWeb: webIngress(stack.ingress),
    })
    base = `http://127.0.0.1:${(await api.listen('127.0.0.1', 0)).port}`
  })

  after(async () => {
    await api?.stop(0)
    await stack?.stop()
    await echo.stop()
  })

  const authed = { origin: PAGE, authorization: `Bearer ${TOKEN}` }

  for (const httpVersion of HTTP_VERSIONS) {
    it(`tunnel web - HTTP/${httpVersion}, gRPC-Web: bytes as sent both ways, CORS headers, and the peer and tier in the response headers`, async () => {
      const web = createClient(EchoService, createGrpcWebTransport({ baseUrl: base, httpVersion }))
      const payload = generatedPayload(3, 70_000)
      let headers: Record<string, string> = {}
      const browserHeaders = { referer: `${PAGE}/page`, 'sec-fetch-mode': 'cors', 'sec-ch-ua': '"Chromium";v="140"', 'x-app': 'kept' }
      const res = await web.unary({ payload }, { headers: { ...authed, ...browserHeaders }, onHeader: (h) => (headers = record(h)) })
      assert.ok(Buffer.from(res.payload).equals(Buffer.from(payload)))
      assertCors(headers, 'unary')
      assert.equal(headers['stargate-peer'], 'callee')
      assert.equal(headers['stargate-tier'], 'TIER_DIRECT')
      assert.equal(headers['content-type'], 'application/grpc-web+proto')
      // The backend gets a gRPC call: what describes only the browser side stays behind, the app's metadata crosses.
      const got = echo.lastMetadata!.toJSON()
      for (const key of ['x-grpc-web', 'x-user-agent', 'origin', 'referer', 'sec-fetch-mode', 'sec-ch-ua']) {
        assert.equal(got[key], undefined, `${key}: ${JSON.stringify(got)}`)
      }
      assert.deepEqual(got['x-app'], ['kept'])

      const indexes: number[] = []
      let streamHeaders: Record<string, string> = {}
      for await (const m of web.serverStream(
        { responseCount: 3, responseBytes: 40_000 },
        { headers: authed, onHeader: (h) => (streamHeaders = record(h)) },
      )) {
        assert.ok(Buffer.from(m.payload).equals(Buffer.from(generatedPayload(m.index, 40_000))))
        indexes.push(m.index)
      }
      assert.deepEqual(indexes, [0, 1, 2])
      assertCors(streamHeaders, 'server stream')
      assert.equal(streamHeaders['stargate-tier'], 'TIER_DIRECT')
    })

    it(`tunnel web - HTTP/${httpVersion}, Connect: unary and server stream are UNIMPLEMENTED with the gateway's message, readable by the page`, async () => {
      const runs = echo.runs.get('Unary') ?? 0
      const calls: Array<[string, () => Promise<unknown>]> = []
      // JSON is what connect-web sends by default; binary what connect-node does.
      for (const useBinaryFormat of [false, true]) {
        const connect = createClient(EchoService, createConnectTransport({ baseUrl: base, httpVersion, useBinaryFormat }))
        const format = useBinaryFormat ? 'proto' : 'JSON'
        calls.push([`${format} unary`, () => connect.unary({ payload: Buffer.from('x') }, { headers: authed })])
        calls.push([
          `${format} server stream`,
          async () => {
            for await (const _ of connect.serverStream({ responseCount: 1 }, { headers: authed })) {
              // nothing arrives
            }
          },
        ])
      }
      for (const [what, call] of calls) {
        await assert.rejects(call(), (err: unknown) => {
          assert.ok(err instanceof ConnectError)
          assert.equal(err.code, Code.Unimplemented, `${what}: ${err.message}`)
          assert.match(
            err.rawMessage,
            /^stargate\.test\.v1\.EchoService is tunnelled to another gateway.*content-type "application\/(connect\+)?(json|proto)".*not translated; .*application\/grpc-web\+proto$/,
            what,
          )
          assertCors(record(err.metadata), what)
          return true
        })
      }
      assert.equal(echo.runs.get('Unary') ?? 0, runs, 'nothing reached the backend')
    })

    it(`tunnel web - HTTP/${httpVersion}: a call without the token is refused in its protocol, UNAUTHENTICATED and readable by the page, and reported`, async () => {
      const runs = echo.runs.get('Unary') ?? 0
      const reported = refused.length
      for (const transport of [
        createGrpcWebTransport({ baseUrl: base, httpVersion }),
        createConnectTransport({ baseUrl: base, httpVersion }),
      ]) {
        const client = createClient(EchoService, transport)
        for (const call of [
          () => client.unary({ payload: Buffer.from('x') }, { headers: { origin: PAGE } }),
          async () => {
            for await (const _ of client.serverStream({ responseCount: 1 }, { headers: { origin: PAGE } })) {
              // nothing arrives
            }
          },
        ]) {
          await assert.rejects(call(), (err: unknown) => {
            assert.ok(err instanceof ConnectError)
            assert.equal(err.code, Code.Unauthenticated, err.message)
            assert.match(err.rawMessage, /requires a token/)
            assertCors(record(err.metadata), err.message)
            return true
          })
        }
      }
      assert.equal(echo.runs.get('Unary') ?? 0, runs, 'nothing reached the backend')
      // every refusal is reported for telemetry, with the protocol and the URL the client used
      assert.deepEqual(
        refused
          .slice(reported)
          .map((r) => [r.protocolName, r.tunnelled, `${r.service}/${r.method}`, r.url, ConnectError.from(r.error).code]),
        ['grpc-web', 'grpc-web', 'connect', 'connect'].map((protocol, i) => [
          protocol,
          true,
          `stargate.test.v1.EchoService/${i % 2 === 0 ? 'Unary' : 'ServerStream'}`,
          `${base}/stargate.test.v1.EchoService/${i % 2 === 0 ? 'Unary' : 'ServerStream'}`,
          Code.Unauthenticated,
        ]),
      )
    })
  }
})
