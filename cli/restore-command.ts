// tidemark restore: write a byte-exact image of a volume at a point (the
// writing is client/restore.ts).
import { describePoint, resolvePoint } from '../client/point'
import { restoreImage } from '../client/restore'
import { adminFromFlags, clientOptions, helpOption, pointOf, pointOptions } from './common-options'
import { command, flag, helpText, parseCommand, text } from './definition'

export const RESTORE = command({
  name: 'restore',
  options: {
    ...helpOption,
    volume: text({ required: '--volume NAME is required' }),
    ...pointOptions,
    out: text({ required: '--out FILE is required' }),
    ...clientOptions,
    json: flag({}),
  },
  help: (rows) => `Usage:
  tidemark restore --appliance HOST:PORT --volume NAME (--timemark ID|LABEL | --at ISO-TIME | --seq N|latest)
                   --out FILE [--tls-cert F --tls-key F --tls-ca F] [--json]

Writes a byte-exact image of the volume at the point given:
${rows(23, 'timemark', 'at', 'seq')}
FILE is a regular file (written as FILE.partial, renamed when complete) or a
block device. Points the appliance cannot restore exactly (not yet durable,
inside a resync, before the initial copy completed, expired) are refused
with the reason.
`,
})

export async function runRestore(argv: string[]): Promise<number> {
  const p = parseCommand(RESTORE, argv)
  if (p.help) {
    process.stdout.write(helpText(RESTORE))
    return 0
  }
  const a = p.values
  const volume = a.volume!
  const out = a.out!
  const client = adminFromFlags(a, 'restore')
  const tty = process.stderr.isTTY && !a.json
  let t0 = Date.now()
  let lastShown = 0
  let resolved
  let r
  try {
    // Resolved once, so the image is of one seq even while the volume's history grows.
    resolved = await resolvePoint(client, volume, pointOf(a), 'restore')
    const what = describePoint(resolved)
    t0 = Date.now()
    r = await restoreImage(client, {
      volume,
      seq: resolved.seq,
      out,
      command: 'restore',
      onProgress: (p) => {
        if (!tty || Date.now() - lastShown <= 250) return
        lastShown = Date.now()
        const pct = p.size ? (100 * p.scanned) / p.size : 0
        const mbs = p.written / 1e6 / Math.max(0.001, (Date.now() - t0) / 1000)
        const left = mbs > 0 ? (p.size - p.scanned) / 1e6 / mbs : 0
        process.stderr.write(`\rrestoring ${volume} at ${what}: ${pct.toFixed(1)} %  ${mbs.toFixed(0)} MB/s  ${left.toFixed(0)} s left   `)
      },
    })
  } finally {
    client.close()
  }
  const secs = (Date.now() - t0) / 1000
  const result = {
    volume,
    seq: r.seq,
    point: describePoint(resolved),
    timemark: resolved.timemark ?? null,
    out,
    size: r.size, dataBytes: r.written, extents: r.extents, seconds: secs, mbPerSecond: r.size / 1e6 / Math.max(secs, 0.001) }
  if (tty) process.stderr.write('\n')
  if (a.json) process.stdout.write(`${JSON.stringify(result)}\n`)
  else {
    process.stdout.write(
      `restored ${volume} at ${describePoint(resolved)} to ${out}: ${r.size} bytes (${r.written} in ${r.extents} extents, the rest zero) in ${secs.toFixed(2)} s, ${result.mbPerSecond.toFixed(0)} MB/s\n`
    )
  }
  return 0
}
