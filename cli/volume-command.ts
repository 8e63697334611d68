// tidemark volume: what only an appliance's admin does to a volume as a whole.
//
//   accept-generation  an agent announced a new generation (a different disk
//                      under the volume's name) or a new size, and the
//                      appliance refused it rather than let an agent's word
//                      set its history aside: accepting keeps that history,
//                      read-only and restorable, as VOLUME.retired-N, and the
//                      agent's next connection starts the new one.
//   seed               a new volume whose first point is a disk the appliance
//                      reads itself over NBD (Admin.SeedVolume): reverse
//                      protection without a whole copy (plan commit does it).
import type { AcceptGenerationReply__Output } from '../proto/generated/tidemark/v1/AcceptGenerationReply'
import type { AcceptGenerationRequest } from '../proto/generated/tidemark/v1/AcceptGenerationRequest'
import type { SeedVolumeReply__Output } from '../proto/generated/tidemark/v1/SeedVolumeReply'
import type { SeedVolumeRequest } from '../proto/generated/tidemark/v1/SeedVolumeRequest'
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

  tidemark volume seed --appliance HOST:PORT|unix:PATH --volume NAME --generation GEN --source NBD-URI
                       [--size BYTES] [--json] [--tls-cert F --tls-key F --tls-ca F]

seed: a new volume NAME (refused if the appliance holds one by that name)
whose first point, TimeMark "seed", is the disk at NBD-URI as the appliance
reads it (nbd+unix:///EXPORT?socket=PATH or nbd://HOST:PORT/EXPORT: the
appliance's view of the network), under generation GEN. An agent started
with --seeded NAME=GEN continues it, sending only the sectors that differ.
--size refuses a disk of another size. Needs the admin role.
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

export const VOLUME_SEED = command({
  name: 'volume',
  options: {
    ...helpOption,
    ...clientOptions,
    volume: text({ required: '--volume NAME is required' }),
    generation: text({ required: '--generation GEN is required (the generation the agent will continue)' }),
    source: text({ required: '--source NBD-URI is required (the disk the appliance reads)' }),
    size: text({}),
    json: flag({}),
  },
  help: () => VOLUME_HELP,
})

async function runSeed(rest: string[]): Promise<number> {
  const p = parseCommand(VOLUME_SEED, rest)
  if (p.help) {
    process.stdout.write(helpText(VOLUME_SEED))
    return 0
  }
  const a = p.values
  const size = a.size === undefined ? 0 : Number(a.size)
  if (!Number.isSafeInteger(size) || size < 0 || size % 512 !== 0) throw usage('volume', `--size '${a.size}' must be a number of bytes, a multiple of 512`)
  const client = adminFromFlags(a, 'volume')
  let r: SeedVolumeReply__Output
  try {
    // A seed reads the whole disk: no 60-second deadline.
    r = await new Promise<SeedVolumeReply__Output>((resolve, reject) =>
      client.seedVolume({ volume: a.volume!, generation: a.generation!, source: a.source!, size } satisfies SeedVolumeRequest, (err, res) => (err ? reject(err) : resolve(res!)))
    )
  } catch (err) {
    throw clientError('volume seed', err)
  } finally {
    client.close()
  }
  if (a.json) process.stdout.write(`${JSON.stringify(r)}\n`)
  else process.stdout.write(`volume ${r.volume}: seeded at seq ${r.seq} (TimeMark seed), generation ${r.generation}, ${r.size} bytes, ${r.dataBytes} of them data, in ${r.seconds.toFixed(1)} s\n`)
  return 0
}

export async function runVolume(argv: string[]): Promise<number> {
  const [action, ...rest] = argv
  if (!action || action === '--help') {
    process.stdout.write(VOLUME_HELP)
    return action ? 0 : 2
  }
  if (action === 'seed') return runSeed(rest)
  if (action !== 'accept-generation') throw usage('volume', `unknown action '${action}' (accept-generation, seed)`)
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
