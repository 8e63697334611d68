// The audit trail of recovery-plan actions (appliance/audit-trail.ts): hash
// chained, so an entry edited, removed or cut from the end is found; recorded
// through the Admin service with the caller's identity and role; read back
// with `tidemark plan audit`, which shows each caller only the entries of the
// volumes it may read.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { AUDIT_LOG, AuditTrail, type AuditRecord } from '../appliance/audit-trail'
import { adminClient } from '../client/admin-client'
import { recordAudit } from '../client/plan-audit'
import { BIN, otherUsersCannotRun, run, runAsUid, tmpdir, waitFor } from './helpers'

const run1: AuditRecord = { action: 'plan test', plan: 'shop', point: 'mark=nightly', result: 'passed', durationMs: 41_200, volumes: ['db-root'], details: { rtoSeconds: 41.2 } }

t.test('the chain: appended, listed, verified; an edit, a removal and a cut end are each named', async (t) => {
  const dir = tmpdir(t)
  let trail = await AuditTrail.open(dir)
  t.same(await trail.verify(), { ok: true, problem: null, entries: 0 }, 'an empty trail is intact')
  const a = await trail.append('ops', run1)
  const b = await trail.append(null, { ...run1, result: 'failed', volumes: [] })
  t.equal(a.seq, 1)
  t.equal(b.seq, 2)
  t.equal(b.who, '(unidentified)', 'a caller without an identity is recorded as such')
  t.equal(fs.statSync(path.join(dir, AUDIT_LOG)).mode & 0o777, 0o600, "the log is the appliance's only")
  // Reopened: the next entry chains on.
  trail = await AuditTrail.open(dir)
  const c = await trail.append('ops', { ...run1, action: 'plan failover' })
  t.equal(c.seq, 3, 'a reopened trail goes on from the last entry')
  t.same((await trail.list()).map((e) => [e.seq, e.who, e.action, e.result]), [[1, 'ops', 'plan test', 'passed'], [2, '(unidentified)', 'plan test', 'failed'], [3, 'ops', 'plan failover', 'passed']])
  t.same((await trail.list(1)).map((e) => e.seq), [3], 'the newest N')
  t.same(await trail.verify(), { ok: true, problem: null, entries: 3 }, 'intact')

  const file = path.join(dir, AUDIT_LOG)
  const good = fs.readFileSync(file, 'utf8')
  const lines = good.split('\n')
  fs.writeFileSync(file, good.replace('"result":"failed"', '"result":"passed"'))
  t.match((await trail.verify()).problem, /^line 2 was changed after it was written/, 'an edited entry is named')
  fs.writeFileSync(file, [lines[0], lines[2], ''].join('\n'))
  t.match((await trail.verify()).problem, /^line 2 does not follow the line before it/, 'a removed entry is found')
  fs.writeFileSync(file, [lines[0], lines[1], ''].join('\n'))
  t.match((await trail.verify()).problem, /the log ends at entry 2 but entry 3 was written/, 'a cut end is found (the head)')
  fs.writeFileSync(file, good)
  t.equal((await trail.verify()).ok, true, 'restored: intact again')

  await t.rejects(trail.append('ops', { ...run1, plan: 'x'.repeat(300) }), { code: 'AUDIT_BAD_ENTRY', message: /plan is over 256 bytes/ }, 'fields are bounded')
  await t.rejects(trail.append('ops', { ...run1, result: 'ok\x1b[2J' }), { code: 'AUDIT_BAD_ENTRY', message: /control characters/ }, 'and hold no control characters')
})

const asOthers = otherUsersCannotRun()

t.test('through the appliance: recorded with the caller identity and role, read back per grant', { skip: asOthers }, async (t) => {
  const dir = tmpdir(t)
  fs.chmodSync(dir, 0o711) // another uid reaches the socket; the allow-list decides what it may do
  const sock = path.join(dir, 'grpc.sock')
  const data = path.join(dir, 'data')
  const { spawn } = await import('node:child_process')
  const proc = spawn(process.execPath, [BIN, 'appliance', '--data', data, '--listen', `unix:${sock}`, '--stats-interval', '0',
    '--allow', 'uid:0=admin:*', '--allow', 'uid:65534=read:db-*'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let err = ''
  proc.stderr.on('data', (d: Buffer) => (err += d.toString()))
  const exited = new Promise((resolve) => proc.once('exit', resolve))
  t.teardown(async () => {
    proc.kill('SIGTERM')
    await exited
  })
  await waitFor(() => /listening on unix:/.test(err) || proc.exitCode !== null, 'the appliance to listen')

  const admin = adminClient({ address: `unix:${sock}` })
  t.teardown(() => admin.close())
  const e1 = await recordAudit(admin, run1)
  t.equal(e1.who, 'uid:0', 'recorded as the caller the kernel named')
  await recordAudit(admin, { ...run1, plan: 'hr', volumes: ['hr-root'], result: 'failed' })

  const as = (uid: number | null, args: string[]) =>
    uid === null
      ? run(process.execPath, [BIN, ...args])
      : runAsUid(uid, process.execPath, [BIN, ...args])
  const at = ['--appliance', `unix:${sock}`]
  const all = await as(null, ['plan', 'audit', ...at, '--json', '--verify'])
  t.equal(all.code, 0, `an admin lists and verifies (${all.stderr.trim()})`)
  const j = JSON.parse(all.stdout) as { entries: Array<{ plan: string; who: string; details: unknown }>; verified: boolean; problem: string | null }
  t.same(j.entries.map((e) => e.plan), ['shop', 'hr'])
  t.same(j.entries[0].details, { rtoSeconds: 41.2 }, 'details kept')
  t.equal(j.verified, true)
  const reader = await as(65534, ['plan', 'audit', ...at, '--json'])
  t.equal(reader.code, 0, `a reader lists (${reader.stderr.trim()})`)
  t.same(JSON.parse(reader.stdout).entries.map((e: { plan: string }) => e.plan), ['shop'], 'only the entries of the volumes it may read')
  const table = await as(null, ['plan', 'audit', ...at])
  t.match(table.stdout, /\| 1 \| \S+ \| uid:0 \| plan test \| shop \| mark=nightly \| 41\.2 \| passed \|/, 'a table for people')

  // A reader may not record; the trail is unchanged by the refusal.
  const readerClientScript = `const {adminClient}=require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'client', 'admin-client.js'))});const {recordAudit}=require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'client', 'plan-audit.js'))});const c=adminClient({address:'unix:${sock}'});recordAudit(c,{action:'plan test',plan:'shop',point:'',result:'passed',durationMs:1,volumes:['db-root'],details:{}}).then(()=>{console.log('recorded');process.exit(0)},(e)=>{console.log(e.message);process.exit(1)})`
  const refused = await runAsUid(65534, process.execPath, ['-e', readerClientScript])
  t.match(refused.stdout, /local user uid:65534 may not administer volume db-root \(RecordAudit needs role admin\)/, 'recording needs admin')

  // An edited line: --verify names it and exits 1.
  const log = path.join(data, AUDIT_LOG)
  fs.writeFileSync(log, fs.readFileSync(log, 'utf8').replace('"result":"failed"', '"result":"passed"'))
  const damaged = await as(null, ['plan', 'audit', ...at, '--verify'])
  t.equal(damaged.code, 1, '--verify exits 1')
  t.match(damaged.stdout, /audit trail damaged: line 2 was changed after it was written/, 'naming the line')
})
