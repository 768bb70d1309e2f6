import type { HandlerContext } from '@connectrpc/connect'
import {
  type Attributes,
  context,
  type Histogram,
  type Meter,
  metrics,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  trace,
} from '@opentelemetry/api'
import {
  ATTR_ERROR_TYPE,
  ATTR_RPC_METHOD,
  ATTR_RPC_METHOD_ORIGINAL,
  ATTR_RPC_STATUS_CODE,
  ATTR_RPC_SYSTEM_NAME,
  ATTR_SERVER_ADDRESS,
  ATTR_SERVER_PORT,
  METRIC_RPC_CLIENT_CALL_DURATION,
  METRIC_RPC_SERVER_CALL_DURATION,
  RPC_SYSTEM_NAME_VALUE_GRPC,
} from '@opentelemetry/semantic-conventions'
import { Code, StargateError } from './errors.ts'
import type { AnyMethodImpl, MethodMiddleware, RefusalObserver } from './grpc/server.ts'
import { STARGATE_VERSION } from './version.ts'

/**
 * Spans and metrics of RPCs per the OpenTelemetry semantic conventions for RPC, v1.45.0 (the version where
 * RPC spans and call duration metrics became stable; `@opentelemetry/semantic-conventions` 1.45 exports these
 * names as stable): span name `{rpc.method}`, `rpc.system.name`, fully qualified `rpc.method`,
 * `rpc.status_code` as the status code's name, `error.type` only for errors, and `rpc.{server,client}.call.duration`
 * histograms in seconds with the recommended buckets.
 */
export const RPC_SEMCONV_VERSION = '1.45.0'

/** Bucket boundaries (s) the conventions recommend for rpc.server.call.duration and rpc.client.call.duration. */
export const RPC_DURATION_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]

/**
 * The rpc.server.call.duration or rpc.client.call.duration histogram of a meter. Every user of one meter
 * gets the same instrument (same name, unit, description and buckets), so the SDK registers it once.
 */
export function rpcCallDuration(meter: Meter, side: 'server' | 'client'): Histogram {
  return side === 'server'
    ? meter.createHistogram(METRIC_RPC_SERVER_CALL_DURATION, {
        description: 'Duration of RPCs received (API calls; calls from peers), to the end of the response or stream',
        unit: 's',
        advice: { explicitBucketBoundaries: RPC_DURATION_BUCKETS_S },
      })
    : meter.createHistogram(METRIC_RPC_CLIENT_CALL_DURATION, {
        description: 'Duration of RPCs made (Calls to peers, retries included)',
        unit: 's',
        advice: { explicitBucketBoundaries: RPC_DURATION_BUCKETS_S },
      })
}

/** rpc.system.name of the Connect protocol (a well-known value of the conventions, still in development). */
export const RPC_SYSTEM_CONNECT = 'connectrpc'

/** rpc.method of a call for a method the server does not know (the conventions' value; bounded cardinality). */
export const RPC_METHOD_OTHER = '_OTHER'

/** gRPC status names (github.com/grpc/grpc doc/statuscodes.md) by code: the values of rpc.status_code for gRPC. */
const GRPC_STATUS_NAMES: readonly string[] = [
  'OK',
  'CANCELLED',
  'UNKNOWN',
  'INVALID_ARGUMENT',
  'DEADLINE_EXCEEDED',
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'PERMISSION_DENIED',
  'RESOURCE_EXHAUSTED',
  'FAILED_PRECONDITION',
  'ABORTED',
  'OUT_OF_RANGE',
  'UNIMPLEMENTED',
  'INTERNAL',
  'UNAVAILABLE',
  'DATA_LOSS',
  'UNAUTHENTICATED',
]

/** The gRPC status name of a code (0 = OK): "UNAVAILABLE". Unknown numbers are given as digits. */
export function grpcStatusName(code: Code | 0): string {
  return GRPC_STATUS_NAMES[code] ?? String(code)
}

/** Codes a gRPC server reports as its own errors (span status ERROR, error.type); the others are the caller's. */
const SERVER_ERRORS: ReadonlySet<Code> = new Set([
  Code.Unknown,
  Code.DeadlineExceeded,
  Code.Unimplemented,
  Code.Internal,
  Code.Unavailable,
  Code.DataLoss,
])

/** Whether a server that answered `code` failed (per the gRPC conventions); a client fails on any code but OK. */
export function isServerError(code: Code | 0): boolean {
  return SERVER_ERRORS.has(code as Code)
}

/**
 * The status attributes of a finished RPC: rpc.status_code, and error.type (the status name) when the
 * side that recorded it failed. Connect spells its codes in lower case ("unavailable") and has none for
 * success.
 */
export function rpcStatusAttributes(system: string, code: Code | 0, side: 'server' | 'client'): Attributes {
  const name = grpcStatusName(code)
  const status = system === RPC_SYSTEM_CONNECT ? (code === 0 ? undefined : name.toLowerCase()) : name
  const attrs: Attributes = {}
  if (status != null) attrs[ATTR_RPC_STATUS_CODE] = status
  const failed = code !== 0 && (side === 'client' || isServerError(code))
  if (failed) attrs[ATTR_ERROR_TYPE] = status ?? name
  return attrs
}

/** scheme://[userinfo@]host[:port] at the start of a URL; host is a bracketed IPv6 address or a name/IPv4. */
const AUTHORITY = /^[a-z][a-z0-9+.-]*:\/\/(?:[^@/?#]*@)?(\[[^\]/?#]*\]|[^:/?#[\]]*)(?::(\d{1,5}))?(?:[/?#]|$)/i

/**
 * server.address and server.port of a server span (RPC conventions v1.45.0): the host and port of the
 * authority the client used to reach this server (`:authority`, Host on HTTP/1.1), from the request URL as the
 * handler context has it (scheme://authority/path). The port only when the authority names one; nothing when
 * the URL has none. Never the listening socket's address, which behind a proxy, a port mapping or 0.0.0.0 is
 * not what clients call (the conventions say not to use connection-level information).
 */
export function serverAddressAttributes(url: string): Attributes {
  const m = AUTHORITY.exec(url)
  const host = m?.[1]
  if (m == null || host == null || host === '' || host === '[]') return {}
  const attrs: Attributes = { [ATTR_SERVER_ADDRESS]: host.startsWith('[') ? host.slice(1, -1) : host }
  const port = m[2] != null ? Number(m[2]) : 0
  if (port > 0 && port <= 65535) attrs[ATTR_SERVER_PORT] = port
  return attrs
}

const headerGetter: TextMapGetter<Headers> = {
  get: (headers, key) => headers.get(key) ?? undefined,
  keys: (headers) => {
    const keys: string[] = []
    headers.forEach((_, key) => {
      keys.push(key)
    })
    return keys
  },
}

/** The rpc.system.name of a request's protocol: connectrpc for Connect, grpc for gRPC and gRPC-Web. */
function rpcSystem(protocolName: string): string {
  return protocolName === 'connect' ? RPC_SYSTEM_CONNECT : RPC_SYSTEM_NAME_VALUE_GRPC
}

/**
 * Ends a server call's span and records its rpc.server.call.duration: its status attributes on both, span
 * status ERROR for the server's own errors. `base` holds the metric's attributes (rpc.system.name, rpc.method).
 */
function endServerCall(span: Span, duration: Histogram, base: Attributes, startedAtMs: number, err: unknown): void {
  const e = err === undefined ? undefined : StargateError.from(err)
  const status = rpcStatusAttributes(String(base[ATTR_RPC_SYSTEM_NAME]), e?.code ?? 0, 'server')
  span.setAttributes(status)
  if (e != null && status[ATTR_ERROR_TYPE] != null) span.setStatus({ code: SpanStatusCode.ERROR, message: e.rawMessage })
  span.end()
  duration.record((performance.now() - startedAtMs) / 1000, { ...base, ...status })
}

/**
 * A SERVER span and an rpc.server.call.duration measurement per API call (gRPC, gRPC-Web and Connect
 * alike), per the RPC semantic conventions (RPC_SEMCONV_VERSION): span name and rpc.method
 * "package.Service/Method", rpc.system.name, rpc.status_code, error.type for server errors; on the span also
 * server.address and server.port (serverAddressAttributes; opt-in on the metric, so left out). The span joins
 * the caller's trace when the request carries W3C trace context headers and is the active context of the
 * method implementation. A streaming call is measured over the whole stream.
 */
export function rpcServerSpans(scope: string): MethodMiddleware {
  const tracer = trace.getTracer(scope, STARGATE_VERSION)
  const duration = rpcCallDuration(metrics.getMeter(scope, STARGATE_VERSION), 'server')
  return (service, method, impl): AnyMethodImpl => {
    const name = `${service.typeName}/${method.name}`
    const streamingResponse = method.methodKind === 'server_streaming' || method.methodKind === 'bidi_streaming'
    return (input: unknown, ctx: HandlerContext) => {
      const parent = propagation.extract(ROOT_CONTEXT, ctx.requestHeader, headerGetter)
      const base: Attributes = { [ATTR_RPC_SYSTEM_NAME]: rpcSystem(ctx.protocolName), [ATTR_RPC_METHOD]: name }
      const span = tracer.startSpan(name, { kind: SpanKind.SERVER, attributes: { ...base, ...serverAddressAttributes(ctx.url) } }, parent)
      const startedAtMs = performance.now()
      const finish = (err: unknown): void => endServerCall(span, duration, base, startedAtMs, err)
      const active = trace.setSpan(parent, span)
      if (!streamingResponse) {
        return context.with(active, async () => {
          try {
            const res: unknown = await impl(input, ctx)
            finish(undefined)
            return res
          } catch (err: unknown) {
            finish(err)
            throw err
          }
        })
      }
      const output = context.with(active, () => impl(input, ctx)) as AsyncIterable<unknown>
      return (async function* () {
        let failure: unknown
        try {
          for await (const msg of output) yield msg
        } catch (err: unknown) {
          failure = err
          throw err
        } finally {
          finish(failure)
        }
      })()
    }
  }
}

/**
 * The SERVER span and rpc.server.call.duration of each API request the request gate refused (no token, a
 * wrong one, a token whose scope does not cover a tunnelled method): recorded like a call that failed with
 * that status (UNAUTHENTICATED, PERMISSION_DENIED: the caller's errors, so no error.type), as rpcServerSpans
 * records a call refused inside its method (a scoped token's Call outside its scope). A local method keeps
 * its name; a tunnelled request names a method this server does not know, so, as for the calls from peers
 * that name no served method, rpc.method is _OTHER, the name only on the span (rpc.method_original): a
 * caller without a token cannot grow the metric's series. The span joins the request's trace context.
 */
export function rpcServerRefusals(scope: string): RefusalObserver {
  const tracer = trace.getTracer(scope, STARGATE_VERSION)
  const duration = rpcCallDuration(metrics.getMeter(scope, STARGATE_VERSION), 'server')
  return (r) => {
    const system = rpcSystem(r.protocolName)
    const method = `${r.service}/${r.method}`
    const base: Attributes = { [ATTR_RPC_SYSTEM_NAME]: system, [ATTR_RPC_METHOD]: r.tunnelled ? RPC_METHOD_OTHER : method }
    const attributes: Attributes = { ...base, ...serverAddressAttributes(r.url) }
    if (r.tunnelled) attributes[ATTR_RPC_METHOD_ORIGINAL] = method
    const parent = propagation.extract(ROOT_CONTEXT, r.header, headerGetter)
    const span = tracer.startSpan(r.tunnelled ? system : method, { kind: SpanKind.SERVER, attributes }, parent)
    endServerCall(span, duration, base, r.startedAtMs, r.error)
  }
}
