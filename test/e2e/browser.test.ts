// Browser clients: the example page (examples/browser, built with esbuild) served by a static server on one origin
// calls gateways on another origin from headless Chromium (Debian's chromium, driven by playwright-core): over
// plaintext (the browser speaks HTTP/1.1) and over TLS (it negotiates HTTP/2), with the Connect protocol and
// with gRPC-Web, with a bearer token. Gateway B is reachable only through the relay, so a ping shows TIER_RELAY;
// B exposes EchoService (examples/node/echo-server.ts), which the page calls through the caller gateway's tunnel:
// over gRPC-Web it shows the echoed bytes and TIER_RELAY, with Connect the gateway's UNIMPLEMENTED.
// A page on an origin the gateway does not list is refused by the browser. Without Chromium (and no way to install
// it) the browser tests are skipped with the reason, and fail under CI=true.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it, type TestContext } from 'node:test'
import { promisify } from 'node:util'
import { Code, ConnectError, createClient } from '@connectrpc/connect'
import { createGrpcWebTransport } from '@connectrpc/connect-node'
import type { BrowserContext, Page } from 'playwright-core'
import { buildExample } from '../../examples/browser/build.ts'
import { EchoService } from '../gen/stargate/test/v1/echo_pb.js'
import { ECHO_SERVICE, type EchoServer, startEchoServer } from '../interop/echo-programs.ts'
import { chromiumUnavailable, launchChromium } from '../lib/chromium.ts'
import { type GatewayHandle, Harness } from '../lib/harness.ts'
import { serveStatic } from '../lib/static-server.ts'

const run = promisify(execFile)
const TOKEN = 'browser-test-token-5e1d'
/** How long one page step may take on a loaded 2-core machine (Chromium starts and renders slowly there). */
const STEP_MS = 90_000

const PROTOCOLS = ['connect', 'grpc-web'] as const
/** The HTTP version Chromium uses toward each gateway, as DevTools names it. */
const WIRES = ['http/1.1', 'h2'] as const
/** What the page sends to EchoService: multi-byte UTF-8 (2, 3 and 4 bytes) and a gRPC-Web trailer flag byte. */
const MESSAGE = 'héllo ✓ 🚀 \u0080 through the relay'
const MESSAGE_HEX = Buffer.from(MESSAGE).toString('hex')
/** Responses the page asks the server stream for. */
const STREAM_COUNT = 3

/** What the browser sent to and got from a gateway, from the DevTools protocol (it also sees preflights). */
interface Exchange {
  method: string
  url: string
  requestHeaders: Record<string, string>
  protocol?: string
  status?: number
  responseHeaders?: Record<string, string>
  blockedReason?: string
}

/** Records every request of a page to a gateway (preflights included) through a CDP session. */
async function recordExchanges(context: BrowserContext, page: Page, gatewayUrl: string): Promise<() => Exchange[]> {
  const out = new Map<string, Exchange>()
  const lower = (h: Record<string, unknown>): Record<string, string> =>
    Object.fromEntries(Object.entries(h).map(([k, v]) => [k.toLowerCase(), String(v)]))
  const cdp = await context.newCDPSession(page)
  cdp.on('Network.requestWillBeSent', (e) => {
    if (!e.request.url.startsWith(gatewayUrl)) return
    out.set(e.requestId, { method: e.request.method, url: e.request.url, requestHeaders: lower(e.request.headers) })
  })
  // Extra info carries the headers as sent on the wire (the preflight's, and what the browser added).
  cdp.on('Network.requestWillBeSentExtraInfo', (e) => {
    const x = out.get(e.requestId)
    if (x != null) x.requestHeaders = { ...x.requestHeaders, ...lower(e.headers) }
  })
  cdp.on('Network.responseReceived', (e) => {
    const x = out.get(e.requestId)
    if (x == null) return
    x.protocol = e.response.protocol
    x.status = e.response.status
    x.responseHeaders = lower(e.response.headers)
  })
  cdp.on('Network.loadingFailed', (e) => {
    const x = out.get(e.requestId)
    if (x != null) x.blockedReason = e.corsErrorStatus?.corsError ?? e.blockedReason ?? e.errorText
  })
  await cdp.send('Network.enable')
  return () => [...out.values()]
}

/** What the page shows of an EchoService call (#echo-result). */
interface EchoResult {
  method: string
  sent: string
  responses: Array<{ index?: number; payload: string; text: string }>
}

/** Clicks a button and waits until the output it drives leaves data-state="pending"; returns the final state. */
async function act(page: Page, button: string, output: string): Promise<string> {
  await page.click(button)
  await page.waitForSelector(`${output}:not([data-state="pending"])`, { timeout: STEP_MS })
  return (await page.getAttribute(output, 'data-state')) ?? ''
}

describe('browser - example page against gateways on another origin', () => {
  const h = new Harness()
  let work: string
  let unavailable: string | undefined
  let plain: GatewayHandle // HTTP/1.1 from the browser
  let tls: GatewayHandle // HTTP/2 (ALPN h2) from the browser
  let b: GatewayHandle
  type Site = Awaited<ReturnType<typeof serveStatic>>
  /**
   * The page on one listed origin per browser test: a browser caches preflight answers per origin and URL
   * (Access-Control-Max-Age), so each test starts without any and must see its own preflights.
   */
  const sites = new Map<string, Site>()
  const site = (key: string): Site => sites.get(key) as Site
  let stranger: Site // the same page on an origin nobody listed
  let chromium: Awaited<ReturnType<typeof launchChromium>> | undefined
  let echo: EchoServer // the backend behind B

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'stargate-browser-'))
    const root = join(work, 'site')
    const { bytes } = await buildExample(root)
    process.stdout.write(`example page built: dist/app.js ${bytes} bytes\n`)
    for (const wire of WIRES) for (const protocol of PROTOCOLS) sites.set(`${wire}-${protocol}`, await serveStatic(root, '127.0.0.1'))
    stranger = await serveStatic(root, '127.0.0.2')
    await writeFile(join(work, 'tokens'), `${TOKEN}\n`)
    // A self-signed certificate for the TLS gateway (the browser is told to accept it).
    const pem = (name: string): string => join(work, name)
    const subject = ['-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1']
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1']
    await run('openssl', ['req', '-x509', ...ec, '-keyout', pem('key.pem'), '-out', pem('cert.pem'), ...subject], { timeout: 30_000 })

    const relay = await h.relay()
    echo = await startEchoServer(h, 'node')
    b = await h.gateway(['--relay', relay.multiaddr, '--expose', `${ECHO_SERVICE}=${echo.addr}`], { name: 'gateway-b' })
    await b.proc.waitFor(/"msg":"reserved on relay"/)
    // The callers know B only by its circuit address through the relay: a ping must take TIER_RELAY.
    const common = [
      ...['--relay', relay.multiaddr, '--peer', `${b.peerId}=${relay.multiaddr}/p2p-circuit/p2p/${b.peerId}`],
      ...['--auth-token-file', join(work, 'tokens')],
      ...[...sites.values()].flatMap((x) => ['--cors-allow-origin', x.origin]),
    ]
    ;[plain, tls] = await Promise.all([
      h.gateway(common, { name: 'gateway-plain' }),
      h.gateway([...common, '--tls-cert', pem('cert.pem'), '--tls-key', pem('key.pem')], { name: 'gateway-tls' }),
    ])

    unavailable = chromiumUnavailable()
    if (unavailable == null) chromium = await launchChromium({ ignoreHTTPSErrors: true })
  })

  after(async () => {
    await chromium?.close()
    await Promise.all([...sites.values(), stranger].map((x) => x?.close()))
    await h.close()
    await rm(work, { recursive: true, force: true })
  })

  /** The browser tests need Chromium: say why it is missing, and fail under CI=true rather than pass. */
  function browser(t: TestContext): BrowserContext | undefined {
    if (chromium != null) return chromium.context
    const why = unavailable ?? 'Chromium did not start'
    if (process.env.CI === 'true') assert.fail(`the browser test cannot run: ${why}`)
    t.skip(why)
    return undefined
  }

  it('browser - plain fetch: the gateway answers the listed origin’s preflight without a token, and no other origin', async () => {
    const url = `http://${plain.api}/stargate.v1.GatewayService/GetStatus`
    const page = site('http/1.1-connect')
    const preflight = (origin: string) =>
      fetch(url, {
        method: 'OPTIONS',
        headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type' },
      })
    const listed = await preflight(page.origin)
    assert.equal(listed.status, 204)
    assert.equal(listed.headers.get('access-control-allow-origin'), page.origin)
    assert.match(listed.headers.get('access-control-allow-headers') ?? '', /\bauthorization\b/)
    const other = await preflight(stranger.origin)
    assert.equal(other.headers.get('access-control-allow-origin'), null)
    // The error of a call without the token is readable by the listed page, headers exposed.
    const denied = await fetch(url, { method: 'POST', headers: { origin: page.origin, 'content-type': 'application/json' }, body: '{}' })
    assert.equal(denied.status, 401)
    assert.equal(denied.headers.get('access-control-allow-origin'), page.origin)
    assert.match(denied.headers.get('access-control-expose-headers') ?? '', /grpc-status, grpc-message, grpc-status-details-bin/)
  })

  it('browser - without a browser: tunnelled gRPC-Web answers to a listed origin carry the CORS headers and name B and the relay tier', async () => {
    const ca = await readFile(join(work, 'cert.pem'))
    const origin = site('http/1.1-grpc-web').origin
    for (const [httpVersion, baseUrl] of [
      ['1.1', `http://${plain.api}`],
      ['2', `https://${tls.api}`],
    ] as const) {
      const client = createClient(EchoService, createGrpcWebTransport({ baseUrl, httpVersion, nodeOptions: { ca } }))
      const headers: Record<string, string> = {}
      const payload = Buffer.from(MESSAGE)
      const res = await client.unary(
        { payload },
        {
          headers: { origin, authorization: `Bearer ${TOKEN}`, 'stargate-peer': b.peerId },
          onHeader: (x) =>
            x.forEach((v, k) => {
              headers[k] = v
            }),
        },
      )
      assert.ok(Buffer.from(res.payload).equals(payload), `HTTP/${httpVersion}: the bytes as sent`)
      assert.equal(headers['access-control-allow-origin'], origin, `HTTP/${httpVersion}: ${JSON.stringify(headers)}`)
      assert.match(headers['access-control-expose-headers'] ?? '', /\bstargate-peer, stargate-tier\b/)
      assert.equal(headers['stargate-tier'], 'TIER_RELAY')
      assert.equal(headers['stargate-peer'], b.peerId)
      // Without the token: refused before any tunnel, in gRPC-Web, readable by the page.
      await assert.rejects(client.unary({ payload }, { headers: { origin, 'stargate-peer': b.peerId } }), (err: unknown) => {
        assert.ok(err instanceof ConnectError)
        assert.equal(err.code, Code.Unauthenticated, err.message)
        assert.equal(err.metadata.get('access-control-allow-origin'), origin)
        return true
      })
    }
    // What the page's preflight of a tunnelled call asks for: stargate-peer is allowed.
    const preflight = await fetch(`http://${plain.api}/${ECHO_SERVICE}/Unary`, {
      method: 'OPTIONS',
      headers: {
        origin,
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'authorization,content-type,stargate-peer',
      },
    })
    assert.equal(preflight.status, 204)
    assert.match(preflight.headers.get('access-control-allow-headers') ?? '', /\bstargate-peer\b/)
  })

  for (const [transport, gateway, scheme, wire] of [
    ['HTTP/1.1', () => plain, 'http', WIRES[0]],
    ['HTTP/2 over TLS', () => tls, 'https', WIRES[1]],
  ] as const) {
    for (const protocol of PROTOCOLS) {
      const name = protocol === 'connect' ? 'Connect' : 'gRPC-Web'
      const tunnelled = protocol === 'grpc-web' ? 'the echoed bytes of B’s backend through the relay' : 'UNIMPLEMENTED from the gateway'
      it(`browser - ${transport}, ${name}: the page on another origin shows the gateway's peer id, a ping through the relay shows TIER_RELAY, a tunnelled call ${tunnelled}`, async (t) => {
        const context = browser(t)
        if (context == null) return
        const gw = gateway()
        const gatewayUrl = `${scheme}://${gw.api}`
        const page = site(`${wire}-${protocol}`)
        const tab = await context.newPage()
        try {
          const seen = await recordExchanges(context, tab, gatewayUrl)
          const query = new URLSearchParams({ gateway: gatewayUrl, protocol, peer: b.peerId })
          await tab.goto(`${page.origin}/?${query}`, { timeout: STEP_MS })
          // The page asks for the status on load, without a token: the preflight passes, the call is refused.
          await tab.waitForSelector('#status:not([data-state="pending"]):not([data-state="idle"])', { timeout: STEP_MS })
          assert.equal(await tab.getAttribute('#status', 'data-state'), 'error')
          assert.match(
            (await tab.textContent('#error')) ?? '',
            new RegExp(`^${name}: \\[unauthenticated\\] this Stargate API requires a token`),
          )

          await tab.fill('#token', TOKEN)
          assert.equal(await act(tab, '#refresh', '#status'), 'ok', (await tab.textContent('#error')) ?? '')
          assert.equal(await tab.textContent('#peer-id'), gw.peerId)
          assert.equal(await act(tab, '#ping', '#ping-result'), 'ok', (await tab.textContent('#error')) ?? '')
          assert.equal(await tab.textContent('#ping-tier'), 'TIER_RELAY')
          assert.equal(await tab.textContent('#ping-peer'), b.peerId)
          const ping = JSON.parse((await tab.textContent('#ping-result')) ?? '{}') as { json?: { echo?: { from?: string } } }
          assert.equal(ping.json?.echo?.from, page.origin, 'B echoed the payload of the page')

          // EchoService, tunnelled to B (the page sends stargate-peer: B) and on to B's backend.
          const since = echo.events.length
          await tab.fill('#echo-message', MESSAGE)
          await tab.fill('#echo-count', String(STREAM_COUNT))
          const unary = await act(tab, '#echo-unary', '#echo-result')
          const unaryResult = (await tab.textContent('#echo-result')) ?? ''
          const unaryError = (await tab.textContent('#error')) ?? ''
          const stream = await act(tab, '#echo-stream', '#echo-result')
          const streamResult = (await tab.textContent('#echo-result')) ?? ''
          const error = (await tab.textContent('#error')) ?? ''
          // Tests run one at a time: the backend's calls since this page's first one are its calls.
          const fromThisPage = (e: (typeof echo.events)[number]): boolean => echo.events.indexOf(e) >= since
          if (protocol === 'grpc-web') {
            assert.equal(unary, 'ok', error)
            assert.equal(stream, 'ok', error)
            const u = JSON.parse(unaryResult) as EchoResult
            assert.equal(u.sent, MESSAGE_HEX, 'the page sent the message as UTF-8')
            assert.deepEqual(u.responses, [{ payload: MESSAGE_HEX, text: MESSAGE }], 'the bytes as sent came back')
            const st = JSON.parse(streamResult) as EchoResult
            assert.deepEqual(
              st.responses,
              Array.from({ length: STREAM_COUNT }, (_, index) => ({ index, payload: MESSAGE_HEX, text: MESSAGE })),
            )
            assert.equal(await tab.textContent('#echo-tier'), 'TIER_RELAY')
            assert.equal(await tab.textContent('#echo-peer'), b.peerId)
            // The backend behind B ran both calls of this page, as gRPC calls: none of the headers that only
            // describe the browser side (gRPC-Web's, CORS and fetch metadata) reached it.
            for (const method of ['Unary', 'ServerStream']) {
              const call = await echo.waitForEvent('call', (e) => e.method === method && fromThisPage(e), STEP_MS)
              const browserOnly = Object.keys(call.metadata).filter((k) =>
                /^(x-grpc-web|x-user-agent|origin|referer|sec-fetch-.*|sec-ch-.*|access-control-request-.*)$/.test(k),
              )
              assert.deepEqual(browserOnly, [], `${method}: ${JSON.stringify(call.metadata)}`)
            }
          } else {
            assert.equal(unary, 'error')
            assert.equal(stream, 'error')
            // Both calls got the gateway's answer, in the Connect protocol of each (unary, then streaming).
            for (const [shown, contentType] of [
              [unaryError, 'application/json'],
              [error, 'application/connect+json'],
            ] as const) {
              assert.match(shown, /^Connect: \[unimplemented\] stargate\.test\.v1\.EchoService is tunnelled to another gateway, /)
              assert.ok(shown.includes(`content-type "${contentType}"`), shown)
              assert.match(shown, /is not translated; call it with a gRPC client, or a gRPC-Web client using application\/grpc-web\+proto$/)
            }
            assert.equal(await tab.textContent('#echo-tier'), '')
            assert.equal(echo.events.filter((e) => e.event === 'call' && fromThisPage(e)).length, 0, 'nothing reached the backend')
          }

          // What went over the wire: the protocol asked for, the HTTP version, and preflights without the token.
          const posts = seen().filter((x) => x.method === 'POST')
          assert.equal(posts.length, 5, JSON.stringify(seen(), null, 1))
          const contentTypes: Record<string, string> =
            protocol === 'connect'
              ? { ServerStream: 'application/connect+json', other: 'application/json' }
              : { other: 'application/grpc-web+proto' }
          for (const p of posts) {
            const method = new URL(p.url).pathname.split('/')[2] ?? ''
            assert.equal(p.requestHeaders['content-type'], contentTypes[method] ?? contentTypes.other, p.url)
            assert.equal(p.protocol, wire)
            assert.equal(p.responseHeaders?.['access-control-allow-origin'], page.origin, p.url)
          }
          const echoPosts = posts.filter((p) => p.url.includes(ECHO_SERVICE))
          assert.equal(echoPosts.length, 2)
          for (const p of echoPosts) {
            assert.equal(p.requestHeaders['stargate-peer'], b.peerId)
            if (protocol === 'grpc-web') assert.equal(p.requestHeaders['x-grpc-web'], '1', 'the browser sent what the backend did not get')
            if (protocol === 'grpc-web') assert.equal(p.responseHeaders?.['stargate-tier'], 'TIER_RELAY')
          }
          // One preflight per URL: the second GetStatus uses the cached answer.
          const preflights = seen().filter((x) => x.method === 'OPTIONS')
          assert.deepEqual(
            preflights.map((x) => new URL(x.url).pathname).sort(),
            [
              '/stargate.test.v1.EchoService/ServerStream',
              '/stargate.test.v1.EchoService/Unary',
              '/stargate.v1.GatewayService/Call',
              '/stargate.v1.GatewayService/GetStatus',
            ],
            JSON.stringify(seen(), null, 1),
          )
          for (const p of preflights) {
            assert.equal(p.requestHeaders.authorization, undefined, 'a preflight carries no token')
            assert.equal(p.status, 204)
          }
          t.diagnostic(`${posts.length} calls over ${wire}, ${preflights.length} preflight(s)`)
        } finally {
          await tab.close()
        }
      })
    }
  }

  for (const [transport, gateway, scheme] of [
    ['HTTP/1.1', () => plain, 'http'],
    ['HTTP/2 over TLS', () => tls, 'https'],
  ] as const) {
    it(`browser - ${transport}: the same page on an origin the gateway does not list is refused by the browser`, async (t) => {
      const context = browser(t)
      if (context == null) return
      const gatewayUrl = `${scheme}://${gateway().api}`
      const tab = await context.newPage()
      try {
        const console: string[] = []
        tab.on('console', (m) => console.push(m.text()))
        const seen = await recordExchanges(context, tab, gatewayUrl)
        await tab.goto(`${stranger.origin}/?${new URLSearchParams({ gateway: gatewayUrl })}`, { timeout: STEP_MS })
        await tab.fill('#token', TOKEN)
        assert.equal(await act(tab, '#refresh', '#status'), 'error')
        assert.match((await tab.textContent('#error')) ?? '', /^Connect: \[unknown\] Failed to fetch/)
        assert.equal(await tab.textContent('#peer-id'), '')
        assert.ok(
          console.some((l) => l.includes(`from origin '${stranger.origin}' has been blocked by CORS policy`)),
          console.join('\n'),
        )
        assert.ok(
          seen().some((x) => x.blockedReason != null && /PreflightMissingAllowOriginHeader|MissingAllowOriginHeader/.test(x.blockedReason)),
          JSON.stringify(seen(), null, 1),
        )
      } finally {
        await tab.close()
      }
    })
  }
})
