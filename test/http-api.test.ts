// The operator plane's HTTP listener (cli/http-server.ts) and the appliance's
// JSON status API (client/status-api.ts), through real processes: who may
// listen where, read-only methods, the shape of the answers, and over HTTPS
// the same identities and roles as gRPC.
import fs from 'node:fs'
import https from 'node:https'
import path from 'node:path'
import t from 'tap'
import { getStore, getVolume, getVolumes, StatusApiError, type VolumeStatus } from '../client/status-api'
import { BIN, makeImage, makePki, must, protectedVolume, run, tlsArgs, tmpdir, waitFor } from './helpers'
import { httpUrl, parseExposition } from './lib/prom-text'

const MiB = 1024 * 1024

/** The API's refusal a call ended with (null if it answered). */
async function failure(p: Promise<unknown>): Promise<StatusApiError | null> {
  try {
    await p
    return null
  } catch (e) {
    if (e instanceof StatusApiError) return e
    throw e
  }
}

t.test('--http beyond loopback without TLS is refused at start, with one line that names the fix', async (t) => {
  const dir = tmpdir(t)
  const img = path.join(dir, 'v.img')
  makeImage(img, MiB)
  const app = await run(process.execPath, [BIN, 'appliance', '--data', path.join(dir, 'data'), '--listen', '127.0.0.1:0', '--http', '0.0.0.0:0'])
  t.equal(app.code, 2)
  t.match(app.stderr, /^tidemark appliance: refusing --http 0\.0\.0\.0:0 without TLS: .*give --tls-cert, --tls-key and --tls-ca/)
  t.equal(app.stderr.trim().split('\n').length, 1, 'one line')
  t.notOk(fs.existsSync(path.join(dir, 'data')), 'refused before anything was opened')

  const agent = await run(process.execPath, [BIN, 'agent', '--state', path.join(dir, 'state'), '--nbd', `unix:${path.join(dir, 'n.sock')}`, '--volume', `v=${img}`, '--http', '192.0.2.1:9100'])
  t.equal(agent.code, 2)
  t.match(agent.stderr, /^tidemark agent: refusing --http 192\.0\.2\.1:9100 without TLS/)
  t.equal(agent.stderr.trim().split('\n').length, 1, 'one line')

  // An allow-list needs identified callers: plain HTTP, even on loopback, identifies nobody.
  const roles = await run(process.execPath, [BIN, 'appliance', '--data', path.join(dir, 'data2'), '--listen', `unix:${path.join(dir, 'a.sock')}`, '--allow', 'uid:0=read:*', '--http', '127.0.0.1:0'])
  t.equal(roles.code, 2)
  t.match(roles.stderr, /refusing --http 127\.0\.0\.1:0 without TLS with an allow-list/)

  // The targets' values are checked at start too, one line each.
  for (const [arg, why] of [
    ['vol=fast', /--rpo-target 'vol=fast': 'fast' is not a duration/],
    ['vol=1m,30s', /the error threshold is below the warning threshold/],
    ['=30s', /must be PATTERN=WARN\[,ERROR\]/],
  ] as const) {
    const r = await run(process.execPath, [BIN, 'appliance', '--data', path.join(dir, 'data3'), '--listen', '127.0.0.1:0', '--rpo-target', arg])
    t.equal(r.code, 2, `--rpo-target ${arg} refused`)
    t.match(r.stderr, why)
    t.equal(r.stderr.trim().split('\n').length, 1, 'one line')
  }
  const h = await run(process.execPath, [BIN, 'appliance', '--data', path.join(dir, 'data3'), '--listen', '127.0.0.1:0', '--history-target', 'vol*=soon'])
  t.equal(h.code, 2)
  t.match(h.stderr, /--history-target 'vol\*=soon': 'soon' is not a duration/)
})

t.test('read-only JSON status: volumes, one volume, the store; POST is 405, an unknown path 404', async (t) => {
  const dir = tmpdir(t)
  const v = await protectedVolume(t, dir, {
    size: 8 * MiB,
    seed: 2,
    applianceExtra: ['--http', '127.0.0.1:0', '--rpo-target', 'vol=10s,1m', '--history-target', 'v*=2h'],
  })
  const base = await waitFor(() => httpUrl(v.app.err), "the appliance's http line")

  for (const method of ['POST', 'PUT', 'DELETE']) {
    const res = await fetch(`${base}/api/v1/volumes`, { method })
    t.equal(res.status, 405, `${method} is refused`)
    t.equal(res.headers.get('allow'), 'GET, HEAD')
    t.match(((await res.json()) as { error: string }).error, /read-only/)
  }
  const post = await fetch(`${base}/metrics`, { method: 'POST', body: 'x' })
  t.equal(post.status, 405, 'POST /metrics is refused too')
  await post.arrayBuffer()
  const missing = await fetch(`${base}/nothing-here`)
  t.equal(missing.status, 404)
  t.match(((await missing.json()) as { error: string }).error, /no such endpoint \/nothing-here/)

  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x33 0 256k', v.uri])
  const list = await waitFor(async () => {
    const r = await getVolumes(base)
    // The counters move when the batch is indexed; its RPO point counts once its ack went out.
    const v = r.volumes[0]
    return v?.bytes.app >= 256 * 1024 && v.backlogBytes === 0 && v.rpo.seconds !== null ? r : null
  }, 'the write to show in the API, its RPO known')
  t.equal(list.volumes.length, 1)
  const s: VolumeStatus = list.volumes[0]
  t.equal(s.volume, 'vol')
  t.equal(s.state, 'normal')
  t.equal(s.agent.connected, true)
  t.equal(s.agent.id.length > 0, true, 'the agent id the hello named')
  t.equal(s.rpo.targetSeconds, 10)
  t.equal(s.rpo.errorSeconds, 60)
  t.equal(s.history.targetSeconds, 7200)
  t.ok(s.rpo.seconds !== null && s.rpo.seconds < 10, `RPO ${s.rpo.seconds} s, under its target`)
  t.ok(s.journal.bytes > 256 * 1024)
  t.ok(s.journal.durableSeq > 0)
  t.ok(s.bytes.changed >= 256 * 1024 && s.bytes.wire > 0)
  t.equal(s.sync, null, 'no copy or resync running')
  t.equal(s.lastTimeMark, null)
  t.equal(typeof s.rates.appBytesPerSecond, 'number')

  const one = await getVolume(base, 'vol')
  t.equal(one.volume, 'vol')
  t.same({ app: one.bytes.app, changed: one.bytes.changed }, { app: s.bytes.app, changed: s.bytes.changed }, 'the same counters one by one as in the list')
  const nope = await failure(getVolume(base, 'nope'))
  t.equal(nope?.status, 404)
  t.match(nope?.message, /no volume "nope"/)

  const store = await getStore(base)
  t.ok(store.freeBytes > 0 && store.totalBytes >= store.freeBytes)
  t.equal(store.volumes, 1)
  // The store's journal bytes are its volumes' (a trailing record may land between two reads: read both until they agree).
  await waitFor(async () => (await getStore(base)).journalBytes === (await getVolume(base, 'vol')).journal.bytes, "the store's journal bytes to be the volume's")
})

t.test('HTTPS with client certificates and the allow-list: each caller sees the volumes it may read', async (t) => {
  const dir = tmpdir(t)
  const pki = path.join(dir, 'pki')
  await makePki(pki, ['appliance', 'agent', 'reader', 'stranger'])
  const v = await protectedVolume(t, dir, {
    size: 4 * MiB,
    seed: 4,
    applianceExtra: [...tlsArgs(pki, 'appliance'), '--allow', 'agent=write:vol', '--allow', 'reader=read:vol', '--allow', 'stranger=read:other*', '--http', '127.0.0.1:0'],
    agentExtra: tlsArgs(pki, 'agent'),
  })
  const base = await waitFor(() => httpUrl(v.app.err), "the appliance's http line")
  t.match(base, /^https:\/\//, 'HTTPS when the appliance has TLS files')
  const as = (who: string): { tls: { cert: Buffer; key: Buffer; ca: Buffer } } => ({
    tls: { cert: fs.readFileSync(path.join(pki, `${who}.pem`)), key: fs.readFileSync(path.join(pki, `${who}.key`)), ca: fs.readFileSync(path.join(pki, 'ca.pem')) },
  })

  const mine = await getVolumes(base, as('reader'))
  t.same(mine.volumes.map((x) => x.volume), ['vol'], 'the reader sees its volume')
  t.equal(mine.volumes[0].agent.identity, 'agent', 'and the identity that replicates it')
  const theirs = await getVolumes(base, as('stranger'))
  t.same(theirs.volumes, [], 'a caller with read on other volumes sees none of these')
  const denied = await failure(getVolume(base, 'vol', as('stranger')))
  t.equal(denied?.status, 403)
  t.match(denied?.message, /may not read volume vol/)
  t.equal((await failure(getVolumes(base, as('agent'))))?.status, 403, 'write is not read')

  const get = (url: string, tls: { cert?: Buffer; key?: Buffer; ca: Buffer }): Promise<{ status: number; body: string }> =>
    new Promise((resolve, reject) => {
      https
        .get(url, tls, (res) => {
          let body = ''
          res.setEncoding('utf8')
          res.on('data', (d: string) => (body += d))
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
        })
        .on('error', reject)
    })
  // The volumes whose series a caller's scrape holds.
  const metricsOf = async (who: string): Promise<string[]> => {
    const r = await get(`${base}/metrics`, as(who).tls)
    if (r.status !== 200) throw new Error(`GET /metrics as ${who}: ${r.status} ${r.body}`)
    return [...new Set(parseExposition(r.body).samples.map((s) => s.labels.volume).filter((x): x is string => !!x))]
  }
  t.same(await metricsOf('reader'), ['vol'], "the reader's scrape has the volume's series")
  t.same(await metricsOf('stranger'), [], "the stranger's has none of them")

  // Without a client certificate (the server's CA trusted all the same) the TLS handshake itself fails.
  await t.rejects(get(`${base}/api/v1/volumes`, { ca: as('reader').tls.ca }), 'no certificate, no answer')
})

t.test("the agent's metrics beyond loopback: HTTPS, for certificates its CA signed only", async (t) => {
  const dir = tmpdir(t)
  const pki = path.join(dir, 'pki')
  await makePki(pki, ['appliance', 'agent', 'prometheus'])
  await makePki(path.join(dir, 'other'), ['intruder'], 'otherca')
  const v = await protectedVolume(t, dir, {
    size: 4 * MiB,
    seed: 6,
    applianceExtra: tlsArgs(pki, 'appliance'),
    // Every address: allowed, since the agent has TLS files.
    agentExtra: [...tlsArgs(pki, 'agent'), '--http', '0.0.0.0:0'],
  })
  const printed = await waitFor(() => httpUrl(v.agent.err), "the agent's http line")
  t.match(printed, /^https:\/\/0\.0\.0\.0:\d+$/)
  // Reached on loopback, where the agent's certificate names the address (IP:127.0.0.1).
  const url = `${printed.replace('0.0.0.0', '127.0.0.1')}/metrics`
  const ca = fs.readFileSync(path.join(pki, 'ca.pem'))
  const get = (tls: { cert?: Buffer; key?: Buffer; ca: Buffer }): Promise<{ status: number; body: string }> =>
    new Promise((resolve, reject) => {
      https
        .get(url, tls, (res) => {
          let body = ''
          res.setEncoding('utf8')
          res.on('data', (d: string) => (body += d))
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
        })
        .on('error', reject)
    })
  const ok = await get({ cert: fs.readFileSync(path.join(pki, 'prometheus.pem')), key: fs.readFileSync(path.join(pki, 'prometheus.key')), ca })
  t.equal(ok.status, 200)
  t.ok(parseExposition(ok.body).samples.some((s) => s.name === 'tidemark_agent_app_bytes_total' && s.labels.volume === 'vol'), 'the volume\'s series')
  const other = path.join(dir, 'other')
  await t.rejects(get({ cert: fs.readFileSync(path.join(other, 'intruder.pem')), key: fs.readFileSync(path.join(other, 'intruder.key')), ca }), 'a certificate of another CA gets no answer')
  await t.rejects(get({ ca }), 'nor does a caller without one')
})
