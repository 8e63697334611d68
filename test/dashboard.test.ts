// The appliance's dashboard (dashboard/, served by cli/dashboard-http.ts) in
// Debian's headless Chromium driven by playwright-core, over a real appliance
// and agent replicating a volume that qemu-io wrote: the page loads with no
// console error, shows the volume and the values the JSON API returns, its
// charts draw, a screenshot is saved; then the appliance restarts and the
// series API still holds the points from before, with a gap. Over HTTPS,
// the page needs only the transport and what it reads needs the read role.
import fs from 'node:fs'
import https from 'node:https'
import path from 'node:path'
import t from 'tap'
import { chromium, type Browser, type ConsoleMessage } from 'playwright-core'
import { getSeries, getTimeMarks } from '../client/series-api'
import { getJson, getVolumes, StatusApiError, type VolumeStatus } from '../client/status-api'
import { BIN, clockPast, makePki, must, protectedVolume, run, startAppliance, tlsArgs, tmpdir, waitFor } from './helpers'
import { httpUrl } from './lib/prom-text'

const CHROMIUM = '/usr/bin/chromium'
const MiB = 1024 * 1024

// The page's formats (dashboard/dashboard.js says them), written again here so the test checks them.
function fmtBytes(n: number | null): string {
  if (n === null) return '—'
  if (Math.abs(n) < 1024) return `${Math.round(n)} B`
  const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB']
  let i = -1
  do {
    n /= 1024
    i++
  } while (Math.abs(n) >= 1024 && i < units.length - 1)
  return `${n.toFixed(1)} ${units[i]}`
}
function fmtSeconds(s: number | null): string {
  if (s === null) return '—'
  if (s < 60) return `${s.toFixed(1)} s`
  if (s < 3600) return `${(s / 60).toFixed(1)} min`
  if (s < 86400) return `${(s / 3600).toFixed(1)} h`
  return `${(s / 86400).toFixed(1)} d`
}

t.test('the dashboard in headless Chromium shows what the API says, draws its charts, and the series survive a restart', { skip: !fs.existsSync(CHROMIUM) && `${CHROMIUM} is missing (apt-get install chromium)` }, async (t) => {
  const dir = tmpdir(t)
  const control = path.join(dir, 'control.sock')
  const applianceExtra = ['--http', '127.0.0.1:0', '--rpo-target', 'vol=10s,1m', '--history-target', 'v*=2h']
  const v = await protectedVolume(t, dir, { size: 8 * MiB, seed: 5, applianceExtra, agentExtra: ['--control', `unix:${control}`] })
  const base = await waitFor(() => httpUrl(v.app.err), "the appliance's http line")

  await must('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 512k', '-c', 'write -P 0x5b 1M 256k', v.uri])
  const mark = await run(process.execPath, [BIN, 'timemark', 'create', '--control', `unix:${control}`, '--volume', 'vol', '--label', 'before-dashboard', '--json'])
  t.equal(mark.code, 0, `timemark create: ${mark.stderr}`)
  await waitFor(async () => {
    const s = (await getVolumes(base)).volumes[0]
    return s && s.bytes.app >= 768 * 1024 && s.backlogBytes === 0 && s.lastTimeMark?.label === 'before-dashboard'
  }, 'the writes and the TimeMark to show in the API', 60_000)
  await waitFor(async () => (await getSeries(base, { volume: 'vol' })).t.length >= 3, 'three seconds of series', 60_000)

  // The static files need nothing but the transport; the API's refusals are the API's.
  const js = await fetch(`${base}/dashboard/dashboard.js`)
  t.equal(js.status, 200)
  t.match(js.headers.get('content-type'), /^text\/javascript/)
  await js.text()
  const bad = await fetch(`${base}/api/v1/series?volume=vol&from=yesterday`)
  t.equal(bad.status, 400)
  t.match(((await bad.json()) as { error: string }).error, /from=yesterday is not an ISO time/)
  const unknown = await fetch(`${base}/api/v1/series?volume=nope`)
  t.equal(unknown.status, 404)
  await unknown.arrayBuffer()
  const marks = await getTimeMarks(base, 'vol')
  t.same(marks.timemarks.map((m) => m.label), ['before-dashboard'], 'the TimeMark list the timeline reads')

  let alerts: unknown[] | null
  try {
    alerts = (await getJson<{ alerts: unknown[] }>(base, '/api/v1/alerts')).alerts
  } catch (err) {
    if (!(err instanceof StatusApiError && err.status === 404)) throw err
    alerts = null // no alerts engine on this appliance yet: the page says so
  }

  const browser: Browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'], timeout: 120_000 })
  t.teardown(() => browser.close())
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } })
  const errors: string[] = []
  const isAlerts404 = (m: ConsoleMessage): boolean => alerts === null && /status of 404/.test(m.text()) && m.location().url.endsWith('/api/v1/alerts')
  page.on('console', (m) => {
    // The one error Chromium logs by itself that the page expects: an appliance without alerts answers 404 there.
    if (m.type() === 'error' && !isAlerts404(m)) errors.push(`console: ${m.text()} (${m.location().url})`)
  })
  page.on('pageerror', (e) => errors.push(`page: ${e.message}`))
  await page.goto(`${base}/`, { timeout: 120_000 })
  await page.waitForSelector('body[data-refreshed]', { timeout: 120_000 })
  t.equal(await page.title(), 'tidemark appliance')

  // The values the API returns, as the page shows them: read both until a refresh of the page agrees with a fetch.
  type Row = Record<string, string>
  const expected = (s: VolumeStatus): Row => ({
    volume: 'vol',
    state: s.state,
    rpoTarget: `${fmtSeconds(s.rpo.targetSeconds)} / ${fmtSeconds(s.rpo.errorSeconds)}`,
    historyTarget: fmtSeconds(s.history.targetSeconds),
    journal: fmtBytes(s.journal.bytes),
    backlog: fmtBytes(s.backlogBytes),
  })
  const shown = (): Promise<Row> =>
    page.$$eval('#volumes tr[data-volume="vol"] td[data-field]', (tds) => Object.fromEntries(tds.map((td) => [td.getAttribute('data-field'), td.textContent ?? ''])))
  let api: VolumeStatus | null = null
  let dom: Row = {}
  await waitFor(async () => {
    api = (await getVolumes(base)).volumes[0]
    dom = await shown()
    const want = expected(api)
    return Object.keys(want).every((k) => dom[k] === want[k])
  }, 'the page to show the API\'s values', 60_000)
  const s = api as unknown as VolumeStatus
  t.same(Object.fromEntries(Object.keys(expected(s)).map((k) => [k, dom[k]])), expected(s), "the volume's row shows the API's values")
  t.equal(s.state, 'normal')
  t.match(dom.rpo, /^\d+\.\d s$/, `the RPO in seconds (${dom.rpo})`)
  t.match(dom.lastTimeMark, /^before-dashboard \(/, 'the last TimeMark')
  t.equal(await page.getAttribute('#tile-normal', 'data-count'), '1', 'one volume in the normal tile')
  t.equal(await page.getAttribute('#tile-disconnected', 'data-count'), '0')
  if (alerts === null) {
    t.match(await page.textContent('#issues-note'), /no alerts engine/, 'the issues table says why it is empty')
    t.equal(await page.$$eval('#issues tbody tr', (r) => r.length), 0)
  } else {
    t.equal(await page.$$eval('#issues tbody tr', (r) => r.length), alerts.length, 'a row per alert firing')
  }
  t.match(await page.textContent('#syncing tbody'), /nothing syncing/)
  t.equal(await page.getAttribute('.timeline[data-volume="vol"]', 'data-marks'), '1', "the volume's timeline holds its TimeMark")
  t.equal(await page.$$eval('.timeline[data-volume="vol"] .mark', (m) => m.length), 1)

  // The charts drew: each has its points and a uPlot canvas of some size.
  // (Functions that run in the page are strings or use no DOM types: the tests compile without the DOM's lib.)
  await page.waitForFunction("[...document.querySelectorAll('.chart')].every((c) => Number(c.getAttribute('data-points')) >= 2)", null, { timeout: 60_000 })
  const canvases = await page.$$eval('.chart .uplot canvas', (cs) =>
    cs.map((c) => ({ w: (c as unknown as { width: number }).width, h: (c as unknown as { height: number }).height, id: c.closest('.chart')?.id ?? '' }))
  )
  t.same(canvases.map((c) => c.id).sort(), ['chart-bandwidth', 'chart-history', 'chart-journal', 'chart-rpo'], 'one canvas per chart')
  for (const c of canvases) t.ok(c.w > 0 && c.h > 0, `${c.id} is ${c.w}x${c.h}`)
  // Over the chart's window; '—' where nothing changed in it.
  t.match(await page.textContent('#reductions'), /app → changed (\d+\.\d×|—), changed → wire (\d+\.\d×|—)/, 'the reduction ratios')

  const shot = path.join(dir, 'dashboard.png')
  await page.screenshot({ path: shot, fullPage: true })
  t.ok(fs.statSync(shot).size > 10_000, 'a screenshot was saved')
  if (process.env.TIDEMARK_SCREENSHOT_DIR) {
    fs.mkdirSync(process.env.TIDEMARK_SCREENSHOT_DIR, { recursive: true })
    fs.copyFileSync(shot, path.join(process.env.TIDEMARK_SCREENSHOT_DIR, 'dashboard.png'))
  }
  t.same(errors, [], 'no console error')
  await page.close()

  // A restart: the series still hold the points from before, then new ones after a gap.
  const before = await getSeries(base, { volume: 'vol' })
  const lastBefore = before.t[before.t.length - 1]
  t.equal(await v.app.stop(), 0, 'the appliance stops cleanly')
  const stoppedAt = Date.now() / 1000
  // Down for over two whole seconds, so the gap is one whatever the sampling phase (a fast restart could otherwise land on the next second).
  await clockPast(stoppedAt * 1000 + 2500)
  const app2 = await startAppliance(t, { data: path.join(dir, 'data'), port: v.app.port, extra: applianceExtra })
  const base2 = await waitFor(() => httpUrl(app2.err), "the restarted appliance's http line")
  const after = await waitFor(async () => {
    const r = await getSeries(base2, { volume: 'vol' })
    return r.t.some((x) => x > stoppedAt) ? r : null
  }, 'a sample after the restart', 60_000)
  t.ok(after.t.filter((x) => x <= lastBefore).length >= before.t.length, 'every point from before the restart is still there')
  const i = after.t.findIndex((x) => x > stoppedAt)
  t.ok(after.t[i] - after.t[i - 1] > 2, `a gap where the appliance was down (${after.t[i - 1]} → ${after.t[i]})`)
  const minutes = await getSeries(base2, { volume: 'vol' }, { step: '1m' })
  t.ok(minutes.t.length >= 1 && minutes.t[0] <= lastBefore, 'the 1 min series holds the minute from before too')
  const store = await getSeries(base2, 'store')
  t.ok(store.t.some((x) => x <= lastBefore) && store.freeBytes?.every((f) => f === null || f > 0), "the store's free space, from before as well")
})

t.test("over HTTPS with an allow-list: the page needs a client certificate only, the series and TimeMarks the read role", async (t) => {
  const dir = tmpdir(t)
  const pki = path.join(dir, 'pki')
  await makePki(pki, ['appliance', 'reader', 'stranger'])
  const app = await startAppliance(t, {
    data: path.join(dir, 'data'),
    extra: [...tlsArgs(pki, 'appliance'), '--allow', 'reader=read:vol', '--allow', 'stranger=read:other*', '--http', '127.0.0.1:0'],
  })
  const base = await waitFor(() => httpUrl(app.err), "the appliance's http line")
  const as = (who: string): { tls: { cert: Buffer; key: Buffer; ca: Buffer } } => ({
    tls: { cert: fs.readFileSync(path.join(pki, `${who}.pem`)), key: fs.readFileSync(path.join(pki, `${who}.key`)), ca: fs.readFileSync(path.join(pki, 'ca.pem')) },
  })
  const status = async (p: Promise<unknown>): Promise<number> => {
    try {
      await p
      return 200
    } catch (err) {
      if (err instanceof StatusApiError) return err.status
      throw err
    }
  }
  // The page is HTML, not JSON: its status through node's https with the stranger's certificate.
  const pageStatus = await new Promise<number>((resolve, reject) => {
    https.get(`${base}/`, as('stranger').tls, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    }).on('error', reject)
  })
  t.equal(pageStatus, 200, 'the page for any certificate the CA signed')
  t.equal(await status(getSeries(base, { volume: 'vol' }, {}, as('stranger'))), 403, "another volume's series is refused")
  t.equal(await status(getTimeMarks(base, 'vol', as('stranger'))), 403, "and its TimeMarks")
  t.equal(await status(getSeries(base, { volume: 'vol' }, {}, as('reader'))), 404, 'the reader passes the role check (no such volume yet)')
  t.equal(await status(getSeries(base, 'store', {}, as('reader'))), 200, "the store's series for a caller with read somewhere")
})
