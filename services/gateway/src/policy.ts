import { readFileSync } from 'node:fs'
import { peerIdFromString } from '@libp2p/peer-id'
import { Code, messageOf, StargateError } from '@stargate/shared/errors'
import type { Logger } from '@stargate/shared/log'
import { EVERY_METHOD, type MethodPattern, methodName, parseMethodPattern } from '@stargate/shared/method-pattern'

/**
 * The caller policy: which remote peers may call which methods on this gateway. It covers every inbound
 * call — Call/Serve methods and the built-in ping (inbound.ts, on every tier) and tunnelled services
 * (the tunnel server) — through one question, `allows(caller, method)`.
 *
 * With no rule the policy is OPEN: every peer may call everything (local development). With any rule it
 * is RESTRICTED: a call is allowed when a rule names its caller (or `*`, any peer) and a pattern matching
 * its method; every other call is denied. Calls from this gateway to itself (the loopback tier) are always
 * allowed: they come from its own API clients, whom the API tokens govern.
 *
 * Rules come from `--allow-caller PEER_ID[=PATTERN]` and from a policy file (`--caller-policy FILE`) with
 * one rule per line in the same syntax (`#` comments, blank lines ignored). The file is re-read by
 * reload() (SIGHUP); a file that does not parse leaves the rules as they were.
 */

/** The answer to one policy question, with a reason fit for a log line or an error status. */
export interface CallerVerdict {
  allowed: boolean
  reason: string
}

/** What the inbound dispatcher and the tunnel server ask of the policy. */
export interface CallerGate {
  /** Whether callerPeerId may call method (a method name, or a tunnelled gRPC path `/pkg.Service/Method`). */
  allows(callerPeerId: string, method: string): CallerVerdict
}

/** One rule: a peer (or `*`, any peer) may call the methods matching a pattern. */
export interface CallerRule {
  peerId: string
  pattern: MethodPattern
  /** Where the rule was written: "--allow-caller" or "FILE:LINE". */
  source: string
}

/** The peer id that stands for any peer in a rule. */
export const ANY_PEER = '*'

/** OPEN: no rule, every peer may call everything. RESTRICTED: only what the rules allow. */
export type CallerPolicyMode = 'open' | 'restricted'

/** Parses one rule, `PEER_ID[=PATTERN]`; throws a RangeError saying what is wrong. */
export function parseCallerRule(text: string, source: string): CallerRule {
  const eq = text.indexOf('=')
  const peerId = (eq < 0 ? text : text.slice(0, eq)).trim()
  const patternText = eq < 0 ? undefined : text.slice(eq + 1).trim()
  if (peerId === '') throw new RangeError(`"${text}" names no peer: write PEER_ID[=PATTERN]`)
  if (peerId !== ANY_PEER) {
    try {
      peerIdFromString(peerId)
    } catch {
      throw new RangeError(`"${peerId}" is not a libp2p peer id (12D3KooW...) nor ${ANY_PEER}`)
    }
  }
  const pattern = patternText == null ? EVERY_METHOD : parseMethodPattern(patternText)
  return { peerId, pattern, source }
}

/**
 * Parses a policy file's text: one `PEER_ID[=PATTERN]` rule per line; `#` starts a comment. Throws a
 * StargateError (INVALID_ARGUMENT) naming the file, the line and what is wrong.
 */
export function parseCallerPolicy(text: string, file: string): CallerRule[] {
  const rules: CallerRule[] = []
  const lines = text.split(/\r?\n/)
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] ?? '').replace(/#.*$/, '').trim()
    if (line === '') continue
    try {
      rules.push(parseCallerRule(line, `${file}:${i + 1}`))
    } catch (err: unknown) {
      throw new StargateError(Code.InvalidArgument, `--caller-policy ${file} line ${i + 1}: ${messageOf(err)}`)
    }
  }
  return rules
}

/** Parses an --allow-caller value; throws a RangeError naming the flag and the value. */
export function parseAllowCaller(text: string): CallerRule {
  try {
    return parseCallerRule(text, '--allow-caller')
  } catch (err: unknown) {
    throw new RangeError(`--allow-caller "${text}": ${messageOf(err)}`)
  }
}

/** Reads and parses a policy file; errors name the flag, the file and the line. */
export function readCallerPolicy(file: string): CallerRule[] {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err: unknown) {
    throw new StargateError(Code.FailedPrecondition, `cannot read --caller-policy ${file}: ${messageOf(err)}`, { cause: err })
  }
  return parseCallerPolicy(text, file)
}

export interface CallerPolicyOptions {
  /** This gateway: its calls to itself are always allowed. */
  selfPeerId: string
  /** Rules from --allow-caller, `PEER_ID[=PATTERN]`. */
  allowCallers: string[]
  /** The policy file (--caller-policy), read now and by reload(). */
  file?: string
  /** Denials are logged here, at most one line per warnIntervalMs. */
  log?: Logger
  warnIntervalMs?: number
}

/** The caller policy of one gateway. */
export class CallerPolicy implements CallerGate {
  private readonly selfPeerId: string
  private readonly flagRules: CallerRule[]
  private readonly file?: string
  private readonly log?: Logger
  private readonly warnIntervalMs: number
  private byPeer = new Map<string, MethodPattern[]>()
  private count = 0
  private deniedCount = 0
  private lastWarnAtMs = Number.NEGATIVE_INFINITY

  /** Builds the policy; a policy file that cannot be read or parsed throws (start-up stops). */
  constructor(options: CallerPolicyOptions) {
    this.selfPeerId = options.selfPeerId
    this.flagRules = options.allowCallers.map(parseAllowCaller)
    this.file = options.file
    this.log = options.log
    this.warnIntervalMs = options.warnIntervalMs ?? 10_000
    this.install(this.file != null ? readCallerPolicy(this.file) : [])
  }

  get mode(): CallerPolicyMode {
    return this.count === 0 ? 'open' : 'restricted'
  }

  /** Rules in force (flags and file). */
  get ruleCount(): number {
    return this.count
  }

  /** Calls denied so far (every path: Calls, pings, tunnelled streams). */
  get denied(): number {
    return this.deniedCount
  }

  /** The policy file, if one is configured. */
  get policyFile(): string | undefined {
    return this.file
  }

  /**
   * Re-reads the policy file (SIGHUP). Returns the number of rules now in force; a file that cannot be read
   * or parsed throws and leaves the rules as they were.
   */
  reload(): number {
    if (this.file == null) return this.count
    this.install(readCallerPolicy(this.file))
    return this.count
  }

  allows(callerPeerId: string, method: string): CallerVerdict {
    if (callerPeerId === this.selfPeerId) return { allowed: true, reason: 'a call from this gateway to itself' }
    if (this.count === 0) return { allowed: true, reason: 'caller policy open (no --allow-caller or --caller-policy rule)' }
    const rule = this.match(callerPeerId, method) ?? this.match(ANY_PEER, method)
    if (rule != null) return { allowed: true, reason: `allowed by a rule for ${rule.text}` }
    const name = methodName(method)
    this.deniedCount++
    const now = Date.now()
    if (now - this.lastWarnAtMs >= this.warnIntervalMs) {
      this.lastWarnAtMs = now
      this.log?.warn('denied a call (caller policy)', { caller: callerPeerId, method: name, denied: this.deniedCount })
    }
    return {
      allowed: false,
      reason: `peer ${callerPeerId} may not call "${name}" on gateway ${this.selfPeerId}: no --allow-caller or --caller-policy rule of that gateway allows it (to allow it, start that gateway with --allow-caller ${callerPeerId}=${name})`,
    }
  }

  private match(peerId: string, method: string): MethodPattern | undefined {
    const patterns = this.byPeer.get(peerId)
    if (patterns == null) return undefined
    for (const p of patterns) if (p.matches(method)) return p
    return undefined
  }

  private install(fileRules: CallerRule[]): void {
    const byPeer = new Map<string, MethodPattern[]>()
    const rules = [...this.flagRules, ...fileRules]
    for (const r of rules) {
      const list = byPeer.get(r.peerId)
      if (list == null) byPeer.set(r.peerId, [r.pattern])
      else list.push(r.pattern)
    }
    this.byPeer = byPeer
    this.count = rules.length
  }
}
