// What one of our NBD listeners admits (native/src/nbd_server.h,
// NbdServerOptions), as the addon's config keys. The tap's, a TimeView's and
// the appliance's servers take the same keys (addon_util.h NbdServerOptionsFrom).

export interface NbdListenerOptions {
  /** clients must STARTTLS with a certificate `ca` signed (NBD's forced TLS, as qemu and nbdkit speak it) */
  tls?: { cert: string; key: string; ca: string }
  /** connections open at once; the next one is closed at once (0: no cap) */
  maxConnections?: number
  /** from accept to the export chosen; a client slower than this is closed (0: no limit) */
  handshakeTimeoutMs?: number
}

export const DEFAULT_NBD_MAX_CONNECTIONS = 16
export const DEFAULT_NBD_HANDSHAKE_TIMEOUT_MS = 10_000

/** The keys NativeTap, NativeView and ApplianceNbd read. */
export function nbdListenerConfig(o: NbdListenerOptions | undefined): Record<string, unknown> {
  if (!o) return {}
  return {
    ...(o.tls ? { tlsCert: o.tls.cert, tlsKey: o.tls.key, tlsCa: o.tls.ca } : {}),
    ...(o.maxConnections !== undefined ? { maxConnections: o.maxConnections } : {}),
    ...(o.handshakeTimeoutMs !== undefined ? { handshakeTimeoutMs: o.handshakeTimeoutMs } : {}),
  }
}
