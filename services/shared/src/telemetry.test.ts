import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { configuredExporters } from './telemetry.ts'

describe('telemetry - which signals are exported', () => {
  it('telemetry - nothing is exported when no OTEL variable configures an exporter (unlike the SDK default)', () => {
    assert.deepEqual(configuredExporters('TRACES', {}), [])
    assert.deepEqual(configuredExporters('METRICS', { OTEL_SERVICE_NAME: 'x', OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' }), [])
  })

  it('telemetry - an OTLP endpoint turns on OTLP export; a per-signal endpoint only for its signal', () => {
    const all = { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' }
    assert.deepEqual(configuredExporters('TRACES', all), ['otlp'])
    assert.deepEqual(configuredExporters('METRICS', all), ['otlp'])
    const traces = { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://collector:4318/v1/traces' }
    assert.deepEqual(configuredExporters('TRACES', traces), ['otlp'])
    assert.deepEqual(configuredExporters('METRICS', traces), [])
  })

  it('telemetry - OTEL_*_EXPORTER names the exporters; none turns a signal off even with an endpoint', () => {
    assert.deepEqual(configuredExporters('METRICS', { OTEL_METRICS_EXPORTER: 'prometheus, otlp' }), ['prometheus', 'otlp'])
    assert.deepEqual(configuredExporters('TRACES', { OTEL_TRACES_EXPORTER: 'none', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' }), [])
    assert.deepEqual(configuredExporters('TRACES', { OTEL_TRACES_EXPORTER: 'console' }), ['console'])
  })
})
