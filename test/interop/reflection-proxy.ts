import { once } from 'node:events'
import {
  connect,
  constants,
  createServer,
  type Http2Server,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
  type ServerHttp2Session,
  type ServerHttp2Stream,
} from 'node:http2'

const REFLECTION_V1 = '/grpc.reflection.v1.ServerReflection/'
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'http2-settings'])

/**
 * A cleartext HTTP/2 (h2c) proxy in front of a gRPC server that records every request path and, with
 * blockReflectionV1, answers grpc.reflection.v1 with UNIMPLEMENTED, as a server that only has v1alpha would.
 * A client that still works through it has used grpc.reflection.v1alpha.
 */
export class ReflectionProxy {
  readonly paths: string[] = []
  readonly addr: Promise<string>
  private readonly server: Http2Server
  private readonly upstream: ReturnType<typeof connect>
  private readonly sessions = new Set<ServerHttp2Session>()

  constructor(target: string, opts: { blockReflectionV1: boolean }) {
    this.upstream = connect(`http://${target}`)
    this.upstream.on('error', () => {})
    this.server = createServer()
    this.server.on('session', (session) => {
      this.sessions.add(session)
      session.on('close', () => this.sessions.delete(session))
    })
    this.server.on('stream', (stream, headers) => this.forward(stream, headers, opts.blockReflectionV1))
    this.server.listen(0, '127.0.0.1')
    this.addr = once(this.server, 'listening').then(() => `127.0.0.1:${(this.server.address() as { port: number }).port}`)
  }

  private forward(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, blockV1: boolean): void {
    const path = String(headers[':path'])
    this.paths.push(path)
    stream.on('error', () => {})
    if (blockV1 && path.startsWith(REFLECTION_V1)) {
      stream.respond(
        {
          ':status': 200,
          'content-type': 'application/grpc',
          'grpc-status': String(12), // UNIMPLEMENTED
          'grpc-message': 'grpc.reflection.v1 is blocked by the test proxy',
        },
        { endStream: true },
      )
      return
    }
    const out: OutgoingHttpHeaders = {}
    for (const [k, v] of Object.entries(headers)) if (!HOP_BY_HOP.has(k) && v != null) out[k] = v
    const req = this.upstream.request(out)
    req.on('error', () => stream.close(constants.NGHTTP2_INTERNAL_ERROR))
    stream.pipe(req)
    let trailers: OutgoingHttpHeaders = {}
    req.on('trailers', (t) => {
      trailers = stripPseudo(t)
    })
    req.on('response', (res) => {
      if (res['grpc-status'] != null) {
        // Trailers-only response (an error before any message).
        stream.respond(stripPseudo(res, true), { endStream: true })
        req.resume()
        return
      }
      stream.respond(stripPseudo(res, true), { waitForTrailers: true })
      stream.on('wantTrailers', () => stream.sendTrailers(trailers))
      req.pipe(stream)
    })
  }

  async close(): Promise<void> {
    this.upstream.close()
    const closed = once(this.server, 'close')
    this.server.close()
    for (const s of this.sessions) s.destroy()
    await closed
  }
}

function stripPseudo(h: IncomingHttpHeaders, keepStatus = false): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {}
  for (const [k, v] of Object.entries(h)) {
    if (v == null) continue
    if (k.startsWith(':') && !(keepStatus && k === ':status')) continue
    out[k] = v
  }
  return out
}
