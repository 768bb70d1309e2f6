/**
 * The bytes a gateway keeps so an idempotent tunnelled call can be tried again without running twice: the
 * caller keeps its request until the response starts (to send it again on another tier), the callee keeps
 * its response until the call is remembered (to answer a repeat). Both are bounded per call and for all
 * calls at once; a call that does not fit is not kept (the caller does not retry it after the open, the
 * callee answers a repeat ALREADY_EXISTS instead of the response), so memory stays bounded whatever arrives.
 */
export class ReplayBudget {
  readonly maxBytes: number
  readonly maxBytesPerCall: number
  private used = 0

  constructor(maxBytes: number, maxBytesPerCall: number) {
    this.maxBytes = maxBytes
    this.maxBytesPerCall = maxBytesPerCall
  }

  /** Bytes kept now, all calls. */
  get usedBytes(): number {
    return this.used
  }

  /** Takes n more bytes for a call that keeps `held` bytes already; false (nothing taken) past either bound. */
  take(held: number, n: number): boolean {
    if (held + n > this.maxBytesPerCall || this.used + n > this.maxBytes) return false
    this.used += n
    return true
  }

  /** Gives back bytes taken. */
  release(n: number): void {
    this.used = Math.max(0, this.used - n)
  }
}

/** Chunks kept against a budget (uncopied); dropped whole when the next one does not fit. */
export class KeptChunks {
  private readonly budget: ReplayBudget
  private kept: Uint8Array[] | undefined = []
  private bytes = 0

  constructor(budget: ReplayBudget) {
    this.budget = budget
  }

  /** True while every chunk added so far is kept. */
  get complete(): boolean {
    return this.kept != null
  }

  /** The chunks kept (empty once dropped). */
  get chunks(): readonly Uint8Array[] {
    return this.kept ?? []
  }

  get byteLength(): number {
    return this.bytes
  }

  /** Keeps a chunk; when it does not fit the budget, drops everything (complete becomes false). */
  add(chunk: Uint8Array): void {
    if (this.kept == null) return
    if (!this.budget.take(this.bytes, chunk.byteLength)) {
      this.drop()
      return
    }
    this.kept.push(chunk)
    this.bytes += chunk.byteLength
  }

  /** Drops every chunk and keeps no more; gives the bytes back. */
  drop(): void {
    if (this.kept == null) return
    this.kept = undefined
    this.budget.release(this.bytes)
    this.bytes = 0
  }

  /** Gives the bytes back and hands the chunks over (for a record); keeps no more. */
  take(): Uint8Array[] {
    const out = this.kept ?? []
    this.kept = undefined
    this.budget.release(this.bytes)
    this.bytes = 0
    return out
  }
}
