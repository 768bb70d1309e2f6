// Browser clients: the example page (examples/browser, built with esbuild) served by a static server on one origin
// calls gateways on another origin from headless Chromium (Debian's chromium, driven by playwright-core): over
// plaintext (the browser speaks HTTP/1.1) and over TLS (it negotiates HTTP/2), with the Connect protocol and
// with gRPC-Web, with a bearer token. Gateway B is reachable only through the relay, so a ping shows TIER_RELAY.
// A page on an origin the gateway does not list is refused by the browser. Without Chromium (and no way to install
// it) the browser tests are skipped with the reason, and fail under CI=true.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it, type TestContext } from 'node:test'
import { promisify } from 'node:util'
import type { BrowserContext, Page } from 'playwright-core'
import { buildExample } from '../../examples/browser/build.ts'
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
    b = await h.gateway(['--relay', relay.multiaddr], { name: 'gateway-b' })
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

  for (const [transport, gateway, scheme, wire] of [
    ['HTTP/1.1', () => plain, 'http', WIRES[0]],
    ['HTTP/2 over TLS', () => tls, 'https', WIRES[1]],
  ] as const) {
    for (const protocol of PROTOCOLS) {
      const name = protocol === 'connect' ? 'Connect' : 'gRPC-Web'
      it(`browser - ${transport}, ${name}: the page on another origin shows the gateway's peer id, and a ping through the relay shows TIER_RELAY`, async (t) => {
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

          // What went over the wire: the protocol asked for, the HTTP version, and preflights without the token.
          const posts = seen().filter((x) => x.method === 'POST')
          assert.equal(posts.length, 3, JSON.stringify(seen(), null, 1))
          const contentType = protocol === 'connect' ? 'application/json' : 'application/grpc-web+proto'
          for (const p of posts) {
            assert.equal(p.requestHeaders['content-type'], contentType)
            assert.equal(p.protocol, wire)
            assert.equal(p.responseHeaders?.['access-control-allow-origin'], page.origin)
          }
          // One preflight per URL (GetStatus, Call): the second GetStatus uses the cached answer.
          const preflights = seen().filter((x) => x.method === 'OPTIONS')
          assert.deepEqual(
            preflights.map((x) => new URL(x.url).pathname).sort(),
            ['/stargate.v1.GatewayService/Call', '/stargate.v1.GatewayService/GetStatus'],
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
