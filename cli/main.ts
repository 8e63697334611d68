// The tidemark command: dispatches to one module per command.
import { TidemarkError } from '../proto/errors'
import { runAgent } from './agent-command'
import { runAppliance } from './appliance-command'
import { runFailback } from './failback-command'
import { runJournal, runStats } from './inspect-commands'
import { runRestore } from './restore-command'
import { runTimeview } from './timeview-command'
import { runTimemark } from './timemark-command'

const HELP = `tidemark: continuous data protection for block volumes

Usage: tidemark COMMAND [options]   (tidemark COMMAND --help for each)

Commands:
  agent      serve protected volumes over NBD and capture every write
  appliance  the recovery-site journal that agents replicate to
  restore    write a byte-exact image of a volume at a point
  failback   make a production volume equal to a point, sending only differing sectors
  journal    inspect an appliance's journal: ls, show, verify
  stats      an appliance's counters per volume
  timemark   create TimeMarks (through the agent) and list them (at the appliance)
  timeview   serve a volume at a point in time over NBD (read-only, or a copy-on-write overlay)
`

const LATER = new Set<string>()

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(HELP)
    return cmd ? 0 : 2
  }
  if (cmd === 'agent') return runAgent(rest)
  if (cmd === 'appliance') return runAppliance(rest)
  if (cmd === 'restore') return runRestore(rest)
  if (cmd === 'failback') return runFailback(rest)
  if (cmd === 'stats') return runStats(rest)
  if (cmd === 'journal') return runJournal(rest)
  if (cmd === 'timeview') return runTimeview(rest)
  if (cmd === 'timemark') return runTimemark(rest)
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
      const e = err as Error & { code?: string }
      process.stderr.write(`${e instanceof TidemarkError ? e.message : `tidemark: ${e.stack ?? e}`}\n`)
      process.exitCode = e instanceof TidemarkError && e.code === 'USAGE' ? 2 : 1
    }
  )
}
