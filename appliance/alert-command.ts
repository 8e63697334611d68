// `--alert-command CMD`: tells an operator's script (a pager, a chat hook,
// mail) about each alert that starts, changes severity or ends. CMD runs
// under /bin/sh -c with the alert as one JSON object on its stdin (the API's
// Alert plus "state": "firing" | "resolved") and TIDEMARK_ALERT_NAME,
// TIDEMARK_ALERT_STATE, TIDEMARK_ALERT_SEVERITY and TIDEMARK_ALERT_VOLUME in
// its environment.
//
// Never in the evaluation's way: notify() only queues. The commands run one
// at a time, in order, so a script never sees an alert's end before its
// start; each is killed (its whole process group) after the timeout, so a
// hanging one delays the next by at most that. A failure is logged once per
// run, with the end of what it wrote to stderr; the queue is bounded, and
// what falls off it is logged, not kept (the log lines and the API still
// tell the whole story).
import { spawn, type ChildProcess } from 'node:child_process'
import type { Logger } from 'pino'
import type { Alert } from '../client/status-api'

export type AlertEvent = Alert & { state: 'firing' | 'resolved' }

const QUEUE_MAX = 100
const STDERR_KEEP = 400

export class AlertCommand {
  private readonly queue: AlertEvent[] = []
  private running: ChildProcess | null = null
  private idle: Promise<void> = Promise.resolve()
  private draining = false
  private closed = false

  constructor(
    private readonly command: string,
    private readonly timeoutMs: number,
    private readonly log: Logger
  ) {}

  notify(e: AlertEvent): void {
    if (this.closed) return
    if (this.queue.length >= QUEUE_MAX) {
      const dropped = this.queue.shift()!
      this.log.warn({ alert: dropped }, `--alert-command: ${QUEUE_MAX} notifications waiting; dropped the oldest (${dropped.name} ${dropped.state})`)
    }
    this.queue.push(e)
    if (!this.draining) {
      this.draining = true
      this.idle = this.drain()
    }
  }

  private async drain(): Promise<void> {
    for (let e = this.queue.shift(); e && !this.closed; e = this.queue.shift()) await this.runOne(e)
    this.draining = false
  }

  private runOne(e: AlertEvent): Promise<void> {
    return new Promise((resolve) => {
      const what = `--alert-command for ${e.name}${e.volume ? ` on ${e.volume}` : ''} (${e.state})`
      let child: ChildProcess
      try {
        child = spawn('/bin/sh', ['-c', this.command], {
          stdio: ['pipe', 'ignore', 'pipe'],
          // its own process group: the timeout kills whatever the shell started too
          detached: true,
          env: {
            ...process.env,
            TIDEMARK_ALERT_NAME: e.name,
            TIDEMARK_ALERT_STATE: e.state,
            TIDEMARK_ALERT_SEVERITY: e.severity,
            TIDEMARK_ALERT_VOLUME: e.volume ?? '',
          },
        })
      } catch (err) {
        this.log.error({ err }, `${what} could not start: ${(err as Error).message}`)
        return resolve()
      }
      this.running = child
      let stderr = ''
      let timedOut = false
      child.stderr!.setEncoding('utf8')
      child.stderr!.on('data', (d: string) => (stderr = (stderr + d).slice(-STDERR_KEEP)))
      // A command that does not read its stdin closes the pipe: not our failure.
      child.stdin!.on('error', () => undefined)
      child.stdin!.end(`${JSON.stringify(e)}\n`)
      const timer = setTimeout(() => {
        timedOut = true
        kill(child)
      }, this.timeoutMs)
      child.on('error', (err) => {
        // spawn failures (no /bin/sh) arrive here, and then 'close' with code null
        stderr ||= err.message
      })
      child.on('close', (code, signal) => {
        clearTimeout(timer)
        this.running = null
        const tail = stderr.trim().split('\n').pop() ?? ''
        if (timedOut) this.log.error({ alert: e }, `${what} did not finish within ${this.timeoutMs / 1000} s and was killed${tail ? `: ${tail}` : ''}`)
        else if (code !== 0 && !this.closed) this.log.error({ alert: e, code, signal }, `${what} failed (${code !== null ? `exit ${code}` : signal}): ${tail || 'no output on stderr'}`)
        resolve()
      })
    })
  }

  /** Stops: the running command is killed and the waiting ones dropped (a stopping appliance notifies nothing more). */
  async close(): Promise<void> {
    this.closed = true
    if (this.queue.length) this.log.info(`--alert-command: stopping with ${this.queue.length} notifications not sent`)
    this.queue.length = 0
    if (this.running) kill(this.running)
    await this.idle
  }
}

function kill(child: ChildProcess): void {
  try {
    if (child.pid) process.kill(-child.pid, 'SIGKILL')
  } catch {
    // already gone
  }
}
