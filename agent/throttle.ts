// A token bucket for data bytes on the wire (`tidemark agent --throttle MBPS`).
//
// Only ChangeBatch payloads pass through it. Hellos, fingerprint requests and
// progress reports are written straight to the stream, and acks come the
// other way, so control traffic never queues behind data.
//
// The bucket may go into debt: a caller takes what it needs at once and
// waits until the debt is paid back at the configured rate. Concurrent
// callers (one per volume) therefore queue in arrival order and share the
// rate, and a batch larger than the burst is still sent, only later.
export class Throttle {
  readonly bytesPerSecond: number
  private readonly burst: number
  private tokens: number
  private last = performance.now()
  private waited = 0

  /** bytesPerSecond 0 (or less): no limit. */
  constructor(bytesPerSecond: number, burstBytes?: number) {
    this.bytesPerSecond = bytesPerSecond > 0 ? bytesPerSecond : 0
    // A quarter second of traffic, at least 64 KiB: smooth enough for a WAN
    // link, coarse enough that timers are not the bottleneck.
    this.burst = burstBytes ?? Math.max(64 * 1024, this.bytesPerSecond / 4)
    this.tokens = this.burst
  }

  get limited(): boolean {
    return this.bytesPerSecond > 0
  }

  /** Milliseconds callers have spent waiting for tokens. */
  get waitedMs(): number {
    return this.waited
  }

  /** Resolves when `bytes` may be sent. */
  take(bytes: number): Promise<void> | undefined {
    if (!this.limited || bytes <= 0) return undefined
    const now = performance.now()
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.bytesPerSecond)
    this.last = now
    this.tokens -= bytes
    if (this.tokens >= 0) return undefined
    const ms = (-this.tokens / this.bytesPerSecond) * 1000
    this.waited += ms
    return new Promise((resolve) => setTimeout(resolve, ms))
  }
}
