// The failover agent: a `tidemark agent` serving a failed-over plan's
// recovered disks (STATE/PLAN/disks/VOL.img) as NBD exports named after
// their volumes, so every write of the recovery VMs passes through a tap and
// is captured. It runs detached from the command that starts it (failover
// and commit exit; the VMs go on), logging to STATE/PLAN/agent.log.
//
// Before commit it replicates nowhere: a rollback then discards the disks,
// and the recovery appliance was only ever read. Commit restarts it with
// --appliance (the plan's reverse appliance) and a control socket; the VMs'
// disks reconnect (qemu's reconnect-delay) and see a pause, not an error.
// The agent takes no --control without an appliance (TimeMarks are kept by
// one), so the control socket exists from commit on.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { TidemarkError } from '../../proto/errors'
import { processRef, processStartTicks, stopProcess, type ProcessRef, type RunPaths } from './failover-state'
import { connectable } from '../socket-probe'

/** bin/tidemark.js of this build (dist/client/plans/ -> bin/). */
export const TIDEMARK_BIN = path.join(__dirname, '..', '..', '..', 'bin', 'tidemark.js')

export interface ReverseTarget {
  appliance: string
  tls?: { cert: string; key: string; ca: string }
}

/**
 * The agent's arguments (after node): its state, NBD socket and volumes, the
 * plan's name as its group; with a reverse appliance, replication and
 * control, and the volumes it seeded (reverse-seed.ts) with their generations.
 */
export function failoverAgentArgv(p: RunPaths, plan: string, volumes: string[], reverse?: ReverseTarget, seeded: Record<string, string> = {}): string[] {
  const argv = [TIDEMARK_BIN, 'agent', '--state', p.agentState, '--nbd', `unix:${p.nbdSock}`]
  for (const v of volumes) argv.push('--volume', `${v}=${p.disk(v)}`)
  argv.push('--group', plan, '--stats-interval', '5')
  if (reverse) {
    argv.push('--appliance', reverse.appliance, '--control', `unix:${p.controlSock}`)
    if (reverse.tls) argv.push('--tls-cert', reverse.tls.cert, '--tls-key', reverse.tls.key, '--tls-ca', reverse.tls.ca)
    for (const [v, g] of Object.entries(seeded)) argv.push('--seeded', `${v}=${g}`)
  }
  return argv
}


/** The last lines of the agent's log, for an error. */
export function agentLogTail(p: RunPaths, lines = 5): string {
  try {
    return fs.readFileSync(p.agentLog, 'utf8').trim().split('\n').slice(-lines).join('\n')
  } catch {
    return ''
  }
}

/**
 * Starts the agent detached and resolves once its NBD socket (and, with a
 * reverse appliance, its control socket) answers; an agent that exits first
 * is an error carrying the end of its log.
 */
export async function startFailoverAgent(p: RunPaths, argv: string[], opts: { timeoutMs?: number; onStart?: (ref: ProcessRef & { argv: string[] }) => void } = {}): Promise<ProcessRef & { argv: string[] }> {
  const timeoutMs = opts.timeoutMs ?? 60_000
  const log = fs.openSync(p.agentLog, 'a', 0o600)
  let proc
  try {
    proc = spawn(process.execPath, argv, { detached: true, stdio: ['ignore', log, log] })
  } finally {
    fs.closeSync(log)
  }
  // Recorded (the caller's run) before it can matter: while it comes up, a SIGKILL of the caller leaves it named.
  const ticks = proc.pid === undefined ? null : processStartTicks(proc.pid)
  if (ticks !== null) opts.onStart?.({ pid: proc.pid!, startTicks: ticks, startedAt: new Date().toISOString(), argv })
  let exited: string | null = null
  proc.on('exit', (code, signal) => (exited = signal ? `killed by ${signal}` : `exited ${code}`))
  proc.on('error', (e) => (exited = `could not start: ${e.message}`))
  const wantControl = argv.includes('--control')
  const end = Date.now() + timeoutMs
  for (;;) {
    if (exited) throw new TidemarkError('AGENT_FAILED', `the failover agent ${exited}: ${agentLogTail(p, 1) || 'nothing in its log'}`)
    if ((await connectable(p.nbdSock)) && (!wantControl || (await connectable(p.controlSock)))) break
    if (Date.now() > end) {
      proc.kill('SIGKILL')
      throw new TidemarkError('AGENT_FAILED', `the failover agent did not serve ${p.nbdSock} within ${timeoutMs / 1000} s: ${agentLogTail(p, 1)}`)
    }
    await new Promise((r) => setTimeout(r, 50))
  }
  const ref = processRef(proc.pid!)
  proc.unref()
  return { ...ref, argv }
}

/** Stops the agent: SIGTERM (it drains what it holds for the appliance, then exits), SIGKILL after a minute. */
export function stopFailoverAgent(ref: ProcessRef): Promise<void> {
  return stopProcess(ref, 'SIGTERM', 60_000)
}

/** Per volume, how far the reverse appliance's initial copy is, from the agent's log. */
export function reverseCopyStatus(p: RunPaths, volumes: string[]): Record<string, 'complete' | 'copying' | 'not started'> {
  const out: Record<string, 'complete' | 'copying' | 'not started'> = {}
  for (const v of volumes) out[v] = 'not started'
  let text = ''
  try {
    text = fs.readFileSync(p.agentLog, 'utf8')
  } catch {
    return out
  }
  for (const line of text.split('\n')) {
    if (!line.includes('initial copy')) continue
    try {
      const l = JSON.parse(line) as { volume?: string; msg?: string }
      if (!l.volume || !(l.volume in out)) continue
      if (l.msg === 'initial copy complete') out[l.volume] = 'complete'
      else if (l.msg?.startsWith('initial copy') && out[l.volume] !== 'complete') out[l.volume] = 'copying'
    } catch {
      // not one of the agent's JSON lines
    }
  }
  return out
}
