// Where a benchmark runs and what it is told: the repository's root and the
// CLI, the TIDEMARK_BENCH_* knobs, scratch directories, the results file.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

export const MiB = 1024 * 1024
export const SECTOR = 512

/** The repository (from benchmarks/lib/ in the source tree or dist/benchmarks/lib/). */
export const ROOT = [1, 2, 3].map((up) => path.resolve(__dirname, ...Array<string>(up).fill('..'))).find((d) => fs.existsSync(path.join(d, 'package.json')))!
/** The CLI as a user runs it (it runs dist/). */
export const BIN = path.join(ROOT, 'bin', 'tidemark.js')
/** Where scratch files go: TIDEMARK_BENCH_DIR, or the system's temporary directory. */
export const BENCH_DIR = process.env.TIDEMARK_BENCH_DIR || os.tmpdir()

/**
 * Node flags for the appliance processes a benchmark starts, from
 * TIDEMARK_BENCH_APPLIANCE_NODE_FLAGS (space-separated): '--cpu-prof
 * --cpu-prof-dir=DIR' profiles the appliance alone (NODE_OPTIONS may not carry
 * --cpu-prof, and would profile every process).
 */
export const APPLIANCE_NODE_FLAGS = (process.env.TIDEMARK_BENCH_APPLIANCE_NODE_FLAGS ?? '').split(' ').filter(Boolean)
/** The same for the agent processes, from TIDEMARK_BENCH_AGENT_NODE_FLAGS. */
export const AGENT_NODE_FLAGS = (process.env.TIDEMARK_BENCH_AGENT_NODE_FLAGS ?? '').split(' ').filter(Boolean)

/** A positive number from the environment, or the default. */
export function envNumber(name: string, dflt: number): number {
  const v = process.env[name]
  if (v === undefined || v === '') return dflt
  const n = Number(v)
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name}='${v}' is not a positive number`)
  return n
}

/** A size like 1G, 512M, 64k or 1048576 (binary units), from TIDEMARK_BENCH_SIZE or another variable. */
export function parseSize(s: string, name = 'TIDEMARK_BENCH_SIZE'): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)?$/i.exec(s.trim())
  if (!m) throw new Error(`${name}='${s}' is not a size (e.g. 1G, 512M)`)
  const mult: Record<string, number> = { '': 1, k: 1024, m: MiB, g: 1024 * MiB, t: 1024 * 1024 * MiB }
  return Math.floor(Number(m[1]) * mult[m[2].toLowerCase()])
}

/** The results file: TIDEMARK_BENCH_OUT, or benchmarks/results/NAME.json. */
export function resultsPath(name: string): string {
  return path.resolve(process.env.TIDEMARK_BENCH_OUT || path.join(ROOT, 'benchmarks', 'results', `${name}.json`))
}

/** A fresh scratch directory under BENCH_DIR (or `base`); the caller removes it (removeDir). */
export function scratchDir(prefix: string, base = BENCH_DIR): string {
  return fs.mkdtempSync(path.join(base, prefix))
}

export function removeDir(dir: string): void {
  if (dir) fs.rmSync(dir, { recursive: true, force: true })
}
