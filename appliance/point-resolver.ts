// Which seq a point names, and whether that seq can be read exactly: one
// answer for every way in (Admin.Resolve and Restore, the appliance's NBD
// exports `VOLUME@POINT`, named views), so a point refused by `restore` is
// refused everywhere with the same reason.
import { TidemarkError } from '../proto/errors'
import type { PointInTime__Output } from '../proto/generated/tidemark/v1/PointInTime'
import type { CatalogEntry } from './chunk-index'
import type { VolumeStore } from './volume-store'

export interface ResolvedPoint {
  seq: number
  timemark: CatalogEntry | null
  timeMs: number
}

/**
 * The seq a point names, refusing what cannot be restored exactly: a point
 * not yet durable, before the first exact point, inside an inexact window,
 * or before the initial copy completed.
 */
export async function resolvePoint(v: VolumeStore, p: PointInTime__Output | null, opts: { anyPoint?: boolean } = {}): Promise<ResolvedPoint> {
  const name = v.meta.name
  let seq: number
  let timemark: CatalogEntry | null = null
  let timeMs = 0
  if (!p || p.point === 'latest' || (p.point === undefined && !p.seq)) {
    seq = v.exactSeq
  } else if (p.point === 'seq') {
    seq = p.seq ?? 0
    if (seq > v.durableSeq) throw new TidemarkError('POINT_IN_FUTURE', `seq ${seq} of volume ${name} is not durable here yet (the newest is ${v.durableSeq})`)
  } else if (p.point === 'timemark') {
    const t = p.timemark ?? ''
    if (/^\d+$/.test(t)) {
      timemark = await v.timemarkById(Number(t))
      if (!timemark) throw new TidemarkError('UNKNOWN_TIMEMARK', `volume ${name} has no TimeMark with id ${t} (see tidemark timemark list)`)
    } else {
      const found = await v.timemarksByLabel(t)
      if (found.length === 0) throw new TidemarkError('UNKNOWN_TIMEMARK', `volume ${name} has no TimeMark labelled ${JSON.stringify(t)} (see tidemark timemark list)`)
      if (found.length > 1) {
        throw new TidemarkError(
          'AMBIGUOUS_TIMEMARK',
          `volume ${name} has ${found.length} TimeMarks labelled ${JSON.stringify(t)} (ids ${found.map((e) => e.seq).join(', ')}); give an id`
        )
      }
      timemark = found[0]
    }
    seq = timemark.seq
    timeMs = timemark.wallMs
  } else if (p.point === 'atMs') {
    const atMs = p.atMs ?? 0
    if (atMs > Date.now() + 1000) throw new TidemarkError('POINT_IN_FUTURE', `${new Date(atMs).toISOString()} is in the future`)
    const at = await v.seqAt(atMs)
    if (!at && v.base) v.checkRetained(0)
    if (!at) throw new TidemarkError('POINT_BEFORE_HISTORY', `volume ${name} holds nothing recorded at or before ${new Date(atMs).toISOString()}`)
    seq = Math.min(at.seq, v.durableSeq)
    timeMs = at.ms
  } else {
    throw new TidemarkError('BAD_POINT', 'give a point: a seq, latest, a TimeMark or a time')
  }
  if (!opts.anyPoint) checkPoint(v, seq)
  return { seq, timemark, timeMs }
}

export function checkPoint(v: VolumeStore, seq: number): void {
  // A seeded volume's seed (volume-seed.ts) is a whole image before any copy.
  const seed = v.meta.seed !== undefined && seq <= v.meta.seed.seq
  if (!v.fullSyncDone && !seed) {
    // Sectors the copy has not reached yet would read as zeroes: no point
    // of this volume is a true image until the copy completes (points
    // above a seed lie in the copy's inexact window until then too).
    throw new TidemarkError(
      'INITIAL_COPY_INCOMPLETE',
      `volume ${v.meta.name}: the initial copy is not complete yet, so no point restores exactly (see tidemark stats)`
    )
  }
  if (seq > v.durableSeq) throw new TidemarkError('POINT_IN_FUTURE', `seq ${seq} of volume ${v.meta.name} is not durable here yet (the newest is ${v.durableSeq})`)
  v.checkRetained(seq)
  v.checkExact(seq)
}
