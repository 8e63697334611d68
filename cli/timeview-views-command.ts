// tidemark timeview create | list | delete: named views the appliance serves
// from its own NBD server (`tidemark appliance --nbd ...`), kept until deleted
// and across restarts of the appliance. The client-side `tidemark timeview
// --nbd` (timeview-command.ts) stays for serving a point at another site.
import { z } from 'zod'
import { checkViewName } from '../appliance/view-registry'
import { createView, deleteView, listViews, type ViewInfo } from '../client/timeview-views'
import { adminFromFlags, clientOptions, helpOption, pointOf, pointOptions } from './common-options'
import { command, convert, flag, helpText, parseCommand, text } from './definition'

const nameOption = text({
  label: '--name NAME',
  help: "the view's NBD export name: 1 to 64 of A-Z a-z 0-9 . _ -\n(not a volume's name; '@' is for VOLUME@POINT exports)",
  required: '--name NAME is required',
  // The appliance's rule (it also refuses a volume's name, which only it knows).
  value: convert(z.string(), (s) => {
    checkViewName(s, () => false)
    return s
  }),
})
const jsonOption = flag({ label: '--json', help: 'print the view(s) as JSON instead of lines' })
const usageTail = '[--json] [--tls-cert F --tls-key F --tls-ca F]'

export const TIMEVIEW_CREATE = command({
  name: 'timeview create',
  requiredFirst: true,
  options: {
    ...helpOption,
    volume: text({ required: '--volume NAME is required' }),
    ...pointOptions,
    name: nameOption,
    writable: flag({
      label: '--writable',
      help: "add a copy-on-write overlay, kept in the appliance's data directory\n(never in the journal, never replicated) until the view is deleted;\nwhat a client flushed survives a restart or a crash of the appliance",
    }),
    json: jsonOption,
    ...clientOptions,
  },
  help: (rows) => `Usage:
  tidemark timeview create --appliance HOST:PORT --volume NAME (--timemark ID|LABEL | --at ISO-TIME | --seq N|latest)
                           --name NAME [--writable] ${usageTail}

The appliance serves the volume as it was at the point, as the NBD export
NAME of its own NBD server, until the view is deleted. The point is resolved
now, as restore resolves it (points restore refuses are refused), and the
view stays at that seq; retention keeps it meanwhile.
${rows(23, 'timemark', 'at', 'seq', 'name', 'writable', 'json')}

Attach it:  nbd-client -unix PATH -N NAME /dev/nbd0
            qemu-system-x86_64 -drive file=nbd+unix:///NAME?socket=PATH,format=raw
`,
})

export const TIMEVIEW_LIST = command({
  name: 'timeview list',
  options: {
    ...helpOption,
    volume: text({ label: '--volume NAME', help: "only this volume's views" }),
    json: jsonOption,
    ...clientOptions,
  },
  help: (rows) => `Usage:
  tidemark timeview list --appliance HOST:PORT [--volume NAME] ${usageTail}

The views the appliance keeps (timeview create), by name.
${rows(23, 'volume', 'json')}
`,
})

export const TIMEVIEW_DELETE = command({
  name: 'timeview delete',
  requiredFirst: true,
  options: {
    ...helpOption,
    name: nameOption,
    json: jsonOption,
    ...clientOptions,
  },
  help: (rows) => `Usage:
  tidemark timeview delete --appliance HOST:PORT --name NAME ${usageTail}

Stops serving the view: its NBD connections are closed, and a writable
view's overlay, with everything written to it, is deleted.
${rows(23, 'name', 'json')}
`,
})

function line(v: ViewInfo): string {
  const overlay = v.writable ? `, writable (overlay ${v.overlayBytes} bytes)` : ', read-only'
  return `${v.name}: ${v.volume} at ${v.point}, ${v.volumeSize} bytes${overlay}, created ${v.createdAt}${v.uris.length ? `, ${v.uris.join(' ')}` : ''}`
}

/** create | list | delete; false when argv names none of them. */
export function isViewAction(action: string | undefined): boolean {
  return action === 'create' || action === 'list' || action === 'delete'
}

export async function runTimeviewAction(argv: string[]): Promise<number> {
  const [action, ...rest] = argv
  const def = action === 'create' ? TIMEVIEW_CREATE : action === 'list' ? TIMEVIEW_LIST : TIMEVIEW_DELETE
  const p = parseCommand(def as typeof TIMEVIEW_CREATE, rest)
  if (p.help) {
    process.stdout.write(helpText(def as typeof TIMEVIEW_CREATE))
    return 0
  }
  const a = p.values
  const client = adminFromFlags(a, def.name)
  try {
    if (action === 'create') {
      const v = await createView(client, { volume: a.volume!, point: pointOf(a), name: a.name!, writable: a.writable === true })
      process.stdout.write(a.json ? `${JSON.stringify(v)}\n` : `tidemark timeview: created ${line(v)}\n`)
    } else if (action === 'list') {
      const views = await listViews(client, a.volume ?? '')
      if (a.json) process.stdout.write(`${JSON.stringify(views)}\n`)
      else process.stdout.write(views.length ? `${views.map(line).join('\n')}\n` : 'no views\n')
    } else {
      const v = await deleteView(client, a.name!)
      process.stdout.write(a.json ? `${JSON.stringify(v)}\n` : `tidemark timeview: deleted ${v.name} (${v.volume} at ${v.point}${v.writable ? ', with its overlay' : ''})\n`)
    }
  } finally {
    client.close()
  }
  return 0
}
