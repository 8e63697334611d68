// One QMP command to a running VM's monitor socket (plan failback pauses the
// recovery VMs with `stop`: it returns once qemu has paused the vCPUs and
// drained and flushed the guest's disk requests, so the disks then hold
// everything the guest wrote; `cont` resumes them when the failback cannot go on).
import net from 'node:net'
import { TidemarkError } from '../../proto/errors'

export function qmpCommand(sock: string, execute: string, timeoutMs = 30_000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const c = net.connect(sock)
    let buf = ''
    let step = 0 // 0: greeting, 1: capabilities sent, 2: command sent, 3: answered
    const fail = (why: string): void => {
      if (step === 3) return
      step = 3
      clearTimeout(timer)
      c.destroy()
      reject(new TidemarkError('QMP_FAILED', `QMP ${execute} on ${sock}: ${why}`))
    }
    const timer = setTimeout(() => fail(`no answer within ${timeoutMs / 1000} s`), timeoutMs)
    c.on('error', (e) => fail(e.message))
    c.on('close', () => fail('the monitor closed the connection'))
    c.on('data', (d) => {
      buf += d.toString()
      for (let nl = buf.indexOf('\n'); nl >= 0 && step < 3; nl = buf.indexOf('\n')) {
        const msg = JSON.parse(buf.slice(0, nl)) as { event?: string; error?: { desc: string }; QMP?: unknown; return?: unknown }
        buf = buf.slice(nl + 1)
        if (msg.event) continue
        if (msg.error) return fail(msg.error.desc)
        if (step === 0 && msg.QMP) {
          step = 1
          c.write(`${JSON.stringify({ execute: 'qmp_capabilities' })}\n`)
        } else if (step === 1 && 'return' in msg) {
          step = 2
          c.write(`${JSON.stringify({ execute })}\n`)
        } else if (step === 2 && 'return' in msg) {
          step = 3
          clearTimeout(timer)
          c.end()
          resolve(msg.return)
        }
      }
    })
  })
}
