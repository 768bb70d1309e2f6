import { createHash, timingSafeEqual } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { createSecureContext } from 'node:tls'
import * as grpc from '@grpc/grpc-js'
import { Code, messageOf, StargateError } from './errors.ts'
import type { ApiServerOptions, MethodMiddleware } from './grpc/server.ts'

/**
 * Bearer-token authentication of the local API. A client sends `authorization: Bearer <token>`
 * (gRPC metadata or HTTP header); the token must equal one of the configured tokens. Tokens come
 * from a file (one per line, `#` comments) and/or a list (STARGATE_AUTH_TOKENS).
 */

/** The gRPC services that stay reachable without a token while health is open. */
export const HEALTH_SERVICE = 'grpc.health.v1.Health'

const BEARER = /^Bearer[ \t]+(\S+)[ \t]*$/i

/** Checks bearer tokens in constant time (per token: both sides are hashed to a fixed length first). */
export class TokenAuthenticator {
  private readonly digests: Buffer[]

  constructor(tokens: Iterable<string>) {
    const list = [...new Set([...tokens].map((t) => t.trim()).filter((t) => t !== ''))]
    if (list.length === 0) throw new StargateError(Code.InvalidArgument, 'no API auth token configured')
    this.digests = list.map(digest)
  }

  get size(): number {
    return this.digests.length
  }

  /** Throws UNAUTHENTICATED unless the header carries a configured token. */
  check(authorization: string | null | undefined): void {
    if (authorization == null || authorization === '') {
      throw new StargateError(
        Code.Unauthenticated,
        'this Stargate API requires a token: send the header "authorization: Bearer <token>" (grpcurl: -H "authorization: Bearer $TOKEN")',
      )
    }
    const m = BEARER.exec(authorization)
    if (m == null) {
      throw new StargateError(Code.Unauthenticated, 'malformed authorization header: expected "Bearer <token>"')
    }
    const given = digest(m[1] as string)
    let ok = false
    // Compare against every token without stopping early, so timing does not tell which matched.
    for (const d of this.digests) ok = timingSafeEqual(given, d) || ok
    if (!ok) {
      throw new StargateError(
        Code.Unauthenticated,
        "invalid API token: use a token from the gateway's --auth-token-file or STARGATE_AUTH_TOKENS",
      )
    }
  }
}

function digest(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest()
}

/** Middleware that authenticates every method of the registered services (gRPC and Connect alike). */
export function authMiddleware(auth: TokenAuthenticator): MethodMiddleware {
  // Unary and streaming alike: the check runs before the first message is read or written.
  return (_service, _method, impl) => (input, ctx) => {
    auth.check(ctx.requestHeader.get('authorization'))
    return impl(input, ctx)
  }
}

/**
 * A grpc-js server interceptor that authenticates calls to the given services (full names, e.g.
 * grpc.health.v1.Health) from their metadata; other calls pass untouched. It covers what middleware
 * cannot: services registered on grpc-js directly (health, reflection).
 */
export function authInterceptor(auth: TokenAuthenticator, services: string[]): grpc.ServerInterceptor {
  const prefixes = services.map((s) => `/${s}/`)
  return (method, call) => {
    if (!prefixes.some((p) => method.path.startsWith(p))) return new grpc.ServerInterceptingCall(call)
    const listener = new grpc.ServerListenerBuilder()
      .withOnReceiveMetadata((metadata, next) => {
        const value = metadata.get('authorization')[0]
        try {
          auth.check(typeof value === 'string' ? value : value?.toString('utf8'))
        } catch (err: unknown) {
          const e = StargateError.from(err)
          call.sendStatus({ code: e.code as number as grpc.status, details: e.rawMessage, metadata: new grpc.Metadata() })
          return
        }
        next(metadata)
      })
      .build()
    const responder = new grpc.ResponderBuilder().withStart((next) => next(listener)).build()
    return new grpc.ServerInterceptingCall(call, responder)
  }
}

/** ApiServer options for token auth: spread into `new ApiServer({ ... })`. */
export function apiAuthOptions(
  auth: TokenAuthenticator,
  options: { healthOpen: boolean },
): { middleware: MethodMiddleware[]; interceptors: grpc.ServerInterceptor[] } {
  return {
    middleware: [authMiddleware(auth)],
    // Reflection stays open either way: it only describes the (public) schema.
    interceptors: options.healthOpen ? [] : [authInterceptor(auth, [HEALTH_SERVICE])],
  }
}

/** Parses a token file: one token per line; blank lines and lines starting with # are ignored. */
export function parseTokenFile(text: string): string[] {
  return text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
}

/**
 * Collects the API tokens from a file and/or a list. Returns an empty list when neither is given
 * (auth off); a given file that cannot be read or holds no token stops start-up.
 */
export async function loadAuthTokens(options: { tokenFile?: string; tokens?: string[] }): Promise<string[]> {
  const tokens = (options.tokens ?? []).map((t) => t.trim()).filter((t) => t !== '')
  if (options.tokenFile != null) {
    let text: string
    try {
      text = await readFile(options.tokenFile, 'utf8')
    } catch (err: unknown) {
      throw new StargateError(Code.FailedPrecondition, `cannot read --auth-token-file ${options.tokenFile}: ${messageOf(err)}`, {
        cause: err,
      })
    }
    const fromFile = parseTokenFile(text)
    if (fromFile.length === 0) {
      throw new StargateError(Code.FailedPrecondition, `--auth-token-file ${options.tokenFile} holds no token (one per line)`)
    }
    tokens.push(...fromFile)
  }
  for (const t of tokens) {
    if (/\s/.test(t)) throw new StargateError(Code.InvalidArgument, 'an API token must not contain whitespace')
  }
  return tokens
}

/** Auth and TLS settings of an API port, as the gateway options hold them (file paths, not contents). */
export interface ApiSecurityConfig {
  /** File of bearer tokens, one per line. */
  authTokenFile?: string
  /** Bearer tokens (e.g. from STARGATE_AUTH_TOKENS). Auth is on when this or the file gives a token. */
  authTokens?: string[]
  /** Whether grpc.health.v1 answers without a token when auth is on. */
  authHealthOpen: boolean
  /** PEM certificate chain; with tlsKeyFile turns TLS on. */
  tlsCertFile?: string
  /** PEM private key. */
  tlsKeyFile?: string
  /** PEM CA that client certificates must chain to; turns mTLS on. */
  tlsClientCaFile?: string
}

/** The API server options that come from the security configuration. */
export type ApiSecurity = Pick<ApiServerOptions, 'middleware' | 'interceptors' | 'tls'>

/**
 * Reads the token and PEM files and returns the ApiServer options for auth and TLS, to spread into
 * `new ApiServer({ ... })`. Empty when neither is configured. Unreadable files stop start-up
 * (FAILED_PRECONDITION naming the flag).
 */
export async function loadApiSecurity(config: ApiSecurityConfig): Promise<ApiSecurity> {
  const out: ApiSecurity = {}
  const tokens = await loadAuthTokens({ tokenFile: config.authTokenFile, tokens: config.authTokens })
  if (tokens.length > 0) Object.assign(out, apiAuthOptions(new TokenAuthenticator(tokens), { healthOpen: config.authHealthOpen }))
  if ((config.tlsCertFile == null) !== (config.tlsKeyFile == null)) {
    throw new StargateError(Code.InvalidArgument, 'TLS needs both a certificate (--tls-cert) and a key (--tls-key)')
  }
  if (config.tlsClientCaFile != null && config.tlsCertFile == null) {
    throw new StargateError(Code.InvalidArgument, 'a client CA (--tls-client-ca) needs TLS: give --tls-cert and --tls-key too')
  }
  if (config.tlsCertFile != null && config.tlsKeyFile != null) {
    const cert = await readPem(config.tlsCertFile, '--tls-cert')
    const key = await readPem(config.tlsKeyFile, '--tls-key')
    const ca = config.tlsClientCaFile != null ? await readPem(config.tlsClientCaFile, '--tls-client-ca') : undefined
    try {
      // Fails here, with the flags named, on unparsable PEM or a key that does not match the certificate.
      createSecureContext({ cert, key, ...(ca != null ? { ca } : {}) })
    } catch (err: unknown) {
      throw new StargateError(Code.FailedPrecondition, `invalid TLS files (--tls-cert, --tls-key, --tls-client-ca): ${messageOf(err)}`, {
        cause: err,
      })
    }
    out.tls = { certPem: cert, keyPem: key, ...(ca != null ? { caPem: ca, requireClientCert: true } : {}) }
  }
  return out
}

async function readPem(file: string, flag: string): Promise<Buffer> {
  try {
    return await readFile(file)
  } catch (err: unknown) {
    throw new StargateError(Code.FailedPrecondition, `cannot read ${flag} ${file}: ${messageOf(err)}`, { cause: err })
  }
}
