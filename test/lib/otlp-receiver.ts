import { once } from 'node:events'
import { createServer, type IncomingMessage, type Server } from 'node:http'
import { gunzipSync } from 'node:zlib'
import { fromBinary } from '@bufbuild/protobuf'
import * as grpc from '@grpc/grpc-js'
import { eventually } from './eventually.ts'
import { ExportMetricsServiceRequestSchema } from './otlp/gen/opentelemetry/proto/collector/metrics/v1/metrics_service_pb.js'
import { ExportTraceServiceRequestSchema } from './otlp/gen/opentelemetry/proto/collector/trace/v1/trace_service_pb.js'
import type { AnyValue, KeyValue } from './otlp/gen/opentelemetry/proto/common/v1/common_pb.js'
import type { Metric } from './otlp/gen/opentelemetry/proto/metrics/v1/metrics_pb.js'
import { type Span, Status_StatusCode } from './otlp/gen/opentelemetry/proto/trace/v1/trace_pb.js'

export type Attrs = Record<string, unknown>

/** One received span, flattened with its resource. */
export interface ReceivedSpan {
  resource: Attrs
  scope: string
  name: string
  kind: number
  traceId: string
  spanId: string
  parentSpanId: string
  attrs: Attrs
  startMs: number
  endMs: number
  error: boolean
  statusMessage: string
}

/** One received metric data point, flattened with its resource. */
export interface ReceivedPoint {
  resource: Attrs
  scope: string
  name: string
  unit: string
  kind: 'gauge' | 'sum' | 'histogram' | 'other'
  attrs: Attrs
  /** Gauge/sum value, or the histogram's count. */
  value: number
  /** Histogram sum. */
  sum?: number
  timeMs: number
}

function anyValue(v: AnyValue | undefined): unknown {
  const x = v?.value
  switch (x?.case) {
    case 'stringValue':
    case 'boolValue':
    case 'doubleValue':
      return x.value
    case 'intValue':
      return Number(x.value)
    case 'arrayValue':
      return x.value.values.map(anyValue)
    case 'kvlistValue':
      return attrsOf(x.value.values)
    case 'bytesValue':
      return x.value
    default:
      return undefined
  }
}

function attrsOf(kvs: KeyValue[]): Attrs {
  return Object.fromEntries(kvs.map((kv) => [kv.key, anyValue(kv.value)]))
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex')
const nanosToMs = (n: bigint): number => Number(n / 1_000_000n)

function pointsOf(m: Metric, resource: Attrs, scope: string): ReceivedPoint[] {
  const base = { resource, scope, name: m.name, unit: m.unit }
  const d = m.data
  if (d.case === 'gauge' || d.case === 'sum') {
    return d.value.dataPoints.map((p) => ({
      ...base,
      kind: d.case,
      attrs: attrsOf(p.attributes),
      value: p.value.case === 'asInt' ? Number(p.value.value) : (p.value.value ?? 0),
      timeMs: nanosToMs(p.timeUnixNano),
    }))
  }
  if (d.case === 'histogram') {
    return d.value.dataPoints.map((p) => ({
      ...base,
      kind: 'histogram' as const,
      attrs: attrsOf(p.attributes),
      value: Number(p.count),
      sum: p.sum,
      timeMs: nanosToMs(p.timeUnixNano),
    }))
  }
  return []
}

/**
 * A real OTLP/HTTP receiver (protobuf bodies, optionally gzip) on 127.0.0.1: it decodes
 * ExportTraceServiceRequest and ExportMetricsServiceRequest with code generated from the official
 * opentelemetry-proto files (test/lib/otlp/generate.sh) and keeps everything it received.
 */
export class OtlpReceiver {
  readonly spans: ReceivedSpan[] = []
  readonly points: ReceivedPoint[] = []
  readonly requests = { traces: 0, metrics: 0, rejected: 0, grpc: 0 }
  private readonly server: Server
  private port = 0
  private grpcServer?: grpc.Server

  constructor() {
    this.server = createServer((req, res) => {
      this.receive(req).then(
        (ok) => {
          res.writeHead(ok ? 200 : 400, { 'content-type': 'application/x-protobuf' })
          res.end()
        },
        () => {
          res.writeHead(500)
          res.end()
        },
      )
    })
  }

  /** The base URL for OTEL_EXPORTER_OTLP_ENDPOINT. */
  get endpoint(): string {
    return `http://127.0.0.1:${this.port}`
  }

  async start(): Promise<void> {
    this.server.listen(0, '127.0.0.1')
    await once(this.server, 'listening')
    this.port = (this.server.address() as { port: number }).port
  }

  /**
   * Also accepts OTLP/gRPC (TraceService/Export and MetricsService/Export) on 127.0.0.1.
   * Resolves to the endpoint for OTEL_EXPORTER_OTLP_ENDPOINT with OTEL_EXPORTER_OTLP_PROTOCOL=grpc.
   */
  async startGrpc(): Promise<string> {
    const server = new grpc.Server()
    const method = (path: string): grpc.MethodDefinition<Buffer, Buffer> => ({
      path,
      requestStream: false,
      responseStream: false,
      requestSerialize: (b) => b,
      requestDeserialize: (b) => b,
      // an empty Export*ServiceResponse
      responseSerialize: () => Buffer.alloc(0),
      responseDeserialize: (b) => b,
    })
    const handler =
      (ingest: (body: Buffer) => void) =>
      (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>): void => {
        this.requests.grpc++
        ingest(call.request)
        callback(null, Buffer.alloc(0))
      }
    server.addService({ export: method('/opentelemetry.proto.collector.trace.v1.TraceService/Export') } as grpc.ServiceDefinition, {
      export: handler((b) => this.ingestTraces(b)),
    })
    server.addService({ export: method('/opentelemetry.proto.collector.metrics.v1.MetricsService/Export') } as grpc.ServiceDefinition, {
      export: handler((b) => this.ingestMetrics(b)),
    })
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err != null ? reject(err) : resolve(p))),
    )
    this.grpcServer = server
    return `http://127.0.0.1:${port}`
  }

  async stop(): Promise<void> {
    this.grpcServer?.forceShutdown()
    this.server.closeAllConnections()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }

  private async receive(req: IncomingMessage): Promise<boolean> {
    const chunks: Buffer[] = []
    for await (const c of req) chunks.push(c as Buffer)
    let body = Buffer.concat(chunks)
    if (req.headers['content-encoding'] === 'gzip') body = gunzipSync(body)
    if (req.method !== 'POST' || req.headers['content-type'] !== 'application/x-protobuf') {
      this.requests.rejected++
      return false
    }
    if (req.url === '/v1/traces') {
      this.requests.traces++
      this.ingestTraces(body)
      return true
    }
    if (req.url === '/v1/metrics') {
      this.requests.metrics++
      this.ingestMetrics(body)
      return true
    }
    this.requests.rejected++
    return false
  }

  private ingestTraces(body: Uint8Array): void {
    const msg = fromBinary(ExportTraceServiceRequestSchema, body)
    for (const rs of msg.resourceSpans) {
      const resource = attrsOf(rs.resource?.attributes ?? [])
      for (const ss of rs.scopeSpans) for (const s of ss.spans) this.spans.push(flatSpan(s, resource, ss.scope?.name ?? ''))
    }
  }

  private ingestMetrics(body: Uint8Array): void {
    const msg = fromBinary(ExportMetricsServiceRequestSchema, body)
    for (const rm of msg.resourceMetrics) {
      const resource = attrsOf(rm.resource?.attributes ?? [])
      for (const sm of rm.scopeMetrics) for (const m of sm.metrics) this.points.push(...pointsOf(m, resource, sm.scope?.name ?? ''))
    }
  }

  /**
   * Polls until `find` returns a non-empty value (bounded); rejects with `what` on timeout. The exporters send on
   * their own schedule and nothing announces an export, hence polling.
   */
  waitFor<T>(what: string, find: () => T | undefined | Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
    return eventually(
      `the OTLP receiver got ${what}`,
      async () => {
        const v = await find()
        return v != null && (!Array.isArray(v) || v.length > 0) ? v : undefined
      },
      { timeoutMs, intervalMs: 100 },
    )
  }

  /** The latest data point of a metric matching the attributes (and resource attributes), if any. */
  latest(name: string, attrs: Attrs = {}, resource: Attrs = {}): ReceivedPoint | undefined {
    let best: ReceivedPoint | undefined
    for (const p of this.points) {
      if (p.name !== name || !matches(p.attrs, attrs) || !matches(p.resource, resource)) continue
      if (best == null || p.timeMs >= best.timeMs) best = p
    }
    return best
  }
}

function flatSpan(s: Span, resource: Attrs, scope: string): ReceivedSpan {
  return {
    resource,
    scope,
    name: s.name,
    kind: s.kind,
    traceId: hex(s.traceId),
    spanId: hex(s.spanId),
    parentSpanId: hex(s.parentSpanId),
    attrs: attrsOf(s.attributes),
    startMs: nanosToMs(s.startTimeUnixNano),
    endMs: nanosToMs(s.endTimeUnixNano),
    error: s.status?.code === Status_StatusCode.ERROR,
    statusMessage: s.status?.message ?? '',
  }
}

export function matches(actual: Attrs, expected: Attrs): boolean {
  return Object.entries(expected).every(([k, v]) => actual[k] === v)
}
