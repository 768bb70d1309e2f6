import type { HandlerContext } from '@connectrpc/connect'
import { context, propagation, ROOT_CONTEXT, type Span, SpanKind, SpanStatusCode, type TextMapGetter, trace } from '@opentelemetry/api'
import { Code, StargateError } from './errors.ts'
import type { AnyMethodImpl, MethodMiddleware } from './grpc/server.ts'
import { STARGATE_VERSION } from './version.ts'

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

/** The RPC system of a request, per the OTel RPC semantic conventions. */
function rpcSystem(ctx: HandlerContext): string {
  return ctx.protocolName === 'connect' ? 'connect_rpc' : 'grpc'
}

function finish(span: Span, err: unknown): void {
  if (err === undefined) {
    span.setAttribute('rpc.grpc.status_code', 0)
  } else {
    const e = StargateError.from(err)
    span.setAttribute('rpc.grpc.status_code', e.code)
    span.setAttribute('error.type', Code[e.code] ?? String(e.code))
    span.setStatus({ code: SpanStatusCode.ERROR, message: e.rawMessage })
  }
  span.end()
}

/**
 * A SERVER span per API call (gRPC, gRPC-Web and Connect alike): rpc.system, rpc.service, rpc.method and
 * rpc.grpc.status_code per the OTel RPC semantic conventions, joining the caller's trace when the request
 * carries W3C trace context headers. The span is the active context of the method implementation.
 */
export function rpcServerSpans(tracerName: string): MethodMiddleware {
  const tracer = trace.getTracer(tracerName, STARGATE_VERSION)
  return (service, method, impl): AnyMethodImpl => {
    const name = `${service.typeName}/${method.name}`
    const streamingResponse = method.methodKind === 'server_streaming' || method.methodKind === 'bidi_streaming'
    return (input: unknown, ctx: HandlerContext) => {
      const parent = propagation.extract(ROOT_CONTEXT, ctx.requestHeader, headerGetter)
      const span = tracer.startSpan(
        name,
        {
          kind: SpanKind.SERVER,
          attributes: { 'rpc.system': rpcSystem(ctx), 'rpc.service': service.typeName, 'rpc.method': method.name },
        },
        parent,
      )
      const active = trace.setSpan(parent, span)
      if (!streamingResponse) {
        return context.with(active, async () => {
          try {
            const res: unknown = await impl(input, ctx)
            finish(span, undefined)
            return res
          } catch (err: unknown) {
            finish(span, err)
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
          finish(span, failure)
        }
      })()
    }
  }
}
