// Restoring a volume at a resolved seq into a file or a block device.
//
// The image is written to FILE.partial and renamed to FILE when complete, so
// a restore that fails half way never leaves something that looks like an
// image (a block device is written in place). Only the extents the appliance
// sends are written: the rest of the file is a hole, which reads as zeroes.
import fs from 'node:fs'
import { TidemarkError } from '../proto/errors'
import type { AdminClient } from '../proto/generated/tidemark/v1/Admin'
import type { ImageChunk__Output } from '../proto/generated/tidemark/v1/ImageChunk'
import { clientError } from './admin-client'

export interface RestoreProgress {
  size: number
  /** how far the appliance has scanned the volume */
  scanned: number
  written: number
}

export interface RestoreResult {
  size: number
  seq: number
  /** bytes written (the extents the appliance sent) */
  written: number
  extents: number
}

/** Writes `volume` at `seq` to `out`; `command` names the caller in error lines. */
export async function restoreImage(
  client: AdminClient,
  opts: { volume: string; seq: number; out: string; command: string; onProgress?: (p: RestoreProgress) => void }
): Promise<RestoreResult> {
  const { out } = opts
  const isDevice = fs.existsSync(out) && fs.statSync(out).isBlockDevice()
  const target = isDevice ? out : `${out}.partial`
  let size = 0
  let seq = 0
  let written = 0
  let extents = 0
  const fh = await fs.promises.open(target, isDevice ? 'r+' : 'w')
  try {
    const call = client.restore({ volume: opts.volume, point: { seq: opts.seq } })
    try {
      for await (const c of call as AsyncIterable<ImageChunk__Output>) {
        if (c.volumeSize) {
          size = c.volumeSize
          seq = c.seq
          if (!isDevice) await fh.truncate(size)
          continue
        }
        if (c.offset + c.data.length > size) {
          throw new TidemarkError('RESTORE_FAILED', `the appliance sent an extent past the end of the volume (${c.offset}+${c.data.length} > ${size})`)
        }
        await fh.write(c.data, 0, c.data.length, c.offset)
        written += c.data.length
        extents++
        opts.onProgress?.({ size, scanned: c.scanned, written })
      }
    } catch (err) {
      if (err instanceof TidemarkError) throw err
      throw clientError(opts.command, err)
    }
    if (!size) throw new TidemarkError('RESTORE_FAILED', `tidemark ${opts.command}: the appliance ended the restore without sending the volume size`)
    await fh.sync()
  } catch (err) {
    await fh.close()
    if (!isDevice) fs.rmSync(target, { force: true })
    throw err
  }
  await fh.close()
  if (!isDevice) fs.renameSync(target, out)
  return { size, seq, written, extents }
}
