/**
 * CORS for the API port, so that a web page on another origin can use the Connect and gRPC-Web protocols
 * (https://fetch.spec.whatwg.org/#http-cors-protocol). Pure: it computes headers, the server writes them on
 * HTTP/1.1 and HTTP/2 alike.
 *
 * - A preflight (OPTIONS with Origin and Access-Control-Request-Method) from a listed origin is answered 204
 *   with the methods and request headers Connect and gRPC-Web use (authorization included, so a page can send
 *   a bearer token). It never reaches the request gate: a browser sends no token with a preflight.
 * - Responses to a listed origin allow it and expose the headers a client reads an error from.
 * - An origin that is not listed gets no CORS header at all, so the browser refuses the response to the page.
 * - `*` allows every origin. Access-Control-Allow-Credentials is never sent: the API's credential is the
 *   bearer token a page puts in the authorization header, not a cookie or a TLS client certificate, so a
 *   request needs no credentials mode, and `*` cannot be combined with credentials anyway.
 */

/** Methods of the Connect protocol (GET for side-effect-free unary calls) and of gRPC-Web. */
export const CORS_ALLOWED_METHODS = ['POST', 'GET'] as const

/**
 * Request headers the Connect and gRPC-Web protocols send, plus authorization for the bearer token, and the
 * headers of a tunnelled call a page may set: stargate-peer (the peer to call) and stargate-idempotency-key.
 */
export const CORS_ALLOWED_HEADERS = [
  'content-type',
  'connect-protocol-version',
  'connect-timeout-ms',
  'x-grpc-web',
  'x-user-agent',
  'grpc-timeout',
  'authorization',
  'stargate-peer',
  'stargate-idempotency-key',
] as const

/**
 * Response headers a page may read: the gRPC-Web status (grpc-status, grpc-message, grpc-status-details-bin,
 * in the headers of a trailers-only error) and Connect's encoding headers (content-encoding of a unary body,
 * connect-content-encoding of a stream), which a client needs to decode an error body, as connect-es lists
 * them; and the peer and tier a tunnelled call went to (stargate-peer, stargate-tier).
 */
export const CORS_EXPOSED_HEADERS = [
  'grpc-status',
  'grpc-message',
  'grpc-status-details-bin',
  'content-encoding',
  'connect-content-encoding',
  'stargate-peer',
  'stargate-tier',
] as const

/** The value allowing every origin. */
export const ANY_ORIGIN = '*'

/**
 * Why a --cors-allow-origin value is not usable, or undefined when it is: `*`, or an origin exactly as a
 * browser sends it in the Origin header (scheme, host and port when not the default; no path, no slash).
 */
export function corsOriginProblem(value: string): string | undefined {
  if (value === ANY_ORIGIN) return undefined
  let url: URL
  try {
    url = new URL(value)
  } catch {
    return 'is not an origin: give scheme://host[:port], e.g. https://app.example.com or http://localhost:8080, or *'
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return 'must be an http:// or https:// origin (or *)'
  if (url.origin !== value) {
    return `is not an origin as a browser sends it: use "${url.origin}" (scheme, host and port only, no path or trailing slash)`
  }
  return undefined
}

/** Headers as node's writeHead / HTTP/2 respond take them. */
export type HeaderFields = Record<string, string>

/** Which origins may call the API from a web page, and the headers that says so. */
export class CorsPolicy {
  private readonly any: boolean
  private readonly origins: ReadonlySet<string>
  private readonly preflightFields: HeaderFields
  private readonly exposed = CORS_EXPOSED_HEADERS.join(', ')

  /** Throws RangeError naming the first origin that is not usable (see corsOriginProblem). */
  constructor(allowOrigins: readonly string[], maxAgeSeconds: number) {
    for (const o of allowOrigins) {
      const problem = corsOriginProblem(o)
      if (problem != null) throw new RangeError(`CORS origin "${o}" ${problem}`)
    }
    this.any = allowOrigins.includes(ANY_ORIGIN)
    this.origins = new Set(allowOrigins)
    this.preflightFields = {
      'access-control-allow-methods': CORS_ALLOWED_METHODS.join(', '),
      'access-control-allow-headers': CORS_ALLOWED_HEADERS.join(', '),
      'access-control-max-age': String(maxAgeSeconds),
    }
  }

  /** True when every origin is allowed (`*`). */
  get allowsAnyOrigin(): boolean {
    return this.any
  }

  private allowed(origin: string | undefined): string | undefined {
    if (origin == null || origin === '') return undefined
    if (this.any) return ANY_ORIGIN
    return this.origins.has(origin) ? origin : undefined
  }

  /** Vary: Origin when the answer depends on the origin (a list, not `*`), so caches keep the answers apart. */
  private vary(): HeaderFields {
    return this.any ? {} : { vary: 'Origin' }
  }

  /**
   * The headers of the 204 answering a preflight (OPTIONS with Origin and Access-Control-Request-Method) from
   * an allowed origin; undefined when the request is no such preflight, which is then served as any request.
   */
  preflight(method: string | undefined, origin: string | undefined, requestMethod: string | undefined): HeaderFields | undefined {
    if (method !== 'OPTIONS' || requestMethod == null || requestMethod === '') return undefined
    const allow = this.allowed(origin)
    if (allow == null) return undefined
    return { 'access-control-allow-origin': allow, ...this.preflightFields, ...this.vary() }
  }

  /** The headers to add to a response to a request with this Origin (none beyond Vary for an origin not allowed). */
  response(origin: string | undefined): HeaderFields {
    const allow = this.allowed(origin)
    if (allow == null) return this.vary()
    return { 'access-control-allow-origin': allow, 'access-control-expose-headers': this.exposed, ...this.vary() }
  }
}
