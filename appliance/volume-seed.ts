// Seeding a new volume from a disk the appliance reads itself
// (Admin.SeedVolume): reverse protection after a failover, where the old
// production disks sit next to the reverse appliance and still hold most of
// what the recovered volumes hold. The disk's bytes become the volume's base
// image (base-image.ts) at SEED_SEQ, with a TimeMark "seed" there, and the
// volume is created under the generation its agent will announce: the
// agent's initial copy then compares fingerprints against the seed and sends
// only the sectors that differ, instead of every sector over the WAN.
//
// Why the base image and not RESYNC records through the ingest path: the
// base is exactly "the volume at one seq", the form compaction already
// leaves and every reader (image.ts, point maps, the replica image, verify,
// retention) already takes; the copy is one native NBD read into a sparse
// file (zero blocks stay holes) with no record framing, journal or index
// entry per 512-byte sector; and it commits atomically with the volume
// itself. store.ts writes it into the volume's directory while that is still
// .NAME.new-*, before the rename that makes the volume exist: a crash at any
// point leaves no volume (the leftover directory is removed at open).
import path from 'node:path'
import { TidemarkError } from '../proto/errors'
import { describeAddress, parseNbdUri, type NbdAddress } from '../proto/nbd-uri'
import { NbdCopy } from '../native/nbd-copy'
import { BaseImage } from './base-image'
import { CHUNK_BYTES } from './chunk-index'
import { crashPoint } from './crash-points'
import { SEED_SEQ } from '../proto/seed'

/** The seeded point's seq: its agent's seqs start above it (proto/seed.ts). */
export { SEED_SEQ }
export const SEED_LABEL = 'seed'

export interface SeedSource {
  uri: string
  address: NbdAddress
}

/** The source URI, or the one line saying why it is not one. */
export function seedSource(uri: string, volume: string): SeedSource {
  let address: NbdAddress | null
  try {
    address = parseNbdUri(uri)
  } catch (err) {
    throw new TidemarkError('BAD_SEED_SOURCE', `cannot seed volume ${volume}: ${(err as Error).message}`)
  }
  if (!address) throw new TidemarkError('BAD_SEED_SOURCE', `cannot seed volume ${volume}: source '${uri}' is not an NBD URI (nbd+unix:///EXPORT?socket=PATH or nbd://HOST:PORT/EXPORT)`)
  return { uri, address }
}

export interface SeedResult {
  size: number
  dataBytes: number
  zeroBytes: number
  ms: number
}

/**
 * Copies the source into DIR/base-SEED_SEQ.img (fsynced) and commits it as
 * the base of the volume being made in DIR. `size` (0: any) is the size the
 * volume must have. Throws a one-line SEED_SOURCE error when the source
 * cannot be read whole.
 */
export async function writeSeed(dir: string, volume: string, src: SeedSource, size: number): Promise<SeedResult> {
  const t0 = Date.now()
  const file = path.join(dir, `base-${SEED_SEQ}.img`)
  const what = describeAddress(src.address)
  let r
  try {
    // Into a file: zero blocks are left as holes; fdatasync before done.
    r = await new NbdCopy({ source: src.address, target: file, sync: true }).done
  } catch (err) {
    throw new TidemarkError('SEED_SOURCE', `cannot seed volume ${volume}: reading ${what} (${src.uri}) failed: ${(err as Error).message}`)
  }
  if (r.size <= 0 || r.size % 512 !== 0) throw new TidemarkError('SEED_SOURCE', `cannot seed volume ${volume}: ${what} holds ${r.size} bytes, not a positive multiple of 512`)
  if (size && r.size !== size) throw new TidemarkError('SEED_SIZE', `cannot seed volume ${volume}: ${what} holds ${r.size} bytes, the volume is ${size}`)
  crashPoint('seed:before-commit')
  const now = Date.now()
  await BaseImage.adopt(dir, r.size, CHUNK_BYTES, {
    seq: SEED_SEQ,
    timeMs: now,
    // Nothing folded: the journal starts empty above the base.
    throughSegment: 0,
    marks: [{ seq: SEED_SEQ, label: SEED_LABEL, consistency: 'crash', wallMs: now, group: '', note: `seeded from ${src.uri}`, pinned: false }],
    windows: [],
  })
  return { size: r.size, dataBytes: r.dataBytes, zeroBytes: r.zeroBytes, ms: Date.now() - t0 }
}
