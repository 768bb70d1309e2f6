import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerHttp2Stream } from 'node:http2'
import { ConnectError } from '@connectrpc/connect'
import type { UniversalHandler } from '@connectrpc/connect/protocol'
import { Code } from '../errors.ts'

/** Headers a handler may not send on HTTP/2 (connection-specific; node refuses them). */
export const CONNECTION_HEADERS = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'http2-settings',
])

/** Copies fetch-API headers into node's outgoing headers, leaving out connection-specific ones. */
export function addHeaders(target: OutgoingHttpHeaders, source: Headers | undefined): void {
  source?.forEach((value, key) => {
    if (!CONNECTION_HEADERS.has(key)) target[key] = value
  })
}

/** node's incoming HTTP/2 headers as fetch-API Headers, without the pseudo-headers. */
export function webHeaders(headers: IncomingHttpHeaders): Headers {
  const out = new Headers()
  for (const key in headers) {
    if (key.charCodeAt(0) === 58 /* ':' */) continue
    const v = headers[key]
    if (v == null) continue
    if (Array.isArray(v)) for (const e of v) out.append(key, e)
    else out.append(key, v)
  }
  return out
}

/**
 * The URL a request on an HTTP/2 stream was sent to, as connect-es handler contexts have it: scheme, the
 * authority the client named (`:authority`, else Host; else `fallbackAuthority`), path. Only the path when
 * there is no authority at all.
 */
export function requestUrl(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, fallbackAuthority?: string): string {
  const path = headers[':path'] ?? '/'
  const authority = headers[':authority'] ?? headers.host ?? fallbackAuthority
  if (authority == null || authority === '') return path
  const secure = (stream.session?.socket as { encrypted?: boolean } | undefined)?.encrypted === true
  return `${secure ? 'https' : 'http'}://${authority}${path}`
}

/**
 * Serves one Connect or gRPC-Web request that arrived on an HTTP/2 stream with a connect-es universal handler.
 * (node's Http2ServerRequest exists only on a server that hands every stream to one request listener; ours
 * dispatches per stream.) The request body is read only as fast as the handler consumes it, so HTTP/2 flow
 * control holds a fast client back; the response is written as the handler produces it, waiting for 'drain'.
 */
export async function serveUniversal(
  handler: UniversalHandler,
  stream: ServerHttp2Stream,
  headers: IncomingHttpHeaders,
  /** Added to the response headers (CORS); the handler's own headers win. */
  extraHeaders?: OutgoingHttpHeaders,
): Promise<void> {
  const abort = new AbortController()
  let done = false
  const onClose = (): void => {
    if (!done) abort.abort(new ConnectError('the client closed the stream', Code.Canceled))
  }
  stream.once('close', onClose)
  const res = await handler({
    httpVersion: '2.0',
    method: headers[':method'] ?? 'POST',
    // connect-es parses the URL: a request naming no authority gets a stand-in.
    url: requestUrl(stream, headers, 'localhost'),
    header: webHeaders(headers),
    // destroyOnReturn false: a handler that stops reading must not reset the stream it still answers on.
    body: stream.iterator({ destroyOnReturn: false }) as AsyncIterable<Uint8Array>,
    signal: abort.signal,
  })
  const it = res.body?.[Symbol.asyncIterator]()
  try {
    // The first chunk comes before the headers, so that the handler can still set response headers.
    let chunk = it == null ? undefined : await it.next()
    if (stream.destroyed) return
    const head: OutgoingHttpHeaders = { ...extraHeaders }
    addHeaders(head, res.header)
    head[':status'] = res.status
    const trailer = res.trailer
    stream.respond(head, { waitForTrailers: trailer != null, endStream: it == null && trailer == null })
    if (trailer != null) {
      stream.once('wantTrailers', () => {
        const t: OutgoingHttpHeaders = {}
        addHeaders(t, trailer)
        stream.sendTrailers(t)
      })
    }
    while (chunk != null && chunk.done !== true) {
      if (!stream.write(chunk.value)) await drained(stream)
      if (stream.destroyed) return
      chunk = await (it as AsyncIterator<Uint8Array>).next()
    }
    if (it != null || trailer != null) stream.end()
  } finally {
    done = true
    stream.off('close', onClose)
    await it?.return?.().catch(() => undefined)
  }
}

/** Resolves on 'drain', or when the stream closes first. */
export function drained(stream: ServerHttp2Stream): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      stream.off('drain', done)
      stream.off('close', done)
      resolve()
    }
    stream.on('drain', done)
    stream.on('close', done)
  })
}
