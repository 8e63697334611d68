// Where a finished plan run is recorded: the one place every `plan test`
// (and later failover, commit, rollback, failback) passes through when it is
// over, whatever its result.
//
// For now the record is the run's JSON report on stdout (for `--json`); the
// audit trail (a hash-chained log in the appliance's data directory, issue 13)
// replaces this body and keeps the signature.
import type { PlanRunReport } from './runner'

export async function recordPlanRun(report: PlanRunReport, opts: { json: boolean }): Promise<void> {
  if (opts.json) process.stdout.write(`${JSON.stringify(report)}\n`)
}
