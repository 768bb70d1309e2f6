import { createHash, timingSafeEqual } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { createSecureContext } from 'node:tls'
import { Code, messageOf, StargateError } from './errors.ts'
import { HEALTH_SERVICE } from './grpc/health.ts'
import { REFLECTION_V1, REFLECTION_V1ALPHA } from './grpc/reflection.ts'
import type { ApiServerOptions, RequestGate } from './grpc/server.ts'
import { anyMatches, type MethodPattern, parseMethodPattern } from './method-pattern.ts'

/**
 * Bearer-token authentication of the local API. A client sends `authorization: Bearer <token>`
 * (gRPC metadata or HTTP header); the token must equal one of the configured tokens. Tokens come
 * from a file (one per line, `#` comments) and/or a list (STARGATE_AUTH_TOKENS).
 *
 * A token in the file may be scoped to the methods it may serve and call: `TOKEN methods=serve:a.*,call:*`
 * (patterns as in method-pattern.ts). A scoped token may do only what its scope lists (`serve:` patterns for
 * Serve registrations, `call:` patterns for Call); a token without `methods=` may serve and call anything.
 */

/** One configured token and, when scoped, the methods it may serve and call (undefined: every method). */
export interface TokenGrant {
  token: string
  serve?: MethodPattern[]
  call?: MethodPattern[]
}

/**
 * Who an API request comes from: the token it presented (its SHA-256, never the token itself) and that
 * token's scope. Anonymous when API auth is off.
 */
export interface ApiPrincipal {
  /** The token's identity (hex SHA-256 of it); undefined when API auth is off. */
  readonly id?: string
  /** Methods it may serve (undefined: every method). */
  readonly serve?: readonly MethodPattern[]
  /** Methods it may call (undefined: every method). */
  readonly call?: readonly MethodPattern[]
}

/** The principal of every request when API auth is off: no identity, no scope. */
export const ANONYMOUS: ApiPrincipal = {}

/** Whether the principal's scope lets it serve (or call) a method. */
export function scopeAllows(principal: ApiPrincipal, kind: 'serve' | 'call', method: string): boolean {
  const patterns = principal[kind]
  return patterns == null || anyMatches(patterns, method)
}

/** The scope as written in the token file (`methods=serve:a.*,call:*`), or "every method". */
export function scopeText(principal: ApiPrincipal): string {
  if (principal.serve == null && principal.call == null) return 'every method'
  const items = [...(principal.serve ?? []).map((p) => `serve:${p.text}`), ...(principal.call ?? []).map((p) => `call:${p.text}`)]
  return `methods=${items.join(',')}`
}

const BEARER = /^Bearer[ \t]+(\S+)[ \t]*$/i

/** Checks bearer tokens in constant time (per token: both sides are hashed to a fixed length first). */
export class TokenAuthenticator {
  private readonly digests: Buffer[]
  private readonly principals: ApiPrincipal[]

  constructor(tokens: Iterable<string | TokenGrant>) {
    const byToken = new Map<string, TokenGrant>()
    for (const t of tokens) {
      const grant = typeof t === 'string' ? { token: t } : t
      const token = grant.token.trim()
      const before = byToken.get(token)
      if (before != null && scopeText(before) !== scopeText(grant)) {
        throw new StargateError(
          Code.InvalidArgument,
          'an API token is configured twice with different scopes (in --auth-token-file and in --auth-tokens / STARGATE_AUTH_TOKENS)',
        )
      }
      if (token !== '' && before == null) byToken.set(token, { ...grant, token })
    }
    if (byToken.size === 0) throw new StargateError(Code.InvalidArgument, 'no API auth token configured')
    this.digests = [...byToken.keys()].map(digest)
    this.principals = [...byToken.values()].map((g, i) => ({
      id: (this.digests[i] as Buffer).toString('hex'),
      ...(g.serve != null ? { serve: g.serve } : {}),
      ...(g.call != null ? { call: g.call } : {}),
    }))
  }

  get size(): number {
    return this.digests.length
  }

  /** Returns the principal of the token the header carries; throws UNAUTHENTICATED unless it is a configured one. */
  check(authorization: string | null | undefined): ApiPrincipal {
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
    let found = -1
    // Compare against every token without stopping early, so timing does not tell which matched.
    for (let i = 0; i < this.digests.length; i++) if (timingSafeEqual(given, this.digests[i] as Buffer)) found = i
    const principal = this.principals[found]
    if (principal == null) {
      throw new StargateError(
        Code.Unauthenticated,
        "invalid API token: use a token from the gateway's --auth-token-file or STARGATE_AUTH_TOKENS",
      )
    }
    return principal
  }
}

function digest(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest()
}

/**
 * The request gate for token auth: every request needs a token (any protocol, local or tunnelled), except
 * grpc.health.v1 while health is open and the local server reflection, which only describes the public
 * schema. Reflection passed through to a peer (a tunnel) needs the token too. The check runs before any
 * request message is read.
 */
export function authGate(auth: TokenAuthenticator, options: { healthOpen: boolean }): RequestGate {
  const open = new Set([REFLECTION_V1, REFLECTION_V1ALPHA, ...(options.healthOpen ? [HEALTH_SERVICE] : [])])
  return (req) => {
    if (!req.tunnelled && open.has(req.service)) return
    const principal = auth.check(req.header.get('authorization'))
    // A tunnelled call is a call: a scoped token may make it only if its call: patterns allow the method.
    const path = `/${req.service}/${req.method}`
    if (req.tunnelled && !scopeAllows(principal, 'call', path)) {
      throw new StargateError(
        Code.PermissionDenied,
        `this API token may not call "${req.service}.${req.method}": its scope is ${scopeText(principal)} (its line in --auth-token-file)`,
      )
    }
  }
}

/**
 * Parses a token file: one token per line, optionally scoped (`TOKEN methods=serve:a.*,call:b.*`); blank lines
 * and comments (`#` at the start of a line or after whitespace) are ignored. Throws INVALID_ARGUMENT naming
 * the file's line on a bad scope, or on a token repeated with another scope.
 */
export function parseTokenFile(text: string, file = 'the token file'): TokenGrant[] {
  const grants: TokenGrant[] = []
  const seen = new Map<string, { line: number; scope: string }>()
  const lines = text.split(/\r?\n/)
  for (let i = 0; i < lines.length; i++) {
    // `#` starts a comment at the start of a line or after whitespace (a token may contain `#`).
    const line = (lines[i] ?? '').replace(/(^|\s)#.*$/, '').trim()
    if (line === '') continue
    const fail = (why: string): never => {
      throw new StargateError(Code.InvalidArgument, `--auth-token-file ${file} line ${i + 1}: ${why}`)
    }
    const [token = '', ...attrs] = line.split(/\s+/)
    const grant: TokenGrant = { token }
    for (const attr of attrs) {
      if (!attr.startsWith('methods=')) fail(`unknown "${attr}" after the token (write TOKEN or TOKEN methods=serve:PATTERN,call:PATTERN)`)
      if (grant.serve != null) fail('methods= given twice')
      grant.serve = []
      grant.call = []
      for (const item of attr.slice('methods='.length).split(',')) {
        const colon = item.indexOf(':')
        const kind = item.slice(0, colon)
        if (colon < 0 || (kind !== 'serve' && kind !== 'call')) fail(`"${item}" in methods= must be serve:PATTERN or call:PATTERN`)
        try {
          ;(kind === 'serve' ? grant.serve : grant.call).push(parseMethodPattern(item.slice(colon + 1)))
        } catch (err: unknown) {
          fail(messageOf(err))
        }
      }
    }
    const scope = scopeText(grant)
    const before = seen.get(token)
    if (before != null && before.scope !== scope) fail(`the token of line ${before.line} again, with another scope (${scope})`)
    if (before == null) seen.set(token, { line: i + 1, scope })
    grants.push(grant)
  }
  return grants
}

/**
 * Collects the API tokens from a file and/or a list. Returns an empty list when neither is given
 * (auth off); a given file that cannot be read or holds no token stops start-up.
 */
export async function loadAuthTokens(options: { tokenFile?: string; tokens?: string[] }): Promise<TokenGrant[]> {
  const tokens: TokenGrant[] = (options.tokens ?? [])
    .map((t) => t.trim())
    .filter((t) => t !== '')
    .map((token) => ({ token }))
  if (options.tokenFile != null) {
    let text: string
    try {
      text = await readFile(options.tokenFile, 'utf8')
    } catch (err: unknown) {
      throw new StargateError(Code.FailedPrecondition, `cannot read --auth-token-file ${options.tokenFile}: ${messageOf(err)}`, {
        cause: err,
      })
    }
    const fromFile = parseTokenFile(text, options.tokenFile)
    if (fromFile.length === 0) {
      throw new StargateError(Code.FailedPrecondition, `--auth-token-file ${options.tokenFile} holds no token (one per line)`)
    }
    tokens.push(...fromFile)
  }
  for (const { token } of tokens) {
    if (/\s/.test(token)) throw new StargateError(Code.InvalidArgument, 'an API token must not contain whitespace')
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
export type ApiServerSecurity = Pick<ApiServerOptions, 'gate' | 'tls'>

/** The server options, and the authenticator that tells handlers who a request comes from (absent: auth off). */
export type ApiSecurity = ApiServerSecurity & { authenticator?: TokenAuthenticator }

/**
 * Reads the token and PEM files and returns the ApiServer options for auth and TLS, to spread into
 * `new ApiServer({ ... })`. Empty when neither is configured. Unreadable files stop start-up
 * (FAILED_PRECONDITION naming the flag).
 */
export async function loadApiSecurity(config: ApiSecurityConfig): Promise<ApiSecurity> {
  const out: ApiSecurity = {}
  const tokens = await loadAuthTokens({ tokenFile: config.authTokenFile, tokens: config.authTokens })
  if (tokens.length > 0) {
    out.authenticator = new TokenAuthenticator(tokens)
    out.gate = authGate(out.authenticator, { healthOpen: config.authHealthOpen })
  }
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
