import assert from 'node:assert/strict'
import { once } from 'node:events'
import { describe, it } from 'node:test'
import type { Connection, Stream } from '@libp2p/interface'
import { streamPair } from '@libp2p/utils'
import { Code } from '@stargate/shared/errors'
import type { PeerFrame, PeerRequest, PeerResponse } from '@stargate/shared/gen/envelope'
import { createLogger } from '@stargate/shared/log'
import type { PeerResponseInit } from '../inbound.ts'
import { ConnectionBudgets } from './budget.ts'
import { onFrames, writeFrame } from './frames.ts'
import { type RequestSink, type StreamSink, serveCallStream } from './server.ts'

const log = createLogger('test', { level: 'silent' })
const connection = {
  remotePeer: { toString: () => 'caller' },
  remoteAddr: { toString: () => '/ip4/127.0.0.1/tcp/1' },
  status: 'open',
} as unknown as Connection
const reader = { maxFrameBytes: 64 * 1024 }
/** These tests open no tunnelled streams. */
const noTunnels: StreamSink = {
  limits: {},
  handler: () => () => assert.fail('no tunnelled stream expected'),
}

/** A dispatcher whose calls wait until the test answers them. */
function holdingSink() {
  const held: Array<{ req: PeerRequest; answer: () => void }> = []
  let arrived: (() => void) | undefined
  const sink: RequestSink = {
    handle: (req) =>
      new Promise<PeerResponseInit>((resolve) => {
        held.push({
          req,
          answer: () =>
            resolve({ exchangeId: req.exchangeId, requestId: req.requestId, result: { case: 'data', value: new Uint8Array(8) } }),
        })
        arrived?.()
      }),
    dropped: () => {},
  }
  const count = async (n: number): Promise<void> => {
    while (held.length < n) await new Promise<void>((r) => (arrived = r))
  }
  return { sink, held, count }
}

/** The responses arriving on the caller's end of a stream, by request id. */
function responses(stream: Stream): { byId: Map<string, PeerResponse>; next: () => Promise<PeerResponse> } {
  const byId = new Map<string, PeerResponse>()
  const waiting: Array<(r: PeerResponse) => void> = []
  onFrames(
    stream,
    reader,
    (frame: PeerFrame) => {
      if (frame.kind.case !== 'response') return
      byId.set(frame.kind.value.requestId, frame.kind.value)
      waiting.shift()?.(frame.kind.value)
    },
    () => {},
  )
  return { byId, next: () => new Promise((r) => waiting.push(r)) }
}

const request = (requestId: string, bytes: number) =>
  ({
    kind: {
      case: 'request',
      value: {
        requestId,
        method: 'echo',
        exchangeId: BigInt(requestId.length + bytes),
        payload: { case: 'data', value: new Uint8Array(bytes) },
      },
    },
  }) as const

describe('peer stream server', () => {
  it('connection caps - a connection past its stream limit gets its new stream reset, counted; a closed stream frees its slot', async () => {
    const budgets = new ConnectionBudgets({ maxStreams: 2, maxBufferedBytes: 1 << 20 })
    const { sink } = holdingSink()
    const pairs = await Promise.all([streamPair(), streamPair(), streamPair(), streamPair()])
    const callee = pairs.map(([, inbound]) => inbound)
    serveCallStream(callee[0]!, connection, sink, noTunnels, reader, budgets.of(connection), log)
    serveCallStream(callee[1]!, connection, sink, noTunnels, reader, budgets.of(connection), log)
    assert.equal(budgets.stats.streamsRefused, 0)
    serveCallStream(callee[2]!, connection, sink, noTunnels, reader, budgets.of(connection), log)
    assert.equal(callee[2]!.status, 'aborted', 'the third stream was reset')
    assert.equal(budgets.stats.streamsRefused, 1)
    // another connection has its own budget
    const other = { ...connection } as Connection
    serveCallStream(callee[3]!, other, sink, noTunnels, reader, budgets.of(other), log)
    assert.notEqual(callee[3]!.status, 'aborted')
    // once a stream of the first connection closes, a new one fits
    const closed = once(callee[0]!, 'close')
    callee[0]!.abort(new Error('caller went away'))
    await closed
    const [, again] = await streamPair()
    serveCallStream(again, connection, sink, noTunnels, reader, budgets.of(connection), log)
    assert.notEqual(again.status, 'aborted')
    assert.equal(budgets.of(connection).openStreams, 2)
    for (const [a, b] of pairs) {
      a.abort(new Error('test over'))
      b.abort(new Error('test over'))
    }
    again.abort(new Error('test over'))
  })

  it('connection caps - a request that would pass the buffered-bytes limit is RESOURCE_EXHAUSTED and never handled; bytes return as answers leave', async () => {
    const budgets = new ConnectionBudgets({ maxStreams: 4, maxBufferedBytes: 5_000 })
    const budget = budgets.of(connection)
    const { sink, held, count } = holdingSink()
    const [caller, callee] = await streamPair()
    serveCallStream(callee, connection, sink, noTunnels, reader, budget, log)
    const got = responses(caller)
    try {
      await writeFrame(caller, request('a', 2_000))
      await writeFrame(caller, request('b', 2_000))
      await count(2)
      const refused = got.next()
      await writeFrame(caller, request('c', 2_000))
      const res = await Promise.race([refused, count(3).then(() => assert.fail('the third request was handled'))])
      assert.equal(res.requestId, 'c')
      assert.equal(res.result.case, 'error')
      assert.equal(res.result.case === 'error' ? res.result.value.code : 0, Code.ResourceExhausted)
      assert.match(res.result.case === 'error' ? res.result.value.message : '', /--max-conn-buffered-bytes 5000/)
      assert.equal(held.length, 2, 'the refused request was not handled')
      assert.equal(budgets.stats.bytesRefused, 1)
      assert.ok(budget.bufferedBytes >= 4_000 && budget.bufferedBytes <= 5_000, `${budget.bufferedBytes} bytes held`)
      // one answer leaves: room for another request
      const answered = got.next()
      held[0]!.answer()
      assert.equal((await answered).requestId, 'a')
      await writeFrame(caller, request('d', 2_000))
      await count(3)
      assert.equal(held[2]!.req.requestId, 'd')
      const rest = Promise.all([got.next(), got.next()])
      held[1]!.answer()
      held[2]!.answer()
      await rest
      assert.equal(budget.bufferedBytes, 0, 'every byte is released once answered')
    } finally {
      caller.abort(new Error('test over'))
      callee.abort(new Error('test over'))
    }
  })

  it('connection caps - a frame in progress that passes the limit resets the stream, counted, and frees its buffer', async () => {
    const budgets = new ConnectionBudgets({ maxStreams: 4, maxBufferedBytes: 12_000 })
    const budget = budgets.of(connection)
    let dropped = 0
    const sink: RequestSink = { handle: () => new Promise(() => {}), dropped: () => dropped++ }
    const [caller, callee] = await streamPair()
    serveCallStream(callee, connection, sink, noTunnels, reader, budget, log)
    const closed = once(callee, 'close')
    // announces a 40 000-byte frame, then sends it in 5 000-byte chunks: the buffer grows past 12 000
    caller.send(new Uint8Array([0xc0, 0xb8, 0x02]))
    for (let i = 0; i < 8; i++) caller.send(new Uint8Array(5_000))
    await closed
    assert.equal(budgets.stats.bytesRefused, 1)
    assert.equal(dropped, 0, 'not counted as malformed')
    assert.equal(budget.bufferedBytes, 0)
    caller.abort(new Error('test over'))
  })
})
