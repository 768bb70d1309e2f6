import {
  createCipheriv,
  createDecipheriv,
  createPrivateKey,
  createPublicKey,
  createSecretKey,
  diffieHellman,
  hkdfSync,
  type KeyObject,
  randomBytes,
} from 'node:crypto'
import { publicKeyFromRaw } from '@libp2p/crypto/keys'
import type { PrivateKey, PublicKey } from '@libp2p/interface'
import { peerIdFromPrivateKey, peerIdFromPublicKey, peerIdFromString } from '@libp2p/peer-id'
import { ed25519 } from '@noble/curves/ed25519.js'
import { Code, messageOf, StargateError } from './errors.ts'

/**
 * Sealed NATS messages, version 2: a PeerFrame encrypted and authenticated between two gateway identities
 * with no public-key operation per message once a pair is known.
 *
 * - Pair secret: static-static X25519 between the two peers' Ed25519 identity keys mapped to Montgomery form
 *   (@noble/curves; the agreement itself runs in node:crypto), computed once per peer and cached.
 * - Keys: each Sealer (one per gateway process) draws a random 128-bit session id at start. The key for
 *   messages from sender S to recipient R in S's session is
 *   HKDF-SHA256(ikm = pair secret, salt = session id, info = SEAL_KEY_INFO ‖ S's peer id ‖ R's peer id),
 *   so it differs per direction, per pair and per sender process. Derived once, kept as a node:crypto
 *   KeyObject (a raw key costs ~4x more per cipher) in a bounded cache.
 * - AEAD: ChaCha20-Poly1305 (RFC 8439, OpenSSL through node:crypto; measured 2-10x cheaper per message than
 *   @noble/ciphers' XChaCha20-Poly1305 from 64 B to 64 KiB, see BENCHMARKS.md). The 96-bit nonce is four
 *   zero bytes and a 64-bit counter that the Sealer increments for every message to any recipient and never
 *   reuses while it lives; a restarted process has a fresh session id, hence fresh keys. So a (key, nonce)
 *   pair never repeats unless two processes draw the same 128-bit session id. The whole header is the
 *   additional data: sender, recipient, time, session and counter cannot be changed without failing the tag.
 * - Replay: the receiver refuses messages whose sent_at is outside ±replayWindowMs and, per (sender,
 *   session), counters it has already accepted or that lie more than replayCounterWindow behind the newest
 *   (ReplayGuard). The guard fails closed: when full it refuses messages of new sessions, it never forgets
 *   a session that could still be replayed within the window.
 *
 * Wire format (all integers big-endian):
 *   0       version (2; version 1 was a protobuf stargate.v1.SealedMessage, whose first byte is 0x0a)
 *   1..32   sender Ed25519 public key
 *   33..64  recipient Ed25519 public key
 *   65..72  sent_at, milliseconds since the epoch
 *   73..88  sender session id
 *   89..96  counter
 *   97..    ciphertext ‖ 16-byte Poly1305 tag
 */

export const SEAL_VERSION = 2

/** Defaults of sealing and of the replay guard. */
export const SEAL_DEFAULTS = {
  /** Accept messages whose sent_at is at most this far from the receiver's clock, either way. */
  replayWindowMs: 60_000,
  /** Sender sessions the replay guard tracks at most; when full, messages of new sessions are refused. */
  replayMaxSessions: 16_384,
  /** Sessions one sender may have tracked at once (a gateway uses one per process lifetime). */
  replayMaxSessionsPerSender: 16,
  /** Counters tracked below the newest of a session (tolerates reordering; older ones are refused). */
  replayCounterWindow: 4096,
  /** Peers whose pair secret and keys are cached at most; the least recently used is dropped first. */
  maxCachedPeers: 4096,
  /** Sessions of one sender whose keys are cached at most. */
  maxCachedSessionsPerPeer: 4,
} as const

/** Why a sealed message was refused (counted per reason). */
export type SealRefusal = 'malformed' | 'version' | 'misaddressed' | 'unexpected_sender' | 'stale' | 'replay' | 'forged' | 'full'

export const SEAL_KDF_INFO = 'stargate/v2/sealed-message/key'

const VERSION_1_FIRST_BYTE = 0x0a
const KEY_BYTES = 32
const SESSION_BYTES = 16
const TAG_BYTES = 16
const OFF_SENDER = 1
const OFF_RECIPIENT = OFF_SENDER + KEY_BYTES
const OFF_SENT_AT = OFF_RECIPIENT + KEY_BYTES
const OFF_SESSION = OFF_SENT_AT + 8
const OFF_COUNTER = OFF_SESSION + SESSION_BYTES
/** Bytes before the ciphertext. */
export const SEAL_HEADER_BYTES = OFF_COUNTER + 8
/** Bytes a sealed message adds to its frame. */
export const SEAL_OVERHEAD_BYTES = SEAL_HEADER_BYTES + TAG_BYTES
const MAX_COUNTER = Number.MAX_SAFE_INTEGER
const utf8 = new TextEncoder()

/** The opened message: the authenticated sender and the frame. */
export interface OpenedMessage {
  senderPeerId: string
  frame: Uint8Array
}

export interface OpenOptions {
  /** Only messages from this peer id are accepted. */
  expectedSender?: string
  /**
   * Inspects the decrypted frame before the message is recorded as received; throwing refuses it
   * without recording it, so the genuine message can still arrive (e.g. an answer to another request).
   */
  check?: (frame: Uint8Array) => void
  /** Clock override (tests). */
  nowMs?: number
}

export interface SealerOptions {
  replay?: ReplayGuard
  maxCachedPeers?: number
  /** Clock (tests). */
  now?: () => number
}

/** What the sealer knows about one peer: its key and the keys derived with it. */
interface Peer {
  peerId: string
  edPublic: Uint8Array
  /** The edPublic bytes as a latin1 string (map key). */
  keyId: string
  /** X25519(own, peer): the static-static pair secret. */
  secret: Uint8Array
  /** Key of this sealer's messages to the peer, and the session generation it was made for. */
  sendKey?: KeyObject
  sendGeneration: number
  /** Keys of the peer's messages to us, per sender session (latin1), a few most recent. */
  receiveKeys: Map<string, KeyObject>
}

/**
 * Seals frames to peers and opens frames from them for one identity (one per gateway). Synchronous, so
 * it fits a NATS message callback, and the replay check and record are atomic.
 */
export class Sealer {
  readonly peerId: string
  /** Refused messages by reason. */
  readonly refusals: Record<SealRefusal, number> = {
    malformed: 0,
    version: 0,
    misaddressed: 0,
    unexpected_sender: 0,
    stale: 0,
    replay: 0,
    forged: 0,
    full: 0,
  }
  readonly replay: ReplayGuard
  private readonly edPublic: Uint8Array
  private readonly xPrivate: KeyObject
  private readonly maxCachedPeers: number
  private readonly now: () => number
  private session = randomBytes(SESSION_BYTES)
  private generation = 0
  private counter = 0
  private readonly byId = new Map<string, Peer>()
  private readonly byKey = new Map<string, Peer>()
  private derived = 0

  constructor(privateKey: PrivateKey, options: SealerOptions = {}) {
    if (privateKey.type !== 'Ed25519') throw new StargateError(Code.InvalidArgument, `sealing needs an Ed25519 key, got ${privateKey.type}`)
    this.peerId = peerIdFromPrivateKey(privateKey).toString()
    this.edPublic = privateKey.publicKey.raw
    // libp2p's raw Ed25519 private key is seed ‖ public key; X25519 derives from the seed.
    const xSecret = ed25519.utils.toMontgomerySecret(privateKey.raw.subarray(0, 32))
    this.xPrivate = createPrivateKey({ key: Buffer.concat([X25519_PKCS8_PREFIX, xSecret]), format: 'der', type: 'pkcs8' })
    this.replay = options.replay ?? new ReplayGuard()
    this.maxCachedPeers = options.maxCachedPeers ?? SEAL_DEFAULTS.maxCachedPeers
    this.now = options.now ?? Date.now
  }

  /** Pair secrets computed so far (X25519, once per peer while it stays cached): the public-key operations. */
  get pairSecretsDerived(): number {
    return this.derived
  }

  /** Encrypts frame to recipientPeerId. Throws INVALID_ARGUMENT for a peer id without an Ed25519 key. */
  seal(frame: Uint8Array, recipientPeerId: string, nowMs: number = this.now()): Uint8Array {
    const peer = this.peerById(recipientPeerId)
    if (this.counter >= MAX_COUNTER) this.newSession()
    if (peer.sendKey == null || peer.sendGeneration !== this.generation) {
      peer.sendKey = messageKey(peer.secret, this.session, this.peerId, peer.peerId)
      peer.sendGeneration = this.generation
    }
    const counter = this.counter++
    const out = new Uint8Array(SEAL_HEADER_BYTES + frame.length + TAG_BYTES)
    const view = new DataView(out.buffer)
    out[0] = SEAL_VERSION
    out.set(this.edPublic, OFF_SENDER)
    out.set(peer.edPublic, OFF_RECIPIENT)
    writeUint64(view, OFF_SENT_AT, Math.max(0, Math.floor(nowMs)))
    out.set(this.session, OFF_SESSION)
    writeUint64(view, OFF_COUNTER, counter)
    const cipher = createCipheriv('chacha20-poly1305', peer.sendKey, nonceOf(counter), { authTagLength: TAG_BYTES })
    cipher.setAAD(out.subarray(0, SEAL_HEADER_BYTES), { plaintextLength: frame.length })
    out.set(cipher.update(frame), SEAL_HEADER_BYTES)
    cipher.final()
    out.set(cipher.getAuthTag(), SEAL_HEADER_BYTES + frame.length)
    return out
  }

  /**
   * Authenticates and decrypts a sealed message. Throws StargateError: INVALID_ARGUMENT when malformed or of
   * another version, PERMISSION_DENIED when addressed to another peer, not from the expected sender, outside
   * the replay window, replayed, forged or tampered with, RESOURCE_EXHAUSTED when the replay guard is full.
   */
  open(bytes: Uint8Array, options: OpenOptions = {}): OpenedMessage {
    if (bytes.length < SEAL_OVERHEAD_BYTES || bytes[0] !== SEAL_VERSION) {
      if (bytes[0] === VERSION_1_FIRST_BYTE) {
        this.refuse(
          'version',
          Code.InvalidArgument,
          'sealed message is version 1 (per-message signatures), which this gateway no longer accepts: upgrade the sender',
        )
      }
      if (bytes.length > 0 && bytes[0] !== SEAL_VERSION) {
        this.refuse('version', Code.InvalidArgument, `sealed message has unknown version ${bytes[0]} (this gateway speaks ${SEAL_VERSION})`)
      }
      this.refuse(
        'malformed',
        Code.InvalidArgument,
        `sealed message is ${bytes.length} bytes, shorter than its ${SEAL_OVERHEAD_BYTES}-byte envelope`,
      )
    }
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    if (!equalAt(bytes, OFF_RECIPIENT, this.edPublic)) {
      this.refuse(
        'misaddressed',
        Code.PermissionDenied,
        `sealed message is addressed to ${peerIdOfRaw(bytes.subarray(OFF_RECIPIENT, OFF_SENT_AT))}, not to ${this.peerId}`,
      )
    }
    const senderKeyId = latin1(bytes, OFF_SENDER, KEY_BYTES)
    if (options.expectedSender != null && this.peerById(options.expectedSender).keyId !== senderKeyId) {
      this.refuse(
        'unexpected_sender',
        Code.PermissionDenied,
        `sealed message comes from ${peerIdOfRaw(bytes.subarray(OFF_SENDER, OFF_RECIPIENT))}, expected ${options.expectedSender}`,
      )
    }
    const sentAtMs = readUint64(view, OFF_SENT_AT)
    const counter = readUint64(view, OFF_COUNTER)
    if (counter > MAX_COUNTER || sentAtMs > MAX_COUNTER)
      this.refuse('malformed', Code.InvalidArgument, 'sealed message counter or time out of range')
    const nowMs = options.nowMs ?? this.now()
    const windowMs = this.replay.windowMs
    if (!(Math.abs(nowMs - sentAtMs) <= windowMs)) {
      this.refuse(
        'stale',
        Code.PermissionDenied,
        `sealed message sent at ${new Date(sentAtMs).toISOString()} is outside the ±${windowMs} ms window (check the clocks of both peers)`,
      )
    }
    const session = latin1(bytes, OFF_SESSION, SESSION_BYTES)
    const peer = this.peerByKey(senderKeyId, bytes.subarray(OFF_SENDER, OFF_RECIPIENT))
    const replayed = this.replay.check(senderKeyId, session, counter)
    if (replayed != null) this.refuse('replay', Code.PermissionDenied, `sealed message from ${peer.peerId} ${replayed}`)
    let frame: Uint8Array
    try {
      const decipher = createDecipheriv('chacha20-poly1305', this.receiveKey(peer, session), nonceOf(counter), { authTagLength: TAG_BYTES })
      const ciphertextLength = bytes.length - SEAL_OVERHEAD_BYTES
      decipher.setAAD(bytes.subarray(0, SEAL_HEADER_BYTES), { plaintextLength: ciphertextLength })
      decipher.setAuthTag(bytes.subarray(bytes.length - TAG_BYTES))
      frame = decipher.update(bytes.subarray(SEAL_HEADER_BYTES, bytes.length - TAG_BYTES))
      decipher.final()
    } catch (err: unknown) {
      return this.refuse(
        'forged',
        Code.PermissionDenied,
        `sealed message claiming to be from ${peer.peerId} fails authentication (forged or tampered)`,
        err,
      )
    }
    options.check?.(frame)
    try {
      this.replay.accept(senderKeyId, session, counter, sentAtMs, nowMs)
    } catch (err: unknown) {
      const e = StargateError.from(err)
      this.refusals[e.code === Code.ResourceExhausted ? 'full' : 'replay']++
      throw e
    }
    return { senderPeerId: peer.peerId, frame }
  }

  private refuse(reason: SealRefusal, code: Code, message: string, cause?: unknown): never {
    this.refusals[reason]++
    throw new StargateError(code, message, cause != null ? { cause } : {})
  }

  private newSession(): void {
    this.session = randomBytes(SESSION_BYTES)
    this.generation++
    this.counter = 0
  }

  private peerById(peerId: string): Peer {
    const cached = this.byId.get(peerId)
    if (cached != null) return this.touch(cached)
    const raw = publicKeyOf(peerId, 'peer', Code.InvalidArgument).raw
    return this.byKey.get(latin1(raw, 0, KEY_BYTES)) ?? this.remember(peerId, raw)
  }

  private peerByKey(keyId: string, raw: Uint8Array): Peer {
    const cached = this.byKey.get(keyId)
    if (cached != null) return this.touch(cached)
    let peerId: string
    try {
      peerId = peerIdFromPublicKey(publicKeyFromRaw(raw)).toString()
    } catch (err: unknown) {
      return this.refuse(
        'malformed',
        Code.InvalidArgument,
        `sealed message sender key is not an Ed25519 public key: ${messageOf(err)}`,
        err,
      )
    }
    return this.remember(peerId, Uint8Array.from(raw))
  }

  /** Derives the pair secret with a new peer (the only public-key operation, once per peer). */
  private remember(peerId: string, edPublic: Uint8Array): Peer {
    let xPublic: Uint8Array
    try {
      xPublic = ed25519.utils.toMontgomery(edPublic)
    } catch (err: unknown) {
      return this.refuse('malformed', Code.InvalidArgument, `peer ${peerId} has an invalid Ed25519 key`, err)
    }
    this.derived++
    const secret = diffieHellman({
      privateKey: this.xPrivate,
      publicKey: createPublicKey({ key: Buffer.concat([X25519_SPKI_PREFIX, xPublic]), format: 'der', type: 'spki' }),
    })
    if (secret.every((b) => b === 0)) this.refuse('forged', Code.PermissionDenied, `peer ${peerId} has a low-order key`)
    const peer: Peer = {
      peerId,
      edPublic,
      keyId: latin1(edPublic, 0, KEY_BYTES),
      secret: new Uint8Array(secret),
      sendGeneration: -1,
      receiveKeys: new Map(),
    }
    while (this.byId.size >= this.maxCachedPeers) {
      const oldest = this.byId.values().next().value as Peer
      this.byId.delete(oldest.peerId)
      this.byKey.delete(oldest.keyId)
    }
    this.byId.set(peerId, peer)
    this.byKey.set(peer.keyId, peer)
    return peer
  }

  /** Marks a peer as recently used (maps iterate in insertion order: the least recently used goes first). */
  private touch(peer: Peer): Peer {
    this.byId.delete(peer.peerId)
    this.byId.set(peer.peerId, peer)
    return peer
  }

  private receiveKey(peer: Peer, session: string): KeyObject {
    let key = peer.receiveKeys.get(session)
    if (key == null) {
      key = messageKey(peer.secret, Buffer.from(session, 'latin1'), peer.peerId, this.peerId)
      while (peer.receiveKeys.size >= SEAL_DEFAULTS.maxCachedSessionsPerPeer)
        peer.receiveKeys.delete(peer.receiveKeys.keys().next().value as string)
      peer.receiveKeys.set(session, key)
    }
    return key
  }
}

/** The key of messages from sender to recipient in one sender session. */
function messageKey(secret: Uint8Array, session: Uint8Array, senderPeerId: string, recipientPeerId: string): KeyObject {
  const info = transcript(SEAL_KDF_INFO, [utf8.encode(senderPeerId), utf8.encode(recipientPeerId)])
  return createSecretKey(new Uint8Array(hkdfSync('sha256', secret, session, info, 32)))
}

/**
 * Remembers, per (sender, session), the newest counter accepted and which of the replayCounterWindow
 * counters below it were accepted, until no message of that session can pass the time window any more
 * (latest sent_at + window). Memory is bounded by maxSessions (and maxSessionsPerSender); when full, new
 * sessions are refused (fail closed) and nothing still inside its window is ever forgotten.
 */
export class ReplayGuard {
  readonly windowMs: number
  readonly maxSessions: number
  readonly maxSessionsPerSender: number
  readonly counterWindow: number
  /** sender ‖ session → state; map order is the order of the latest accept (close to expiry order). */
  private readonly sessions = new Map<string, SessionState>()
  private readonly perSender = new Map<string, number>()

  constructor(options: { replayWindowMs?: number; maxSessions?: number; maxSessionsPerSender?: number; counterWindow?: number } = {}) {
    this.windowMs = options.replayWindowMs ?? SEAL_DEFAULTS.replayWindowMs
    this.maxSessions = options.maxSessions ?? SEAL_DEFAULTS.replayMaxSessions
    this.maxSessionsPerSender = options.maxSessionsPerSender ?? SEAL_DEFAULTS.replayMaxSessionsPerSender
    this.counterWindow = options.counterWindow ?? SEAL_DEFAULTS.replayCounterWindow
    for (const [name, v] of Object.entries({
      replayWindowMs: this.windowMs,
      maxSessions: this.maxSessions,
      maxSessionsPerSender: this.maxSessionsPerSender,
    })) {
      if (!(v > 0)) throw new RangeError(`${name} must be positive, got ${v}`)
    }
    if (!(this.counterWindow >= 32 && this.counterWindow % 32 === 0)) {
      throw new RangeError(`counterWindow must be a positive multiple of 32, got ${this.counterWindow}`)
    }
  }

  /** Sessions tracked. */
  get size(): number {
    return this.sessions.size
  }

  /** Why (sender, session, counter) must be refused ("was already received", "is too far behind ..."), or undefined. */
  check(sender: string, session: string, counter: number): string | undefined {
    const s = this.sessions.get(sender + session)
    if (s == null || counter > s.highest) return undefined
    if (s.highest - counter >= this.counterWindow) {
      return `is ${s.highest - counter} messages behind the newest of its session (more than ${this.counterWindow}): refused as a possible replay`
    }
    return hasBit(s.bits, counter % this.counterWindow) ? 'was already received (replay)' : undefined
  }

  /**
   * Records an authenticated message. Throws PERMISSION_DENIED for a replay and RESOURCE_EXHAUSTED when a
   * new session does not fit (nothing is evicted to make room).
   */
  accept(sender: string, session: string, counter: number, sentAtMs: number, nowMs: number): void {
    const replayed = this.check(sender, session, counter)
    if (replayed != null) throw new StargateError(Code.PermissionDenied, `sealed message ${replayed}`)
    const id = sender + session
    let s = this.sessions.get(id)
    if (s == null) {
      this.prune(nowMs)
      const fromSender = this.perSender.get(sender) ?? 0
      if (fromSender >= this.maxSessionsPerSender) {
        throw new StargateError(
          Code.ResourceExhausted,
          `replay guard holds ${fromSender} sessions of this sender (the limit) within the last ${this.windowMs} ms: new sessions are refused until they expire`,
        )
      }
      if (this.sessions.size >= this.maxSessions) {
        throw new StargateError(
          Code.ResourceExhausted,
          `replay guard is full (${this.sessions.size} sender sessions within the last ${this.windowMs} ms): new sessions are refused until they expire`,
        )
      }
      s = { sender, highest: counter, bits: new Uint32Array(this.counterWindow / 32), expiresAtMs: 0 }
      this.perSender.set(sender, fromSender + 1)
    } else {
      this.sessions.delete(id)
      if (counter > s.highest) {
        clearRange(s.bits, s.highest + 1, counter, this.counterWindow)
        s.highest = counter
      }
    }
    setBit(s.bits, counter % this.counterWindow)
    s.expiresAtMs = Math.max(s.expiresAtMs, sentAtMs + this.windowMs)
    this.sessions.set(id, s)
  }

  /** Drops sessions past their expiry from the oldest end (stops at the first still live). */
  private prune(nowMs: number): void {
    for (const [id, s] of this.sessions) {
      if (s.expiresAtMs >= nowMs) break
      this.sessions.delete(id)
      const n = (this.perSender.get(s.sender) ?? 1) - 1
      if (n === 0) this.perSender.delete(s.sender)
      else this.perSender.set(s.sender, n)
    }
  }
}

interface SessionState {
  sender: string
  highest: number
  bits: Uint32Array
  expiresAtMs: number
}

const hasBit = (bits: Uint32Array, i: number): boolean => ((bits[i >>> 5]! >>> (i & 31)) & 1) === 1
const setBit = (bits: Uint32Array, i: number): void => {
  bits[i >>> 5]! |= 1 << (i & 31)
}
/** Clears the bits of counters from..to (inclusive) in a ring of `window` bits, a word at a time where it can. */
function clearRange(bits: Uint32Array, from: number, to: number, window: number): void {
  if (to - from + 1 >= window) {
    bits.fill(0)
    return
  }
  for (let c = from; c <= to; ) {
    const i = c % window
    if ((i & 31) === 0 && to - c >= 31) {
      bits[i >>> 5] = 0
      c += 32
    } else {
      bits[i >>> 5]! &= ~(1 << (i & 31))
      c++
    }
  }
}

/** The NATS tier's codec: this gateway's Sealer. */
export type SealedCodec = Pick<Sealer, 'seal' | 'open' | 'refusals' | 'peerId'>

/** A Sealer for this gateway's identity key (one ReplayGuard for every message it opens). */
export function sealedCodec(privateKey: PrivateKey, options: SealerOptions = {}): SealedCodec {
  return new Sealer(privateKey, options)
}

function nonceOf(counter: number): Uint8Array {
  const nonce = new Uint8Array(12)
  writeUint64(new DataView(nonce.buffer), 4, counter)
  return nonce
}

function writeUint64(view: DataView, at: number, n: number): void {
  view.setUint32(at, Math.floor(n / 2 ** 32))
  view.setUint32(at + 4, n >>> 0)
}

function readUint64(view: DataView, at: number): number {
  return view.getUint32(at) * 2 ** 32 + view.getUint32(at + 4)
}

function latin1(bytes: Uint8Array, at: number, length: number): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset + at, length).toString('latin1')
}

function equalAt(bytes: Uint8Array, at: number, expected: Uint8Array): boolean {
  for (let i = 0; i < expected.length; i++) if (bytes[at + i] !== expected[i]) return false
  return true
}

/** A peer id for an error message (never throws). */
function peerIdOfRaw(raw: Uint8Array): string {
  try {
    return peerIdFromPublicKey(publicKeyFromRaw(Uint8Array.from(raw))).toString()
  } catch {
    return `(invalid key ${Buffer.from(raw).toString('hex')})`
  }
}

/** domain, then each part as a 4-byte big-endian length and the bytes. */
export function transcript(domain: string, parts: Uint8Array[]): Uint8Array {
  const d = utf8.encode(domain)
  const out = new Uint8Array(4 + d.length + parts.reduce((n, p) => n + 4 + p.length, 0))
  const view = new DataView(out.buffer)
  let at = 0
  for (const p of [d, ...parts]) {
    view.setUint32(at, p.length)
    out.set(p, at + 4)
    at += 4 + p.length
  }
  return out
}

// X25519 keys as node:crypto KeyObjects: the raw 32 bytes behind the fixed DER prefixes of RFC 8410.
const X25519_SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex')
const X25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex')

/** The public key embedded in an Ed25519 peer id. */
export function publicKeyOf(peerId: string, role: string, code: Code): PublicKey {
  let key: PublicKey | undefined
  try {
    key = peerIdFromString(peerId).publicKey
  } catch (err: unknown) {
    throw new StargateError(code, `${role} "${peerId}" is not a valid peer id: ${messageOf(err)}`, { cause: err })
  }
  if (key == null || key.type !== 'Ed25519') {
    throw new StargateError(code, `${role} "${peerId}" is not an Ed25519 peer id (its public key cannot be recovered)`)
  }
  return key
}
