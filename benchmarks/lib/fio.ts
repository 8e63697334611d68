// fio runs: JSON output parsed, a failed job is an error, latencies in µs.
import { run } from './process'
import type { Log } from './process'

/** fio's JSON report (anything it printed before the JSON is skipped). */
export function fioJson(stdout: string): Log {
  return JSON.parse(stdout.slice(stdout.indexOf('{')))
}

/** Runs fio with --output-format=json; fails on a non-zero exit or a job error. */
export async function fio(args: string[], cwd: string, timeoutMs = 600_000): Promise<Log> {
  const r = await run('fio', [...args, '--output-format=json'], { cwd, timeoutMs })
  if (r.code !== 0) throw new Error(`fio ${args.join(' ')} exited ${r.code}:\n${r.stdout}\n${r.stderr}`)
  const j = fioJson(r.stdout)
  for (const job of j.jobs) if (job.error) throw new Error(`fio job ${job.jobname} failed with error ${job.error}`)
  return j
}

/** A completion-latency percentile of one direction of a job ('99.000000'), in µs; NaN if fio did not report it. */
export function clatUs(dir: Log, p: string): number {
  const v = dir?.clat_ns?.percentile?.[p]
  return typeof v === 'number' ? v / 1000 : NaN
}
