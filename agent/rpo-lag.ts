// RPO statistics of one volume: how far the appliance's durable copy lags
// behind what the application wrote, in milliseconds.
//
// About every 100 ms the agent samples the volume's newest seq (sample()).
// A sample resolves when an ack covers its seq; the time from sample to ack
// is that write's RPO. The current lag is the age of the oldest unresolved
// sample (0 when the appliance holds everything); percentiles are over the
// newest resolved samples. Memory is bounded both ways: unresolved samples
// are thinned beyond MAX_SAMPLES (the oldest, which sets the lag, is always
// kept), resolved ones live in a fixed ring.

/** Samples kept for the RPO lag estimate (thinned beyond this). */
const MAX_SAMPLES = 2048
/** Resolved lag samples kept for the percentiles (the newest; about 7 minutes of writing). */
const RESOLVED_KEPT = 4096

export interface RpoPercentiles {
  rpoP50Ms: number | null
  rpoP99Ms: number | null
  rpoSamples: number
}

export class RpoLag {
  /** [seq, sample time] of samples no ack has covered yet, oldest first */
  private samples: Array<[number, number]> = []
  /** ack time - sample time, ms, of resolved samples: a ring of the newest RESOLVED_KEPT */
  private readonly resolved = new Float64Array(RESOLVED_KEPT)
  private resolvedCount = 0

  /** The volume's newest seq at `now`; durableSeq: what the appliance holds already. */
  sample(volumeSeq: number, now: number, durableSeq: number): void {
    const last = this.samples[this.samples.length - 1]
    if (volumeSeq <= durableSeq || (last && last[0] >= volumeSeq)) return
    this.samples.push([volumeSeq, now])
    if (this.samples.length > MAX_SAMPLES) {
      // Keep the oldest (it sets the lag) and every other one after it.
      this.samples = [this.samples[0], ...this.samples.slice(1).filter((_, i) => i % 2 === 1)]
    }
  }

  /** An ack made everything up to seq durable. */
  acked(seq: number): void {
    let k = 0
    while (k < this.samples.length && this.samples[k][0] <= seq) k++
    if (!k) return
    const now = performance.now()
    for (let j = 0; j < k; j++) this.resolved[this.resolvedCount++ % RESOLVED_KEPT] = now - this.samples[j][1]
    this.samples.splice(0, k)
  }

  /** The replica lost data and holds only up to durableSeq: forget the samples at or below it without resolving them. */
  forgetUpTo(durableSeq: number): void {
    this.samples = this.samples.filter((x) => x[0] > durableSeq)
  }

  /** The age of the oldest write the appliance does not hold, ms (0: none). */
  lagMs(): number {
    return this.samples.length ? Math.round(performance.now() - this.samples[0][1]) : 0
  }

  /**
   * The lags (ms) resolved since `from` (a count this returned before; 0 at
   * first), for a histogram that reads them when scraped instead of being
   * told on every ack. At most the ring's size: older ones are gone.
   */
  resolvedSince(from: number): { lagsMs: number[]; count: number } {
    const n = this.resolvedCount
    const start = Math.max(from, n - RESOLVED_KEPT)
    const lagsMs: number[] = []
    for (let i = start; i < n; i++) lagsMs.push(this.resolved[i % RESOLVED_KEPT])
    return { lagsMs, count: n }
  }

  percentiles(): RpoPercentiles {
    const n = Math.min(this.resolvedCount, RESOLVED_KEPT)
    if (n === 0) return { rpoP50Ms: null, rpoP99Ms: null, rpoSamples: 0 }
    const xs = this.resolved.slice(0, n).sort()
    const at = (p: number): number => Math.round(xs[Math.min(n - 1, Math.ceil(p * n) - 1)])
    return { rpoP50Ms: at(0.5), rpoP99Ms: at(0.99), rpoSamples: n }
  }
}
