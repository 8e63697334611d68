// A benchmark's main: the scratch directory it works in and the processes it
// starts, both cleaned up however it ends, and a failure as the exit code.
import { removeDir, scratchDir } from './env'
import type { Proc } from './process'

/**
 * Runs `body` in a fresh scratch directory (`prefix` under BENCH_DIR) with a
 * list to push the processes it starts onto; however it ends, stops them (in
 * the order started) and removes the directory.
 */
export async function inScratch<T>(prefix: string, body: (work: string, procs: Proc[]) => Promise<T>): Promise<T> {
  const work = scratchDir(prefix)
  const procs: Proc[] = []
  try {
    return await body(work, procs)
  } finally {
    for (const p of procs) await p.stop().catch(() => undefined)
    removeDir(work)
  }
}

/** Runs a benchmark's main: a failure is printed and sets the exit code. */
export function runMain(main: () => Promise<void>): void {
  main().catch((err) => {
    console.error(err)
    process.exitCode = 1
  })
}
