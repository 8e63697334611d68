// Who may reach an NBD listener the agent or a TimeView opens, and what it
// admits. Whoever connects to the agent's NBD export reads and writes a
// production disk (and the writes replicate as legitimate); a TimeView's
// serves any point of the history. So a TCP listener beyond loopback is
// refused unless clients must start TLS with a certificate our CA signed
// (--nbd-tls-*), or the user says --insecure-nbd (a lab), in which case the
// daemon says at start that anyone on the network can use the disk.
//
// Loopback is 127.0.0.0/8 and ::1 only, by address: a name is not resolved
// here (it could resolve elsewhere tomorrow), and 0.0.0.0 or :: bind every
// address, so they are not loopback.
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { z } from 'zod'
import { DEFAULT_NBD_HANDSHAKE_TIMEOUT_MS, DEFAULT_NBD_MAX_CONNECTIONS, type NbdListenerOptions } from '../native/nbd-listener'
import { usage, type Endpoint } from './args'
import { check, flag, text } from './definition'

/** The options both commands add to their definition (config keys as the agent's). */
export const nbdExposureOptions = {
  'nbd-tls-cert': text({
    label: '--nbd-tls-cert F',
    help: "the NBD listener's certificate (PEM); with --nbd-tls-key and\n--nbd-tls-ca every NBD client must STARTTLS with a certificate that CA\nsigned (qemu: tls-creds; nbdinfo: nbds://)",
    key: 'nbdTlsCert',
  }),
  'nbd-tls-key': text({ label: '--nbd-tls-key F', help: "the NBD listener's private key (PEM)", key: 'nbdTlsKey' }),
  'nbd-tls-ca': text({ label: '--nbd-tls-ca F', help: "the CA that signs NBD clients' certificates (PEM)", key: 'nbdTlsCa' }),
  'insecure-nbd': flag({
    label: '--insecure-nbd',
    help: 'allow --nbd tcp: beyond loopback without TLS (a lab: anyone on the\nnetwork can then read and write the disk)',
    key: 'insecureNbd',
    config: z.unknown().transform((v) => (v === true ? true : undefined)),
  }),
  ...nbdLimitOptions(DEFAULT_NBD_MAX_CONNECTIONS),
}

/** The connection cap and the handshake deadline of an NBD listener (the appliance's too, with its own default cap). */
export function nbdLimitOptions(defaultMax: number) {
  return {
    'nbd-max-connections': text({
      label: '--nbd-max-connections N',
      help: `NBD connections open at once (default ${defaultMax}); more are closed at once`,
      key: 'nbdMaxConnections',
      default: String(defaultMax),
      value: check(z.string(), (s) => /^\d+$/.test(s) && Number(s) >= 1 && Number(s) <= 4096, (s) => `--nbd-max-connections '${s}' must be a whole number from 1 to 4096`).transform(Number),
    }),
    'nbd-handshake-timeout': text({
      label: '--nbd-handshake-timeout S',
      help: `close an NBD client that keeps the handshake waiting for S seconds\n(default ${DEFAULT_NBD_HANDSHAKE_TIMEOUT_MS / 1000}; time the server spends on an option does not count)`,
      key: 'nbdHandshakeTimeout',
      default: String(DEFAULT_NBD_HANDSHAKE_TIMEOUT_MS / 1000),
      value: check(z.string(), (s) => /^\d+(\.\d+)?$/.test(s) && Number(s) >= 0.1 && Number(s) <= 3600, (s) => `--nbd-handshake-timeout '${s}' must be a number of seconds from 0.1 to 3600`)
        .transform((s) => Math.round(Number(s) * 1000)),
    }),
  }
}

type ExposureValues = {
  'nbd-tls-cert'?: string
  'nbd-tls-key'?: string
  'nbd-tls-ca'?: string
  'insecure-nbd'?: true
  'nbd-max-connections'?: number
  'nbd-handshake-timeout'?: number
}

/** Whether `host` (an address as given to --nbd tcp:) is a loopback address. */
export function isLoopback(host: string): boolean {
  if (net.isIPv4(host)) return host.split('.')[0] === '127'
  if (net.isIPv6(host)) {
    const h = host.toLowerCase()
    if (h === '::1' || /^0{0,4}(:0{0,4}){6}:0{0,3}1$/.test(h)) return true
    // an IPv4-mapped loopback (::ffff:127.x.y.z)
    const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(h)
    return !!m && isLoopback(m[1])
  }
  return false
}

/**
 * The listener options for `ep`, or a usage error: TLS files all or none
 * (and readable), non-loopback TCP only with TLS or --insecure-nbd.
 * `warning` is the line to print at start when the listener is exposed.
 */
export function nbdExposure(v: ExposureValues, ep: Endpoint, command: string): { listener: NbdListenerOptions; warning?: string } {
  const files = [v['nbd-tls-cert'], v['nbd-tls-key'], v['nbd-tls-ca']]
  const given = files.filter((f) => f !== undefined).length
  if (given !== 0 && given !== 3) throw usage(command, '--nbd-tls-cert, --nbd-tls-key and --nbd-tls-ca go together: give all three or none')
  for (const [f, name] of [[v['nbd-tls-cert'], '--nbd-tls-cert'], [v['nbd-tls-key'], '--nbd-tls-key'], [v['nbd-tls-ca'], '--nbd-tls-ca']] as const) {
    if (f !== undefined && !fs.existsSync(f)) throw usage(command, `${name} ${f} does not exist`)
  }
  const tls = given === 3 ? { cert: path.resolve(v['nbd-tls-cert']!), key: path.resolve(v['nbd-tls-key']!), ca: path.resolve(v['nbd-tls-ca']!) } : undefined
  const listener: NbdListenerOptions = {
    tls,
    maxConnections: v['nbd-max-connections'] ?? DEFAULT_NBD_MAX_CONNECTIONS,
    handshakeTimeoutMs: v['nbd-handshake-timeout'] ?? DEFAULT_NBD_HANDSHAKE_TIMEOUT_MS,
  }
  if (!('tcp' in ep) || isLoopback(ep.tcp.host) || tls) return { listener }
  const where = `tcp:${ep.tcp.host.includes(':') ? `[${ep.tcp.host}]` : ep.tcp.host}:${ep.tcp.port}`
  if (!v['insecure-nbd']) {
    throw usage(
      command,
      `--nbd ${where} is not a loopback address and the NBD listener has no TLS: anyone who can reach it could read and write the disk; give --nbd-tls-cert/--nbd-tls-key/--nbd-tls-ca, or --insecure-nbd for a lab`
    )
  }
  return {
    listener,
    warning: `tidemark ${command}: --insecure-nbd: NBD on ${where} without TLS: anyone on the network who can reach it can read and write the disk`,
  }
}
