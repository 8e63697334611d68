// What a test of a plan's real failover needs around it (the guest and its
// plan are in guest.ts): a failover bridge in a network namespace of the
// test's own, and the processes a run leaves detached (VMs, agents), found
// by pid and killed at the end.
import fs from 'node:fs'
import path from 'node:path'
import { waitFor } from '../claims-helpers'
import { must, run } from '../helpers'
import { processRuns } from './guest'

/** SIGKILL to a pid the test's run started, and its end awaited. */
export async function killPid(pid: number): Promise<void> {
  if (!processRuns(pid)) return
  try {
    process.kill(pid, 'SIGKILL')
  } catch {
    return
  }
  await waitFor(`pid ${pid} to exit`, () => !processRuns(pid), 30_000)
}

/** A network namespace holding the bridge `bridge`, deleted at the end of the test; returns its name. */
export async function failoverNetwork(t: { teardown(fn: () => unknown): void }, prefix: string, bridge = 'br-prod'): Promise<string> {
  const ns = `${prefix}-${process.pid}`
  await must('ip', ['netns', 'add', ns])
  t.teardown(() => run('ip', ['netns', 'delete', ns]))
  await must('ip', ['-n', ns, 'link', 'add', bridge, 'type', 'bridge'])
  await must('ip', ['-n', ns, 'link', 'set', bridge, 'up'])
  return ns
}

/** At the end of the test, SIGKILL whatever a plan's run in `runDir` left (recovery VMs, the failover agent, production VMs a failback started): its state files say which. */
export function killRunLeftovers(t: { teardown(fn: () => unknown): void }, runDir: string): void {
  const readJson = (f: string): { vms?: Array<{ pid: number }>; agent?: { pid: number } | null } | null =>
    fs.existsSync(f) ? JSON.parse(fs.readFileSync(f, 'utf8')) : null
  t.teardown(async () => {
    const s = readJson(path.join(runDir, 'failover.json'))
    const prod = readJson(path.join(runDir, 'production.json'))
    for (const pid of [...(s?.vms?.map((v) => v.pid) ?? []), ...(s?.agent ? [s.agent.pid] : []), ...(prod?.vms?.map((v) => v.pid) ?? [])]) await killPid(pid)
  })
}
