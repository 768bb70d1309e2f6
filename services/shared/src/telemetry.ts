import { randomUUID } from 'node:crypto'
import { type Attributes, type DiagLogger, DiagLogLevel, diag } from '@opentelemetry/api'
import { OTLPMetricExporter as OTLPGrpcMetricExporter } from '@opentelemetry/exporter-metrics-otlp-grpc'
import { OTLPMetricExporter as OTLPProtoMetricExporter } from '@opentelemetry/exporter-metrics-otlp-proto'
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus'
import { RuntimeNodeInstrumentation } from '@opentelemetry/instrumentation-runtime-node'
import {
  defaultResource,
  detectResources,
  hostDetector,
  osDetector,
  processDetector,
  type Resource,
  resourceFromAttributes,
  serviceNameEnvDetector,
} from '@opentelemetry/resources'
import { ConsoleMetricExporter, type IMetricReader, PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics'
import { startNodeSdk } from '@opentelemetry/sdk-node'
import { messageOf } from './errors.ts'
import type { Logger } from './log.ts'
import { STARGATE_VERSION } from './version.ts'

/** Resource attribute carrying the libp2p peer id of the process (tells two gateways apart). */
export const ATTR_PEER_ID = 'stargate.peer_id'

export interface TelemetryInit {
  /** service.name unless OTEL_SERVICE_NAME (or OTEL_RESOURCE_ATTRIBUTES) says otherwise. */
  serviceName: string
  /** The process's libp2p peer id (resource attribute stargate.peer_id). */
  peerId?: string
  /** Serve Prometheus metrics on HOST:PORT (/metrics), in addition to any OTLP export. */
  metricsListen?: { host: string; port: number }
  log: Logger
}

/** The running telemetry SDK of one process. */
export interface Telemetry {
  /** Spans are exported (an exporter is configured). */
  readonly tracing: boolean
  /** Metrics are exported or served. */
  readonly metrics: boolean
  /** Flushes pending spans and metrics and stops the exporters (call on graceful stop); gives up after timeoutMs. */
  shutdown(timeoutMs?: number): Promise<void>
}

/** How long a graceful stop waits for the last export (an unreachable collector must not hold the process). */
export const TELEMETRY_SHUTDOWN_TIMEOUT_MS = 3_000

const DISABLED: Telemetry = { tracing: false, metrics: false, shutdown: async () => {} }

const DIAG_LEVELS: Record<string, DiagLogLevel> = {
  none: DiagLogLevel.NONE,
  error: DiagLogLevel.ERROR,
  warn: DiagLogLevel.WARN,
  info: DiagLogLevel.INFO,
  debug: DiagLogLevel.DEBUG,
  verbose: DiagLogLevel.VERBOSE,
  all: DiagLogLevel.ALL,
}

function envList(name: string, env: NodeJS.ProcessEnv = process.env): string[] {
  return (env[name] ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
}

function envSet(name: string, env: NodeJS.ProcessEnv): boolean {
  return (env[name] ?? '').trim() !== ''
}

function envMs(name: string, fallback: number): number {
  const v = Number(process.env[name])
  return Number.isFinite(v) && v > 0 ? v : fallback
}

/**
 * Whether a signal is exported. Unlike the SDK default (OTLP to localhost), nothing is exported unless
 * configured: OTEL_{SIGNAL}_EXPORTER names an exporter, or an OTLP endpoint is set.
 */
export function configuredExporters(signal: 'TRACES' | 'METRICS', env: NodeJS.ProcessEnv = process.env): string[] {
  const named = envList(`OTEL_${signal}_EXPORTER`, env)
  if (named.includes('none')) return []
  if (named.length > 0) return named
  return envSet('OTEL_EXPORTER_OTLP_ENDPOINT', env) || envSet(`OTEL_EXPORTER_OTLP_${signal}_ENDPOINT`, env) ? ['otlp'] : []
}

/** Metric readers from OTEL_METRICS_EXPORTER / OTEL_EXPORTER_OTLP_* / OTEL_METRIC_EXPORT_*, like the SDK builds them. */
function metricReadersFromEnv(log: Logger): IMetricReader[] {
  const readers: IMetricReader[] = []
  const intervalMs = envMs('OTEL_METRIC_EXPORT_INTERVAL', 60_000)
  const timeoutMs = Math.min(envMs('OTEL_METRIC_EXPORT_TIMEOUT', 30_000), intervalMs)
  for (const name of configuredExporters('METRICS')) {
    if (name === 'otlp') {
      const protocol = (process.env.OTEL_EXPORTER_OTLP_METRICS_PROTOCOL ?? process.env.OTEL_EXPORTER_OTLP_PROTOCOL ?? '').trim()
      const exporter = protocol === 'grpc' ? new OTLPGrpcMetricExporter() : new OTLPProtoMetricExporter()
      if (protocol !== '' && protocol !== 'grpc' && protocol !== 'http/protobuf') {
        log.warn('unsupported OTLP metrics protocol, using http/protobuf', { protocol })
      }
      readers.push(new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: intervalMs, exportTimeoutMillis: timeoutMs }))
    } else if (name === 'console') {
      readers.push(new PeriodicExportingMetricReader({ exporter: new ConsoleMetricExporter(), exportIntervalMillis: intervalMs }))
    } else if (name === 'prometheus') {
      readers.push(
        new PrometheusExporter({
          host: process.env.OTEL_EXPORTER_PROMETHEUS_HOST,
          port: Number(process.env.OTEL_EXPORTER_PROMETHEUS_PORT ?? PrometheusExporter.DEFAULT_OPTIONS.port),
        }),
      )
    } else {
      log.warn('unsupported OTEL_METRICS_EXPORTER value ignored', { exporter: name })
    }
  }
  return readers
}

/**
 * The base resource: SDK defaults, host/os/process attributes (unless OTEL_NODE_RESOURCE_DETECTORS=none) with
 * their asynchronous attributes settled (a Prometheus scrape reads them at once), and Stargate's service
 * attributes. OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are merged on top by the SDK.
 */
async function baseResource(serviceName: string): Promise<Resource> {
  const detectors = envList('OTEL_NODE_RESOURCE_DETECTORS').includes('none') ? [] : [hostDetector, osDetector, processDetector]
  const detected = detectResources({ detectors })
  await detected.waitForAsyncAttributes?.()
  return defaultResource()
    .merge(detected)
    .merge(
      resourceFromAttributes({
        'service.name': serviceName,
        'service.version': STARGATE_VERSION,
        'service.instance.id': randomUUID(),
      }),
    )
}

function diagLogger(log: Logger): DiagLogger {
  const text = (msg: string, args: unknown[]): string => [msg, ...args.map((a) => messageOf(a))].join(' ')
  return {
    error: (msg, ...args) => log.error(text(msg, args)),
    warn: (msg, ...args) => log.warn(text(msg, args)),
    info: (msg, ...args) => log.info(text(msg, args)),
    debug: (msg, ...args) => log.debug(text(msg, args)),
    verbose: (msg, ...args) => log.debug(text(msg, args)),
  }
}

/**
 * Starts the OpenTelemetry SDK, configured only by the standard OTEL_* environment variables:
 * OTLP over http/protobuf by default, gRPC with OTEL_EXPORTER_OTLP_PROTOCOL=grpc; nothing is exported
 * when no exporter or endpoint is configured (the process then runs quietly). W3C trace context is
 * always propagated. Resource: service.name, service.version, service.instance.id (unique per process)
 * and stargate.peer_id. With metrics on, Node runtime metrics (nodejs.eventloop.*, v8js.*) are collected too.
 * SDK diagnostics go to the service log (level OTEL_LOG_LEVEL, default warn).
 */
export async function startTelemetry(init: TelemetryInit): Promise<Telemetry> {
  const log = init.log
  if ((process.env.OTEL_SDK_DISABLED ?? '').trim().toLowerCase() === 'true') return DISABLED
  const level = DIAG_LEVELS[(process.env.OTEL_LOG_LEVEL ?? '').trim().toLowerCase()] ?? DiagLogLevel.WARN
  const tracing = configuredExporters('TRACES').length > 0
  const metricReaders = metricReadersFromEnv(log)
  let prometheus: PrometheusExporter | undefined
  if (init.metricsListen != null) {
    prometheus = new PrometheusExporter({ host: init.metricsListen.host, port: init.metricsListen.port, preventServerStart: true })
    metricReaders.push(prometheus)
  }
  const resource = await baseResource(init.serviceName)
  const sdk = startNodeSdk({
    logLevel: 'none',
    baseResource: resource,
    resourceDetectors: [serviceNameEnvDetector],
    resourceAttributes: init.peerId != null ? ({ [ATTR_PEER_ID]: init.peerId } satisfies Attributes) : undefined,
    // undefined: the SDK builds the span exporters from OTEL_TRACES_EXPORTER / OTEL_EXPORTER_OTLP_* / OTEL_BSP_*.
    spanProcessors: tracing ? undefined : [],
    metricReaders,
    logRecordProcessors: [],
    // Node runtime metrics (event loop delay and utilization, V8 heap spaces, GC pauses) from perf_hooks and v8,
    // read in process: only when metrics go somewhere.
    instrumentations: metricReaders.length > 0 ? [new RuntimeNodeInstrumentation()] : [],
  })
  diag.setLogger(diagLogger(log), { logLevel: level, suppressOverrideMessage: true })
  if (prometheus != null) {
    try {
      await prometheus.startServer()
    } catch (err: unknown) {
      await sdk.shutdown()
      throw new Error(`--metrics-listen ${init.metricsListen?.host}:${init.metricsListen?.port}: ${messageOf(err)}`)
    }
  }
  let stopped: Promise<void> | undefined
  return {
    tracing,
    metrics: metricReaders.length > 0,
    shutdown: (timeoutMs = TELEMETRY_SHUTDOWN_TIMEOUT_MS) => {
      stopped ??= new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          log.warn('telemetry flush did not finish in time', { timeoutMs })
          resolve()
        }, timeoutMs)
        timer.unref()
        sdk
          .shutdown()
          .catch((err: unknown) => log.warn('telemetry shutdown failed', { err: messageOf(err) }))
          .finally(() => {
            clearTimeout(timer)
            resolve()
          })
      })
      return stopped
    },
  }
}
