// The appliance's dashboard: reads the JSON API every few seconds and draws
// it. Plain browser JavaScript served as it is (no build step); uPlot is the
// global its IIFE build defines. Read-only: it only GETs.
//
//   /api/v1/volumes, /api/v1/store      tiles and tables (client/status-api.ts)
//   /api/v1/alerts                      the issues table; a 404 means this
//                                       appliance has no alerts engine
//   /api/v1/series?volume=V, ?store     the charts (client/series-api.ts)
//   /api/v1/volumes/V/timemarks         the timelines, re-read when a count changes
//
// Everything from the API goes into the page as text (textContent), never as
// HTML: TimeMark labels and alert summaries are anybody's words.
'use strict'
;(function () {
  const REFRESH_MS = 5000
  const API = '/api/v1'
  const STATES = ['normal', 'behind', 'resync', 'initial_copy', 'disconnected', 'no_space']

  // Formats (test/dashboard.test.ts holds the page to them): binary units to
  // one decimal; durations in the largest unit that keeps them >= 1.
  function fmtBytes(n) {
    if (n === null || n === undefined) return '—'
    const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB']
    if (Math.abs(n) < 1024) return `${Math.round(n)} B`
    let i = -1
    do {
      n /= 1024
      i++
    } while (Math.abs(n) >= 1024 && i < units.length - 1)
    return `${n.toFixed(1)} ${units[i]}`
  }
  function fmtRate(n) {
    return n === null || n === undefined ? '—' : `${fmtBytes(n)}/s`
  }
  function fmtSeconds(s) {
    if (s === null || s === undefined) return '—'
    if (s < 60) return `${s.toFixed(1)} s`
    if (s < 3600) return `${(s / 60).toFixed(1)} min`
    if (s < 86400) return `${(s / 3600).toFixed(1)} h`
    return `${(s / 86400).toFixed(1)} d`
  }
  // A reduction needs bytes on both sides: heartbeats alone put a few bytes on the wire with nothing changed.
  function fmtRatio(a, b) {
    return a > 0 && b > 0 ? `${(a / b).toFixed(1)}×` : '—'
  }
  function fmtTime(iso) {
    return iso ? new Date(iso).toLocaleString() : '—'
  }

  const $ = (sel) => document.querySelector(sel)
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag)
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null) continue
      if (k === 'class') e.className = v
      else if (k.startsWith('data-')) e.setAttribute(k, v)
      else e[k] = v
    }
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)))
    return e
  }
  function fill(tbody, rows) {
    tbody.replaceChildren(...rows)
  }

  async function getJson(path) {
    const res = await fetch(path, { headers: { accept: 'application/json' }, cache: 'no-store' })
    const body = await res.json().catch(() => ({}))
    if (!res.ok) {
      const err = new Error(`${path}: ${res.status} ${body.error || res.statusText}`)
      err.status = res.status
      throw err
    }
    return body
  }

  // How close a volume is to its RPO target; volumes without a target or an RPO sort by their RPO alone.
  function rpoPressure(v) {
    if (v.rpo.seconds === null) return v.state === 'disconnected' ? Infinity : -1
    return v.rpo.targetSeconds ? v.rpo.seconds / v.rpo.targetSeconds : v.rpo.seconds / 1e6
  }

  function renderTiles(volumes, alerts, store) {
    const tiles = []
    const count = (s) => volumes.filter((v) => v.state === s).length
    for (const s of STATES) {
      const n = count(s)
      const cls = n === 0 || s === 'normal' ? '' : s === 'disconnected' || s === 'no_space' ? 'bad' : 'warn'
      tiles.push(el('div', { class: `tile ${cls}`, id: `tile-${s}`, 'data-count': n }, el('span', { class: 'n' }, n), s.replace('_', ' ')))
    }
    const firing = alerts ? alerts.length : null
    const errors = alerts ? alerts.filter((a) => a.severity === 'error').length : 0
    tiles.push(
      el('div', { class: `tile ${errors ? 'bad' : firing ? 'warn' : ''}`, id: 'tile-alerts', 'data-count': firing }, el('span', { class: 'n' }, firing === null ? '—' : firing), 'alerts firing')
    )
    tiles.push(el('div', { class: 'tile', id: 'tile-free' }, el('span', { class: 'n' }, fmtBytes(store.freeBytes)), 'store free'))
    $('#tiles').replaceChildren(...tiles)
  }

  function renderVolumes(volumes) {
    const rows = [...volumes]
      .sort((a, b) => rpoPressure(b) - rpoPressure(a) || a.volume.localeCompare(b.volume))
      .map((v) => {
        const over = v.rpo.seconds !== null && v.rpo.errorSeconds !== null && v.rpo.seconds > v.rpo.errorSeconds ? 'error' : v.rpo.seconds !== null && v.rpo.targetSeconds !== null && v.rpo.seconds > v.rpo.targetSeconds ? 'warning' : ''
        const cell = (field, text, cls) => el('td', { 'data-field': field, class: cls }, text)
        const target = v.rpo.targetSeconds === null ? '—' : v.rpo.errorSeconds === null ? fmtSeconds(v.rpo.targetSeconds) : `${fmtSeconds(v.rpo.targetSeconds)} / ${fmtSeconds(v.rpo.errorSeconds)}`
        const mark = v.lastTimeMark ? `${v.lastTimeMark.label || `#${v.lastTimeMark.id}`} (${fmtTime(v.lastTimeMark.time)})` : '—'
        return el(
          'tr',
          { 'data-volume': v.volume },
          cell('volume', v.volume),
          cell('state', v.state, `state-${v.state}`),
          cell('rpo', fmtSeconds(v.rpo.seconds), `num ${over}`),
          cell('rpoTarget', target, 'num'),
          cell('history', fmtSeconds(v.history.seconds), 'num'),
          cell('historyTarget', fmtSeconds(v.history.targetSeconds), 'num'),
          cell('journal', fmtBytes(v.journal.bytes), 'num'),
          cell('backlog', fmtBytes(v.backlogBytes), 'num'),
          cell('rates', `${fmtRate(v.rates.appBytesPerSecond)} → ${fmtRate(v.rates.changedBytesPerSecond)} → ${fmtRate(v.rates.wireBytesPerSecond)}`, 'num'),
          cell('lastTimeMark', mark)
        )
      })
    if (rows.length === 0) rows.push(el('tr', {}, el('td', { colSpan: 10, class: 'note' }, 'no volumes (or none this identity may read)')))
    fill($('#volumes tbody'), rows)
  }

  function renderIssues(alerts) {
    const note = $('#issues-note')
    if (alerts === null) {
      note.hidden = false
      note.textContent = 'This appliance has no alerts engine (GET /api/v1/alerts answers 404): no issues can be shown.'
    } else {
      note.hidden = alerts.length > 0
      note.textContent = 'No alerts firing.'
    }
    const rows = (alerts || []).map((a) =>
      el(
        'tr',
        { class: a.severity, 'data-alert': a.name },
        el('td', {}, a.severity),
        el('td', {}, a.name),
        el('td', {}, a.volume === null ? '(appliance)' : a.volume),
        el('td', {}, fmtTime(a.since)),
        el('td', { class: 'num' }, String(a.value)),
        el('td', { class: 'num' }, String(a.threshold)),
        el('td', {}, a.summary || ''),
        el('td', {}, a.action || '')
      )
    )
    fill($('#issues tbody'), rows)
  }

  function renderSyncing(volumes) {
    const rows = volumes
      .filter((v) => v.sync)
      .map((v) => {
        const s = v.sync
        const eta = s.remainingBytes !== null && s.bytesPerSecond ? fmtSeconds(s.remainingBytes / s.bytesPerSecond) : '—'
        const progress = s.percent === null ? el('span', {}, '—') : el('span', {}, el('progress', { max: 100, value: s.percent }), ` ${s.percent.toFixed(1)} %`)
        return el(
          'tr',
          { 'data-volume': v.volume },
          el('td', {}, v.volume),
          el('td', {}, s.kind.replace('_', ' ')),
          el('td', {}, progress),
          el('td', { class: 'num' }, fmtBytes(s.remainingBytes)),
          el('td', { class: 'num' }, fmtRate(s.bytesPerSecond)),
          el('td', { class: 'num' }, eta)
        )
      })
    if (rows.length === 0) rows.push(el('tr', {}, el('td', { colSpan: 6, class: 'note' }, 'nothing syncing: every volume has its initial copy and no resync runs')))
    fill($('#syncing tbody'), rows)
  }

  // ---- charts ----------------------------------------------------------------
  const charts = {}
  const CHARTS = {
    rpo: {
      axis: fmtSeconds,
      series: [
        ['rpoSeconds', 'RPO', '#2f5fb3'],
        ['rpoTargetSeconds', 'warning', '#a15c00', [6, 4]],
        ['rpoErrorSeconds', 'error', '#b3261e', [6, 4]],
      ],
      fmt: fmtSeconds,
    },
    bandwidth: {
      axis: fmtRate,
      series: [
        ['appBytesPerSecond', 'application', '#6b7a90'],
        ['changedBytesPerSecond', 'changed', '#2f5fb3'],
        ['wireBytesPerSecond', 'wire', '#1a7f37'],
      ],
      fmt: fmtRate,
    },
    history: {
      axis: fmtSeconds,
      series: [
        ['historySeconds', 'history', '#2f5fb3'],
        ['historyTargetSeconds', 'target', '#a15c00', [6, 4]],
      ],
      fmt: fmtSeconds,
    },
    journal: {
      axis: fmtBytes,
      series: [
        ['journalBytes', 'journal', '#2f5fb3'],
        ['backlogBytes', 'backlog', '#a15c00'],
      ],
      fmt: fmtBytes,
    },
  }

  // Where the appliance was down, consecutive points are more than a step
  // apart: a null row there makes uPlot break the line instead of bridging it.
  function withGaps(reply, keys) {
    const stepS = reply.step === '1m' ? 60 : 1
    const t = []
    const cols = keys.map(() => [])
    for (let i = 0; i < reply.t.length; i++) {
      if (i > 0 && reply.t[i] - reply.t[i - 1] > 2.5 * stepS) {
        t.push(reply.t[i - 1] + stepS)
        cols.forEach((c) => c.push(null))
      }
      t.push(reply.t[i])
      keys.forEach((k, j) => cols[j].push(reply[k] ? reply[k][i] : null))
    }
    return [t, ...cols]
  }

  function drawChart(name, reply) {
    const spec = CHARTS[name]
    const data = withGaps(reply, spec.series.map((s) => s[0]))
    const box = $(`#chart-${name}`)
    const width = Math.max(300, box.clientWidth)
    if (!charts[name] || charts[name].width !== width) {
      if (charts[name]) charts[name].destroy()
      box.replaceChildren()
      charts[name] = new uPlot(
        {
          width,
          height: 200,
          series: [{}, ...spec.series.map(([, label, stroke, dash]) => ({ label, stroke, dash, width: 1.5, value: (u, v) => spec.fmt(v), spanGaps: false }))],
          axes: [{}, { size: 80, values: (u, ticks) => ticks.map(spec.axis) }],
          scales: { y: { range: (u, min, max) => [0, Math.max(max || 0, 1) * 1.1] } },
          legend: { live: true },
        },
        data,
        box
      )
    } else {
      charts[name].setData(data)
    }
    box.setAttribute('data-points', String(reply.t.length))
  }

  async function renderCharts(volumes) {
    const select = $('#volume-select')
    const names = volumes.map((v) => v.volume).sort()
    const current = select.value || location.hash.slice(1)
    if ([...select.options].map((o) => o.value).join('\n') !== names.join('\n')) {
      select.replaceChildren(...names.map((n) => el('option', { value: n }, n)))
    }
    // The first time, the volume closest to breaching its RPO.
    const worst = [...volumes].sort((a, b) => rpoPressure(b) - rpoPressure(a))[0]
    select.value = names.includes(current) ? current : worst ? worst.volume : ''
    const name = select.value
    if (!name) return
    const reply = await getJson(`${API}/series?volume=${encodeURIComponent(name)}`)
    $('#range-note').textContent = `last hour at ${reply.step}, ${reply.t.length} points`
    for (const c of Object.keys(CHARTS)) drawChart(c, reply)
    // The reductions over the window drawn, not since the volume's creation:
    // those totals count the initial copy as changed bytes the application never wrote.
    const sum = (k) => (reply[k] || []).reduce((a, x) => a + (x || 0), 0)
    const app = sum('appBytesPerSecond')
    const changed = sum('changedBytesPerSecond')
    const wire = sum('wireBytesPerSecond')
    $('#reductions').textContent = `(reduction over the last hour: app → changed ${fmtRatio(app, changed)}, changed → wire ${fmtRatio(changed, wire)})`
  }

  // ---- TimeMark timelines ----------------------------------------------------
  const markCache = new Map() // volume -> {count, marks}
  async function renderTimelines(volumes) {
    const now = Date.now()
    const blocks = []
    for (const v of [...volumes].sort((a, b) => a.volume.localeCompare(b.volume))) {
      let cached = markCache.get(v.volume)
      if (!cached || cached.count !== v.timemarks) {
        const reply = await getJson(`${API}/volumes/${encodeURIComponent(v.volume)}/timemarks`)
        cached = { count: v.timemarks, marks: reply.timemarks }
        markCache.set(v.volume, cached)
      }
      // The bar spans the journal's history: the points a restore can reach.
      const start = Date.parse(v.history.since) || now - v.history.seconds * 1000
      const span = Math.max(1, now - start)
      const ticks = cached.marks
        .filter((m) => Date.parse(m.time) >= start)
        .map((m) =>
          el('span', {
            class: `mark ${m.consistency}`,
            title: `#${m.id} ${m.label} ${fmtTime(m.time)} (${m.consistency}${m.pinned ? ', pinned' : ''})`,
            style: `left: ${((100 * (Date.parse(m.time) - start)) / span).toFixed(3)}%`,
          })
        )
      const last = v.lastTimeMark ? `last: ${v.lastTimeMark.label || `#${v.lastTimeMark.id}`}, ${fmtSeconds((now - Date.parse(v.lastTimeMark.time)) / 1000)} ago` : 'no TimeMark yet'
      blocks.push(
        el(
          'div',
          { class: 'timeline', 'data-volume': v.volume, 'data-marks': cached.marks.length },
          el('div', {}, el('strong', {}, v.volume), ` — ${v.timemarks} TimeMarks, ${last}`),
          el('div', { class: 'bar' }, ...ticks),
          el('div', { class: 'ends' }, el('span', {}, fmtTime(new Date(start).toISOString())), el('span', {}, 'now'))
        )
      )
    }
    $('#timelines').replaceChildren(...blocks)
  }

  // ---- the loop --------------------------------------------------------------
  async function refresh() {
    const [vols, store, alerts] = await Promise.all([
      getJson(`${API}/volumes`),
      getJson(`${API}/store`),
      getJson(`${API}/alerts`).then(
        (r) => r.alerts,
        (err) => {
          if (err.status === 404) return null // no alerts engine on this appliance
          throw err
        }
      ),
    ])
    const volumes = vols.volumes
    renderTiles(volumes, alerts, store)
    renderVolumes(volumes)
    renderIssues(alerts)
    renderSyncing(volumes)
    await renderCharts(volumes)
    await renderTimelines(volumes)
  }

  let timer = null
  let running = false
  async function loop() {
    if (running) return
    running = true
    clearTimeout(timer)
    try {
      await refresh()
      $('#error').hidden = true
      $('#updated').textContent = `updated ${new Date().toLocaleTimeString()}`
      document.body.setAttribute('data-refreshed', String(Date.now()))
    } catch (err) {
      // Shown on the page, not thrown: the next refresh may well succeed (an appliance restarting).
      $('#error').hidden = false
      $('#error').textContent = err.message
    }
    running = false
    timer = setTimeout(loop, REFRESH_MS)
  }

  // Another volume's charts at once, and the choice kept in the address (a reload, a link).
  $('#volume-select').addEventListener('change', () => {
    location.hash = $('#volume-select').value
    loop()
  })
  loop()
})()
