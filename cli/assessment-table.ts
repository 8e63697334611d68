// tidemark agent --assess: the report for people (--json gives the same numbers to scripts).
import { RPO_TARGETS_S, type AssessmentReport, type Spread } from '../agent/assessment'

const MB = 1e6

function mb(n: number): string {
  return (n / MB).toFixed(n < 10 * MB ? 2 : 0)
}

function spread(s: Spread): string {
  return `${mb(s.p50)} / ${mb(s.p95)} / ${mb(s.max)}`
}

/** A link rate in megabits per second, as WAN links are sold. */
function mbit(bytesPerSecond: number | null): string {
  if (bytesPerSecond === null) return 'over 800 Gbit/s'
  return `${((bytesPerSecond * 8) / 1e6).toFixed(bytesPerSecond < 1.25e6 ? 2 : 0)} Mbit/s`
}

export function assessmentTable(r: AssessmentReport): string {
  const lines = [`assessment over ${r.seconds.toFixed(1)} s: nothing was replicated; MicroScan and LZ4 measured what would be sent`, '']
  const scaled = r.volumes.some((v) => v.perMinute.scaled)
  lines.push(
    `| volume | app MB/min p50 / p95 / max | changed MB/min | wire MB/min | ${RPO_TARGETS_S.map((t) => `WAN for RPO ${t < 60 ? `${t} s` : `${t / 60} min`}`).join(' | ')} | journal GB/day |`,
    `|---|---|---|---|${RPO_TARGETS_S.map(() => '---|').join('')}---|`
  )
  for (const v of r.volumes) {
    const wan = RPO_TARGETS_S.map((t) => mbit(v.wanBytesPerSecond[`${t}s`])).join(' | ')
    lines.push(
      `| ${v.volume} | ${spread(v.perMinute.app)} | ${spread(v.perMinute.changed)} | ${spread(v.perMinute.wire)} | ${wan} | ${(v.journalBytesPerDay / 1e9).toFixed(2)} |`
    )
  }
  lines.push('')
  for (const v of r.volumes) {
    lines.push(`${v.volume}: ${mb(v.appBytes)} MB written, ${mb(v.changedBytes)} MB changed, ${mb(v.wireBytes)} MB on the wire (${v.records} records)`)
  }
  if (scaled) lines.push('', 'shorter than a minute: the per-minute figures are the run\'s rate scaled to a minute')
  return `${lines.join('\n')}\n`
}
