// The commit deadline's watcher (Zerto's commit policy): with
// `plan failover --at-deadline rollback|commit`, the failover starts
// `tidemark plan watch --state DIR --plan FILE` detached, its pid and start
// time in the run. It waits until the run's commit deadline and then the
// command (cli/plan-failover-command.ts) rolls back or commits through the
// same code as `plan rollback` and `plan commit`, recorded in the audit
// trail under the local user as any command is, the entry saying it was
// done at the deadline.
//
// It acts only on the run it was started for: it remembers the runId it
// read at start, and whenever the run is gone, has another runId, was
// committed, or is an interrupted failover (nothing to act on: plan rollback
// removes it), it exits doing nothing. A manual commit or rollback also
// stops it (SIGTERM) before changing the run, so the two never act together
// on one run before the deadline; past it, a manual commit is refused.
//
// Polling the run once a second, not inotify: the run is replaced by rename
// (a watch on the file would follow the old inode), and a second is well
// inside what a deadline measured in minutes or hours asks.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { pause } from './boot'
import { TIDEMARK_BIN } from './failover-agent'
import { interrupted, processStartTicks, readRun, type FailoverState, type ProcessRef, type RunPaths } from './failover-state'

const POLL_MS = 1000

export function watcherLog(p: RunPaths): string {
  return path.join(p.dir, 'watcher.log')
}

/**
 * Starts the watcher detached, logging to DIR/PLAN/watcher.log; `onStart`
 * records it in the run as soon as it has a pid. Null when it exited at once
 * (its log says why).
 */
export function startWatcher(p: RunPaths, planFile: string, onStart: (ref: ProcessRef) => void): ProcessRef | null {
  const log = fs.openSync(watcherLog(p), 'a', 0o600)
  let proc
  try {
    proc = spawn(process.execPath, [TIDEMARK_BIN, 'plan', 'watch', '--state', p.stateDir, '--plan', planFile], { detached: true, stdio: ['ignore', log, log] })
  } finally {
    fs.closeSync(log)
  }
  const ticks = proc.pid === undefined ? null : processStartTicks(proc.pid)
  proc.unref()
  if (ticks === null) return null
  const ref = { pid: proc.pid!, startTicks: ticks, startedAt: new Date().toISOString() }
  onStart(ref)
  return ref
}

export type WatchEnd = { act: true; state: FailoverState } | { act: false; why: string }

/** Waits until the run's deadline (act) or until the run is no longer the one watched (do nothing). */
export async function waitForDeadline(p: RunPaths, runId: string, signal?: AbortSignal): Promise<WatchEnd> {
  for (;;) {
    if (signal?.aborted) return { act: false, why: 'stopped' }
    const s = readRun(p)
    if (!s) return { act: false, why: `run ${runId} ended (no ${p.file})` }
    if (s.runId !== runId) return { act: false, why: `run ${runId} ended: ${p.file} is run ${s.runId} now` }
    if (s.phase === 'committed') return { act: false, why: `run ${runId} was committed at ${s.reverse?.committedAt}` }
    if (interrupted(s)) return { act: false, why: `run ${runId} is an interrupted failover (pid ${s.failover.pid} is gone): plan rollback removes it` }
    const left = s.phase === 'failed-over' ? Date.parse(s.commitDeadline) - Date.now() : POLL_MS
    if (left <= 0) return { act: true, state: s }
    await pause(Math.min(POLL_MS, left), signal)
  }
}
