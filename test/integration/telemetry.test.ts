import assert from 'node:assert/strict'
import { once } from 'node:events'
import { request as httpRequest } from 'node:http'
import { connect as http2Connect } from 'node:http2'
import { createServer, type Server, type Socket } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { fromJson } from '@bufbuild/protobuf'
import { ValueSchema } from '@bufbuild/protobuf/wkt'
import { Code, ConnectError } from '@connectrpc/connect'
import { AttemptOutcome, Tier } from '@stargate/shared/gen/gateway'
import { clientServe, goClient, type Lang, pythonBin } from '../interop/clients.ts'
import { freePort, type GatewayHandle, Harness, type Proc, type RelayHandle } from '../lib/harness.ts'
import { type Attrs, matches, OtlpReceiver, type ReceivedSpan } from '../lib/otlp-receiver.ts'

const json = (v: unknown) => ({ case: 'json' as const, value: fromJson(ValueSchema, v as never) })

const SPAN_KIND_SERVER = 2
const SPAN_KIND_CLIENT = 3

/** A gateway's span of a Call to a peer: an RPC client span of rpc.system.name "stargate", named after the method. */
const isCallSpan = (s: ReceivedSpan): boolean => s.kind === SPAN_KIND_CLIENT && s.attrs['rpc.system.name'] === 'stargate'
/** A gateway's span of a call received from a peer (the RPC server span; the Serve client's spans have no peer id). */
const isInboundSpan = (s: ReceivedSpan): boolean =>
  s.kind === SPAN_KIND_SERVER && s.attrs['rpc.system.name'] === 'stargate' && s.resource['stargate.peer_id'] != null
/** A valid peer id no process has: calls to it find no tier. */
const UNKNOWN_PEER = '12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf'

/** OTEL_* settings of the processes under test: OTLP/HTTP protobuf to the receiver, short intervals. */
function otelEnv(endpoint: string): NodeJS.ProcessEnv {
  return {
    OTEL_EXPORTER_OTLP_ENDPOINT: endpoint,
    OTEL_BSP_SCHEDULE_DELAY: '100',
    // the export timeout is the interval: 1 s leaves room for a loaded machine
    OTEL_METRIC_EXPORT_INTERVAL: '1000',
  }
}

/** A TCP listener that accepts connections and never answers: a direct dial to it hangs. */
async function blackhole(): Promise<{ server: Server; port: number; sockets: Set<Socket> }> {
  const sockets = new Set<Socket>()
  const server = createServer((s) => {
    sockets.add(s)
    s.on('error', () => {})
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return { server, port: (server.address() as { port: number }).port, sockets }
}

const GET_STATUS = '/stargate.v1.GatewayService/GetStatus'

/**
 * GetStatus over gRPC on a node:http2 connection to `api`, naming `authority` in :authority (as a client that
 * reached the gateway through a name, a proxy or a port mapping would); `path` for another method (its request is
 * sent empty). Resolves with the grpc-status.
 */
async function grpcGetStatus(api: string, authority: string, headers: Record<string, string> = {}, path = GET_STATUS): Promise<string> {
  const session = http2Connect(`http://${api}`)
  session.on('error', () => {})
  try {
    const req = session.request({
      ':method': 'POST',
      ':path': path,
      ':authority': authority,
      'content-type': 'application/grpc',
      te: 'trailers',
      ...headers,
    })
    let status = ''
    req.on('response', (h) => {
      if (h['grpc-status'] != null) status = String(h['grpc-status'])
    })
    req.on('trailers', (t) => {
      status = String(t['grpc-status'])
    })
    req.end(Buffer.alloc(5)) // one empty GetStatusRequest
    req.resume()
    await once(req, 'close')
    return status
  } finally {
    session.close()
  }
}

/** GetStatus over Connect (JSON) on HTTP/1.1 to `api`, with `host` as the Host header. Resolves with the HTTP status. */
function connectGetStatus(api: string, host: string, headers: Record<string, string> = {}): Promise<number> {
  const [hostname, port] = api.split(':')
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: hostname,
        port: Number(port),
        method: 'POST',
        path: GET_STATUS,
        headers: { host, 'content-type': 'application/json', ...headers },
      },
      (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode ?? 0))
      },
    )
    req.on('error', reject)
    req.end('{}')
  })
}

/** Lines a process wrote about telemetry (SDK diagnostics, exporter errors). */
function telemetryNoise(proc: Proc): string[] {
  // With the 1 s export interval of these tests the SDK's export timeout is 1 s too: on a loaded machine one
  // export may outlast it and is retried at the next interval. That is the machine, not a telemetry error;
  // every figure the tests assert still has to arrive.
  return proc.stderr.filter(
    (l) => /otel|opentelemetry|otlp|exporter|traceparent/i.test(l) && !/metrics export timed out after 1000ms/.test(l),
  )
}

describe('telemetry - traces and metrics over OTLP/HTTP for every tier', () => {
  const h = new Harness()
  const otlp = new OtlpReceiver()
  let hole: Awaited<ReturnType<typeof blackhole>>
  let nats: { url: string; proc: Proc }
  let relay: RelayHandle
  let a: GatewayHandle // caller
  let b: GatewayHandle // direct target
  let c: GatewayHandle // relay-only target
  let d: GatewayHandle // NATS-only target; A has a dead direct address for it (direct attempts hang until cancelled)
  /** The Serve client (examples/node/serve-client.ts, exporting its spans) of each target. */
  const serveOf = new Map<GatewayHandle, Proc>()

  /** The spans of one Call on the caller, found by request id: the call span and its attempt spans. */
  async function callTrace(requestId: string, attempts: number): Promise<{ call: ReceivedSpan; attempts: ReceivedSpan[] }> {
    const call = await otlp.waitFor(`call span of ${requestId}`, () =>
      otlp.spans.find((s) => isCallSpan(s) && s.attrs['stargate.request_id'] === requestId),
    )
    const found = await otlp.waitFor(`${attempts} attempt spans of ${requestId}`, () => {
      const xs = otlp.spans.filter((s) => s.parentSpanId === call.spanId && s.name.startsWith('stargate.attempt '))
      return xs.length >= attempts ? xs : undefined
    })
    return { call, attempts: found }
  }

  /**
   * The remote gateway's inbound span in the caller's trace, its Serve delivery span, and the Serve handler
   * continuing the trace from InboundCall.trace_context (its span is a child of the delivery span).
   */
  async function inboundOf(call: ReceivedSpan, target: GatewayHandle, tier: string): Promise<ReceivedSpan> {
    const inbound = await otlp.waitFor(`inbound span on ${tier}`, () =>
      otlp.spans.find(
        (s) =>
          isInboundSpan(s) &&
          s.traceId === call.traceId &&
          s.resource['stargate.peer_id'] === target.peerId &&
          s.attrs['stargate.tier'] === tier,
      ),
    )
    assert.equal(inbound.parentSpanId, call.spanId, 'the inbound span is a child of the caller span (context from the envelope)')
    assert.equal(inbound.name, 'echo', 'named after the method it serves')
    assert.ok(matches(inbound.attrs, { 'rpc.method': 'echo', 'rpc.status_code': 'OK' }))
    assert.equal(inbound.attrs['error.type'], undefined)
    assert.equal(inbound.attrs['stargate.caller_peer_id'], a.peerId)
    assert.equal(inbound.attrs['stargate.outcome'], 'success')
    const deliver = await otlp.waitFor('serve delivery span', () =>
      otlp.spans.find((s) => s.name === 'stargate.serve.deliver' && s.parentSpanId === inbound.spanId),
    )
    assert.equal(deliver.traceId, call.traceId)
    assert.equal(deliver.attrs['stargate.method'], 'echo')
    await serveOf.get(target)?.waitFor(new RegExp(`^TRACE echo ${call.traceId} ${deliver.spanId}$`), 10_000)
    const handler = await otlp.waitFor('the Serve handler span', () =>
      otlp.spans.find((s) => s.resource['service.name'] === 'serve-client' && s.parentSpanId === deliver.spanId),
    )
    assert.equal(handler.traceId, call.traceId, 'the handler continues the caller trace')
    assert.equal(handler.name, 'echo')
    assert.equal(handler.kind, SPAN_KIND_SERVER)
    return inbound
  }

  function attemptOf(spans: ReceivedSpan[], tier: string, outcome?: string): ReceivedSpan | undefined {
    return spans.find((s) => s.attrs['stargate.tier'] === tier && (outcome == null || s.attrs['stargate.outcome'] === outcome))
  }

  async function counterAtLeast(name: string, attrs: Attrs, min: number, resource: Attrs = {}): Promise<number> {
    const p = await otlp.waitFor(`${name} ${JSON.stringify(attrs)} >= ${min}`, () => {
      const x = otlp.latest(name, attrs, resource)
      return x != null && x.value >= min ? x : undefined
    })
    return p.value
  }

  before(async () => {
    await otlp.start()
    hole = await blackhole()
    const env = otelEnv(otlp.endpoint)
    nats = await h.nats()
    relay = await h.relay([], { env })
    const common = ['--relay', relay.multiaddr, '--nats', nats.url, '--relay-health-interval-ms', '500']
    b = await h.gateway(['--p2p-listen', '/ip4/127.0.0.1/tcp/0', ...common], { name: 'gateway-b', env })
    c = await h.gateway([...common], { name: 'gateway-c', env })
    d = await h.gateway(['--nats', nats.url], { name: 'gateway-d', env })
    a = await h.gateway(['--p2p-listen', '/ip4/127.0.0.1/tcp/0', ...common, '--peer', `${d.peerId}=/ip4/127.0.0.1/tcp/${hole.port}`], {
      name: 'gateway-a',
      env,
    })
    for (const g of [b, c, d]) serveOf.set(g, await h.serveClient(g.api, [], { env }))
    // A learns B's direct and C's circuit address from their presence records
    await otlp.waitFor('presence of B and C on A', async () => {
      const peers = (await a.client.listPeers({})).peers
      const ok =
        peers.some((p) => p.peerId === b.peerId && p.directAddrs.length > 0) &&
        peers.some((p) => p.peerId === c.peerId && p.circuitAddrs.length > 0)
      return ok ? true : undefined
    })
  })
  after(async () => {
    await h.close()
    for (const s of hole.sockets) s.destroy()
    hole.server.close()
    await otlp.stop()
  })

  it('resources - each process has service.name, version, its own service.instance.id and its libp2p peer id', async () => {
    const byPeer = new Map<string, Attrs>()
    await otlp.waitFor('resources of A, B, C and the relay', () => {
      for (const p of otlp.points) byPeer.set(String(p.resource['stargate.peer_id']), p.resource)
      return [a, b, c, d, relay].every((x) => byPeer.has(x.peerId)) ? true : undefined
    })
    const gateways = [a, b, c, d].map((g) => byPeer.get(g.peerId)!)
    for (const r of gateways) {
      assert.equal(r['service.name'], 'stargate-gateway')
      assert.equal(r['service.version'], '0.1.0')
      assert.match(String(r['service.instance.id']), /^[0-9a-f-]{36}$/)
    }
    assert.equal(new Set(gateways.map((r) => r['service.instance.id'])).size, 4, 'instance ids differ')
    assert.equal(byPeer.get(relay.peerId)?.['service.name'], 'stargate-relay')
  })

  it('direct - call span, direct attempt span, API server span and the inbound span on B in the same trace', async () => {
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736'
    const res = await a.client.call(
      { peerId: b.peerId, method: 'echo', payload: json({ via: 'direct' }) },
      { headers: { traceparent: `00-${traceId}-00f067aa0ba902b7-01` } },
    )
    assert.equal(res.tier, Tier.DIRECT)
    const { call, attempts } = await callTrace(res.requestId, 1)
    assert.equal(call.traceId, traceId, 'the API span joined the client trace from the traceparent header')
    const server = otlp.spans.find((s) => s.spanId === call.parentSpanId)
    assert.ok(server != null, 'the call span has the API server span as parent')
    assert.equal(server.name, 'stargate.v1.GatewayService/Call')
    assert.equal(server.kind, SPAN_KIND_SERVER)
    // RPC semantic conventions 1.45: rpc.system.name, fully qualified rpc.method, rpc.status_code by name
    assert.deepEqual(
      Object.keys(server.attrs)
        .filter((k) => k.startsWith('rpc.') || k === 'error.type')
        .sort(),
      ['rpc.method', 'rpc.status_code', 'rpc.system.name'],
    )
    assert.ok(
      matches(server.attrs, { 'rpc.system.name': 'grpc', 'rpc.method': 'stargate.v1.GatewayService/Call', 'rpc.status_code': 'OK' }),
    )
    // server.address and server.port: the authority the client called (here the API address itself)
    assert.equal(server.attrs['server.address'], '127.0.0.1')
    assert.equal(server.attrs['server.port'], Number(a.api.split(':')[1]))
    // the call span: an RPC client span named after the method, with the status of the call
    assert.equal(call.name, 'echo')
    assert.ok(matches(call.attrs, { 'rpc.method': 'echo', 'rpc.status_code': 'OK', 'stargate.peer_id': b.peerId }))
    assert.equal(server.resource['stargate.peer_id'], a.peerId)
    const direct = attemptOf(attempts, 'direct', 'success')
    assert.ok(direct != null, JSON.stringify(attempts.map((s) => s.attrs)))
    assert.ok(matches(direct.attrs, { 'stargate.attempt': 0, 'stargate.peer_id': b.peerId }))
    assert.ok(direct.startMs >= call.startMs - 1 && direct.endMs <= call.endMs + 1, 'the attempt lies within the call')
    assert.equal(call.attrs['stargate.tier'], 'direct')
    await inboundOf(call, b, 'direct')
  })

  it('relay - direct is skipped (no address), the relay serves; the inbound span on C joins the trace', async () => {
    // NATS is left out so that it cannot overtake a new relayed connection (which takes longer than the stagger)
    const res = await a.client.call({
      peerId: c.peerId,
      method: 'echo',
      payload: json({ via: 'relay' }),
      options: { allowedTiers: [Tier.DIRECT, Tier.RELAY] },
    })
    assert.equal(res.tier, Tier.RELAY, JSON.stringify(res.attempts.map((x) => [Tier[x.tier], AttemptOutcome[x.outcome], x.reason])))
    const { call, attempts } = await callTrace(res.requestId, 2)
    const relayed = attemptOf(attempts, 'relay', 'success')
    assert.ok(relayed != null)
    assert.match(String(relayed.attrs['stargate.via']), new RegExp(`/p2p/${relay.peerId}/p2p-circuit/p2p/${c.peerId}$`))
    const skipped = attemptOf(attempts, 'direct', 'skipped')
    assert.ok(skipped != null, JSON.stringify(attempts.map((s) => s.attrs)))
    assert.match(String(skipped.attrs['stargate.reason']), /no known direct address/)
    assert.equal(skipped.endMs - skipped.startMs, 0)
    await inboundOf(call, c, 'relay')
  })

  it('nats - the hanging direct attempt is cancelled when NATS connects first; inbound span on D joins the trace', async () => {
    const res = await a.client.call({ peerId: d.peerId, method: 'echo', payload: json({ via: 'nats' }) })
    assert.equal(res.tier, Tier.NATS, JSON.stringify(res.attempts.map((x) => [Tier[x.tier], AttemptOutcome[x.outcome], x.reason])))
    const { call, attempts } = await callTrace(res.requestId, 3)
    assert.ok(attemptOf(attempts, 'nats', 'success') != null)
    // the relay tier tries to reach D through the relay (D holds no reservation) and loses the race too
    assert.match(String(attemptOf(attempts, 'relay')?.attrs['stargate.outcome']), /^(cancelled|failed)$/)
    const cancelled = attemptOf(attempts, 'direct', 'cancelled')
    assert.ok(cancelled != null, JSON.stringify(attempts.map((s) => s.attrs)))
    assert.equal(cancelled.attrs['error.type'], 'cancelled')
    assert.match(String(cancelled.attrs['stargate.reason']), /nats connected first/)
    assert.ok(cancelled.error)
    assert.ok(cancelled.endMs - cancelled.startMs >= 200, 'the attempt span covers the time the dial hung')
    await inboundOf(call, d, 'nats')
  })

  it('server address - API server spans name the authority the client used (server.address, server.port), gRPC and Connect; the metric does not', async () => {
    const viaName = 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1'
    const viaHost = 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa2'
    // a client that reached A through a name and a mapped port: the span says what it called, not where A listens
    assert.equal(await grpcGetStatus(a.api, 'gateway-a.example:7443', { traceparent: `00-${viaName}-00f067aa0ba902b7-01` }), '0')
    assert.equal(await connectGetStatus(a.api, 'gateway-a.example', { traceparent: `00-${viaHost}-00f067aa0ba902b7-01` }), 200)
    const grpc = await otlp.waitFor('gRPC GetStatus span', () => otlp.spans.find((s) => s.traceId === viaName))
    assert.equal(grpc.kind, SPAN_KIND_SERVER)
    assert.ok(matches(grpc.attrs, { 'rpc.system.name': 'grpc', 'rpc.method': 'stargate.v1.GatewayService/GetStatus' }))
    assert.equal(grpc.attrs['server.address'], 'gateway-a.example')
    assert.equal(grpc.attrs['server.port'], 7443)
    const connect = await otlp.waitFor('Connect GetStatus span', () => otlp.spans.find((s) => s.traceId === viaHost))
    assert.ok(matches(connect.attrs, { 'rpc.system.name': 'connectrpc', 'server.address': 'gateway-a.example' }))
    assert.equal(connect.attrs['server.port'], undefined, 'no port in the Host header: none on the span')
    // opt-in on rpc.server.call.duration (one series per name a client uses): left out
    await otlp.waitFor('GetStatus duration on A', () =>
      otlp.latest('rpc.server.call.duration', { 'rpc.method': 'stargate.v1.GatewayService/GetStatus' }, { 'stargate.peer_id': a.peerId }),
    )
    assert.ok(!otlp.points.some((p) => p.name === 'rpc.server.call.duration' && p.attrs['server.address'] != null))
  })

  it('relay health - a span per check with the relay peer id and result; relay metrics on the relay', async () => {
    const check = await otlp.waitFor('an ok health check span', () =>
      otlp.spans.find(
        (s) =>
          s.name === 'stargate.relay.health_check' &&
          s.resource['stargate.peer_id'] === a.peerId &&
          matches(s.attrs, { 'stargate.relay.peer_id': relay.peerId, 'stargate.outcome': 'success' }),
      ),
    )
    assert.equal(typeof check.attrs['stargate.relay.rtt_ms'], 'number')
    assert.equal(check.attrs['stargate.relay.addr'], relay.multiaddr)
    await counterAtLeast('stargate.relay.health_checks', { 'stargate.relay.peer_id': relay.peerId, 'stargate.outcome': 'success' }, 1, {
      'stargate.peer_id': a.peerId,
    })
    const healthy = await otlp.waitFor('relay healthy gauge', () =>
      otlp.latest('stargate.relay.healthy', { 'stargate.relay.peer_id': relay.peerId }, { 'stargate.peer_id': a.peerId }),
    )
    assert.equal(healthy.value, 1)
    assert.equal(healthy.kind, 'gauge')
    const rtt = await otlp.waitFor('relay rtt', () => otlp.latest('stargate.relay.rtt', { 'stargate.relay.peer_id': relay.peerId }))
    assert.equal(rtt.kind, 'histogram')
    assert.equal(rtt.unit, 's')
    // on the relay: reservations of the three gateways and C's circuit
    await counterAtLeast('stargate.relay.reservations', {}, 3, { 'stargate.peer_id': relay.peerId })
    await counterAtLeast('stargate.relay.circuits.active', {}, 1, { 'stargate.peer_id': relay.peerId })
    await counterAtLeast('stargate.relay.connections', {}, 3, { 'stargate.peer_id': relay.peerId })
  })

  it('metrics - attempts and durations by tier and outcome, call duration, pool connections', async () => {
    const self = { 'stargate.peer_id': a.peerId }
    await counterAtLeast('stargate.tier.attempts', { 'stargate.tier': 'direct', 'stargate.outcome': 'success' }, 1, self)
    await counterAtLeast('stargate.tier.attempts', { 'stargate.tier': 'relay', 'stargate.outcome': 'success' }, 1, self)
    await counterAtLeast('stargate.tier.attempts', { 'stargate.tier': 'direct', 'stargate.outcome': 'cancelled' }, 1, self)
    const d = await otlp.waitFor('attempt duration', () =>
      otlp.latest('stargate.tier.attempt.duration', { 'stargate.tier': 'relay', 'stargate.outcome': 'success' }, self),
    )
    assert.equal(d.kind, 'histogram')
    assert.equal(d.unit, 's')
    assert.ok(d.value >= 1 && (d.sum ?? 0) > 0 && (d.sum ?? 0) < 30)
    const cd = await otlp.waitFor('call duration', () =>
      otlp.latest('stargate.call.duration', { 'stargate.tier': 'direct', 'stargate.outcome': 'success' }, self),
    )
    assert.ok(cd.value >= 1)
    assert.ok((await counterAtLeast('stargate.pool.connections', {}, 1, self)) >= 1)
    // inbound calls counted on the targets
    await counterAtLeast('stargate.inbound.calls', { 'stargate.tier': 'direct', 'stargate.outcome': 'success' }, 1, {
      'stargate.peer_id': b.peerId,
    })
    // RPC semantic conventions 1.45: API calls, Calls to peers and calls from peers, in seconds
    const rpc = [
      ['rpc.server.call.duration', { 'rpc.system.name': 'grpc', 'rpc.method': 'stargate.v1.GatewayService/Call' }, a],
      ['rpc.client.call.duration', { 'rpc.system.name': 'stargate', 'rpc.method': 'echo' }, a],
      ['rpc.server.call.duration', { 'rpc.system.name': 'stargate', 'rpc.method': 'echo' }, b],
    ] as const
    for (const [name, attrs, g] of rpc) {
      const p = await otlp.waitFor(`${name} ${JSON.stringify(attrs)}`, () =>
        otlp.latest(name, { ...attrs, 'rpc.status_code': 'OK' }, { 'stargate.peer_id': g.peerId }),
      )
      assert.equal(p.kind, 'histogram')
      assert.equal(p.unit, 's')
      assert.ok(p.value >= 1 && (p.sum ?? 0) > 0 && (p.sum ?? 0) < 30, JSON.stringify(p))
      assert.equal(p.attrs['error.type'], undefined)
    }
  })

  it('runtime - event loop delay and V8 heap of each process, GC pauses of a busy one (Node runtime metrics)', async () => {
    // megabytes of short-lived objects on A (many small JSON values), so its young generation is collected
    const many = json({ items: Array.from({ length: 5000 }, (_, i) => ({ i, s: 'x'.repeat(20) })) })
    for (let i = 0; i < 20; i++) await a.client.call({ peerId: b.peerId, method: 'ping', payload: many })
    const gc = await otlp.waitFor('GC pauses of A', () => otlp.latest('v8js.gc.duration', {}, { 'stargate.peer_id': a.peerId }))
    assert.equal(gc.kind, 'histogram')
    assert.equal(gc.unit, 's')
    assert.ok(gc.value >= 1)
    for (const p of [a, relay]) {
      const self = { 'stargate.peer_id': p.peerId }
      const delay = await otlp.waitFor('event loop delay p99', () => otlp.latest('nodejs.eventloop.delay.p99', {}, self))
      assert.equal(delay.unit, 's')
      assert.ok(delay.value > 0 && delay.value < 10, String(delay.value))
      const heap = await otlp.waitFor('old space in use', () =>
        otlp.latest('v8js.memory.heap.used', { 'v8js.heap.space.name': 'old_space' }, self),
      )
      assert.equal(heap.unit, 'By')
      assert.ok(heap.value > 1_000_000, String(heap.value))
    }
  })

  it("rpc status - a server's own error is an error (error.type, span status), a caller's mistake is not; unserved methods are _OTHER", async () => {
    const mistake = '11111111111111111111111111111111'
    await assert.rejects(
      a.client.call({ peerId: 'not-a-peer', method: 'ping' }, { headers: { traceparent: `00-${mistake}-00f067aa0ba902b7-01` } }),
      (e: unknown) => ConnectError.from(e).code === Code.InvalidArgument,
    )
    const bad = await otlp.waitFor('API span of the bad request', () => otlp.spans.find((s) => s.traceId === mistake))
    assert.ok(matches(bad.attrs, { 'rpc.method': 'stargate.v1.GatewayService/Call', 'rpc.status_code': 'INVALID_ARGUMENT' }))
    assert.equal(bad.attrs['error.type'], undefined, 'INVALID_ARGUMENT is the caller’s error, not the server’s')
    assert.equal(bad.error, false)
    const unserved = '22222222222222222222222222222222'
    await assert.rejects(
      a.client.call(
        { peerId: b.peerId, method: 'nobody.serves', options: { allowedTiers: [Tier.DIRECT] } },
        { headers: { traceparent: `00-${unserved}-00f067aa0ba902b7-01` } },
      ),
      (e: unknown) => ConnectError.from(e).code === Code.Unimplemented,
    )
    const api = await otlp.waitFor('API span', () =>
      otlp.spans.find((s) => s.traceId === unserved && s.kind === SPAN_KIND_SERVER && s.attrs['rpc.system.name'] === 'grpc'),
    )
    assert.ok(matches(api.attrs, { 'rpc.status_code': 'UNIMPLEMENTED', 'error.type': 'UNIMPLEMENTED' }))
    assert.ok(api.error)
    const call = await otlp.waitFor('call span', () => otlp.spans.find((s) => isCallSpan(s) && s.traceId === unserved))
    assert.ok(matches(call.attrs, { 'rpc.method': 'nobody.serves', 'rpc.status_code': 'UNIMPLEMENTED', 'error.type': 'UNIMPLEMENTED' }))
    // B does not serve the method: its span and metric name it _OTHER (a peer cannot grow B's series at will)
    const inbound = await otlp.waitFor('inbound span on B', () => otlp.spans.find((s) => isInboundSpan(s) && s.traceId === unserved))
    assert.equal(inbound.name, 'stargate')
    assert.ok(matches(inbound.attrs, { 'rpc.method': '_OTHER', 'rpc.method_original': 'nobody.serves', 'error.type': 'UNIMPLEMENTED' }))
    const onB = { 'stargate.peer_id': b.peerId }
    await otlp.waitFor('rpc.server.call.duration of _OTHER on B', () =>
      otlp.latest('rpc.server.call.duration', { 'rpc.method': '_OTHER', 'rpc.status_code': 'UNIMPLEMENTED' }, onB),
    )
    assert.ok(
      !otlp.points.some((p) => p.name === 'rpc.server.call.duration' && p.attrs['rpc.method'] === 'nobody.serves'),
      'the unserved method name is in no series',
    )
    await counterAtLeast('stargate.inbound.calls', { 'stargate.outcome': 'error', 'error.type': 'UNIMPLEMENTED' }, 1, onB)
    await otlp.waitFor('call duration by error.type on A', () =>
      otlp.latest('stargate.call.duration', { 'error.type': 'UNIMPLEMENTED' }, { 'stargate.peer_id': a.peerId }),
    )
  })

  it('relay down - NATS serves the relay-only peer; the relay attempt and the health checks fail', async () => {
    await relay.proc.stop()
    const res = await a.client.call({ peerId: c.peerId, method: 'echo', payload: json({ via: 'nats' }) }, { timeoutMs: 20_000 })
    assert.equal(res.tier, Tier.NATS)
    const lower = res.attempts.filter((x) => x.tier !== Tier.NATS)
    const { call, attempts } = await callTrace(res.requestId, res.attempts.length)
    assert.equal(attempts.length, res.attempts.length, 'one span per attempt in the response')
    assert.ok(attemptOf(attempts, 'nats', 'success') != null)
    for (const x of lower) {
      const outcome = x.outcome === AttemptOutcome.FAILED ? 'failed' : x.outcome === AttemptOutcome.SKIPPED ? 'skipped' : 'cancelled'
      const span = attempts.find(
        (s) =>
          s.attrs['stargate.tier'] === (x.tier === Tier.DIRECT ? 'direct' : 'relay') &&
          s.attrs['stargate.outcome'] === outcome &&
          s.attrs['stargate.attempt'] === (x.round ?? 0),
      )
      assert.ok(span != null, `span for ${Tier[x.tier]} ${AttemptOutcome[x.outcome]}`)
      if (outcome !== 'skipped') assert.equal(span.attrs['error.type'], outcome)
    }
    assert.ok(
      attempts.some((s) => s.attrs['stargate.tier'] === 'relay' && s.attrs['stargate.outcome'] !== 'success'),
      'the relay tier did not serve the call',
    )
    await inboundOf(call, c, 'nats')
    const failed = await otlp.waitFor('a failed health check span', () =>
      otlp.spans.find(
        (s) =>
          s.name === 'stargate.relay.health_check' &&
          matches(s.attrs, { 'stargate.relay.peer_id': relay.peerId, 'stargate.outcome': 'failed' }),
      ),
    )
    assert.ok(failed.error)
    assert.equal(failed.attrs['error.type'], 'health_check_failed')
    await counterAtLeast('stargate.tier.attempts', { 'stargate.tier': 'nats', 'stargate.outcome': 'success' }, 1, {
      'stargate.peer_id': a.peerId,
    })
    await counterAtLeast('stargate.relay.health_checks', { 'stargate.relay.peer_id': relay.peerId, 'stargate.outcome': 'failed' }, 1)
    await otlp.waitFor('relay unhealthy gauge', () => {
      const g = otlp.latest('stargate.relay.healthy', { 'stargate.relay.peer_id': relay.peerId }, { 'stargate.peer_id': a.peerId })
      return g?.value === 0 ? g : undefined
    })
    for (const p of [a, b, c, d]) assert.deepEqual(telemetryNoise(p.proc), [], `${p.proc.name} logged no telemetry errors`)
  })
})

describe('telemetry - the trace reaches the logs and Serve handlers in Go and Python', () => {
  const h = new Harness()
  const otlp = new OtlpReceiver()
  let a: GatewayHandle // caller, with one quick retry
  let b: GatewayHandle // target with a Go and a Python Serve client
  const serving = new Map<Lang, Proc>()

  before(async () => {
    await otlp.start()
    const env = otelEnv(otlp.endpoint)
    // The Go binary builds and the Python venv is set up while the gateways start.
    const [target] = await Promise.all([
      h.gateway(['--p2p-listen', '/ip4/127.0.0.1/tcp/0'], { name: 'gateway-b', env }),
      goClient(),
      Promise.resolve(pythonBin()),
    ])
    b = target
    a = await h.gateway(['--peer', `${b.peerId}=${b.multiaddrs[0]}`, '--max-retries', '1', '--backoff-base-ms', '50'], {
      name: 'gateway-a',
      env,
    })
    for (const lang of ['go', 'python'] as const) serving.set(lang, await clientServe(h, lang, b.api, lang))
  })
  after(async () => {
    await h.close()
    await otlp.stop()
  })

  it('logs - a line written during a traced call carries the trace_id and span_id of its span at the receiver', async () => {
    const traceId = 'a3ce929d0e0e47364bf92f3577b34da6'
    await assert.rejects(
      a.client.call({ peerId: UNKNOWN_PEER, method: 'echo' }, { headers: { traceparent: `00-${traceId}-00f067aa0ba902b7-01` } }),
      (e: unknown) => ConnectError.from(e).code === Code.Unavailable,
    )
    // The router logs the retry while the call span is active.
    const [line] = await a.proc.waitFor(/^\{.*"msg":"retrying call".*\}$/)
    const logged = JSON.parse(line) as { trace_id?: string; span_id?: string; peerId: string }
    assert.equal(logged.peerId, UNKNOWN_PEER)
    assert.equal(logged.trace_id, traceId, 'the line carries the trace of the call')
    const call = await otlp.waitFor('the call span', () => otlp.spans.find((s) => isCallSpan(s) && s.traceId === traceId))
    assert.equal(logged.span_id, call.spanId, 'the line names the span that was active: the call span')
    assert.equal(call.resource['stargate.peer_id'], a.peerId)
    // Lines written outside any span carry no trace.
    const started = a.proc.stderr.find((l) => l.includes('"msg":"gateway started"'))
    assert.ok(started != null, a.proc.dump())
    assert.doesNotMatch(started, /"(trace|span)_id"/)
  })

  for (const lang of ['go', 'python'] as const) {
    it(`serve - a ${lang} Serve handler receives the caller's trace context: the call's trace, the delivery span as parent`, async () => {
      const traceId = lang === 'go' ? '0af7651916cd43dd8448eb211c80319c' : 'b7ad6b7169203331b7ad6b7169203331'
      const res = await a.client.call(
        { peerId: b.peerId, method: `${lang}.echo`, payload: json({ lang }) },
        { headers: { traceparent: `00-${traceId}-b7ad6b7169203331-01` } },
      )
      assert.equal(res.tier, Tier.DIRECT)
      const call = await otlp.waitFor('the call span', () => otlp.spans.find((s) => isCallSpan(s) && s.traceId === traceId))
      const deliver = await otlp.waitFor('the delivery span on B', () =>
        otlp.spans.find((s) => s.name === 'stargate.serve.deliver' && s.traceId === traceId),
      )
      assert.equal(deliver.resource['stargate.peer_id'], b.peerId)
      assert.equal(deliver.attrs['stargate.method'], `${lang}.echo`)
      const [, printedTrace, printedParent] = await serving.get(lang)!.waitFor(new RegExp(`^TRACE ${lang}\\.echo (\\S+) (\\S+)$`), 10_000)
      assert.equal(printedTrace, call.traceId, 'same trace as the caller span')
      assert.equal(printedParent, deliver.spanId, "parent is the gateway's delivery span")
    })
  }
})

describe('telemetry - off by default, harmless when the collector is down', () => {
  it('no OTEL variables - services run quietly; a collector that is down does not stop calls; Prometheus scrape works', async () => {
    const h = new Harness()
    try {
      for (const k of Object.keys(process.env)) assert.ok(!k.startsWith('OTEL_'), `test process has ${k} set`)
      const relayMetrics = await freePort()
      const quietRelay = await h.relay(['--metrics-listen', `127.0.0.1:${relayMetrics}`], { name: 'quiet-relay' })
      const quiet = await h.gateway(['--p2p-listen', '/ip4/127.0.0.1/tcp/0', '--relay', quietRelay.multiaddr], { name: 'quiet' })
      const closed = await freePort()
      const metricsPort = await freePort()
      const down = await h.gateway(['--peer', `${quiet.peerId}=${quiet.multiaddrs[0]}`, '--metrics-listen', `127.0.0.1:${metricsPort}`], {
        name: 'collector-down',
        env: { ...otelEnv(`http://127.0.0.1:${closed}`), OTEL_EXPORTER_OTLP_TIMEOUT: '500' },
      })
      for (let i = 0; i < 5; i++) {
        const res = await down.client.call({ peerId: quiet.peerId, method: 'ping', payload: json(i) })
        assert.equal(res.tier, Tier.DIRECT)
      }
      const scrape = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text()
      assert.match(scrape, /stargate_tier_attempts(_total)?\{[^}]*stargate_tier="direct"[^}]*\} 5/)
      assert.match(scrape, /stargate_call_duration_seconds_count|stargate_call_duration_count/)
      // the API server's calls per the RPC conventions, and the Node runtime
      assert.match(
        scrape,
        /rpc_server_call_duration(_seconds)?_count\{[^}]*rpc_method="stargate.v1.GatewayService\/Call"[^}]*rpc_status_code="OK"[^}]*\} 5\n/,
      )
      assert.match(scrape, /^nodejs_eventloop_delay_p99(_seconds)?\{[^}]*\} \d/m)
      assert.match(scrape, /^v8js_memory_heap_used(_bytes)?\{[^}]*v8js_heap_space_name="old_space"[^}]*\} [1-9]/m)
      // exports to the closed port fail (reported once through the service log); the gateway still answers
      await down.proc.waitFor(/"ns":"gateway:otel"/, 10_000)
      assert.equal((await down.client.getStatus({})).peerId, down.peerId)
      assert.equal(await down.proc.stop(), 0, 'graceful stop with an unreachable collector')
      const relayScrape = await (await fetch(`http://127.0.0.1:${relayMetrics}/metrics`)).text()
      assert.match(relayScrape, /stargate_relay_connections(_ratio)?(\{[^}]*\})? [1-9]/, relayScrape)
      assert.match(relayScrape, /stargate_relay_reservations/)
      assert.equal(await quiet.proc.stop(), 0)
      assert.equal(await quietRelay.proc.stop(), 0)
      assert.deepEqual(telemetryNoise(quietRelay.proc), [], 'no telemetry output from the relay')
      assert.deepEqual(telemetryNoise(quiet.proc), [], 'no telemetry output without OTEL variables')
      // (the one warning a reachable gateway without a caller policy gives at start is not telemetry's)
      const warnings = quiet.proc.stderr.filter((l) => /"level":"(warn|error)"/.test(l) && !l.includes('caller policy OPEN'))
      assert.deepEqual(warnings, [], quiet.proc.dump())
    } finally {
      await h.close()
    }
  })
})

describe('telemetry - API calls the token check refuses', () => {
  const h = new Harness()
  const otlp = new OtlpReceiver()
  const TOKEN = 'telemetry-refusals-token'
  let g: GatewayHandle

  before(async () => {
    await otlp.start()
    g = await h.gateway([], { name: 'gateway-auth', env: { ...otelEnv(otlp.endpoint), STARGATE_AUTH_TOKENS: TOKEN } })
  })
  after(async () => {
    await h.close()
    await otlp.stop()
  })

  const traced = (traceId: string, extra: Record<string, string> = {}) => ({ traceparent: `00-${traceId}-00f067aa0ba902b7-01`, ...extra })
  const onG = () => ({ 'stargate.peer_id': g.peerId })

  it('auth refusals - a local method refused on gRPC or Connect has its SERVER span and rpc.server.call.duration with UNAUTHENTICATED', async () => {
    const missing = 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb1'
    const wrong = 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb2'
    const allowed = 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb3'
    assert.equal(await grpcGetStatus(g.api, g.api, traced(missing)), String(Code.Unauthenticated))
    assert.equal(await connectGetStatus(g.api, g.api, traced(wrong, { authorization: 'Bearer not-the-token' })), 401)
    assert.equal(await grpcGetStatus(g.api, g.api, traced(allowed, { authorization: `Bearer ${TOKEN}` })), '0')

    const grpc = await otlp.waitFor('span of the call without a token', () => otlp.spans.find((s) => s.traceId === missing))
    assert.equal(grpc.kind, SPAN_KIND_SERVER)
    assert.equal(grpc.name, 'stargate.v1.GatewayService/GetStatus')
    assert.ok(
      matches(grpc.attrs, {
        'rpc.system.name': 'grpc',
        'rpc.method': 'stargate.v1.GatewayService/GetStatus',
        'rpc.status_code': 'UNAUTHENTICATED',
      }),
    )
    assert.equal(grpc.attrs['server.address'], '127.0.0.1')
    assert.equal(grpc.attrs['error.type'], undefined, 'UNAUTHENTICATED is the caller’s error, not the server’s')
    assert.equal(grpc.error, false)
    const connect = await otlp.waitFor('span of the call with a wrong token', () => otlp.spans.find((s) => s.traceId === wrong))
    assert.ok(matches(connect.attrs, { 'rpc.system.name': 'connectrpc', 'rpc.status_code': 'unauthenticated' }))
    await otlp.waitFor('span of the allowed call', () => otlp.spans.find((s) => s.traceId === allowed))
    for (const [system, code] of [
      ['grpc', 'UNAUTHENTICATED'],
      ['connectrpc', 'unauthenticated'],
      ['grpc', 'OK'],
    ]) {
      await otlp.waitFor(`rpc.server.call.duration ${system} ${code}`, () =>
        otlp.latest(
          'rpc.server.call.duration',
          { 'rpc.system.name': system, 'rpc.method': 'stargate.v1.GatewayService/GetStatus', 'rpc.status_code': code },
          onG(),
        ),
      )
    }
    assert.equal(otlp.spans.filter((s) => s.traceId === allowed).length, 1, 'an allowed call is recorded once, not as a refusal too')
  })

  it('auth refusals - a tunnelled request refused has a span naming its method and a series under _OTHER', async () => {
    const tunnelled = 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb4'
    assert.equal(await grpcGetStatus(g.api, g.api, traced(tunnelled), '/acme.orders.v1.Orders/Get'), String(Code.Unauthenticated))
    const span = await otlp.waitFor('span of the refused tunnelled request', () => otlp.spans.find((s) => s.traceId === tunnelled))
    assert.equal(span.kind, SPAN_KIND_SERVER)
    assert.equal(span.name, 'grpc')
    assert.ok(
      matches(span.attrs, {
        'rpc.method': '_OTHER',
        'rpc.method_original': 'acme.orders.v1.Orders/Get',
        'rpc.status_code': 'UNAUTHENTICATED',
      }),
    )
    await otlp.waitFor('rpc.server.call.duration of _OTHER', () =>
      otlp.latest('rpc.server.call.duration', { 'rpc.method': '_OTHER', 'rpc.status_code': 'UNAUTHENTICATED' }, onG()),
    )
    assert.ok(
      !otlp.points.some((p) => p.name === 'rpc.server.call.duration' && p.attrs['rpc.method'] === 'acme.orders.v1.Orders/Get'),
      'a caller without a token cannot add series',
    )
  })
})

describe('telemetry - OTLP over gRPC', () => {
  it('grpc - with OTEL_EXPORTER_OTLP_PROTOCOL=grpc spans and metrics reach an OTLP/gRPC receiver; OTEL_SERVICE_NAME overrides the name', async () => {
    const h = new Harness()
    const otlp = new OtlpReceiver()
    try {
      const endpoint = await otlp.startGrpc()
      const env = { ...otelEnv(endpoint), OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc', OTEL_SERVICE_NAME: 'edge-gateway' }
      const g = await h.gateway([], { name: 'grpc-export', env })
      await g.client.getStatus({})
      const span = await otlp.waitFor('GetStatus server span', () =>
        otlp.spans.find((s) => s.name === 'stargate.v1.GatewayService/GetStatus'),
      )
      assert.equal(span.resource['service.name'], 'edge-gateway')
      assert.equal(span.resource['stargate.peer_id'], g.peerId)
      assert.equal(span.attrs['rpc.method'], 'stargate.v1.GatewayService/GetStatus')
      await otlp.waitFor('pool gauge', () => otlp.latest('stargate.pool.connections', {}, { 'stargate.peer_id': g.peerId }))
      // a call to the gateway itself takes the same path as any call: API span → call span → local attempt,
      // and the inbound span is a child of the call span
      const self = await g.client.call({ peerId: g.peerId, method: 'ping', payload: json('me') })
      assert.equal(self.tier, Tier.LOCAL)
      const api = await otlp.waitFor('Call server span', () => otlp.spans.find((s) => s.name === 'stargate.v1.GatewayService/Call'))
      const call = await otlp.waitFor('call span of the self call', () => otlp.spans.find(isCallSpan))
      const attempt = await otlp.waitFor('local attempt span', () => otlp.spans.find((s) => s.name === 'stargate.attempt local'))
      const inbound = await otlp.waitFor('inbound span of the self call', () => otlp.spans.find(isInboundSpan))
      assert.equal(call.parentSpanId, api.spanId)
      assert.equal(attempt.parentSpanId, call.spanId)
      assert.equal(inbound.traceId, api.traceId)
      assert.equal(inbound.parentSpanId, call.spanId)
      assert.ok(otlp.requests.grpc >= 2)
      assert.equal(otlp.requests.traces + otlp.requests.metrics, 0, 'nothing went over HTTP')
    } finally {
      await h.close()
      await otlp.stop()
    }
  })
})

describe('telemetry - flush on graceful stop', () => {
  it('shutdown - spans and metrics still buffered when SIGTERM arrives are exported before the process exits', async () => {
    const h = new Harness()
    const otlp = new OtlpReceiver()
    try {
      await otlp.start()
      // export intervals far beyond the test: only the flush on stop can deliver anything
      const env = { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.endpoint, OTEL_BSP_SCHEDULE_DELAY: '600000', OTEL_METRIC_EXPORT_INTERVAL: '600000' }
      const g = await h.gateway([], { name: 'flush', env })
      await g.client.getStatus({})
      assert.equal(otlp.requests.traces + otlp.requests.metrics, 0, 'nothing exported before the stop')
      assert.equal(await g.proc.stop(), 0)
      const span = otlp.spans.find((s) => s.name === 'stargate.v1.GatewayService/GetStatus')
      assert.ok(span != null, 'the GetStatus span was flushed on stop')
      assert.equal(span.resource['stargate.peer_id'], g.peerId)
      assert.ok(otlp.latest('stargate.pool.connections', {}, { 'stargate.peer_id': g.peerId }) != null, 'metrics were flushed on stop')
    } finally {
      await h.close()
      await otlp.stop()
    }
  })
})
