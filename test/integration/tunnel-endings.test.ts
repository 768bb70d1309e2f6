/**
 * Every tunnelled call ends with a gRPC status the client can read: trailers with grpc-status and
 * grpc-message after a response body that ends at a message boundary, however the call fails in the middle
 * of a response message: the link fails, the deadline passes, a message is over the max size, the backend
 * resets its stream, ends it without a status, or its connection closes or is reset. Normal endings (status,
 * trailers-only, details) are in tunnel.test.ts.
 * (gRPC clients report a body that ends inside a message as INTERNAL, grpc-go as "unexpected EOF", whatever
 * status follows.) In process: a raw node:http2 client → ingress → TunnelClient → in-memory link →
 * TunnelServer → egress → a raw node:http2 backend; and the real Go echo client, stalled, over a link that
 * then fails.
 */
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { type ClientHttp2Session, connect, createServer, constants as h2, type ServerHttp2Stream } from 'node:http2'
import type { AddressInfo, Socket } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { GATEWAY_DEFAULTS } from '@stargate/gateway/defaults'
import { Code, StargateError } from '@stargate/shared/errors'
import { encodeFrame } from '@stargate/shared/grpc/wire'
import { generatedSha256, parseRun, prepareEchoPrograms, spawnEchoClient, startEchoServer } from '../interop/echo-programs.ts'
import { Harness } from '../lib/harness.ts'
import { TunnelStack, type TunnelStackOptions } from '../lib/tunnel-stack.ts'

const SERVICE = 'cut.v1.Bytes'
const UNAVAILABLE = 14

/** A gRPC message of n payload bytes, all `fill`. */
function message(n: number, fill: number): Buffer {
  return encodeFrame(Buffer.alloc(n, fill))
}

const WHOLE = [message(100, 1), message(200, 2)]
const HALF = message(300, 3).subarray(0, 150)
const LARGE = message(GATEWAY_DEFAULTS.tunnelWindowBytes * 2, 4)
const LARGE_HALF = 200_000
const MAX_MESSAGE_BYTES = 64 * 1024
const OVERSIZED = message(MAX_MESSAGE_BYTES + 1, 5).subarray(0, 1000)

/** Sends the oversized message of an 'Oversized' call in progress (the test calls it when it is time). */
const oversized: Array<() => void> = []

/** A raw HTTP/2 gRPC backend that answers whole messages, then part of one, then fails as its path says. */
function startBackend(): Promise<{ port: number; close(): Promise<void> }> {
  const server = createServer()
  // The TCP connections, to reset one (the session's socket is a proxy that refuses resetAndDestroy()).
  const sockets = new Set<Socket>()
  server.on('connection', (socket: Socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })
  server.on('stream', (stream: ServerHttp2Stream, headers) => {
    stream.on('error', () => {})
    stream.resume()
    const how = String(headers[':path']).split('/')[2]
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: how !== 'NoStatus' })
    stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }))
    if (how === 'Oversized') {
      // The whole messages and the first 3 bytes of the length prefix of one over the max message size; the
      // rest of it once the client has the whole ones.
      stream.write(Buffer.concat([...WHOLE, OVERSIZED.subarray(0, 3)]))
      oversized.push(() => stream.write(OVERSIZED.subarray(3)))
      return
    }
    if (how === 'Large') {
      stream.write(LARGE.subarray(0, LARGE_HALF))
      return
    }
    // One write: the whole messages and the part of the next travel in one chunk, so when the client has the
    // whole ones, its gateway has the part too.
    stream.write(Buffer.concat([...WHOLE, HALF]))
    if (how === 'Reset') setTimeout(() => stream.close(h2.NGHTTP2_INTERNAL_ERROR), 50)
    if (how === 'NoStatus') setTimeout(() => stream.end(), 50)
    if (how === 'Killed') setTimeout(() => stream.session?.socket.destroy(), 50)
    if (how === 'ConnectionReset') {
      const port = stream.session?.socket.remotePort
      setTimeout(() => [...sockets].find((socket) => socket.remotePort === port)?.resetAndDestroy(), 50)
    }
    // 'Link': holds the call open until the test fails the link.
  })
  server.listen(0, '127.0.0.1')
  return once(server, 'listening').then(() => ({
    port: (server.address() as AddressInfo).port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  }))
}

interface Ending {
  body: Buffer
  trailers: Record<string, unknown>
}

/** Long enough for any loaded machine; only a broken ingress that never passes the bytes waits this long. */
const GUARD_MS = 30_000

/**
 * One raw call: once the client has `expectBytes` body bytes, calls `then` (also after GUARD_MS without them,
 * so that an ingress holding them back fails the assertions instead of hanging); resolves with its ending.
 */
async function call(
  session: ClientHttp2Session,
  method: string,
  expectBytes: number,
  then: () => void = () => {},
  headers: Record<string, string> = {},
): Promise<Ending> {
  const req = session.request({
    ':method': 'POST',
    ':path': `/${SERVICE}/${method}`,
    'content-type': 'application/grpc',
    te: 'trailers',
    ...headers,
  })
  req.end(message(1, 0))
  const chunks: Buffer[] = []
  let got = 0
  let fired = false
  const fire = (): void => {
    if (fired) return
    fired = true
    clearTimeout(guard)
    then()
  }
  const guard = setTimeout(fire, GUARD_MS)
  let trailers: Record<string, unknown> = {}
  req.on('trailers', (t) => {
    trailers = t
  })
  req.on('data', (c: Buffer) => {
    chunks.push(c)
    got += c.byteLength
    if (got >= expectBytes) fire()
  })
  await once(req, 'close')
  clearTimeout(guard)
  return { body: Buffer.concat(chunks), trailers }
}

describe('tunnel - every call ends with grpc-status and grpc-message, at a message boundary', () => {
  const h = new Harness()
  let backend: { port: number; close(): Promise<void> }

  before(async () => {
    backend = await startBackend()
  })
  after(async () => {
    await backend?.close()
    await h.close()
  })

  /** A stack of its own per case: a failed link stays failed. */
  async function withStack(
    run: (stack: TunnelStack, session: ClientHttp2Session) => Promise<void>,
    options: Omit<TunnelStackOptions, 'expose'> = {},
  ): Promise<void> {
    const stack = await new TunnelStack({ expose: [`${SERVICE}=127.0.0.1:${backend.port}`], ...options }).start()
    const session = connect(`http://${stack.address}`)
    session.on('error', () => {})
    try {
      await run(stack, session)
    } finally {
      session.destroy()
      await stack.stop()
    }
  }

  const wholeBytes = WHOLE.reduce((n, m) => n + m.length, 0)

  it('tunnel - the link fails in the middle of a response message: the whole messages, then UNAVAILABLE', async () => {
    await withStack(async (stack, session) => {
      const end = await call(session, 'Link', wholeBytes, () =>
        stack.loop.fail(new StargateError(Code.Unavailable, 'relay circuit closed')),
      )
      assert.deepEqual(end.body, Buffer.concat(WHOLE), 'the client never sees the part of the third message')
      assert.equal(end.trailers['grpc-status'], String(UNAVAILABLE))
      assert.match(String(end.trailers['grpc-message']), /tunnel link to peer callee failed \(relay circuit closed\)/)
    })
  })

  it('tunnel - the deadline passes in the middle of a response message: the whole messages, then DEADLINE_EXCEEDED', async () => {
    await withStack(async (_stack, session) => {
      // 'Link' holds the call open: the deadline ends it, long after the whole messages arrived.
      const end = await call(session, 'Link', wholeBytes, () => {}, { 'grpc-timeout': '2S' })
      assert.deepEqual(end.body, Buffer.concat(WHOLE))
      assert.equal(end.trailers['grpc-status'], String(Code.DeadlineExceeded))
      assert.match(String(end.trailers['grpc-message']), /deadline exceeded: the call did not finish within its \d+ ms deadline/)
    })
  })

  it('tunnel - a response message over the max size, its length prefix split: the whole messages, then RESOURCE_EXHAUSTED', async () => {
    await withStack(
      async (_stack, session) => {
        const end = await call(session, 'Oversized', wholeBytes, () => oversized.shift()!())
        assert.deepEqual(end.body, Buffer.concat(WHOLE), 'not the start of the oversized one')
        assert.equal(end.trailers['grpc-status'], String(Code.ResourceExhausted))
        assert.match(
          String(end.trailers['grpc-message']),
          new RegExp(`message of ${MAX_MESSAGE_BYTES + 1} bytes exceeds the max message size of ${MAX_MESSAGE_BYTES} bytes`),
        )
      },
      { maxMessageBytes: MAX_MESSAGE_BYTES },
    )
  })

  it('tunnel - the backend resets its stream in the middle of a message: the whole messages, then its status', async () => {
    await withStack(async (_stack, session) => {
      const end = await call(session, 'Reset', wholeBytes)
      assert.deepEqual(end.body, Buffer.concat(WHOLE))
      assert.equal(end.trailers['grpc-status'], String(Code.Internal))
      assert.match(String(end.trailers['grpc-message']), /closed the stream without a status \(HTTP\/2 code 2\)/)
    })
  })

  it('tunnel - the backend ends its response without a status, inside a message: the whole messages, then INTERNAL', async () => {
    await withStack(async (_stack, session) => {
      const end = await call(session, 'NoStatus', wholeBytes)
      assert.deepEqual(end.body, Buffer.concat(WHOLE))
      assert.equal(end.trailers['grpc-status'], String(Code.Internal))
      assert.match(String(end.trailers['grpc-message']), /ended its response without a grpc-status/)
    })
  })

  for (const [how, closed] of [
    ['Killed', 'closed (FIN)'],
    ['ConnectionReset', 'reset (TCP RST)'],
  ] as const) {
    it(`tunnel - the backend connection is ${closed} in the middle of a message: the whole messages, then UNAVAILABLE`, async () => {
      await withStack(async (_stack, session) => {
        const end = await call(session, how, wholeBytes)
        assert.deepEqual(end.body, Buffer.concat(WHOLE))
        assert.equal(end.trailers['grpc-status'], String(UNAVAILABLE))
        // Not "unreachable": it answered, then went away.
        assert.match(
          String(end.trailers['grpc-message']),
          /^backend 127\.0\.0\.1:\d+ \(exposing cut\.v1\.Bytes\) closed its connection during the call/,
        )
      })
    })
  }

  it('tunnel - a message larger than the window is passed as it arrives; cut, the status still follows', async () => {
    await withStack(async (stack, session) => {
      const end = await call(session, 'Large', LARGE_HALF, () =>
        stack.loop.fail(new StargateError(Code.Unavailable, 'relay circuit closed')),
      )
      // Lengths first: a failing deepEqual of two 200 kB buffers takes minutes to describe the difference.
      assert.equal(end.body.length, LARGE_HALF, 'not held back: holding it would take more than the window')
      assert.ok(end.body.equals(LARGE.subarray(0, LARGE_HALF)), 'the bytes as they came')
      assert.equal(end.trailers['grpc-status'], String(UNAVAILABLE))
      assert.match(String(end.trailers['grpc-message']), /tunnel link to peer callee failed/)
    })
  })

  it('tunnel - the real Go client, stalled on a server stream whose link then fails, gets UNAVAILABLE with the reason', async () => {
    await prepareEchoPrograms()
    const server = await startEchoServer(h, 'go')
    const stack = await new TunnelStack({ expose: [`stargate.test.v1.EchoService=${server.addr}`] }).start()
    try {
      // 64 KiB + 5 byte messages in 16 KiB HTTP/2 frames: the link fails inside a message.
      const client = await spawnEchoClient(h, 'go', stack.address, {
        kinds: ['server_stream'],
        sizes: [0],
        count: 200,
        responseBytes: 64 * 1024,
        stallAfter: 4,
      })
      await client.waitFor(/"event":"stalled"/)
      stack.loop.fail(new StargateError(Code.Unavailable, 'relay circuit closed'))
      client.child.stdin!.end('\n')
      await client.exited
      const r = parseRun(client.stdout).results[0]!
      console.log(`Go client after the link failed: status ${r.code} "${r.message}" after ${r.received_messages} whole messages`)
      assert.equal(r.code, UNAVAILABLE, `${r.code} ${r.message}`)
      assert.match(r.message, /tunnel link to peer callee failed \(relay circuit closed\)/)
      assert.ok(r.received_messages >= 4 && r.received_messages < 200)
      assert.equal(r.received_sha256, generatedSha256(r.received_messages, 64 * 1024), 'the messages it got are the first ones, intact')
    } finally {
      await stack.stop()
    }
  })
})
