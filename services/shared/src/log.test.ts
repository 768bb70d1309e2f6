import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { context, INVALID_SPAN_CONTEXT, ROOT_CONTEXT, type SpanContext, TraceFlags, trace } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { createLogger, RateLimitedLog } from './log.ts'

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

describe('RateLimitedLog', () => {
  it('RateLimitedLog - writes at most burst lines per kind per window and reports how many it held back', () => {
    const lines: Array<Record<string, unknown>> = []
    let nowMs = 0
    const log = new RateLimitedLog(createLogger('t', { write: (l) => lines.push(JSON.parse(l)) }), {
      intervalMs: 1000,
      burst: 2,
      now: () => nowMs,
    })
    for (let i = 0; i < 10; i++) log.warn('dropped message', { i })
    log.warn('another kind')
    assert.deepEqual(
      lines.map((l) => [l.msg, l.i]),
      [
        ['dropped message', 0],
        ['dropped message', 1],
        ['another kind', undefined],
      ],
    )
    assert.equal(log.suppressed, 8)
    nowMs = 1000
    log.warn('dropped message', { i: 10 })
    assert.equal(lines.at(-1)?.suppressed, 8)
    assert.equal(lines.at(-1)?.level, 'warn')
    log.warn('dropped message', { i: 11 })
    assert.equal(lines.at(-1)?.suppressed, undefined)
  })
})
