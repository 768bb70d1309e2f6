/** Counts work in flight and tells when it reaches zero (graceful shutdown waits on it). */
export class InFlight {
  private n = 0
  private waiters: Array<() => void> = []

  get count(): number {
    return this.n
  }

  /** Runs fn counted as in flight. */
  async track<T>(fn: () => Promise<T>): Promise<T> {
    this.n++
    try {
      return await fn()
    } finally {
      this.n--
      if (this.n === 0) for (const w of this.waiters.splice(0)) w()
    }
  }

  /** Resolves when nothing is in flight, or after timeoutMs (to true if idle). */
  idle(timeoutMs: number): Promise<boolean> {
    if (this.n === 0) return Promise.resolve(true)
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs)
      this.waiters.push(() => {
        clearTimeout(timer)
        resolve(true)
      })
    })
  }
}
