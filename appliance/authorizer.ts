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
import { badName } from '../proto/bounded-strings'
import { TidemarkError } from '../proto/errors'

export type AllowList = Map<string, string[]>

/** A gRPC call, as far as identity goes. */
export interface Caller {
  getAuthContext(): { sslPeerCertificate?: PeerCertificate }
}

/**
 * A certificate's identity: its subject's (first) CN, else its first DNS
 * subjectAltName entry, else null. Only a whole entry of type DNS counts: a
 * URI, an email or a quoted value that merely contains "DNS:" (a URI SAN
 * spiffe://x/DNS:admin) names nobody. The native NBD server reads the same
 * two fields (native/src/nbd_tls.cc IdentityOf). An identity over 128 bytes
 * or with control characters is none.
 */
export function certificateIdentity(cert: PeerCertificate | undefined): string | null {
  if (!cert) return null
  const cns = cert.subject?.CN
  const cn = Array.isArray(cns) ? cns[0] : cns
  let id: string | null = null
  if (typeof cn === 'string' && cn) id = cn
  else id = subjectAltNames(cert.subjectaltname ?? '').find((e) => e.type === 'DNS' && e.value !== '')?.value ?? null
  return id !== null && badName(id, 'identity') === null ? id : null
}

/**
 * Node's subjectaltname string as its entries: "DNS:a, URI:b, IP Address:c",
 * entries joined by ", "; a value holding a comma, a quote or other special
 * characters is a JSON string ("URI:\"x, DNS:y\"" is one URI). Parsed from
 * the start of each entry, never searched, so text inside one entry cannot
 * pose as another. An entry that does not parse ends the list.
 */
export function subjectAltNames(s: string): Array<{ type: string; value: string }> {
  const out: Array<{ type: string; value: string }> = []
  let at = 0
  while (at < s.length) {
    const colon = s.indexOf(':', at)
    if (colon < 0) break
    const type = s.slice(at, colon)
    let value: string
    let end: number
    if (s[colon + 1] === '"') {
      const m = /^"(?:[^"\\]|\\.)*"/.exec(s.slice(colon + 1))
      if (!m) break
      try {
        value = JSON.parse(m[0]) as string
      } catch {
        break
      }
      end = colon + 1 + m[0].length
    } else {
      const sep = s.indexOf(', ', colon + 1)
      end = sep < 0 ? s.length : sep
      value = s.slice(colon + 1, end)
    }
    out.push({ type, value })
    if (end >= s.length) break
    if (!s.startsWith(', ', end)) break
    at = end + 2
  }
  return out
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
