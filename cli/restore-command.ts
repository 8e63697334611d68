// tidemark restore: write a byte-exact image of a volume at a point.
//
// The image is written to FILE.partial and renamed to FILE when complete, so
// a restore that fails half way never leaves something that looks like an
// image (a block device is written in place). Only the extents the appliance
// sends are written: the rest of the file is a hole, which reads as zeroes.
import fs from 'node:fs'
import { TidemarkError } from '../proto/errors'
import type { ImageChunk__Output } from '../proto/generated/tidemark/v1/ImageChunk'
import { adminClient, clientError, CLIENT_FLAGS } from './admin-client'
import { parseArgs, usage } from './args'
import { describePoint, parsePoint, POINT_FLAGS, POINT_HELP, resolvePoint } from './point'

export const RESTORE_HELP = `Usage:
  tidemark restore --appliance HOST:PORT --volume NAME (--timemark ID|LABEL | --at ISO-TIME | --seq N|latest)
                   --out FILE [--tls-cert F --tls-key F --tls-ca F] [--json]

Writes a byte-exact image of the volume at the point given:
${POINT_HELP}
FILE is a regular file (written as FILE.partial, renamed when complete) or a
block device. Points the appliance cannot restore exactly (not yet durable,
inside a resync, before the initial copy completed, expired) are refused
with the reason.
`

const SPEC = { help: {}, ...CLIENT_FLAGS, ...POINT_FLAGS, volume: { value: true }, out: { value: true }, json: {} }

export async function runRestore(argv: string[]): Promise<number> {
  const a = parseArgs(argv, SPEC, 'restore')
  if (a.has('help')) {
    process.stdout.write(RESTORE_HELP)
    return 0
  }
  const volume = a.get('volume')?.[0]
  if (!volume) throw usage('restore', '--volume NAME is required')
  const point = parsePoint(a, 'restore')
  const out = a.get('out')?.[0]
  if (!out) throw usage('restore', '--out FILE is required')
  const client = adminClient(a, 'restore')
  // Resolved once, so the image is of one seq even while the volume's history grows.
  let resolved
  try {
    resolved = await resolvePoint(client, volume, point, 'restore')
  } catch (err) {
    client.close()
    throw err
  }
  const isDevice = fs.existsSync(out) && fs.statSync(out).isBlockDevice()
  const target = isDevice ? out : `${out}.partial`
  const tty = process.stderr.isTTY && !a.has('json')
  const t0 = Date.now()
  let size = 0
  let seq = 0
  let written = 0
  let extents = 0
  let lastShown = 0
  const fh = await fs.promises.open(target, isDevice ? 'r+' : 'w')
  try {
    const call = client.restore({
      volume,
      point: { seq: resolved.seq },
    })
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
        if (tty && Date.now() - lastShown > 250) {
          lastShown = Date.now()
          const pct = size ? (100 * c.scanned) / size : 0
          const mbs = written / 1e6 / Math.max(0.001, (Date.now() - t0) / 1000)
          const left = mbs > 0 ? (size - c.scanned) / 1e6 / mbs : 0
          process.stderr.write(`\rrestoring ${volume} at ${describePoint(resolved)}: ${pct.toFixed(1)} %  ${mbs.toFixed(0)} MB/s  ${left.toFixed(0)} s left   `)
        }
      }
    } catch (err) {
      if (err instanceof TidemarkError) throw err
      throw clientError('restore', err)
    }
    if (!size) throw new TidemarkError('RESTORE_FAILED', 'tidemark restore: the appliance ended the restore without sending the volume size')
    await fh.sync()
  } catch (err) {
    await fh.close()
    if (!isDevice) fs.rmSync(target, { force: true })
    throw err
  } finally {
    client.close()
  }
  await fh.close()
  if (!isDevice) fs.renameSync(target, out)
  const secs = (Date.now() - t0) / 1000
  const result = {
    volume,
    seq,
    point: describePoint(resolved),
    timemark: resolved.timemark ?? null,
    out,
    size, dataBytes: written, extents, seconds: secs, mbPerSecond: size / 1e6 / Math.max(secs, 0.001) }
  if (tty) process.stderr.write('\n')
  if (a.has('json')) process.stdout.write(`${JSON.stringify(result)}\n`)
  else {
    process.stdout.write(
      `restored ${volume} at ${describePoint(resolved)} to ${out}: ${size} bytes (${written} in ${extents} extents, the rest zero) in ${secs.toFixed(2)} s, ${result.mbPerSecond.toFixed(0)} MB/s\n`
    )
  }
  return 0
}
