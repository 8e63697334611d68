// tidemark restore: write a byte-exact image of a volume at a point (the
// reading and writing is client/restore.ts).
import { describePoint, resolvePoint } from '../client/point'
import { restorePoint } from '../client/restore'
import { adminFromFlags, clientOptions, parseAppliance, helpOption, pointOf, pointOptions, tlsFiles, transportOption } from './common-options'
import { command, flag, helpText, parseCommand, text } from './definition'

export const RESTORE = command({
  name: 'restore',
  options: {
    ...helpOption,
    volume: text({ required: '--volume NAME is required' }),
    ...pointOptions,
    out: text({ required: '--out FILE|DEVICE|NBD-URI is required' }),
    transport: transportOption(
      "how to read the point: nbd, from the appliance's NBD server (appliance\n--nbd) at the speed of the disks; grpc, streamed over the Admin service;\nauto (the default): nbd when the appliance's endpoint is reachable from here"
    ),
    ...clientOptions,
    json: flag({}),
  },
  help: (rows) => `Usage:
  tidemark restore --appliance HOST:PORT --volume NAME (--timemark ID|LABEL | --at ISO-TIME | --seq N|latest)
                   --out FILE|DEVICE|NBD-URI [--transport auto|nbd|grpc]
                   [--tls-cert F --tls-key F --tls-ca F] [--json]

Writes a byte-exact image of the volume at the point given:
${rows(23, 'timemark', 'at', 'seq')}
--out is a regular file (written as FILE.partial, renamed when complete; zero
blocks are holes), a block device or an NBD export (nbd+unix:///EXPORT?socket=PATH,
nbd://HOST:PORT/EXPORT), written in place with zero ranges zeroed.
${rows(23, 'transport')}
The TLS files secure the NBD connection too (NBD_OPT_STARTTLS, mutual, the
same certificates as gRPC).
Points the appliance cannot restore exactly (not yet durable, inside a
resync, before the initial copy completed, expired) are refused with the
reason. On a terminal, progress goes to stderr; Ctrl-C stops the restore
(a file's .partial is removed).
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
  const applianceHost = typeof a.appliance === 'string' ? parseAppliance(a.appliance).host : a.appliance!.host
  const tty = process.stderr.isTTY && !a.json
  const abort = new AbortController()
  const onSigint = (): void => abort.abort()
  process.once('SIGINT', onSigint)
  let t0 = Date.now()
  let lastShown = 0
  let resolved
  let r
  try {
    // Resolved once, so the image is of one seq even while the volume's history grows.
    resolved = await resolvePoint(client, volume, pointOf(a), 'restore')
    const what = describePoint(resolved)
    t0 = Date.now()
    r = await restorePoint(client, {
      volume,
      seq: resolved.seq,
      out,
      command: 'restore',
      applianceHost,
      transport: a.transport ?? 'auto',
      tls: tlsFiles(a, 'restore'),
      signal: abort.signal,
      onProgress: (p) => {
        if (!tty || Date.now() - lastShown <= 250) return
        lastShown = Date.now()
        const pct = p.size ? (100 * p.scanned) / p.size : 0
        const mbs = p.scanned / 1e6 / Math.max(0.001, (Date.now() - t0) / 1000)
        const left = mbs > 0 ? (p.size - p.scanned) / 1e6 / mbs : 0
        process.stderr.write(`\rrestoring ${volume} at ${what}: ${pct.toFixed(1)} %  ${mbs.toFixed(0)} MB/s  ${left.toFixed(0)} s left   `)
      },
    })
  } finally {
    process.off('SIGINT', onSigint)
    client.close()
    if (tty && lastShown) process.stderr.write('\n')
  }
  const secs = (Date.now() - t0) / 1000
  const result = {
    volume,
    seq: r.seq,
    point: describePoint(resolved),
    timemark: resolved.timemark ?? null,
    out,
    size: r.size,
    dataBytes: r.written,
    extents: r.extents,
    seconds: secs,
    mbPerSecond: r.size / 1e6 / Math.max(secs, 0.001),
    transport: r.transport,
    source: r.source,
    nbdSkipped: r.nbdSkipped,
    serverCopy: r.serverCopy,
    target: r.target,
  }
  if (a.json) process.stdout.write(`${JSON.stringify(result)}\n`)
  else {
    const how = r.transport === 'nbd' ? `over NBD (${r.source}${r.serverCopy ? ', copied by the appliance' : ''})` : `over gRPC${r.nbdSkipped ? ` (${r.nbdSkipped})` : ''}`
    process.stdout.write(
      `restored ${volume} at ${describePoint(resolved)} to ${out} ${how}: ${r.size} bytes (${r.written} in ${r.extents} extents, the rest zero) in ${secs.toFixed(2)} s, ${result.mbPerSecond.toFixed(0)} MB/s\n`
    )
  }
  return 0
}
