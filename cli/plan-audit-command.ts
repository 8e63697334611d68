// tidemark plan audit: the appliance's trail of recovery-plan actions (who,
// when, which point, how long, the result), and with --verify whether its
// hash chain is intact (appliance/audit-trail.ts).
import { clientError } from '../client/admin-client'
import { listAudit } from '../client/plan-audit'
import { adminFromFlags, clientOptions, helpOption } from './common-options'
import { check, command, flag, helpText, parseCommand, text } from './definition'
import { z } from 'zod'

export const PLAN_AUDIT = command({
  name: 'plan',
  options: {
    ...helpOption,
    ...clientOptions,
    verify: flag({}),
    limit: text({ value: check(z.string(), (s) => /^\d+$/.test(s), (s) => `--limit '${s}' is not a number of entries`).transform(Number) }),
    json: flag({}),
  },
  help: () => `Usage:
  tidemark plan audit --appliance HOST:PORT|unix:PATH [--limit N] [--verify] [--json]
                      [--tls-cert F --tls-key F --tls-ca F]

Every recovery-plan action the appliance recorded (plan test, failover,
commit, rollback, failback, scheduled proofs): when, who (the caller's
certificate identity or uid), which plan and point, how long, the result.
Only entries whose volumes you may read are shown. --verify re-reads the
whole trail and checks its hash chain: an entry edited or removed is named,
and the command exits 1.
`,
})

function row(cells: Array<string | number>): string {
  return `| ${cells.join(' | ')} |`
}

export async function runPlanAudit(argv: string[]): Promise<number> {
  const p = parseCommand(PLAN_AUDIT, argv)
  if (p.help) {
    process.stdout.write(helpText(PLAN_AUDIT))
    return 0
  }
  const a = p.values
  const client = adminFromFlags(a, 'plan audit')
  let r: Awaited<ReturnType<typeof listAudit>>
  try {
    r = await listAudit(client, { limit: a.limit, verify: a.verify === true })
  } catch (err) {
    throw clientError('plan audit', err)
  } finally {
    client.close()
  }
  if (a.json) {
    process.stdout.write(`${JSON.stringify(a.verify ? r : { entries: r.entries })}\n`)
  } else {
    const lines = [row(['#', 'time', 'who', 'action', 'plan', 'point', 'seconds', 'result']), '|---|---|---|---|---|---|---|---|']
    for (const e of r.entries) lines.push(row([e.seq, e.time, e.who, e.action, e.plan, e.point || '-', (e.durationMs / 1000).toFixed(1), e.result]))
    if (a.verify) lines.push('', r.problem ? `audit trail damaged: ${r.problem}` : 'audit trail intact: every entry is as it was written, none removed')
    process.stdout.write(`${lines.join('\n')}\n`)
  }
  return a.verify && !r.verified ? 1 : 0
}
