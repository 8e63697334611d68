// The tidemark command: dispatches to one module per command. Each is
// loaded only when it runs: a command starts in the time its own modules take
// to load (a restore does not load the agent's and the appliance's), which
// counts for a restore timed against cp, and for scripts calling the CLI often.
import { TidemarkError } from '../proto/errors'

type Run = (argv: string[]) => Promise<number>
const COMMANDS: Record<string, () => Promise<Run>> = {
  agent: async () => (await import('./agent-command')).runAgent,
  appliance: async () => (await import('./appliance-command')).runAppliance,
  restore: async () => (await import('./restore-command')).runRestore,
  failback: async () => (await import('./failback-command')).runFailback,
  stats: async () => (await import('./inspect-commands')).runStats,
  status: async () => (await import('./status-command')).runStatus,
  journal: async () => (await import('./inspect-commands')).runJournal,
  timeview: async () => (await import('./timeview-command')).runTimeview,
  timemark: async () => (await import('./timemark-command')).runTimemark,
  volume: async () => (await import('./volume-command')).runVolume,
  plan: async () => (await import('./plan-command')).runPlan,
}

const HELP = `tidemark: continuous data protection for block volumes

Usage: tidemark COMMAND [options]   (tidemark COMMAND --help for each)

Commands:
  agent      serve protected volumes over NBD and capture every write
  appliance  the recovery-site journal that agents replicate to
  restore    write a byte-exact image of a volume at a point
  failback   make a production volume equal to a point, sending only differing sectors
  journal    inspect an appliance's journal: ls, show, verify
  stats      an appliance's counters per volume
  status     each volume's state, RPO, history, rates and alerts, from the appliance's --http API (--watch)
  timemark   create TimeMarks (through the agent) and list them (at the appliance)
  timeview   serve a volume at a point in time over NBD (read-only, or a copy-on-write overlay)
  volume     an admin's changes to a volume: accept-generation, seed
  plan       recovery plans: validate, test (an isolated failover of real VMs), failover, commit,
             rollback, failback, status, the audit trail
`

const LATER = new Set<string>()

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(HELP)
    return cmd ? 0 : 2
  }
  const load = Object.hasOwn(COMMANDS, cmd) ? COMMANDS[cmd] : undefined
  if (load) return (await load())(rest)
  if (LATER.has(cmd)) {
    if (rest.includes('--help')) {
      process.stdout.write(`tidemark ${cmd}: not in this build yet; see tidemark --help\n`)
      return 0
    }
    throw new TidemarkError('USAGE', `tidemark ${cmd}: not in this build yet (it comes with TimeMarks and TimeViews)`)
  }
  throw new TidemarkError('USAGE', `tidemark: unknown command '${cmd}' (see tidemark --help)`)
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code
    },
    (err: unknown) => {
      const e = err as Error & { code?: string; syscall?: string }
      // A system call that failed (ENOENT, EACCES, ENOTDIR on a path the user gave) says what and where in its
      // message: one line, as for our own errors. Anything else is a bug, and its stack helps the report.
      const line = e instanceof TidemarkError ? e.message : e.syscall ? `tidemark ${process.argv[2]}: ${e.message}` : `tidemark: ${e.stack ?? e}`
      process.stderr.write(`${line}\n`)
      process.exitCode = e instanceof TidemarkError && e.code === 'USAGE' ? 2 : 1
    }
  )
}
