// The audit trail of recovery-plan actions (tidemark plan test, failover,
// commit, rollback, failback, scheduled proofs): DATA/audit.log, one JSON
// line per action, appended and fdatasync'd before the call returns, as
// RecoverTrac keeps its audit trail of every failover and test.
//
// Each line is hash-chained to the one before it, so an entry edited or
// removed in the middle is found by verify():
//
//   {"seq":N,"time":ISO,"who":ID,"action":A,"plan":P,"point":PT,"result":R,
//    "durationMs":D,"volumes":[...],"details":{...},"prev":HEX,"hash":HEX}
//
// hash = sha256 of the line's text without its `,"hash":"..."` ending (the
// object closed right after "prev"), so verifying needs no canonical JSON:
// the bytes on disk are what was hashed. The first line's prev is 64 zeroes.
// DATA/audit.head holds the last seq and hash (written atomically after each
// append): a tail cut off the log is found too, while the head stands. Who
// can rewrite both files can rewrite history; the chain makes that a
// deliberate act, not an accident or a quiet edit of one line (SECURITY.md).
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { writeFileAtomic } from '../native/atomic-file'
import type { AuditEntryJson, PlanRun } from '../client/plan-audit'
import { TidemarkError } from '../proto/errors'

export const AUDIT_LOG = 'audit.log'
const HEAD = 'audit.head'
const GENESIS = '0'.repeat(64)
/** Bounds on what a caller may put in an entry. */
const MAX_FIELD_BYTES = 256
const MAX_DETAILS_BYTES = 16 * 1024
const HASH_TAIL = /,"hash":"([0-9a-f]{64})"\}$/

/** What a caller records, and an entry as it reads back (client/plan-audit.ts: the one definition). */
export type AuditRecord = PlanRun
export type AuditEntry = AuditEntryJson

export interface AuditVerdict {
  ok: boolean
  /** what is wrong, naming the line (1-based), or null */
  problem: string | null
  entries: number
}

function sha256(s: string): string {
  return crypto.createHash('sha256').update(s).digest('hex')
}

function bounded(what: string, s: string, max = MAX_FIELD_BYTES): string {
  if (typeof s !== 'string') throw new TidemarkError('AUDIT_BAD_ENTRY', `audit ${what} must be text`)
  if (Buffer.byteLength(s) > max) throw new TidemarkError('AUDIT_BAD_ENTRY', `audit ${what} is over ${max} bytes`)
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(s)) throw new TidemarkError('AUDIT_BAD_ENTRY', `audit ${what} holds control characters`)
  return s
}

/** One line's text split into what was hashed and the hash; null if it is not a trail line. */
function splitLine(line: string): { body: string; hash: string } | null {
  const m = HASH_TAIL.exec(line)
  if (!m) return null
  return { body: `${line.slice(0, m.index)}}`, hash: m[1] }
}

export class AuditTrail {
  private seq = 0
  private last = GENESIS
  private chain: Promise<unknown> = Promise.resolve()

  private constructor(private readonly dir: string) {}

  /** Opens DATA's trail: the last entry's seq and hash are where the next one chains on. */
  static async open(dir: string): Promise<AuditTrail> {
    const t = new AuditTrail(dir)
    const lines = await t.lines()
    for (let i = lines.length - 1; i >= 0; i--) {
      const s = splitLine(lines[i])
      if (!s) continue
      t.seq = Number((JSON.parse(s.body) as { seq: number }).seq)
      t.last = s.hash
      break
    }
    // The head may be ahead of a log cut short: keep chaining from the head, so verify() keeps saying so.
    const head = await t.head()
    if (head && head.seq > t.seq) {
      t.seq = head.seq
      t.last = head.hash
    }
    return t
  }

  private async lines(): Promise<string[]> {
    let text = ''
    try {
      text = await fs.promises.readFile(path.join(this.dir, AUDIT_LOG), 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    }
    return text.split('\n').filter((l) => l.length > 0)
  }

  private async head(): Promise<{ seq: number; hash: string } | null> {
    try {
      return JSON.parse(await fs.promises.readFile(path.join(this.dir, HEAD), 'utf8')) as { seq: number; hash: string }
    } catch {
      return null
    }
  }

  /** Appends one entry for `who`; resolves once it is on disk. */
  async append(who: string | null, r: AuditRecord): Promise<AuditEntry> {
    const rec: AuditRecord = {
      action: bounded('action', r.action),
      plan: bounded('plan', r.plan),
      point: bounded('point', r.point),
      result: bounded('result', r.result),
      durationMs: Math.max(0, Math.round(Number(r.durationMs) || 0)),
      volumes: r.volumes.map((v) => bounded('volume', v)),
      details: r.details ?? {},
    }
    if (Buffer.byteLength(JSON.stringify(rec.details)) > MAX_DETAILS_BYTES) {
      throw new TidemarkError('AUDIT_BAD_ENTRY', `audit details are over ${MAX_DETAILS_BYTES} bytes`)
    }
    const next = this.chain.then(() => this.write(who ?? '(unidentified)', rec))
    this.chain = next.catch(() => undefined)
    return next
  }

  private async write(who: string, rec: AuditRecord): Promise<AuditEntry> {
    const seq = this.seq + 1
    const time = new Date().toISOString()
    const body = JSON.stringify({ seq, time, who, ...rec, prev: this.last })
    const hash = sha256(body)
    const line = `${body.slice(0, -1)},"hash":"${hash}"}\n`
    const fh = await fs.promises.open(path.join(this.dir, AUDIT_LOG), fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW, 0o600)
    try {
      await fh.write(line)
      await fh.datasync()
    } finally {
      await fh.close()
    }
    this.seq = seq
    this.last = hash
    await writeFileAtomic(path.join(this.dir, HEAD), `${JSON.stringify({ seq, hash })}\n`, 0o600)
    return { seq, time, who, ...rec, hash }
  }

  /** The entries, oldest first (the newest `limit`, if given). */
  async list(limit = 0): Promise<AuditEntry[]> {
    const out: AuditEntry[] = []
    for (const l of await this.lines()) {
      const s = splitLine(l)
      if (!s) continue
      try {
        const e = JSON.parse(s.body) as AuditEntry & { prev?: string }
        delete e.prev
        out.push({ ...e, hash: s.hash })
      } catch {
        // verify() names it; the listing shows what can be read
      }
    }
    return limit > 0 ? out.slice(-limit) : out
  }

  /** Re-reads the log: every line's hash, its link to the line before, seqs in order, and the head. */
  async verify(): Promise<AuditVerdict> {
    const lines = await this.lines()
    let prev = GENESIS
    let seq = 0
    for (let i = 0; i < lines.length; i++) {
      const at = `line ${i + 1}`
      const s = splitLine(lines[i])
      if (!s) return { ok: false, problem: `${at} is not an audit entry (no hash at its end)`, entries: i }
      if (sha256(s.body) !== s.hash) return { ok: false, problem: `${at} was changed after it was written (its hash does not match its text)`, entries: i }
      let e: { seq?: unknown; prev?: unknown }
      try {
        e = JSON.parse(s.body) as { seq?: unknown; prev?: unknown }
      } catch {
        return { ok: false, problem: `${at} is not JSON`, entries: i }
      }
      if (e.prev !== prev) return { ok: false, problem: `${at} does not follow the line before it (an entry before it was removed or changed)`, entries: i }
      if (e.seq !== seq + 1) return { ok: false, problem: `${at} is entry ${String(e.seq)}, expected ${seq + 1} (an entry was removed)`, entries: i }
      prev = s.hash
      seq = e.seq as number
    }
    const head = await this.head()
    if (head && (head.seq !== seq || head.hash !== prev)) {
      return { ok: false, problem: `the log ends at entry ${seq} but entry ${head.seq} was written (entries were cut from its end)`, entries: lines.length }
    }
    return { ok: true, problem: null, entries: lines.length }
  }
}
