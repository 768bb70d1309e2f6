import { createHash, timingSafeEqual } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { createSecureContext } from 'node:tls'
import { Code, messageOf, StargateError } from './errors.ts'
import { HEALTH_SERVICE } from './grpc/health.ts'
import { REFLECTION_V1, REFLECTION_V1ALPHA } from './grpc/reflection.ts'
import type { ApiServerOptions, RequestGate } from './grpc/server.ts'

/**
 * Bearer-token authentication of the local API. A client sends `authorization: Bearer <token>`
 * (gRPC metadata or HTTP header); the token must equal one of the configured tokens. Tokens come
 * from a file (one per line, `#` comments) and/or a list (STARGATE_AUTH_TOKENS).
 */

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
    auth.check(req.header.get('authorization'))
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
export type ApiSecurity = Pick<ApiServerOptions, 'gate' | 'tls'>

/**
 * Reads the token and PEM files and returns the ApiServer options for auth and TLS, to spread into
 * `new ApiServer({ ... })`. Empty when neither is configured. Unreadable files stop start-up
 * (FAILED_PRECONDITION naming the flag).
 */
export async function loadApiSecurity(config: ApiSecurityConfig): Promise<ApiSecurity> {
  const out: ApiSecurity = {}
  const tokens = await loadAuthTokens({ tokenFile: config.authTokenFile, tokens: config.authTokens })
  if (tokens.length > 0) out.gate = authGate(new TokenAuthenticator(tokens), { healthOpen: config.authHealthOpen })
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
