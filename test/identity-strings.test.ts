// Identities and the strings we store and print, through real processes:
// a certificate's identity is its subject CN or a whole DNS subjectAltName
// entry, never text inside another entry (a URI SAN spiffe://x/DNS:admin is
// nobody), at the gRPC front and the native NBD front alike; agent ids,
// groups and labels over 128 bytes or with control characters are refused at
// the CLI and at the appliance's boundary; a quiesce hook's output stays out
// of the replicated TimeMark note unless --hook-output-in-note, and then
// without its control characters.
import fs from 'node:fs'
import path from 'node:path'
import type { PeerCertificate } from 'node:tls'
import * as grpc from '@grpc/grpc-js'
import t from 'tap'
import { certificateIdentity, subjectAltNames } from '../appliance/authorizer'
import { parseMarkMeta } from '../proto/timemark-meta'
import { PROTOCOL_VERSION, replicationProto } from '../proto/load'
import { BIN, have, makeImage, makePki, must, run, startAgent, startAppliance, tmpdir, waitFor } from './helpers'
import { Stream } from './lib/replicate-stream'
import { certDir, helloAs } from './lib/tls-clients'

const MiB = 1024 * 1024

/** A certificate `name` signed by pki's CA with this subject and subjectAltName (no CN when the subject has none). */
async function makeCert(pki: string, name: string, subject: string, san: string): Promise<void> {
  const ssl = (args: string[]): Promise<string> => must('openssl', args, { cwd: pki })
  fs.writeFileSync(path.join(pki, `${name}.ext`), `subjectAltName=${san}\n`)
  await ssl(['req', '-newkey', 'rsa:2048', '-nodes', '-subj', subject, '-keyout', `${name}.key`, '-out', `${name}.csr`])
  await ssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-extfile', `${name}.ext`, '-out', `${name}.pem`])
}

function hello(volume: string, over: { agentId?: string; group?: string } = {}) {
  return { hello: { protocol: PROTOCOL_VERSION, agentId: over.agentId ?? 'test', volume, generation: 'g1', size: MiB, group: over.group ?? '', ackedSeq: 0 } }
}

/** A Replicate stream as `who` (over mutual TLS) saying hello for `volume`: welcomed, or how it ended. */
function attempt(address: string, pki: string, who: string, volume: string) {
  return helloAs(address, pki, who, hello(volume))
}


t.test('an identity is a CN or a whole DNS SAN entry, never "DNS:" inside a URI', { skip: !have('openssl') && 'openssl is not installed' }, async (t) => {
  const dir = tmpdir(t)
  const pki = path.join(dir, 'pki')
  await makePki(pki, ['appliance'])
  await makeCert(pki, 'spiffe', '/O=tidemark test', 'URI:spiffe://x/DNS:admin')
  await makeCert(pki, 'dns', '/O=tidemark test', 'URI:spiffe://x/y,DNS:admin')
  // A certificate posing as a local user (the unix sockets' uid:N identities).
  await makeCert(pki, 'fakeroot', '/CN=uid:0', 'DNS:localhost')
  const appSock = path.join(dir, 'app.sock')
  const app = await startAppliance(t, {
    data: path.join(dir, 'data'),
    extra: ['--tls-cert', path.join(pki, 'appliance.pem'), '--tls-key', path.join(pki, 'appliance.key'), '--tls-ca', path.join(pki, 'ca.pem'),
      '--allow', 'admin=admin:*', '--allow', 'uid:0=admin:*', '--nbd', `unix:${appSock}`],
  })
  const address = `localhost:${app.port}`
  t.same(await attempt(address, pki, 'dns', 'vol'), { welcome: true }, 'DNS:admin (a whole entry, after a URI) is admin and may write')
  const spoof = await attempt(address, pki, 'spiffe', 'vol')
  t.equal(spoof.code, grpc.status.PERMISSION_DENIED, 'URI:spiffe://x/DNS:admin is not admin')
  t.match(spoof.details, /the client certificate names no identity/, 'it names nobody, and is told so')
  const fake = await attempt(address, pki, 'fakeroot', 'vol')
  t.match(fake.details, /PERMISSION_DENIED: .*the client certificate names no identity/, 'a certificate CN uid:0 is not the local root')

  // The native NBD front reads the same two fields.
  const uri = (who: string): string => `nbds+unix:///?socket=${appSock}&tls-certificates=${certDir(pki, who, path.join(dir, `certs-${who}`))}`
  // (vol holds no data yet: nbdinfo sees it listed, then cannot open it.)
  const d = await run('nbdinfo', ['--list', uri('dns')])
  t.match(d.stdout + d.stderr, /vol@latest/, 'over NBD, DNS:admin passes TLS and sees the volume')
  const r = await run('nbdinfo', ['--list', uri('spiffe')])
  t.not(r.code, 0, 'over NBD, the URI SAN certificate gets nothing')
  t.notMatch(r.stdout + r.stderr, /vol@latest/, 'not even the list')
  const f = await run('nbdinfo', ['--list', uri('fakeroot')])
  t.not(f.code, 0, 'over NBD, a certificate CN uid:0 gets nothing either')
  t.notMatch(f.stdout + f.stderr, /vol@latest/, 'not even the list')
  await waitFor(() => /the client certificate names no identity/.test(app.out + app.err), 'the appliance to log why')
  t.pass('the appliance logs that the certificate names no identity')
})

t.test('ids, groups and labels are bounded and free of control characters, at the CLI and at the appliance', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  makeImage(img, MiB, null)
  const agent = (extra: string[]): Promise<{ code: number | null; stderr: string }> =>
    run(process.execPath, [BIN, 'agent', '--state', path.join(dir, 'state'), '--nbd', `unix:${path.join(dir, 'nbd.sock')}`, '--volume', `v=${img}`, ...extra])
  const cases: Array<[string, string[], RegExp]> = [
    ['an agent id of 129 bytes', ['--appliance', '127.0.0.1:1', '--agent-id', 'a'.repeat(129)], /--agent-id "a{129}" must be 1 to 128 printable characters/],
    ['an agent id with an escape', ['--appliance', '127.0.0.1:1', '--agent-id', 'a\x1b[2Jb'], /--agent-id "a\\u001b\[2Jb" must be 1 to 128 printable characters/],
    ['a group with a newline', ['--group', 'db\nforged line'], /group name "db\\nforged line" is not valid/],
  ]
  for (const [what, extra, re] of cases) {
    const r = await agent(extra)
    t.equal(r.code, 2, `agent: ${what} is refused`)
    t.match(r.stderr, re, 'saying why')
    t.equal(r.stderr.trim().split('\n').length, 1, 'in one line')
    t.notMatch(r.stderr, /[\x07\x1b]/, 'with no control character in it')
  }
  const control = `unix:${path.join(dir, 'control.sock')}`
  const labels: Array<[string, string, RegExp]> = [
    // 65 characters, 130 bytes: the bound is in bytes
    ['a label of 130 bytes', 'é'.repeat(65), /label 'é{65}' is 130 bytes long, over the 128-byte limit/],
    ['a label with a bell', 'ok\x07', /label 'ok\\u0007' contains control characters/],
  ]
  for (const [what, label, re] of labels) {
    const r = await run(process.execPath, [BIN, 'timemark', 'create', '--control', control, '--volume', 'v', '--label', label])
    t.equal(r.code, 2, `timemark create: ${what} is refused before anything is asked of the agent`)
    t.match(r.stderr, re, 'saying why')
    t.notMatch(r.stderr, /[\x07\x1b]/, 'and the message holds no control character')
  }

  // The appliance's boundary: a hello from a client of our own.
  const app = await startAppliance(t, { data: path.join(dir, 'data') })
  const client = new replicationProto.Replication(app.address, grpc.credentials.createInsecure())
  t.teardown(() => client.close())
  const bad: Array<[string, { agentId?: string; group?: string }, RegExp]> = [
    ['an agent id with an escape', { agentId: 'x\x1b]0;owned\x07' }, /the hello's agent id contains control characters/],
    ['an agent id of 129 bytes', { agentId: 'a'.repeat(129) }, /the hello's agent id is 129 bytes long, over the 128-byte limit/],
    ['a group of 129 bytes', { group: 'g'.repeat(129) }, /the hello's group is 129 bytes long/],
    ['a group with a newline', { group: 'g\nh' }, /the hello's group contains control characters/],
  ]
  for (const [what, over, re] of bad) {
    const s = new Stream(client)
    s.send(hello('vol', over))
    const st = await s.ended
    t.not(st.code, grpc.status.OK, `the appliance refuses ${what}`)
    t.match(st.details, re, 'saying why')
  }
  const ok = new Stream(client)
  ok.send(hello('vol', { agentId: 'a'.repeat(128), group: 'g'.repeat(128) }))
  t.ok((await ok.next('welcome')).welcome, '128 bytes of each is welcome')
  ok.call.cancel()
  await ok.ended
})

t.test("a quiesce hook's output stays out of the replicated note unless --hook-output-in-note", async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'disk.img')
  makeImage(img, 4 * MiB, 3)
  const app = await startAppliance(t, { data: path.join(dir, 'data') })
  const control = path.join(dir, 'control.sock')
  const args = { state: path.join(dir, 'state'), sock: path.join(dir, 'nbd.sock'), volumes: { vol: img } }
  const hook = `printf '\\033]0;owned\\007db password in /etc/db.conf\\n' >&2; exit 4`
  const mark = async (label: string): Promise<{ note: string; stderr: string }> => {
    const r = await run(process.execPath, [BIN, 'timemark', 'create', '--control', `unix:${control}`, '--volume', 'vol', '--label', label, '--quiesce', hook, '--allow-crash-consistent', '--json'])
    t.equal(r.code, 0, `${label}: a crash-consistent mark is taken`)
    return { note: JSON.parse(r.stdout).note, stderr: r.stderr }
  }
  const listed = async (label: string): Promise<string | undefined> => {
    const marks = JSON.parse(await must(process.execPath, [BIN, 'timemark', 'list', '--appliance', app.address, '--volume', 'vol', '--json'])) as Array<{ label: string; note: string }>
    return marks.find((m) => m.label === label)?.note
  }

  let agent = await startAgent(t, { ...args, extra: ['--appliance', app.address, '--control', `unix:${control}`] })
  await app.waitForLog(/initial copy complete/, 120_000)
  const quiet = await mark('quiet')
  t.match(quiet.note, /^crash-consistent: the quiesce hook exited with 4$/, 'by default the note says what happened, in our words only')
  t.equal(await waitFor(() => listed('quiet'), 'the mark at the appliance'), quiet.note, 'and so does the replicated note')
  t.ok(agent.logs().some((l) => l.output === ' ]0;owned db password in /etc/db.conf'), "the hook's words are in the agent's own log, control characters stripped")
  t.equal(await agent.stop(), 0, 'the agent stops cleanly')

  agent = await startAgent(t, { ...args, extra: ['--appliance', app.address, '--control', `unix:${control}`, '--hook-output-in-note'] })
  const loud = await mark('loud')
  t.match(loud.note, /^crash-consistent: the quiesce hook exited with 4: .*db password in \/etc\/db\.conf$/, 'with --hook-output-in-note the note carries the output')
  t.notMatch(loud.note, /[\x00-\x1f\x7f]/, 'without its control characters')
  t.equal(await waitFor(() => listed('loud'), 'the mark at the appliance'), loud.note, 'as replicated')
  t.equal(await agent.stop(), 0, 'the agent stops cleanly')
})

t.test('the parsers behind the boundaries: quoted SAN values, MARK metadata new and journaled', async (t) => {
  // Node quotes a SAN value holding a comma: one URI entry, not a DNS one.
  t.same(subjectAltNames('URI:"spiffe://x, DNS:admin", DNS:real'), [{ type: 'URI', value: 'spiffe://x, DNS:admin' }, { type: 'DNS', value: 'real' }], 'a quoted value is one entry')
  t.equal(certificateIdentity({ subject: {}, subjectaltname: 'URI:"spiffe://x, DNS:admin"' } as unknown as PeerCertificate), null, 'and names nobody')
  t.equal(certificateIdentity({ subject: { CN: 'db\x1b[2J' }, subjectaltname: '' } as unknown as PeerCertificate), null, 'a CN with control characters is no identity')
  const meta = (o: Record<string, unknown>): Buffer => Buffer.from(JSON.stringify({ v: 1, label: 'l', consistency: 'crash', wallMs: 1, group: '', note: '', ...o }))
  t.match(parseMarkMeta(meta({ note: 'a\x1b]0;x\x07b\nc' })), { note: 'a ]0;x b c' }, 'a note arriving with control characters is stored without them')
  t.match(parseMarkMeta(meta({ group: 'g'.repeat(129) })), /group is 129 bytes long/, 'a group over 128 bytes is refused at ingest')
  t.match(parseMarkMeta(meta({ label: 'l'.repeat(150) })), /label is 150 bytes long/, 'so is a label')
  // Journals written before the bound: read back as written, so history stays readable.
  t.match(parseMarkMeta(meta({ label: 'l'.repeat(150) }), { journaled: true }), { label: 'l'.repeat(150) }, 'an older journal\'s 150-character label still reads')
})
