// Who may do what to which volume: the appliance's one access policy.
//
// The allow-list grants each identity roles over volume patterns (NAME,
// PREFIX* or *):
//   write  an agent: replicate the volumes it matches, nothing else
//   read   restore, reads, fingerprints, TimeViews and NBD exports, stats,
//          journal listings and TimeMarks of the volumes it matches
//   admin  everything, on the volumes it matches: the above, pins,
//          compaction, journal verify, accepting a new generation
// Roles do not nest except under admin: a write grant reads nothing (an
// agent's stolen certificate restores no disk), a read grant writes nothing
// (an operator's restore certificate injects no batch).
//
// Every RPC checks exactly one role (OPERATION_ROLES); a call that names no
// volume (stats or journal of every volume, listing views) sees only the
// volumes the caller holds that role on (visible()). Each refusal is counted,
// and logged once per (identity, operation) so a misconfigured agent that
// retries every second does not flood the log.
//
// Identities are certificate identities (authorizer.ts certificateIdentity)
// or "uid:N" for a caller on the appliance's unix listener (unix-listener.ts);
// a certificate can never claim a "uid:" identity (authorizer.ts refuses it).
import type { Logger } from 'pino'
import { escapeControl } from '../proto/bounded-strings'
import { TidemarkError } from '../proto/errors'

export type Role = 'write' | 'read' | 'admin'
export const ROLES: readonly Role[] = ['write', 'read', 'admin']

export interface Grant {
  role: Role
  /** NAME, PREFIX* or * */
  pattern: string
}

/** identity -> its grants */
export type AllowList = Map<string, Grant[]>

/**
 * Every operation of every appliance service, and the one role it needs.
 * Journal is split by action: listing segments and showing records read,
 * verify (a full re-read of the journal, heavy) is admin's.
 */
export const OPERATION_ROLES = {
  // tidemark.v1.Replication
  Replicate: 'write',
  // tidemark.v1.Admin
  Restore: 'read',
  Stats: 'read',
  Journal: 'read',
  JournalVerify: 'admin',
  Resolve: 'read',
  Read: 'read',
  ListTimeMarks: 'read',
  Fingerprints: 'read',
  PinTimeMark: 'admin',
  Compact: 'admin',
  ServerInfo: 'read',
  CreateView: 'read',
  ListViews: 'read',
  DeleteView: 'read',
  AcceptGeneration: 'admin',
  // a new volume from a disk the appliance reads (volume-seed.ts)
  SeedVolume: 'admin',
  // the audit trail of recovery-plan actions (audit-trail.ts)
  RecordAudit: 'admin',
  ListAudit: 'read',
  // the appliance's NBD server (nbd-exports.ts): opening and listing exports
  NbdExport: 'read',
} as const satisfies Record<string, Role>

export type Operation = keyof typeof OPERATION_ROLES

/** Does the volume pattern (NAME, PREFIX* or *) match the volume? */
export function matches(pattern: string, volume: string): boolean {
  return pattern === '*' || pattern === volume || (pattern.endsWith('*') && volume.startsWith(pattern.slice(0, -1)))
}

const PATTERN_RE = /^(\*|[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}\*?)$/
const UID_RE = /^uid:(0|[1-9]\d{0,9})$/

/** "ROLE:PATTERN", or a bare PATTERN (the older form, meaning write:PATTERN). */
function parseGrant(who: string, item: string): Grant {
  const s = item.trim()
  const colon = s.indexOf(':')
  const role = colon < 0 ? 'write' : s.slice(0, colon)
  const pattern = colon < 0 ? s : s.slice(colon + 1)
  if (!ROLES.includes(role as Role)) {
    throw new TidemarkError('USAGE', `allow-list entry for "${escapeControl(who)}": unknown role "${escapeControl(role)}" (use write, read or admin)`)
  }
  if (!PATTERN_RE.test(pattern)) {
    throw new TidemarkError('USAGE', `allow-list entry for "${escapeControl(who)}": "${escapeControl(pattern)}" is not a volume pattern (NAME, PREFIX* or *)`)
  }
  return { role: role as Role, pattern }
}

/**
 * "IDENTITY=ROLE:PATTERN[,ROLE:PATTERN...]" entries (the --allow flag) or a
 * JSON object {"IDENTITY": ["read:*", "write:db-*"]} (the config file) as an
 * allow-list. A bare PATTERN is the older IDENTITY=VOLUME form: write.
 * "uid:N" names the local user N on the unix listener.
 */
export function parseAllowList(entries: string[] | Record<string, unknown>): AllowList {
  const out: AllowList = new Map()
  const add = (who: string, grants: unknown): void => {
    if (!who) throw new TidemarkError('USAGE', 'an allow-list entry has no identity')
    if (who.startsWith('uid:') && !UID_RE.test(who)) {
      throw new TidemarkError('USAGE', `allow-list identity "${escapeControl(who)}": a local user is uid:N (a number)`)
    }
    const list = Array.isArray(grants) ? grants : typeof grants === 'string' ? grants.split(',') : null
    if (!list || list.length === 0 || list.some((v) => typeof v !== 'string' || !v.trim())) {
      throw new TidemarkError('USAGE', `allow-list entry for "${escapeControl(who)}" must grant ROLE:PATTERN (write, read or admin on NAME, PREFIX* or *)`)
    }
    out.set(who, [...(out.get(who) ?? []), ...list.map((g: string) => parseGrant(who, g))])
  }
  if (Array.isArray(entries)) {
    for (const e of entries) {
      const eq = e.indexOf('=')
      if (eq <= 0) throw new TidemarkError('USAGE', `--allow '${escapeControl(e)}' must be IDENTITY=ROLE:PATTERN[,ROLE:PATTERN...] (or IDENTITY=VOLUME[,VOLUME...])`)
      add(e.slice(0, eq), e.slice(eq + 1))
    }
  } else {
    for (const [who, grants] of Object.entries(entries)) add(who, grants)
  }
  return out
}

/** The allow-list as the start log shows it: {"ops": ["read:*"]}. */
export function describeAllowList(allow: AllowList): Record<string, string[]> {
  return Object.fromEntries([...allow].map(([who, gs]) => [who, gs.map((g) => `${g.role}:${g.pattern}`)]))
}

const VERB: Record<Role, string> = { write: 'write', read: 'read', admin: 'administer' }

/** 'certificate identity "db01"' or 'local user uid:1000', as refusals name a caller. */
export function describeIdentity(identity: string): string {
  return UID_RE.test(identity) ? `local user ${identity}` : `certificate identity "${escapeControl(identity)}"`
}

export class AccessPolicy {
  /** Refusals by "identity operation". */
  readonly refusals = new Map<string, number>()

  constructor(
    readonly allow: AllowList,
    private readonly log: Logger
  ) {}

  /** May `identity` act as `role` on `volume`? admin may everything a role allows. */
  allows(identity: string, role: Role, volume: string): boolean {
    return (this.allow.get(identity) ?? []).some((g) => (g.role === role || g.role === 'admin') && matches(g.pattern, volume))
  }

  /** Does `identity` hold `role` (or admin) on any volume at all? */
  holds(identity: string, role: Role): boolean {
    return (this.allow.get(identity) ?? []).some((g) => g.role === role || g.role === 'admin')
  }

  /**
   * Throws PERMISSION_DENIED unless `identity` holds the operation's role on
   * `volume` (null: the call names no volume, and any grant of the role will do;
   * what it then shows is filtered by visible()).
   */
  check(identity: string | null, op: Operation, volume: string | null, anonymous = 'the caller has no identity'): void {
    const role = OPERATION_ROLES[op]
    if (identity !== null && (volume === null ? this.holds(identity, role) : this.allows(identity, role, volume))) return
    const what = volume === null ? 'any volume' : `volume ${volume}`
    const message =
      identity === null
        ? `${op} refused: ${anonymous} (it needs role ${role} on ${what})`
        : `${describeIdentity(identity)} may not ${VERB[role]} ${what} (${op} needs role ${role})`
    throw this.refuse(identity ?? '(none)', op, message)
  }

  /** The volumes (of `names`) `identity` may see through the operation's role. */
  visible(identity: string | null, op: Operation, names: string[]): string[] {
    if (identity === null) return []
    const role = OPERATION_ROLES[op]
    return names.filter((n) => this.allows(identity, role, n))
  }

  /** Counts the refusal; logs it the first time for this (identity, operation). */
  refuse(identity: string, op: Operation, message: string): TidemarkError {
    const key = `${identity} ${op}`
    const n = (this.refusals.get(key) ?? 0) + 1
    this.refusals.set(key, n)
    if (n === 1) this.log.warn({ identity, operation: op, code: 'PERMISSION_DENIED' }, `${message} (logged once per identity and operation)`)
    return refusedError(message)
  }
}

/** A PERMISSION_DENIED the policy logged already: the RPC wrappers do not log it again. */
export function refusedError(message: string): TidemarkError {
  const e = new TidemarkError('PERMISSION_DENIED', message)
  ;(e as TidemarkError & { logged?: boolean }).logged = true
  return e
}

export function alreadyLogged(err: unknown): boolean {
  return (err as { logged?: boolean } | null)?.logged === true
}
