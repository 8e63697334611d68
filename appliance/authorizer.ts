// Who may write which volume.
//
// With mutual TLS an agent is who its certificate says: the subject's CN, or
// its first DNS subjectAltName when there is no CN. The allow-list maps an
// identity to the volumes it may write ("db-data", a prefix pattern "db-*",
// or "*"). With TLS and no allow-list, every certificate the CA signed may
// write every volume; with an allow-list, an identity that is not in it may
// write nothing.
//
// Without TLS there is no authenticated identity: the list is checked against
// the agent id the hello states, which stops mistakes, not attackers. That is
// why the appliance refuses to listen beyond loopback without TLS unless it is
// told --insecure.
import type { PeerCertificate } from 'node:tls'
import { TidemarkError } from '../proto/errors'

export type AllowList = Map<string, string[]>

/** A gRPC call, as far as identity goes. */
export interface Caller {
  getAuthContext(): { sslPeerCertificate?: PeerCertificate }
}

/** A certificate's identity: its subject's CN, else its first DNS subjectAltName, else null. */
export function certificateIdentity(cert: PeerCertificate | undefined): string | null {
  if (!cert) return null
  const cn = cert.subject?.CN
  if (typeof cn === 'string' && cn) return cn
  const san = /DNS:([^,\s]+)/.exec(cert.subjectaltname ?? '')
  return san ? san[1] : null
}

export class Authorizer {
  constructor(
    private readonly allow: AllowList | null,
    readonly tls: boolean
  ) {}

  /** The certificate identity of the caller, or null without TLS. */
  identity(call: Caller): string | null {
    if (!this.tls) return null
    return certificateIdentity(call.getAuthContext()?.sslPeerCertificate)
  }

  mayWrite(who: string | null, volume: string): boolean {
    if (!this.allow) return !this.tls || who !== null
    if (who === null) return false
    const patterns = this.allow.get(who)
    if (!patterns) return false
    return patterns.some((p) => p === '*' || p === volume || (p.endsWith('*') && volume.startsWith(p.slice(0, -1))))
  }
}

/**
 * "IDENTITY=VOL1,VOL2" entries (the --allow flag) or a JSON object
 * {"IDENTITY": ["VOL1", "db-*"]} (the config file) as an allow-list.
 */
export function parseAllowList(entries: string[] | Record<string, unknown>): AllowList {
  const out: AllowList = new Map()
  const add = (who: string, vols: unknown): void => {
    if (!who) throw new TidemarkError('USAGE', 'an allow-list entry has no identity')
    const list = Array.isArray(vols) ? vols : typeof vols === 'string' ? vols.split(',') : null
    if (!list || list.length === 0 || list.some((v) => typeof v !== 'string' || !v.trim())) {
      throw new TidemarkError('USAGE', `allow-list entry for "${who}" must name volumes (NAME, PREFIX*, or *)`)
    }
    out.set(who, [...(out.get(who) ?? []), ...list.map((v: string) => v.trim())])
  }
  if (Array.isArray(entries)) {
    for (const e of entries) {
      const eq = e.indexOf('=')
      if (eq <= 0) throw new TidemarkError('USAGE', `--allow '${e}' must be IDENTITY=VOLUME[,VOLUME...]`)
      add(e.slice(0, eq), e.slice(eq + 1))
    }
  } else {
    for (const [who, vols] of Object.entries(entries)) add(who, vols)
  }
  return out
}
