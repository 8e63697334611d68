// What a test of a plan's real failover needs around it (the guest and its
// plan are in guest.ts): a failover bridge in a network namespace of the
// test's own, and the processes a run leaves detached (VMs, agents), found
// by pid and killed at the end.
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
