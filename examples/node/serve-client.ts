/**
 * A Serve client in its own process, written only against the public API (GatewayService over gRPC),
 * used by the tests as a remote handler. Usage: node serve-client.ts HOST:PORT [--shared] [method...]
 * (--shared lets other clients join the methods it is the first to serve; an API token, if the gateway
 * wants one, comes from STARGATE_TOKEN).
 * Methods: echo (returns the payload), fail (answers the status code given as JSON {"code":N}),
 * slow (waits {"ms":N} then echoes), big (returns {"bytes":N} bytes). Prints "REGISTERED <peer id>" once
 * registered and "HANDLED <method> <request id> <tier>" for every call it runs.
 *
 * Tracing: each call runs in a SERVER span named after its method that continues the caller's trace
 * (InboundCall.trace_context, extracted with the W3C TraceContext propagator: its parent is the gateway's
 * delivery span). It prints "TRACE <method> <trace id> <parent span id>" per call; with
 * OTEL_EXPORTER_OTLP_ENDPOINT set it starts the OpenTelemetry SDK and exports those spans over OTLP.
 */
import { create, toJson } from '@bufbuild/protobuf'
import { ValueSchema } from '@bufbuild/protobuf/wkt'
import { createClient } from '@connectrpc/connect'
import { createGrpcTransport } from '@connectrpc/connect-node'
import { context, propagation, ROOT_CONTEXT, SpanKind, trace } from '@opentelemetry/api'
import { W3CTraceContextPropagator } from '@opentelemetry/core'
import { startNodeSdk } from '@opentelemetry/sdk-node'
import { GatewayService, type ServeRequest, ServeRequestSchema } from '@stargate/shared/gen/gateway'

const [target, ...args] = process.argv.slice(2)
if (target == null) {
  process.stderr.write('usage: serve-client.ts HOST:PORT [--shared] [method...]\n')
  process.exit(2)
}
const shared = args.includes('--shared')
const methodArgs = args.filter((a) => a !== '--shared')
const methods = methodArgs.length > 0 ? methodArgs : ['echo', 'fail', 'slow', 'big']
const token = process.env.STARGATE_TOKEN
const client = createClient(
  GatewayService,
  createGrpcTransport({
    baseUrl: `http://${target}`,
    interceptors:
      token != null
        ? [
            (next) => (req) => {
              req.header.set('authorization', `Bearer ${token}`)
              return next(req)
            },
          ]
        : [],
  }),
)

const queue: ServeRequest[] = [
  create(ServeRequestSchema, { kind: { case: 'register', value: { methods, capabilities: ['echo'], shared } } }),
]
let wake: (() => void) | undefined
const send = (r: ServeRequest): void => {
  queue.push(r)
  wake?.()
}
async function* requests(): AsyncGenerator<ServeRequest> {
  for (;;) {
    const next = queue.shift()
    if (next != null) {
      yield next
      continue
    }
    await new Promise<void>((r) => {
      wake = r
    })
  }
}

// Spans are exported only when an OTLP endpoint is configured; the W3C propagator reads trace_context either way.
const propagator = new W3CTraceContextPropagator()
const sdk =
  (process.env.OTEL_EXPORTER_OTLP_ENDPOINT ?? '') !== ''
    ? startNodeSdk({
        resourceAttributes: { 'service.name': 'serve-client' },
        propagators: [propagator],
        metricReaders: [],
        logRecordProcessors: [],
      })
    : undefined
if (sdk == null) propagation.setGlobalPropagator(propagator)
const tracer = trace.getTracer('stargate-serve-client')

const ac = new AbortController()
process.on('SIGTERM', () => ac.abort())
process.on('SIGINT', () => ac.abort())

try {
  for await (const msg of client.serve(requests(), { signal: ac.signal })) {
    if (msg.kind.case === 'registered') {
      process.stdout.write(`REGISTERED ${msg.kind.value.peerId} ${msg.kind.value.methods.join(',')}\n`)
      continue
    }
    if (msg.kind.case !== 'call') continue
    const call = msg.kind.value
    process.stdout.write(`HANDLED ${call.method} ${call.requestId} ${call.tier}\n`)
    // Continue the caller's trace: the gateway's delivery span is the parent of this handler's span.
    const parent = propagation.extract(ROOT_CONTEXT, call.traceContext)
    const remote = trace.getSpanContext(parent)
    process.stdout.write(`TRACE ${call.method} ${remote?.traceId ?? '-'} ${remote?.spanId ?? '-'}\n`)
    const span = tracer.startSpan(
      call.method,
      {
        kind: SpanKind.SERVER,
        attributes: { 'rpc.system.name': 'stargate', 'rpc.method': call.method, 'stargate.request_id': call.requestId },
      },
      parent,
    )
    const json = call.payload.case === 'json' ? (toJson(ValueSchema, call.payload.value) as Record<string, number>) : {}
    const reply = async (): Promise<void> => {
      switch (call.method) {
        case 'fail':
          send(
            create(ServeRequestSchema, {
              kind: {
                case: 'reply',
                value: {
                  callId: call.callId,
                  result: { case: 'error', value: { code: json.code ?? 9, message: `handler failed on purpose (code ${json.code ?? 9})` } },
                },
              },
            }),
          )
          return
        case 'slow':
          await new Promise((r) => setTimeout(r, json.ms ?? 1000))
          break
        case 'big':
          send(
            create(ServeRequestSchema, {
              kind: {
                case: 'reply',
                value: { callId: call.callId, result: { case: 'data', value: new Uint8Array(json.bytes ?? 0).fill(7) } },
              },
            }),
          )
          return
      }
      send(
        create(ServeRequestSchema, {
          kind: {
            case: 'reply',
            value: {
              callId: call.callId,
              result:
                call.payload.case === 'json'
                  ? { case: 'json', value: call.payload.value }
                  : { case: 'data', value: call.payload.value ?? new Uint8Array() },
            },
          },
        }),
      )
    }
    void context.with(trace.setSpan(parent, span), reply).finally(() => span.end())
  }
} catch (err: unknown) {
  if (!ac.signal.aborted) {
    process.stderr.write(`serve stream failed: ${err instanceof Error ? err.message : String(err)}\n`)
    process.exit(1)
  }
}
await sdk?.shutdown()
process.exit(0)
