// The RPO points one volume reports to the appliance (replication.proto:
// ChangeBatch.captured_before_ms and Heartbeat).
//
// A point (S, T) says: every write captured before wall-clock time T has a
// seq at or below S. The agent's 100 ms sampler (agent.ts) reads the volume's
// newest seq S at time T, which is exactly such a point. Once the appliance
// holds S durably, nothing captured before T can be lost, so its RPO is
// now - T. A batch ending at last_seq L carries the newest point with S <= L;
// a heartbeat carries the newest point of all (durable already when the
// volume is idle, so an idle volume's RPO stays small).
//
// Points are only taken while seqs order what is missing: while the tap is
// behind or resyncing, or the initial copy runs, the regions still to resend
// are older than any new seq, so a durable seq says nothing about them. Then
// no point is taken and the appliance's RPO keeps growing from the last one,
// which is the truth: the replica holds no recent point in time until the
// resync is done.
//
// Memory is bounded: points at or below the newest acknowledged seq are
// dropped (batches sent later all end above it), and past MAX_POINTS every
// other one is thinned (a coarser, still correct, answer).

const MAX_POINTS = 1024

export class CaptureClock {
  /** [seq, wall ms] of points, seqs strictly increasing */
  private points: Array<[number, number]> = []
  /** the newest point taken (kept when acknowledged: heartbeats repeat it) */
  private newest: [number, number] | null = null

  /**
   * The volume's newest seq at wall time `nowMs`. `ordered`: the tap is
   * normal and the initial copy complete (see the top of this file).
   */
  sample(volumeSeq: number, nowMs: number, ordered: boolean): void {
    if (!ordered) {
      // What was taken before stays true; nothing newer can be said.
      return
    }
    const last = this.points[this.points.length - 1]
    if (last && last[0] === volumeSeq) last[1] = nowMs
    else this.points.push([volumeSeq, nowMs])
    this.newest = [volumeSeq, nowMs]
    if (this.points.length > MAX_POINTS) this.points = this.points.filter((_, i, a) => i % 2 === 0 || i === a.length - 1)
  }

  /** captured_before_ms for a batch ending at lastSeq (0: no point covers it). */
  forBatch(lastSeq: number): number {
    // Newest first: a batch usually covers the newest points.
    for (let i = this.points.length - 1; i >= 0; i--) if (this.points[i][0] <= lastSeq) return this.points[i][1]
    return 0
  }

  /** The heartbeat's point: the newest one, or null before any. */
  current(): { seq: number; capturedBeforeMs: number } | null {
    return this.newest ? { seq: this.newest[0], capturedBeforeMs: this.newest[1] } : null
  }

  /** The appliance holds everything up to seq: points below it are no batch's any more. */
  acked(seq: number): void {
    let k = 0
    // Keep the newest point at or below seq: a batch resent from the window may still end exactly there.
    while (k + 1 < this.points.length && this.points[k + 1][0] <= seq) k++
    if (k) this.points.splice(0, k)
  }

  /** The replica lost data (a new copy starts): no old point may be reported again. */
  reset(): void {
    this.points = []
    this.newest = null
  }
}
