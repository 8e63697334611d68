// What a benchmark reports: medians and percentiles, number cells, markdown
// tables, the machine and revision measured, and the results JSON (written
// atomically, so a failed run never leaves half a file).
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { ROOT } from './env'
import { commandOutput } from './process'

export function median(xs: number[]): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}

/** Nearest-rank percentile, p in 0..1. */
export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))]
}

const finite = (x: number | null | undefined): x is number => x !== null && x !== undefined && Number.isFinite(x)
/** Whole numbers with thousands separators; `missing` for no value. */
export const f0 = (x: number | null | undefined, missing = 'n/a'): string => (finite(x) ? Math.round(x).toLocaleString('en-US') : missing)
export const f1 = (x: number | null | undefined, missing = 'n/a'): string => (finite(x) ? x.toFixed(1) : missing)
export const f2 = (x: number | null | undefined, missing = 'n/a'): string => (finite(x) ? x.toFixed(2) : missing)

/** A markdown table; `align` per column: 'l' (default) or 'r'. */
export function table(header: string[], rows: Array<Array<string | number>>, align: Array<'l' | 'r'> = []): string[] {
  return [
    `| ${header.join(' | ')} |`,
    `|${header.map((_, i) => (align[i] === 'r' ? '---:' : '---')).join('|')}|`,
    ...rows.map((r) => `| ${r.join(' | ')} |`),
  ]
}

/** The tidemark revision measured, and whether tracked files differ from it. */
export function gitRevision(): { commit: string; modified: boolean } | 'unknown' {
  const head = spawnSync('git', ['-C', ROOT, 'rev-parse', 'HEAD'], { encoding: 'utf8' })
  if (head.status !== 0) return 'unknown'
  const st = spawnSync('git', ['-C', ROOT, 'status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8' })
  return { commit: head.stdout.trim(), modified: st.stdout.trim() !== '' }
}

/** The machine a result was measured on, the file system of `dir`, and the versions of the peers' tools (`tools`). */
export function machineInfo(dir: string, tools: Record<string, string> = {}): Record<string, any> {
  const cpus = os.cpus()
  const dfLine = commandOutput('df', ['-T', dir]).split('\n')[1]?.split(/\s+/) ?? []
  return {
    date: new Date().toISOString(),
    host: os.hostname(),
    cpus: cpus.length,
    cpuModel: cpus[0]?.model ?? 'unknown',
    memoryBytes: os.totalmem(),
    kernel: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    fio: commandOutput('fio', ['--version']),
    ...tools,
    benchDir: dir,
    benchFs: dfLine[1] ?? 'unknown',
    benchDevice: dfLine[0] ?? 'unknown',
    loadavgAtStart: os.loadavg(),
    tidemark: gitRevision(),
  }
}

/** Writes the results JSON (through a temporary file and a rename) and says where. */
export function writeResults(file: string, json: unknown): void {
  fs.mkdirSync(path.dirname(file), { recursive: true })
  const tmp = `${file}.tmp`
  fs.writeFileSync(tmp, `${JSON.stringify(json, null, 2)}\n`)
  fs.renameSync(tmp, file)
  process.stderr.write(`wrote ${path.relative(process.cwd(), file) || file}\n`)
}
