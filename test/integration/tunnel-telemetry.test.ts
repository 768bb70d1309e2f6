/**
 * Telemetry of tunnelled calls over OTLP/HTTP from real gateways: the caller's RPC client span and attempt
 * spans (RPC semantic conventions 1.45: rpc.system.name grpc, rpc.method "package.Service/Method"),
 * continuing the client's trace; the callee's RPC server span in the same trace; the trace continuing into
 * the backend request (traceparent); the counter of tunnelled calls.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import { EchoBackend, EchoClient } from '../lib/echo.ts'
import { type GatewayHandle, Harness } from '../lib/harness.ts'
import { OtlpReceiver } from '../lib/otlp-receiver.ts'

const SERVICE = 'stargate.test.v1.EchoService'
const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736'
const CLIENT_SPAN = '00f067aa0ba902b7'
const SPAN_KIND_SERVER = 2
const SPAN_KIND_CLIENT = 3

describe('tunnel telemetry (real processes, OTLP receiver)', { timeout: 180_000 }, () => {
  const h = new Harness()
  const otlp = new OtlpReceiver()
  const backend = new EchoBackend()
  let a: GatewayHandle
  let b: GatewayHandle

  before(async () => {
    await Promise.all([otlp.start(), backend.start()])
    const env = { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.endpoint, OTEL_BSP_SCHEDULE_DELAY: '100', OTEL_METRIC_EXPORT_INTERVAL: '500' }
    b = await h.gateway(['--p2p-listen', '/ip4/127.0.0.1/tcp/0', '--expose', `${SERVICE}=127.0.0.1:${backend.port}`], {
      name: 'gateway-b',
      env,
    })
    const bAddr = b.multiaddrs.find((m) => m.includes('/127.0.0.1/'))!
    a = await h.gateway(['--peer', `${b.peerId}=${bAddr}`], { name: 'gateway-a', env })
  })

  after(async () => {
    await h.close()
    await Promise.all([otlp.stop(), backend.stop()])
  })

  it("telemetry - a tunnelled call's spans continue the client's trace through both gateways into the backend; it is counted", async () => {
    const c = new EchoClient(a.api, grpc.credentials.createInsecure())
    try {
      const md = new grpc.Metadata()
      md.set('stargate-peer', b.peerId)
      md.set('traceparent', `00-${TRACE_ID}-${CLIENT_SPAN}-01`)
      await new Promise((resolve, reject) =>
        (c as unknown as Record<string, (...args: unknown[]) => void>).unary!(
          { payload: Buffer.from('t') },
          md,
          (err: unknown, res: unknown) => (err != null ? reject(err) : resolve(res)),
        ),
      )
    } finally {
      c.close()
    }
    const call = await otlp.waitFor('the call span on A', () =>
      otlp.spans.find((s) => s.kind === SPAN_KIND_CLIENT && s.traceId === TRACE_ID && s.resource['stargate.peer_id'] === a.peerId),
    )
    assert.equal(call.parentSpanId, CLIENT_SPAN, "the call span is a child of the client's span")
    assert.equal(call.name, `${SERVICE}/Unary`)
    assert.equal(call.attrs['rpc.system.name'], 'grpc')
    assert.equal(call.attrs['rpc.method'], `${SERVICE}/Unary`)
    assert.equal(call.attrs['rpc.status_code'], 'OK')
    assert.equal(call.attrs['stargate.peer_id'], b.peerId)
    const attempt = await otlp.waitFor('the direct attempt span', () =>
      otlp.spans.find((s) => s.parentSpanId === call.spanId && s.name === 'stargate.attempt direct'),
    )
    assert.equal(attempt.attrs['stargate.outcome'], 'success')
    assert.equal(attempt.attrs['rpc.method'], `${SERVICE}/Unary`)
    const inbound = await otlp.waitFor('the inbound span on B', () =>
      otlp.spans.find((s) => s.kind === SPAN_KIND_SERVER && s.traceId === TRACE_ID && s.resource['stargate.peer_id'] === b.peerId),
    )
    assert.equal(inbound.resource['stargate.peer_id'], b.peerId)
    assert.equal(inbound.parentSpanId, call.spanId)
    assert.equal(inbound.name, `${SERVICE}/Unary`)
    assert.equal(inbound.attrs['rpc.method'], `${SERVICE}/Unary`)
    assert.equal(inbound.attrs['rpc.status_code'], 'OK')
    assert.equal(inbound.attrs['stargate.caller_peer_id'], a.peerId)
    const traceparent = String(backend.lastMetadata?.get('traceparent')[0] ?? '')
    assert.equal(traceparent, `00-${TRACE_ID}-${inbound.spanId}-01`, 'the backend request continues the trace from B')
    const counted = await otlp.waitFor('stargate.tunnel.calls on A', () =>
      otlp.latest(
        'stargate.tunnel.calls',
        { 'stargate.service': SERVICE, 'stargate.tier': 'direct', 'rpc.status_code': 'OK' },
        {
          'stargate.peer_id': a.peerId,
        },
      ),
    )
    assert.equal(counted.value, 1)
  })
})
