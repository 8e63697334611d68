// What agents report about their volumes beyond the records themselves: the
// RPO points (replication.proto ChangeBatch.captured_before_ms, Heartbeat),
// the state only the agent's tap knows (behind, resync), its backlog, and the
// initial copy's progress (SyncProgress). The replication service writes
// here as messages arrive; the status API and the metrics read it.
//
// RPO. A point (S, T) says every write the agent captured before T has a seq
// at or below S. It counts once S is durable here, so the volume's RPO is now
// minus the newest T whose S is durable: what the protected site would lose
// if it vanished now. Points wait in seq order until the durable seq reaches
// them (durable() is told as acks go out). Nothing else moves T: a stream
// that silently stops, an agent that is paused or gone, a resync (whose
// points the agent withholds) all show a growing RPO.
//
// T is the agent's wall clock: the hosts' clocks must agree (NTP) for the
// RPO to mean what it says; a skew of k seconds shifts it by k.
//
// Before any report since this appliance started, T is the capture time of
// the newest durable batch (the index's wall time of it): no later write can
// be known to be safe. Memory: at most MAX_PENDING points per volume wait;
// past that the newest replaces the last (coarser, never too optimistic).

const MAX_PENDING = 256

export type AgentState = 'normal' | 'behind' | 'resync' | 'initial_copy'

export interface VolumeReport {
  /** the newest T whose seq is durable (ms, agent clock); 0: unknown */
  capturedBeforeMs: number
  /** what the agent said of its tap in its last heartbeat (null: none since start) */
  agentState: AgentState | null
  backlogBytes: number
  resyncRemainingBytes: number
  /** the initial copy as the agent last reported it */
  copy: { regionsDone: number; regionsTotal: number; bytesPerSecond: number } | null
  /** when the last message of any kind came from the volume's agent (ms, this clock; 0: none) */
  lastHeardMs: number
}

class VolumeRpo {
  readonly report: VolumeReport = {
    capturedBeforeMs: 0,
    agentState: null,
    backlogBytes: 0,
    resyncRemainingBytes: 0,
    copy: null,
    lastHeardMs: 0,
  }
  /** [seq, T] not yet durable, seqs increasing */
  private pending: Array<[number, number]> = []
  private durableSeq = 0

  point(seq: number, t: number): void {
    this.report.lastHeardMs = Date.now()
    if (t <= 0) return
    if (seq <= this.durableSeq) return this.advance(t)
    const last = this.pending[this.pending.length - 1]
    if (last && last[0] >= seq) {
      // A resend or an out-of-order report: a later T for a seq no higher is still true.
      if (last[0] === seq) last[1] = Math.max(last[1], t)
      return
    }
    if (this.pending.length >= MAX_PENDING) this.pending[this.pending.length - 1] = [seq, t]
    else this.pending.push([seq, t])
  }

  durable(seq: number): void {
    this.durableSeq = Math.max(this.durableSeq, seq)
    let k = 0
    let t = 0
    while (k < this.pending.length && this.pending[k][0] <= this.durableSeq) t = Math.max(t, this.pending[k++][1])
    if (k) {
      this.pending.splice(0, k)
      this.advance(t)
    }
  }

  private advance(t: number): void {
    if (t > this.report.capturedBeforeMs) this.report.capturedBeforeMs = t
  }

  /** The agent's stream (or its generation) changed: points it sent for seqs not durable are void. */
  newStream(durableSeq: number): void {
    this.pending = []
    this.durableSeq = durableSeq
  }
}

export class AgentReports {
  private readonly volumes = new Map<string, VolumeRpo>()

  private of(volume: string): VolumeRpo {
    let v = this.volumes.get(volume)
    if (!v) this.volumes.set(volume, (v = new VolumeRpo()))
    return v
  }

  /** An agent attached the volume with this durable seq. */
  attached(volume: string, durableSeq: number): void {
    this.of(volume).newStream(durableSeq)
  }

  /** A batch ending at lastSeq arrived with its RPO point. */
  batch(volume: string, lastSeq: number, capturedBeforeMs: number): void {
    this.of(volume).point(lastSeq, capturedBeforeMs)
  }

  heartbeat(
    volume: string,
    h: { seq: number; capturedBeforeMs: number; state: string; backlogBytes: number; resyncRemainingBytes: number }
  ): void {
    const v = this.of(volume)
    v.point(h.seq, h.capturedBeforeMs)
    const r = v.report
    r.agentState = (['normal', 'behind', 'resync', 'initial_copy'] as const).find((s) => s === h.state) ?? r.agentState
    r.backlogBytes = h.backlogBytes
    r.resyncRemainingBytes = h.resyncRemainingBytes
  }

  progress(volume: string, p: { regionsDone: number; regionsTotal: number; bytesPerSecond: number }): void {
    const v = this.of(volume)
    v.report.copy = { regionsDone: p.regionsDone, regionsTotal: p.regionsTotal, bytesPerSecond: p.bytesPerSecond }
    v.report.lastHeardMs = Date.now()
  }

  /** An ack for seq went out: it is durable. */
  durable(volume: string, seq: number): void {
    this.of(volume).durable(seq)
  }

  /** Sets the starting T of a volume nobody reported on yet (the newest durable batch's time). */
  seed(volume: string, t: number): void {
    const r = this.of(volume).report
    if (r.capturedBeforeMs === 0) r.capturedBeforeMs = t
  }

  get(volume: string): VolumeReport | null {
    return this.volumes.get(volume)?.report ?? null
  }
}
