// What a test of a plan's real failover needs around it (the pattern of
// test/plan-failover.test.ts, shared): a guest to boot, or why there is
// none; a failover bridge in a network namespace of the test's own; and
// the processes a run leaves detached (VMs, agents), found by pid and
// killed at the end.
import fs from 'node:fs'
import { waitFor } from '../claims-helpers'
import { have, must, run } from '../helpers'
import { buildGuest, type Guest } from './guest'

const TOOLS = ['qemu-system-x86_64', 'ip', 'busybox', 'cpio', 'modinfo', 'mkfs.ext4', 'nbdcopy']

/** The guest, or why a failover cannot be tested here (a skip reason). */
export function guestOrWhy(extraTools: string[] = []): Guest | string {
  const missing = [...TOOLS, ...extraTools].filter((c) => !have(c))
  if (missing.length) return `missing ${missing.join(', ')} (scripts/test-deps.sh installs them)`
  if (process.getuid?.() !== 0) return 'network namespaces and tap devices need root'
  try {
    return buildGuest()
  } catch (err) {
    return `no guest can be built here: ${(err as Error).message}`
  }
}

/** The process is there and is not a zombie (a detached VM's parent may be gone). */
export function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    return !/^\S+ \(.*\) [ZX] /.test(stat)
  } catch {
    return false
  }
}

/** SIGKILL to a pid the test's run started, and its end awaited. */
export async function killPid(pid: number): Promise<void> {
  if (!alive(pid)) return
  try {
    process.kill(pid, 'SIGKILL')
  } catch {
    return
  }
  await waitFor(`pid ${pid} to exit`, () => !alive(pid), 30_000)
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
