// tidemark volume: what only an appliance's admin does to a volume as a whole.
//
//   accept-generation  an agent announced a new generation (a different disk
//                      under the volume's name) or a new size, and the
//                      appliance refused it rather than let an agent's word
//                      set its history aside: accepting keeps that history,
//                      read-only and restorable, as VOLUME.retired-N, and the
//                      agent's next connection starts the new one.
import type { AcceptGenerationReply__Output } from '../proto/generated/tidemark/v1/AcceptGenerationReply'
import type { AcceptGenerationRequest } from '../proto/generated/tidemark/v1/AcceptGenerationRequest'
import { clientError, unary } from '../client/admin-client'
import { usage } from './args'
import { adminFromFlags, clientOptions, helpOption } from './common-options'
import { command, flag, helpText, parseCommand, text } from './definition'

export const VOLUME_HELP = `Usage:
  tidemark volume accept-generation --appliance HOST:PORT|unix:PATH --volume NAME [--generation GEN] [--json]
                                    [--tls-cert F --tls-key F --tls-ca F]

accept-generation: the volume's agent announced a new generation or size and
was refused (the appliance never sets history aside on an agent's word). The
history so far is kept, read-only and restorable, as volume NAME.retired-N;
the agent's next connection starts the new history under NAME. --generation
makes sure the one accepted is the one you expect. Needs the admin role.
`

export const VOLUME_ACCEPT = command({
  name: 'volume',
  options: {
    ...helpOption,
    ...clientOptions,
    volume: text({ required: '--volume NAME is required' }),
    generation: text({}),
    json: flag({}),
  },
  help: () => VOLUME_HELP,
})

export async function runVolume(argv: string[]): Promise<number> {
  const [action, ...rest] = argv
  if (!action || action === '--help') {
    process.stdout.write(VOLUME_HELP)
    return action ? 0 : 2
  }
  if (action !== 'accept-generation') throw usage('volume', `unknown action '${action}' (accept-generation)`)
  const p = parseCommand(VOLUME_ACCEPT, rest)
  if (p.help) {
    process.stdout.write(helpText(VOLUME_ACCEPT))
    return 0
  }
  const a = p.values
  const client = adminFromFlags(a, 'volume')
  let r: AcceptGenerationReply__Output
  try {
    r = await unary<AcceptGenerationRequest, AcceptGenerationReply__Output>(client.acceptGeneration.bind(client), {
      volume: a.volume!,
      generation: a.generation ?? '',
    })
  } catch (err) {
    throw clientError('volume accept-generation', err)
  } finally {
    client.close()
  }
  if (a.json) {
    process.stdout.write(`${JSON.stringify(r)}\n`)
    return 0
  }
  process.stdout.write(
    `volume ${r.volume}: generation ${r.generation} (size ${r.size}) accepted; the history of generation ${r.oldGeneration} (size ${r.oldSize}) is kept read-only as volume ${r.retiredAs}\n`
  )
  return 0
}
