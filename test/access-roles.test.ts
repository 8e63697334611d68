// Roles at the appliance (appliance/access-policy.ts), through a real
// appliance with real certificates (openssl) and real gRPC and NBD clients:
// every method of every service against an agent (write), an operator
// (read), an admin, an identity listed for another volume and one not listed
// at all; cross-volume calls show only what the caller may read; refusals at
// start; and a compromised agent's certificate that tries to remove history.
import fs from 'node:fs'
import path from 'node:path'
import * as grpc from '@grpc/grpc-js'
import pino from 'pino'
import t from 'tap'
import { AccessPolicy, OPERATION_ROLES, parseAllowList } from '../appliance/access-policy'
import type { AdminClient } from '../proto/generated/tidemark/v1/Admin'
import type { ApplianceMessage__Output } from '../proto/generated/tidemark/v1/ApplianceMessage'
import { adminProto, PROTOCOL_VERSION, replicationProto } from '../proto/load'
import { BIN, have, makeImage, makePki, must, nbdUri, otherUsersCannotRun, run, runAsUid, sha256, startAgent, startAppliance, tlsArgs, tmpdir, waitFor } from './helpers'

const MiB = 1024 * 1024
const DENIED = grpc.status.PERMISSION_DENIED

t.test('the allow-list: both forms, roles, patterns, one-line refusals', async (t) => {
  const allow = parseAllowList(['db01=write:db01-*', 'ops=read:*', 'old=vol1,vol2', 'boss=admin:*', 'uid:1000=read:db01-a'])
  t.same(allow.get('old'), [{ role: 'write', pattern: 'vol1' }, { role: 'write', pattern: 'vol2' }], 'IDENTITY=VOLUME is write:VOLUME')
  t.same(parseAllowList({ ops: ['read:*'], db01: ['write:db01-*'], old: ['vol1'] }).get('old'), [{ role: 'write', pattern: 'vol1' }], 'the config file takes the same')
  for (const [bad, msg] of [
    ['x=own:*', /unknown role "own" \(use write, read or admin\)/],
    ['x=read:', /"" is not a volume pattern/],
    ['x=read:a/b', /"a\/b" is not a volume pattern/],
    ['uid:me=read:*', /a local user is uid:N/],
    ['nobody', /must be IDENTITY=ROLE:PATTERN/],
  ] as const) {
    t.throws(() => parseAllowList([bad]), { code: 'USAGE', message: msg }, `${bad} is refused`)
  }
  const logged: string[] = []
  const log = { warn: (_o: unknown, m: string) => logged.push(m) } as unknown as pino.Logger
  const p = new AccessPolicy(allow, log)
  t.ok(p.allows('boss', 'write', 'anything'), 'admin may everything')
  t.notOk(p.allows('db01', 'read', 'db01-a'), 'write reads nothing')
  t.notOk(p.allows('ops', 'write', 'db01-a'), 'read writes nothing')
  t.same(p.visible('uid:1000', 'Stats', ['db01-a', 'db01-b']), ['db01-a'])
  for (let i = 0; i < 3; i++) t.throws(() => p.check('db01', 'Restore', 'db01-a'), { code: 'PERMISSION_DENIED', message: 'certificate identity "db01" may not read volume db01-a (Restore needs role read)' })
  t.throws(() => p.check('uid:1000', 'Compact', 'db01-a'), { message: 'local user uid:1000 may not administer volume db01-a (Compact needs role admin)' })
  t.equal(logged.length, 2, 'logged once per identity and operation')
  t.equal(p.refusals.get('db01 Restore'), 3, 'and each counted')
  t.same(new Set(Object.values(OPERATION_ROLES)), new Set(['write', 'read', 'admin']), 'every operation has one of the three roles')
  t.same(
    Object.keys(adminProto.Admin.service).map((m) => m[0].toUpperCase() + m.slice(1)).filter((m) => !(m in OPERATION_ROLES)),
    [],
    'every Admin method is in the table'
  )
})

function creds(pki: string, who: string): grpc.ChannelCredentials {
  return grpc.credentials.createSsl(fs.readFileSync(path.join(pki, 'ca.pem')), fs.readFileSync(path.join(pki, `${who}.key`)), fs.readFileSync(path.join(pki, `${who}.pem`)))
}

type Outcome = { code: number; details: string; reply?: unknown }

function unaryCall(client: AdminClient, method: string, req: Record<string, unknown>): Promise<Outcome> {
  const fn = (client as unknown as Record<string, (r: unknown, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r?: unknown) => void) => void>)[method]
  return new Promise((resolve) =>
    fn.call(client, req, { deadline: Date.now() + 30_000 }, (e, r) => resolve(e ? { code: e.code, details: e.details } : { code: 0, details: '', reply: r }))
  )
}

function restoreCall(client: AdminClient, volume: string): Promise<Outcome> {
  return new Promise((resolve) => {
    const call = client.restore({ volume, point: { latest: true } })
    call.on('data', () => {
      call.cancel()
      resolve({ code: 0, details: '' })
    })
    call.on('error', (e: grpc.ServiceError) => resolve({ code: e.code, details: e.details }))
  })
}

/** A hello on a Replicate stream: 0 for a Welcome, else the status it ended with. */
function hello(address: string, c: grpc.ChannelCredentials, volume: string, generation = 'g1', size = MiB): Promise<Outcome> {
  const client = new replicationProto.Replication(address, c)
  return new Promise((resolve) => {
    const call = client.replicate()
    call.on('data', (m: ApplianceMessage__Output) => {
      if (m.body !== 'welcome') return
      call.end()
      call.on('status', () => {
        client.close()
        resolve({ code: 0, details: '' })
      })
    })
    call.on('error', (e: grpc.ServiceError) => {
      client.close()
      resolve({ code: e.code, details: e.details })
    })
    call.write({ hello: { protocol: PROTOCOL_VERSION, agentId: 'whoever-i-say', volume, generation, size, group: '', ackedSeq: 0 } })
  })
}

/** A libnbd certificates directory for `who`. */
function certDir(pki: string, who: string, into: string): string {
  fs.mkdirSync(into, { recursive: true })
  fs.copyFileSync(path.join(pki, 'ca.pem'), path.join(into, 'ca-cert.pem'))
  fs.copyFileSync(path.join(pki, `${who}.pem`), path.join(into, 'client-cert.pem'))
  fs.copyFileSync(path.join(pki, `${who}.key`), path.join(into, 'client-key.pem'))
  return into
}

const needs = !have('openssl') ? 'openssl is not installed' : !have('qemu-io') ? 'qemu-io is not installed' : false

t.test('every method against write, read, admin, another volume\'s reader and an unlisted identity', { skip: needs }, async (t) => {
  const dir = tmpdir(t)
  const pki = path.join(dir, 'pki')
  const who = ['agent', 'reader', 'boss', 'other', 'stranger'] as const
  await makePki(pki, ['appliance', ...who])
  const appSock = path.join(dir, 'app-nbd.sock')
  const app = await startAppliance(t, {
    data: path.join(dir, 'data'),
    extra: [...tlsArgs(pki, 'appliance'), '--nbd', `unix:${appSock}`,
      '--allow', 'agent=write:vol*', '--allow', 'reader=read:vol', '--allow', 'boss=admin:*', '--allow', 'other=read:elsewhere'],
  })
  const img = path.join(dir, 'prod.img')
  makeImage(img, 8 * MiB, 3)
  const sock = path.join(dir, 'tap.sock')
  const agent = await startAgent(t, { state: path.join(dir, 'state'), sock, volumes: { vol: img }, extra: ['--appliance', `localhost:${app.port}`, ...tlsArgs(pki, 'agent')] })
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x61 1M 64k', '-c', 'flush', nbdUri(sock, 'vol')])
  await app.waitForLog(/initial copy complete/, 60_000)
  const address = `localhost:${app.port}`

  // What each role may do: the expected outcome of every call is "not denied" for these, PERMISSION_DENIED otherwise.
  const may: Record<string, readonly string[]> = {
    agent: ['Replicate'],
    reader: ['Restore', 'Stats', 'StatsAll', 'Journal', 'JournalAll', 'Resolve', 'Read', 'ListTimeMarks', 'Fingerprints', 'ServerInfo', 'CreateView', 'ListViews', 'DeleteView', 'NbdExport', 'ListAudit'],
    boss: ['*'],
    other: ['StatsAll', 'JournalAll', 'ServerInfo', 'ListViews', 'DeleteView', 'ListAudit'],
    stranger: [],
  }
  const calls: Array<[string, (c: AdminClient, w: string) => Promise<Outcome>]> = [
    ['Restore', (c) => restoreCall(c, 'vol')],
    ['Stats', (c) => unaryCall(c, 'stats', { volume: 'vol' })],
    ['StatsAll', (c) => unaryCall(c, 'stats', { volume: '' })],
    ['Journal', (c) => unaryCall(c, 'journal', { volume: 'vol', action: 'LS' })],
    ['JournalShow', (c) => unaryCall(c, 'journal', { volume: 'vol', action: 'SHOW', limit: 5 })],
    ['JournalAll', (c) => unaryCall(c, 'journal', { volume: '', action: 'LS' })],
    ['JournalVerify', (c) => unaryCall(c, 'journal', { volume: 'vol', action: 'VERIFY' })],
    ['JournalVerifyAll', (c) => unaryCall(c, 'journal', { volume: '', action: 'VERIFY' })],
    ['Resolve', (c) => unaryCall(c, 'resolve', { volume: 'vol', point: { latest: true } })],
    ['Read', (c) => unaryCall(c, 'read', { volume: 'vol', seq: 1, offset: 0, length: 4096 })],
    ['ListTimeMarks', (c) => unaryCall(c, 'listTimeMarks', { volume: 'vol' })],
    ['Fingerprints', (c) => unaryCall(c, 'fingerprints', { volume: 'vol', seq: 1, regions: [0] })],
    ['PinTimeMark', (c) => unaryCall(c, 'pinTimeMark', { volume: 'vol', timemark: '1', pinned: false })],
    ['Compact', (c) => unaryCall(c, 'compact', { volume: 'vol' })],
    ['ServerInfo', (c) => unaryCall(c, 'serverInfo', { volume: '' })],
    ['CreateView', (c, w) => unaryCall(c, 'createView', { volume: 'vol', name: `view-${w}`, point: { latest: true } })],
    ['ListViews', (c) => unaryCall(c, 'listViews', { volume: '' })],
    ['DeleteView', (c, w) => unaryCall(c, 'deleteView', { name: `view-${w}` })],
    ['AcceptGeneration', (c) => unaryCall(c, 'acceptGeneration', { volume: 'vol', generation: '' })],
    // (the admin's is refused after the check: vol exists)
    ['SeedVolume', (c) => unaryCall(c, 'seedVolume', { volume: 'vol', generation: 'seeded', source: `nbd+unix:///vol?socket=${sock}`, size: 0 })],
    ['RecordAudit', (c, w) => unaryCall(c, 'recordAudit', { action: 'plan test', plan: `p-${w}`, point: 'latest', result: 'passed', durationMs: 1, volumes: ['vol'], detailsJson: '{}' })],
    ['ListAudit', (c) => unaryCall(c, 'listAudit', { limit: 0, verify: false })],
  ]
  // JournalShow is the Journal operation, verify of one or all journals JournalVerify.
  const op = (name: string): string => (name === 'JournalShow' ? 'Journal' : name === 'JournalVerifyAll' ? 'JournalVerify' : name)
  const expectAllowed = (w: string, name: string): boolean => may[w].includes('*') || may[w].includes(op(name))
  for (const w of who) {
    const client = new adminProto.Admin(address, creds(pki, w)) as unknown as AdminClient
    for (const [name, call] of calls) {
      const r = await call(client, w)
      if (expectAllowed(w, name)) t.not(r.code, DENIED, `${w}: ${name} is allowed (${r.code ? r.details : 'ok'})`)
      else {
        t.equal(r.code, DENIED, `${w}: ${name} is PERMISSION_DENIED`)
        t.match(r.details, new RegExp(`^PERMISSION_DENIED: certificate identity "${w}" may not \\w+ (volume vol|any volume) \\(\\w+ needs role (read|admin)\\)$`), `${w}: ${name}: one line naming identity, role and volume`)
      }
      // Cross-volume calls show only what the caller may read (the admin: every volume, vol-agent too).
      if ((name === 'StatsAll' || name === 'JournalAll') && r.code === 0) {
        const vols = (r.reply as { volumes: Array<{ name?: string; volume?: string }> }).volumes
        const names = vols.map((v) => v.name || v.volume).sort()
        t.same(names, w === 'boss' ? ['vol', 'vol-agent'] : w === 'reader' ? ['vol'] : [], `${w}: ${name} shows ${names.join(', ') || 'no volume'}`)
      }
    }
    // Replicate: a new volume the agent's pattern covers.
    const r = await hello(address, creds(pki, w), `vol-${w}`)
    // (vol-boss: made after the admin's own calls above.)
    if (w === 'agent' || w === 'boss') t.equal(r.code, 0, `${w}: Replicate is allowed`)
    else {
      t.equal(r.code, DENIED, `${w}: Replicate is PERMISSION_DENIED`)
      t.match(r.details, new RegExp(`certificate identity "${w}" may not write volume vol-${w} \\(Replicate needs role write\\)`))
    }
    client.close()
  }
  // The NBD front checks the same read role.
  if (have('nbdinfo')) {
    for (const w of who) {
      const uri = `nbds+unix:///vol@latest?socket=${appSock}&tls-certificates=${certDir(pki, w, path.join(dir, `certs-${w}`))}`
      const r = await run('nbdinfo', [uri], { env: { LIBNBD_DEBUG: '1' } })
      if (w === 'reader' || w === 'boss') t.equal(r.code, 0, `${w}: NBD export opened`)
      else t.match(r.stderr, /may not read volume vol \(NbdExport needs role read\)/, `${w}: NBD export refused, with the reason`)
    }
  }
  const refusals = app.logs().filter((l) => l.code === 'PERMISSION_DENIED' && l.identity === 'stranger')
  t.equal(refusals.length, new Set(refusals.map((l) => l.operation)).size, 'refusals are logged once per identity and operation')
  t.equal(await agent.stop(), 0, 'the agent (write) replicated throughout')
})

t.test('the unix listener: callers are their uid', { skip: otherUsersCannotRun() }, async (t) => {
  const dir = tmpdir(t)
  fs.chmodSync(dir, 0o711) // other users may reach the socket; the allow-list decides what they may do
  const grpcSock = path.join(dir, 'grpc.sock')
  const app = await startAppliance(t, {
    data: path.join(dir, 'data'),
    extra: ['--listen', `unix:${grpcSock}`, '--allow', 'uid:0=admin:*', '--allow', 'uid:65534=read:vol', '--data-port', 'off'],
  }).catch((e: Error) => e)
  // The TCP listener startAppliance adds has no TLS: with an allow-list that is refused, naming the fix.
  t.match(String(app), /without TLS with an allow-list: plain TCP identifies nobody; give --tls-cert, --tls-key and --tls-ca, or listen only on --listen unix:PATH/)

  // The unix listener alone.
  const { spawn } = await import('node:child_process')
  const proc = spawn(process.execPath, [BIN, 'appliance', '--data', path.join(dir, 'data'), '--listen', `unix:${grpcSock}`, '--stats-interval', '0',
    '--allow', 'uid:0=write:vol,read:*', '--allow', 'uid:65534=read:vol', '--allow', 'nobody-else=write:vol'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let err = ''
  proc.stderr.on('data', (d: Buffer) => (err += d.toString()))
  const exited = new Promise((resolve) => proc.once('exit', resolve))
  t.teardown(async () => {
    proc.kill('SIGTERM')
    await exited
  })
  await waitFor(() => /listening on unix:/.test(err) || proc.exitCode !== null, 'the appliance to listen')
  t.match(err, `listening on unix:${grpcSock}`)
  t.notMatch(err, /trusting every caller/, 'with an allow-list it trusts nobody unidentified')
  const st = fs.lstatSync(grpcSock)
  t.ok(st.isSocket(), 'the socket is in place')
  t.equal(st.mode & 0o777, 0o666, 'anyone may connect: the allow-list decides what each uid may do')
  t.same(fs.readdirSync(dir).filter((n) => n.startsWith('.tidemark-sock-')), [], 'the 0700 directory it was bound in is gone')

  // Another uid runs the CLI with a clean environment (the test runner's NODE_OPTIONS write where only we may).
  const as = (uid: number | null, args: string[]) =>
    uid === null
      ? run(process.execPath, [BIN, ...args])
      : runAsUid(uid, process.execPath, [BIN, ...args])
  const at = ['--appliance', `unix:${grpcSock}`]
  // uid 0 (write:vol) runs an agent on this host: it replicates over the unix listener (batches on its stream).
  const img = path.join(dir, 'prod.img')
  makeImage(img, 4 * MiB, 7)
  const sock = path.join(dir, 'tap.sock')
  const agent = await startAgent(t, { state: path.join(dir, 'state'), sock, volumes: { vol: img }, extra: ['--appliance', `unix:${grpcSock}`] })
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x33 512k 64k', '-c', 'flush', nbdUri(sock, 'vol')])
  const copied = async (): Promise<boolean> => {
    const r = await as(null, ['stats', ...at, '--volume', 'vol', '--json'])
    return r.code === 0 && JSON.parse(r.stdout).volumes[0].fullSyncDone
  }
  await waitFor(copied, 'the initial copy over the unix listener', 60_000, 100)
  t.equal(await agent.stop(), 0, 'the agent (uid 0, write:vol) replicated and drained')
  const root = await as(null, ['stats', ...at, '--json'])
  t.equal(root.code, 0, `uid 0 reads stats (${root.stderr.trim()})`)
  t.same(JSON.parse(root.stdout).volumes.map((v: { name: string }) => v.name), ['vol'])
  const notAdmin = await as(null, ['journal', 'compact', ...at, '--volume', 'vol'])
  t.match(notAdmin.stderr, /local user uid:0 may not administer volume vol \(Compact needs role admin\)/, 'root on the unix listener is what the allow-list says, no more')
  const reader = await as(65534, ['stats', ...at, '--json'])
  t.equal(reader.code, 0, `uid 65534 (read:vol) reads stats (${reader.stderr.trim()})`)
  t.same(JSON.parse(reader.stdout).volumes.map((v: { name: string }) => v.name), ['vol'])
  const outDir = path.join(dir, 'out')
  fs.mkdirSync(outDir)
  fs.chmodSync(outDir, 0o777)
  const restored = await as(65534, ['restore', ...at, '--volume', 'vol', '--seq', 'latest', '--out', path.join(outDir, 'vol.img'), '--transport', 'grpc'])
  t.equal(restored.code, 0, `uid 65534 restores over the unix listener (${restored.stderr.trim()})`)
  t.equal(sha256(path.join(outDir, 'vol.img')), sha256(img), 'byte-exact')
  const verify = await as(65534, ['journal', 'verify', ...at, '--volume', 'vol'])
  t.equal(verify.code, 1)
  t.match(verify.stderr, /^tidemark journal: PERMISSION_DENIED: local user uid:65534 may not administer volume vol \(JournalVerify needs role admin\)\n$/, 'verify needs admin')
  const stranger = await as(65533, ['stats', ...at])
  t.match(stranger.stderr, /PERMISSION_DENIED: local user uid:65533 may not read any volume \(Stats needs role read\)/, 'an unlisted uid may do nothing')
  const tls = await as(null, ['stats', ...at, '--tls-cert', 'a', '--tls-key', 'b', '--tls-ca', 'c'])
  t.match(tls.stderr, /--appliance unix:PATH takes no --tls-cert/, 'TLS flags with a unix socket are refused')
})

t.test('refused at start: roles with callers that cannot be identified', async (t) => {
  const dir = tmpdir(t)
  const base = [BIN, 'appliance', '--data', path.join(dir, 'data'), '--stats-interval', '0']
  const cases: Array<[string[], RegExp]> = [
    [['--listen', '127.0.0.1:0', '--allow', 'ops=read:*'], /refusing --listen 127\.0\.0\.1:0 without TLS with an allow-list: plain TCP identifies nobody/],
    [['--listen', `unix:${path.join(dir, 's')}`, '--allow', 'ops=read:*', '--insecure'], /--insecure with --allow: roles need identified callers/],
    [['--listen', `unix:${path.join(dir, 's')}`, '--allow', 'ops=read:*', '--nbd', 'tcp:127.0.0.1:0'], /--nbd tcp: without TLS with an allow-list: NBD clients could not be identified; .* or --nbd unix:PATH \(clients identified by uid\)/],
    [['--listen', '127.0.0.1:0', '--listen', '127.0.0.1:1'], /--listen HOST:PORT given twice/],
    [['--listen', '127.0.0.1:0', '--allow', 'ops=own:*'], /unknown role "own"/],
  ]
  for (const [args, re] of cases) {
    const r = await run(process.execPath, [...base, ...args])
    t.equal(r.code, 2, `${args.join(' ')}: exit 2`)
    t.match(r.stderr, re, 'naming the fix')
    t.equal(r.stderr.trim().split('\n').length, 1, 'in one line')
  }
  // A file or a link at the unix listener's path is refused and left alone.
  const planted = path.join(dir, 'planted')
  fs.writeFileSync(planted, 'mine')
  fs.symlinkSync(planted, path.join(dir, 'link'))
  for (const [name, what] of [['planted', 'a regular file'], ['link', 'a symbolic link']]) {
    const r = await run(process.execPath, [...base, '--listen', `unix:${path.join(dir, name)}`])
    t.match(r.stderr, `--listen unix:${path.join(dir, name)} exists and is ${what}: refusing to replace it`, `${what} at the path is refused`)
  }
  t.equal(fs.readFileSync(planted, 'utf8'), 'mine', 'and left as it was')

  // Without an allow-list, plain loopback trusts everyone who reaches it, and says so; a unix listener is then 0600.
  const sockPath = path.join(dir, 'grpc.sock')
  const app = await startAppliance(t, { data: path.join(dir, 'data2'), extra: ['--listen', `unix:${sockPath}`] })
  t.match(app.err, /trusting every caller: no TLS and no --allow: everyone who can reach 127\.0\.0\.1 .*; no --allow: the unix listener is 0600/)
  t.equal(fs.lstatSync(sockPath).mode & 0o777, 0o600, 'without roles only the appliance\'s own user may connect to the unix listener')
  const st = await run(process.execPath, [BIN, 'stats', '--appliance', `unix:${sockPath}`, '--json'])
  t.equal(st.code, 0, `stats over the unix listener (${st.stderr.trim()})`)
  await app.stop()
  t.notOk(fs.existsSync(sockPath), 'the socket is removed at stop')
})

t.test('a compromised agent identity cannot remove or hide history', { skip: needs }, async (t) => {
  const dir = tmpdir(t)
  const pki = path.join(dir, 'pki')
  await makePki(pki, ['appliance', 'agent', 'boss'])
  const app = await startAppliance(t, {
    data: path.join(dir, 'data'),
    extra: [...tlsArgs(pki, 'appliance'), '--allow', 'agent=vol', '--allow', 'boss=admin:*', '--compact-every', '0'],
  })
  const address = `localhost:${app.port}`
  const img = path.join(dir, 'prod.img')
  makeImage(img, 8 * MiB, 11)
  const sock = path.join(dir, 'tap.sock')
  const state = path.join(dir, 'state')
  const agent = await startAgent(t, { state, sock, volumes: { vol: img }, extra: ['--appliance', address, ...tlsArgs(pki, 'agent')] })
  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x77 2M 128k', '-c', 'flush', nbdUri(sock, 'vol')])
  await app.waitForLog(/initial copy complete/, 60_000)
  t.equal(await agent.stop(), 0, 'the agent drained and stopped')
  const restore = async (volume: string, out: string): Promise<string> => {
    await must(process.execPath, [BIN, 'restore', '--appliance', address, '--volume', volume, '--seq', 'latest', '--out', out, '--transport', 'grpc', ...tlsArgs(pki, 'boss')])
    return sha256(out)
  }
  const before = await restore('vol', path.join(dir, 'before.img'))
  t.equal(before, sha256(img), 'the history holds the disk byte-exact')

  // The attacker holds the agent's certificate (and its state directory: it can say any generation).
  const c = new adminProto.Admin(address, creds(pki, 'agent')) as unknown as AdminClient
  for (const [name, method, req] of [
    ['unpin', 'pinTimeMark', { volume: 'vol', timemark: '1', pinned: false }],
    ['compact', 'compact', { volume: 'vol' }],
    ['verify every journal', 'journal', { volume: '', action: 'VERIFY' }],
    ['accept its own generation', 'acceptGeneration', { volume: 'vol', generation: '' }],
    ['read the disk', 'read', { volume: 'vol', seq: 1, offset: 0, length: 4096 }],
  ] as const) {
    const r = await unaryCall(c, method, req)
    t.equal(r.code, DENIED, `the agent's certificate may not ${name}`)
  }
  t.equal((await restoreCall(c, 'vol')).code, DENIED, 'nor restore')
  c.close()
  const gen = fs.readFileSync(path.join(state, 'vol.gen'), 'utf8').trim()
  const newGen = await hello(address, creds(pki, 'agent'), 'vol', 'attacker-gen', 8 * MiB)
  t.equal(newGen.code, grpc.status.FAILED_PRECONDITION, 'a new generation from a writer is refused')
  t.match(newGen.details, /GENERATION_CHANGED: volume vol: the agent announces generation attacker-gen .* nothing is written until an admin accepts the new one: tidemark volume accept-generation --volume vol/)
  const resized = await hello(address, creds(pki, 'agent'), 'vol', gen, 4 * MiB)
  t.equal(resized.code, grpc.status.FAILED_PRECONDITION, 'so is a size change')
  t.equal(await restore('vol', path.join(dir, 'after.img')), before, 'the history is untouched, byte-exact')

  // An admin accepts the size change (the last one announced): the old history stays, restorable, beside the new one.
  const wrong = await run(process.execPath, [BIN, 'volume', 'accept-generation', '--appliance', address, '--volume', 'vol', '--generation', 'attacker-gen', ...tlsArgs(pki, 'boss')])
  t.match(wrong.stderr, /NO_PENDING_GENERATION: volume vol: the agent announced generation .*, not attacker-gen/, '--generation must be the one waiting')
  const acc = await run(process.execPath, [BIN, 'volume', 'accept-generation', '--appliance', address, '--volume', 'vol', '--json', ...tlsArgs(pki, 'boss')])
  t.equal(acc.code, 0, `accept-generation (${acc.stderr.trim()})`)
  const reply = JSON.parse(acc.stdout)
  t.same({ retiredAs: reply.retiredAs, oldSize: reply.oldSize, size: reply.size }, { retiredAs: 'vol.retired-1', oldSize: 8 * MiB, size: 4 * MiB })
  t.equal(await restore('vol.retired-1', path.join(dir, 'retired.img')), before, 'the old history restores byte-exact under its new name')
  t.equal((await hello(address, creds(pki, 'agent'), 'vol', gen, 4 * MiB)).code, 0, 'the accepted hello starts the new history')
  const retiredHello = await hello(address, creds(pki, 'boss'), 'vol.retired-1', gen, 8 * MiB)
  t.match(retiredHello.details, /VOLUME_RETIRED: volume vol.retired-1 is a retired history of volume vol, kept read-only/, 'no hello writes the retired one, not even an admin\'s')
  const st = await run(process.execPath, [BIN, 'stats', '--appliance', address, '--json', ...tlsArgs(pki, 'boss')])
  t.same(JSON.parse(st.stdout).volumes.map((v: { name: string }) => v.name).sort(), ['vol', 'vol.retired-1'], 'both histories are there')
})
