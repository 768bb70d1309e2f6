/**
 * The example page's script (bundled by build.ts): asks a gateway for its status, pings a peer through it, and
 * calls a tunnelled gRPC service (stargate.test.v1.EchoService, served behind another gateway), over the
 * Connect protocol or gRPC-Web, from a page on another origin. The gateway must list this page's origin with
 * --cors-allow-origin. `?gateway=URL&protocol=grpc-web&peer=ID` in the page URL pre-fills the form.
 */
import { fromJson, toJson } from '@bufbuild/protobuf'
import { ValueSchema } from '@bufbuild/protobuf/wkt'
import { type Client, ConnectError, createClient, type Transport } from '@connectrpc/connect'
import { createConnectTransport, createGrpcWebTransport } from '@connectrpc/connect-web'
import { CallResponseSchema, GatewayService, GetStatusResponseSchema } from '@stargate/shared/gen/gateway'
import { EchoService } from '../../test/gen/stargate/test/v1/echo_pb.js'

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T
const gatewayInput = $<HTMLInputElement>('gateway')
const tokenInput = $<HTMLInputElement>('token')
const peerInput = $<HTMLInputElement>('peer')
const errorOut = $('error')

type Protocol = 'connect' | 'grpc-web'

function protocol(): Protocol {
  return document.querySelector<HTMLInputElement>('input[name="protocol"]:checked')?.value === 'grpc-web' ? 'grpc-web' : 'connect'
}

function transport(): Transport {
  const baseUrl = gatewayInput.value.trim().replace(/\/+$/, '')
  return protocol() === 'grpc-web' ? createGrpcWebTransport({ baseUrl }) : createConnectTransport({ baseUrl })
}

function client(): Client<typeof GatewayService> {
  return createClient(GatewayService, transport())
}

/** The bearer token, sent as the authorization header (a CORS preflight never carries it). */
function headers(): HeadersInit {
  const token = tokenInput.value.trim()
  return token === '' ? {} : { authorization: `Bearer ${token}` }
}

/**
 * Runs one call and shows its outcome. `out` gets data-state="pending" while it runs and "ok" or "error" when
 * it ends (what an automated test waits on). A browser that refuses a response (CORS) shows as a fetch failure.
 */
async function run(out: HTMLElement, call: () => Promise<string>): Promise<void> {
  out.dataset.state = 'pending'
  out.textContent = ''
  errorOut.textContent = ''
  try {
    out.textContent = await call()
    out.dataset.state = 'ok'
  } catch (err: unknown) {
    const e = ConnectError.from(err)
    // fetch() says no more than this when the browser refused the response (CORS) or could not connect.
    const hint = /Failed to fetch/.test(e.message)
      ? ` (is the gateway up, and does it allow ${location.origin} with --cors-allow-origin?)`
      : ''
    errorOut.textContent = `${protocol() === 'grpc-web' ? 'gRPC-Web' : 'Connect'}: ${e.message}${hint}`
    out.dataset.state = 'error'
  }
}

async function refresh(): Promise<void> {
  $('peer-id').textContent = ''
  await run($('status'), async () => {
    const status = await client().getStatus({}, { headers: headers() })
    $('peer-id').textContent = status.peerId
    return JSON.stringify(toJson(GetStatusResponseSchema, status), null, 2)
  })
}

async function ping(): Promise<void> {
  $('ping-tier').textContent = ''
  $('ping-peer').textContent = ''
  await run($('ping-result'), async () => {
    const res = await client().call(
      {
        peerId: peerInput.value.trim(),
        method: 'ping',
        payload: { case: 'json', value: fromJson(ValueSchema, { from: location.origin }) },
      },
      { headers: headers() },
    )
    // The built-in ping answers {echo: <payload>, peerId: <the peer that answered>, time}.
    const json = toJson(CallResponseSchema, res) as { tier?: string; json?: { peerId?: string } }
    $('ping-tier').textContent = json.tier ?? ''
    $('ping-peer').textContent = json.json?.peerId ?? ''
    return JSON.stringify(json, null, 2)
  })
}

const hex = (bytes: Uint8Array): string => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')

/**
 * Calls EchoService through the gateway, which tunnels it to the peer in the peer id field (the stargate-peer
 * header) or, when that is empty, to the peer its --route or discovery names. The answer shows the bytes sent
 * and received (hex) and, from the response headers, the peer that answered and the tier the call took.
 * Only gRPC-Web is carried for tunnelled services: with Connect the gateway answers UNIMPLEMENTED, saying so.
 */
async function echo(kind: 'unary' | 'serverStream'): Promise<void> {
  $('echo-tier').textContent = ''
  $('echo-peer').textContent = ''
  await run($('echo-result'), async () => {
    const peer = peerInput.value.trim()
    const onHeader = (h: Headers): void => {
      $('echo-tier').textContent = h.get('stargate-tier') ?? ''
      $('echo-peer').textContent = h.get('stargate-peer') ?? ''
    }
    const options = { headers: { ...headers(), ...(peer === '' ? {} : { 'stargate-peer': peer }) }, onHeader }
    const payload = new TextEncoder().encode($<HTMLInputElement>('echo-message').value)
    const service = createClient(EchoService, transport())
    const responses: Array<{ index?: number; payload: string; text: string }> = []
    const show = (p: Uint8Array, index?: number): void => {
      responses.push({ ...(index != null ? { index } : {}), payload: hex(p), text: new TextDecoder().decode(p) })
    }
    if (kind === 'unary') {
      show((await service.unary({ payload }, options)).payload)
    } else {
      const responseCount = Number($<HTMLInputElement>('echo-count').value)
      for await (const m of service.serverStream({ payload, responseCount }, options)) show(m.payload, m.index)
    }
    return JSON.stringify({ method: kind === 'unary' ? 'Unary' : 'ServerStream', sent: hex(payload), responses }, null, 2)
  })
}

const params = new URLSearchParams(location.search)
gatewayInput.value = params.get('gateway') ?? gatewayInput.value
peerInput.value = params.get('peer') ?? ''
if (params.get('protocol') === 'grpc-web') $<HTMLInputElement>('protocol-grpc-web').checked = true
$('origin').textContent = location.origin
$('refresh').addEventListener('click', () => void refresh())
$('ping').addEventListener('click', () => void ping())
$('echo-unary').addEventListener('click', () => void echo('unary'))
$('echo-stream').addEventListener('click', () => void echo('serverStream'))
document.querySelectorAll<HTMLInputElement>('input[name="protocol"]').forEach((radio) => {
  radio.addEventListener('change', () => void refresh())
})
void refresh()
