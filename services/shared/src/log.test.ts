import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { context, INVALID_SPAN_CONTEXT, ROOT_CONTEXT, type SpanContext, TraceFlags, trace } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { createLogger } from './log.ts'

const SPAN: SpanContext = { traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b7', traceFlags: TraceFlags.SAMPLED }

function capture(): { lines: Record<string, unknown>[]; log: ReturnType<typeof createLogger> } {
  const lines: Record<string, unknown>[] = []
  return { lines, log: createLogger('test', { level: 'debug', write: (l) => lines.push(JSON.parse(l) as Record<string, unknown>) }) }
}

describe('log', () => {
  // Runs first: no context manager is registered yet, as in a process without the OpenTelemetry SDK.
  it('log - without an OpenTelemetry context manager no line carries a trace, even inside context.with', () => {
    const { lines, log } = capture()
    context.with(trace.setSpanContext(ROOT_CONTEXT, SPAN), () => log.info('inside'))
    assert.deepEqual(Object.keys(lines[0]!), ['time', 'level', 'ns', 'msg'])
  })

  it('log - a line written while a span is active carries its trace_id and span_id; others carry none', async () => {
    const manager = new AsyncLocalStorageContextManager().enable()
    context.setGlobalContextManager(manager)
    try {
      const { lines, log } = capture()
      log.info('before')
      await context.with(trace.setSpanContext(ROOT_CONTEXT, SPAN), async () => {
        await new Promise((r) => setImmediate(r))
        log.child('sub').warn('inside', { n: 1 })
      })
      // a sampled-out span still names its trace
      context.with(trace.setSpanContext(ROOT_CONTEXT, { ...SPAN, traceFlags: TraceFlags.NONE }), () => log.debug('unsampled'))
      context.with(trace.setSpanContext(ROOT_CONTEXT, INVALID_SPAN_CONTEXT), () => log.info('invalid'))
      log.info('after')
      assert.deepEqual(
        lines.map((l) => [l.msg, l.trace_id, l.span_id]),
        [
          ['before', undefined, undefined],
          ['inside', SPAN.traceId, SPAN.spanId],
          ['unsampled', SPAN.traceId, SPAN.spanId],
          ['invalid', undefined, undefined],
          ['after', undefined, undefined],
        ],
      )
      assert.equal(lines[1]!.ns, 'test:sub')
      assert.equal(lines[1]!.n, 1)
    } finally {
      context.disable()
    }
  })
})
