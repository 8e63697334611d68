// tidemark failback: make a production volume equal to a point, sending only
// the sectors that differ (the pipeline is client/failback.ts).
//
// Everything that can refuse is checked before the first write: the point is
// resolved once (every later call names its seq), the target is opened and
// its size compared with the volume's. A failback that fails half way leaves
// a target that is part old, part point; running it again finishes the job,
// since it sends only what still differs.
import { z } from 'zod'
import { applianceSource, failback, type FailbackResult } from '../client/failback'
import { openTarget, parseTarget, type FailbackTarget } from '../client/failback-target'
import { describePoint, resolvePoint } from '../client/point'
import { TidemarkError } from '../proto/errors'
import { initHash } from '../proto/hash'
import { adminFromFlags, clientOptions, helpOption, pointOf, pointOptions } from './common-options'
import { command, convert, flag, helpText, parseCommand, text } from './definition'

export const FAILBACK = command({
  name: 'failback',
  options: {
    ...helpOption,
    volume: text({ required: '--volume NAME is required' }),
    ...pointOptions,
    target: text({
      label: '--target URI|FILE',
      help: 'an NBD export (nbd+unix:///EXPORT?socket=PATH,\nnbd://HOST:PORT/EXPORT) or a local image or block device;\nit must be exactly the volume\'s size',
      required: '--target nbd+unix:///EXPORT?socket=PATH | nbd://HOST:PORT/EXPORT | FILE is required',
      value: convert(z.string(), (s) => {
          try {
            return { arg: s, spec: parseTarget(s) }
          } catch (err) {
            throw new Error(`--target ${(err as Error).message}`)
          }
        })
      ,
    }),
    'dry-run': flag({ label: '--dry-run', help: 'compare and report what would be sent; write nothing' }),
    json: flag({ label: '--json', help: 'the summary as one JSON object' }),
    ...clientOptions,
  },
  help: (rows) => `Usage:
  tidemark failback --appliance HOST:PORT --volume NAME (--timemark ID|LABEL | --at ISO-TIME | --seq N|latest)
                    --target nbd+unix:///EXPORT?socket=PATH | nbd://HOST:PORT/EXPORT | FILE
                    [--tls-cert F --tls-key F --tls-ca F] [--json] [--dry-run]

Makes the target (the production volume, after running at the recovery site)
equal to the volume at the point given:
${rows(23, 'timemark', 'at', 'seq')}
Each 64 KiB region of the target is fingerprinted (xxh64 per 512-byte sector)
and compared with the appliance's fingerprints of the point; only sectors that
differ are fetched from the appliance and written. The target is flushed at
the end (NBD FLUSH, or fsync for a file or block device).

${rows(22, 'target', 'dry-run', 'json')}
`,
})

/** A TidemarkError from a lower layer, as this command's one line. */
function ours(err: unknown): unknown {
  if (err instanceof TidemarkError && !err.message.startsWith('tidemark ')) return new TidemarkError(err.code, `tidemark failback: ${err.message}`)
  return err
}

export async function runFailback(argv: string[]): Promise<number> {
  const p = parseCommand(FAILBACK, argv)
  if (p.help) {
    process.stdout.write(helpText(FAILBACK))
    return 0
  }
  const a = p.values
  const volume = a.volume!
  const point = pointOf(a)
  const { arg: targetArg, spec } = a.target!
  const dryRun = a['dry-run'] === true
  const json = a.json === true
  await initHash()
  const client = adminFromFlags(a, 'failback')
  let target: FailbackTarget | null = null
  try {
    const resolved = await resolvePoint(client, volume, point, 'failback')
    const seq = resolved.seq
    try {
      target = await openTarget(spec, { write: !dryRun })
    } catch (err) {
      throw ours(err)
    }
    if (target.size !== resolved.volumeSize) {
      throw new TidemarkError(
        'SIZE_MISMATCH',
        `tidemark failback: ${target.what} is ${target.size} bytes but volume ${volume} is ${resolved.volumeSize} bytes; refusing to write a volume onto a target of another size`
      )
    }
    const source = applianceSource(client, volume, seq, 'failback')
    const tty = process.stderr.isTTY && !json
    const where = target.what
    const t0 = Date.now()
    let lastShown = 0
    let result: FailbackResult
    let sentSoFar = 0
    try {
      result = await failback(source, target, resolved.volumeSize, {
        dryRun,
        onProgress: (p) => {
          sentSoFar = p.bytesSent
          if (!tty || Date.now() - lastShown < 250) return
          lastShown = Date.now()
          const secs = Math.max(0.001, (Date.now() - t0) / 1000)
          const mbs = p.doneBytes / 1e6 / secs
          const left = mbs > 0 ? (p.size - p.doneBytes) / 1e6 / mbs : 0
          process.stderr.write(
            `\r${dryRun ? 'comparing' : 'failing back'} ${volume} onto ${where}: ${((100 * p.doneBytes) / p.size).toFixed(1)} %  ${mbs.toFixed(0)} MB/s  ${left.toFixed(0)} s left  ${(p.bytesSent / 1e6).toFixed(1)} MB sent   `
          )
        },
      })
    } catch (err) {
      if (tty) process.stderr.write('\n')
      const e = ours(err) as Error & { code?: string }
      if (!dryRun && sentSoFar > 0 && e instanceof TidemarkError) {
        throw new TidemarkError(e.code, `${e.message} (after ${sentSoFar} bytes were written to ${where}; run the failback again to finish: it sends only what still differs)`)
      }
      throw e
    }
    let flushed = false
    if (!dryRun) {
      try {
        flushed = await target.flush()
      } catch (err) {
        throw ours(err)
      }
    }
    if (tty) process.stderr.write('\n')
    const seconds = (Date.now() - t0) / 1000
    const summary = {
      volume,
      seq,
      point: describePoint(resolved),
      timemark: resolved.timemark ?? null,
      target: targetArg,
      dryRun,
      size: result.size,
      regionsCompared: result.regions,
      sectorsCompared: result.sectors,
      sectorsDiffering: result.sectorsDiffering,
      runs: result.runs,
      fetches: result.fetches,
      bytesFetched: result.bytesFetched,
      bytesDiffering: result.bytesDiffering,
      bytesSent: result.bytesSent,
      flushed,
      seconds,
      mbPerSecond: result.size / 1e6 / Math.max(seconds, 0.001),
    }
    if (json) process.stdout.write(`${JSON.stringify(summary)}\n`)
    else if (dryRun) {
      process.stdout.write(
        `dry run: ${where} against ${volume} at ${describePoint(resolved)}: ${result.regions} regions (${result.sectors} sectors) compared, ` +
          `${result.sectorsDiffering} sectors differ (${result.bytesDiffering} bytes in ${result.runs} runs would be sent); nothing written; ` +
          `${seconds.toFixed(2)} s, ${summary.mbPerSecond.toFixed(0)} MB/s compared\n`
      )
    } else {
      process.stdout.write(
        `failed back ${where} to ${volume} at ${describePoint(resolved)}: ${result.regions} regions (${result.sectors} sectors) compared, ` +
          `${result.sectorsDiffering} sectors differed, ${result.bytesSent} bytes sent in ${result.runs} writes ` +
          `(${result.bytesFetched} fetched from the appliance in ${result.fetches} reads), ` +
          `${flushed ? 'flushed' : 'no flush needed (the server takes no FLUSH)'}; ${seconds.toFixed(2)} s, ${summary.mbPerSecond.toFixed(0)} MB/s compared\n`
      )
    }
    return 0
  } finally {
    if (target) await target.close().catch(() => undefined)
    client.close()
  }
}
