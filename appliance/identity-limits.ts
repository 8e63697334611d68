// Limits per identity: what one caller may make the appliance hold, beyond
// what its roles allow (access-policy.ts). A stolen agent certificate may
// write its volumes; these caps keep it from also filling the appliance:
//
//   streams     replication streams one identity has open at once
//   volumes     distinct volumes one identity has ever created (each
//               volume's meta.json records its creator, so the count
//               survives restarts; a new generation of a name it already
//               created is not a new volume)
//   volumeSize  the size a hello may announce, in bytes
//   retired     retired histories kept per volume (NAME.retired-N): past
//               it an accept-generation (or an admin's hello that would
//               retire the history itself) is refused. History is never
//               deleted to make room; an admin decides what to do.
//
// Every cap is off (unlimited) unless configured: the right numbers depend
// on the fleet, and a cap that an existing installation hits after an
// upgrade would stop protecting a real server. The appliance logs the caps
// in force at start.
//
// A refusal is RESOURCE_EXHAUSTED (proto/status.ts) with one line naming the
// identity, the limit and the value, counted by code with the appliance's
// other rejections (the counters stats shows) and logged once per identity
// and limit: an agent that retries every few seconds does not flood the log.
// Callers with no identity (no TLS and no allow-list) share one account,
// "(unidentified)".
import type { Logger } from 'pino'
import { TidemarkError } from '../proto/errors'
import { describeIdentity } from './access-policy'

export interface IdentityLimitOptions {
  /** concurrent replication streams per identity (0 or undefined: no cap) */
  streams?: number
  /** distinct volumes an identity has created */
  volumes?: number
  /** bytes a hello may announce */
  volumeSize?: number
  /** retired histories kept per volume */
  retired?: number
}

/** The codes refusals carry; each RESOURCE_EXHAUSTED. */
export const LIMIT_CODES = {
  streams: 'STREAM_LIMIT',
  volumes: 'VOLUME_LIMIT',
  volumeSize: 'VOLUME_SIZE_LIMIT',
  retired: 'RETIRED_LIMIT',
} as const

const UNIDENTIFIED = '(unidentified)'

function who(identity: string | null): string {
  return identity === null ? 'an unidentified caller' : describeIdentity(identity)
}

/** A refusal this module logged and counted already: the services neither log nor count it again. */
export function limitError(code: string, message: string): TidemarkError {
  const e = new TidemarkError(code, message)
  Object.assign(e, { logged: true, counted: true })
  return e
}

export function alreadyCounted(err: unknown): boolean {
  return (err as { counted?: boolean } | null)?.counted === true
}

export class IdentityLimits {
  /** Open streams per identity. */
  private readonly open = new Map<string, number>()
  /** Volume names each identity created (from meta.json createdBy at start, then as hellos create them). */
  private readonly created = new Map<string, Set<string>>()
  /** Refusals logged, by "identity limit": each is logged the first time only. */
  private readonly logged = new Set<string>()
  /** Counts a refusal with the appliance's rejections (replication-service.ts countRejection). */
  count: (code: string, volume: string | null) => void = () => {}

  constructor(
    readonly opts: IdentityLimitOptions,
    private readonly log: Logger
  ) {}

  /** The caps in force, as the start log shows them (null: none). */
  describe(): Record<string, number> | null {
    const on = Object.entries(this.opts).filter(([, v]) => typeof v === 'number' && v > 0) as Array<[string, number]>
    return on.length ? Object.fromEntries(on) : null
  }

  /** Records who created the volumes the store holds (meta.json createdBy). */
  noteCreated(identity: string, volume: string): void {
    let s = this.created.get(identity)
    if (!s) this.created.set(identity, (s = new Set()))
    s.add(volume)
  }

  /** Refuses a hello announcing more bytes than --limit-volume-size. */
  checkVolumeSize(identity: string | null, volume: string, size: number): void {
    const cap = this.opts.volumeSize
    if (!cap || size <= cap) return
    this.refuse(identity, volume, 'volumeSize', `${who(identity)}: volume ${volume} of ${size} bytes is over the volume size limit (--limit-volume-size ${cap} bytes)`)
  }

  /**
   * Takes one of the identity's streams, or refuses past --limit-streams.
   * Returns the release, which the stream calls once when it ends.
   */
  acquireStream(identity: string | null, volume: string): () => void {
    const key = identity ?? UNIDENTIFIED
    const n = this.open.get(key) ?? 0
    const cap = this.opts.streams
    if (cap && n >= cap) {
      this.refuse(identity, volume, 'streams', `${who(identity)} has ${n} replication streams open, the limit (--limit-streams ${cap}): a stream for volume ${volume} is refused`)
    }
    this.open.set(key, n + 1)
    let released = false
    return () => {
      if (released) return
      released = true
      const m = (this.open.get(key) ?? 1) - 1
      if (m > 0) this.open.set(key, m)
      else this.open.delete(key)
    }
  }

  /**
   * Called by the store just before it creates `volume` for `identity`:
   * refuses past --limit-volumes, else counts it. Synchronous, so two hellos
   * creating two volumes at once cannot both pass the last free place.
   * Returns what gives the place back if the creation fails.
   */
  beforeCreate(identity: string | null, volume: string): () => void {
    const key = identity ?? UNIDENTIFIED
    const mine = this.created.get(key)
    if (mine?.has(volume)) return () => {}
    const cap = this.opts.volumes
    const n = mine?.size ?? 0
    if (cap && n >= cap) {
      this.refuse(identity, volume, 'volumes', `${who(identity)} has created ${n} volumes, the limit (--limit-volumes ${cap}): volume ${volume} is not created`)
    }
    this.noteCreated(key, volume)
    return () => void this.created.get(key)?.delete(volume)
  }

  /**
   * Called by the store before it retires `volume`'s history beside
   * `kept` others: refuses past --limit-retired, deleting nothing.
   */
  beforeRetire(identity: string | null, volume: string, kept: number): void {
    const cap = this.opts.retired
    if (!cap || kept < cap) return
    this.refuse(
      identity,
      volume,
      'retired',
      `${who(identity)}: volume ${volume} keeps ${kept} retired ${kept === 1 ? 'history' : 'histories'}, the limit (--limit-retired ${cap}): a new generation would retire one more, and nothing is deleted to make room (raise the limit to accept it)`
    )
  }

  private refuse(identity: string | null, volume: string, limit: keyof typeof LIMIT_CODES, message: string): never {
    const code = LIMIT_CODES[limit]
    this.count(code, volume)
    const key = `${identity ?? UNIDENTIFIED} ${limit}`
    if (!this.logged.has(key)) {
      this.logged.add(key)
      this.log.warn({ identity, limit, code }, `${message} (logged once per identity and limit)`)
    }
    throw limitError(code, message)
  }
}
