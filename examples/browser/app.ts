/**
 * The example page's script (bundled by build.ts): asks a gateway for its status and pings a peer through it,
 * over the Connect protocol or gRPC-Web, from a page on another origin. The gateway must list this page's
 * origin with --cors-allow-origin. `?gateway=URL&protocol=grpc-web&peer=ID` in the page URL pre-fills the form.
 */
import { fromJson, toJson } from '@bufbuild/protobuf'
import { ValueSchema } from '@bufbuild/protobuf/wkt'
import { type Client, ConnectError, createClient } from '@connectrpc/connect'
import { createConnectTransport, createGrpcWebTransport } from '@connectrpc/connect-web'
import { CallResponseSchema, GatewayService, GetStatusResponseSchema } from '@stargate/shared/gen/gateway'

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T
const gatewayInput = $<HTMLInputElement>('gateway')
const tokenInput = $<HTMLInputElement>('token')
const peerInput = $<HTMLInputElement>('peer')
const errorOut = $('error')

type Protocol = 'connect' | 'grpc-web'

function protocol(): Protocol {
  return document.querySelector<HTMLInputElement>('input[name="protocol"]:checked')?.value === 'grpc-web' ? 'grpc-web' : 'connect'
}

function client(): Client<typeof GatewayService> {
  const baseUrl = gatewayInput.value.trim().replace(/\/+$/, '')
  const transport = protocol() === 'grpc-web' ? createGrpcWebTransport({ baseUrl }) : createConnectTransport({ baseUrl })
  return createClient(GatewayService, transport)
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

const params = new URLSearchParams(location.search)
gatewayInput.value = params.get('gateway') ?? gatewayInput.value
peerInput.value = params.get('peer') ?? ''
if (params.get('protocol') === 'grpc-web') $<HTMLInputElement>('protocol-grpc-web').checked = true
$('origin').textContent = location.origin
$('refresh').addEventListener('click', () => void refresh())
$('ping').addEventListener('click', () => void ping())
document.querySelectorAll<HTMLInputElement>('input[name="protocol"]').forEach((radio) => {
  radio.addEventListener('change', () => void refresh())
})
void refresh()
