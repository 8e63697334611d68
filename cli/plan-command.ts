// tidemark plan: recovery plans, one action per module.
import { usage } from './args'

const PLAN_HELP = `Usage:
  tidemark plan audit --appliance HOST:PORT|unix:PATH [--limit N] [--verify] [--json]

(tidemark plan ACTION --help for each)
`

export async function runPlan(argv: string[]): Promise<number> {
  const [action, ...rest] = argv
  if (!action || action === '--help') {
    process.stdout.write(PLAN_HELP)
    return action ? 0 : 2
  }
  if (action === 'audit') return (await import('./plan-audit-command')).runPlanAudit(rest)
  throw usage('plan', `unknown action '${action}' (audit)`)
}
