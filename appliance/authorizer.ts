// Who is calling: the identity every appliance service checks against the
// access policy (access-policy.ts).
//
// With mutual TLS a caller is who its certificate says: the subject's CN, or
// its first DNS subjectAltName when there is no CN. On the appliance's unix
// listener (unix-listener.ts) a caller is "uid:N", the uid the kernel reports
// for the connecting process. A certificate naming "uid:..." is no identity,
// so a certificate can never pass for a local user.
//
// Without an allow-list there are no roles: every caller the transport lets
// in may do everything (a single-user host or the demo on loopback, which the
// appliance says at start; with TLS, any certificate the CA signed that names
// an identity). With an allow-list every caller must be identified (the
// appliance refuses at start to listen on plain TCP with one), and may do what
// its grants allow.
import type { PeerCertificate } from 'node:tls'
import { badName } from '../proto/bounded-strings'
import { TidemarkError } from '../proto/errors'
import type { AccessPolicy, Operation } from './access-policy'

/** A gRPC call, as far as identity goes. */
export interface Caller {
  getAuthContext(): { sslPeerCertificate?: PeerCertificate }
  getPeer(): string
}

/** The unix listener's peers: the uid behind a call's peer string, if the call came that way. */
export interface UnixPeers {
  uidOf(peer: string): number | undefined
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
  // "uid:N" is the unix listener's name for a local user: no certificate may claim it.
  return id !== null && badName(id, 'identity') === null && !id.startsWith('uid:') ? id : null
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
  /** The unix listener's peers, once it listens. */
  unix: UnixPeers | null = null

  constructor(
    /** null: no allow-list, no roles (see the top of this file) */
    readonly policy: AccessPolicy | null,
    readonly tls: boolean
  ) {}

  /** "uid:N" on the unix listener, the certificate identity over TLS, else null. */
  identity(call: Caller): string | null {
    const uid = this.unix?.uidOf(call.getPeer())
    if (uid !== undefined) return `uid:${uid}`
    if (!this.tls) return null
    return certificateIdentity(call.getAuthContext()?.sslPeerCertificate)
  }

  /** Did the call come through the unix listener? */
  viaUnix(call: Caller): boolean {
    return this.unix?.uidOf(call.getPeer()) !== undefined
  }

  /** Refuses the call unless its caller may do `op` on `volume` (null: names none); returns the caller's identity. */
  require(call: Caller, op: Operation, volume: string | null): string | null {
    const who = this.identity(call)
    this.check(who, op, volume, this.tls && !this.viaUnix(call))
    return who
  }

  /**
   * The same for an identity already known (NBD's, from the native server).
   * `certificateExpected`: the caller came over TLS, so it must name an identity even without roles.
   */
  check(who: string | null, op: Operation, volume: string | null, certificateExpected: boolean): void {
    const anonymous = certificateExpected
      ? 'the client certificate names no identity (a subject CN or a DNS subjectAltName entry)'
      : 'the caller is not identified (connect with a certificate over TLS, or through the unix listener)'
    if (!this.policy) {
      if (certificateExpected && who === null) throw new TidemarkError('PERMISSION_DENIED', `${op} refused: ${anonymous}`)
      return
    }
    this.policy.check(who, op, volume, anonymous)
  }

  /**
   * May the caller see appliance-wide counts, which include every volume's
   * and those of no volume? Without roles everyone may; with them an admin
   * of every volume (admin:*).
   */
  seesEverything(call: Caller): boolean {
    if (!this.policy) return true
    const who = this.identity(call)
    return who !== null && this.policy.allows(who, 'admin', '*')
  }

  /** Of `names`, the volumes the caller may see through `op`'s role (every one without roles). */
  visible(call: Caller, op: Operation, names: string[]): string[] {
    return this.visibleTo(this.identity(call), op, names)
  }

  visibleTo(who: string | null, op: Operation, names: string[]): string[] {
    return this.policy ? this.policy.visible(who, op, names) : names
  }
}
