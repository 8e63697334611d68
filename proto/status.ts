// The one map from a TidemarkError code to the gRPC status it travels as,
// for every service (Replication, Admin, the agent's Control socket) and for
// both ends: the server turns an error into a status and details
// (toStatus), the client turns them back into a TidemarkError with the same
// code (fromStatus).
//
// Details carry the code in front of the message ("UNKNOWN_VOLUME: no volume
// named ...") on the appliance's services, so a client learns the exact code
// and not only the coarser status. The Control socket sends the message
// alone (its clients print it as is); there the client knows only the status.
import * as grpc from '@grpc/grpc-js'
import { TidemarkError } from './errors'

/** Codes not listed here are INTERNAL. */
const STATUS_OF: Readonly<Record<string, grpc.status>> = {
  // Input a caller must fix.
  BAD_POINT: grpc.status.INVALID_ARGUMENT,
  BATCH_CORRUPT: grpc.status.INVALID_ARGUMENT,
  PROTOCOL: grpc.status.INVALID_ARGUMENT,
  READ_TOO_LARGE: grpc.status.INVALID_ARGUMENT,
  RECORD_MALFORMED: grpc.status.INVALID_ARGUMENT,
  TIMEMARK_BAD_REQUEST: grpc.status.INVALID_ARGUMENT,
  VIEW_BAD_NAME: grpc.status.INVALID_ARGUMENT,
  AUDIT_BAD_ENTRY: grpc.status.INVALID_ARGUMENT,
  // Names that do not exist.
  UNKNOWN_TIMEMARK: grpc.status.NOT_FOUND,
  UNKNOWN_VOLUME: grpc.status.NOT_FOUND,
  UNKNOWN_VIEW: grpc.status.NOT_FOUND,
  VIEW_EXISTS: grpc.status.ALREADY_EXISTS,
  // Admin.SeedVolume (appliance/volume-seed.ts): only a new volume, from a source it can read whole.
  VOLUME_EXISTS: grpc.status.ALREADY_EXISTS,
  BAD_SEED_SOURCE: grpc.status.INVALID_ARGUMENT,
  BAD_VOLUME_NAME: grpc.status.INVALID_ARGUMENT,
  BAD_GENERATION: grpc.status.INVALID_ARGUMENT,
  BAD_VOLUME_SIZE: grpc.status.INVALID_ARGUMENT,
  SEED_SOURCE: grpc.status.FAILED_PRECONDITION,
  SEED_SIZE: grpc.status.FAILED_PRECONDITION,
  TIMEMARK_UNKNOWN_GROUP: grpc.status.NOT_FOUND,
  TIMEMARK_UNKNOWN_VOLUME: grpc.status.NOT_FOUND,
  // Positions outside what exists.
  POINT_BEFORE_HISTORY: grpc.status.OUT_OF_RANGE,
  POINT_EXPIRED: grpc.status.OUT_OF_RANGE,
  POINT_IN_FUTURE: grpc.status.OUT_OF_RANGE,
  READ_OUT_OF_RANGE: grpc.status.OUT_OF_RANGE,
  RECORD_OUT_OF_RANGE: grpc.status.OUT_OF_RANGE,
  REGION_OUT_OF_RANGE: grpc.status.OUT_OF_RANGE,
  SEQ_NOT_DURABLE: grpc.status.OUT_OF_RANGE,
  // Not now: the state of the volume or the agent does not allow it.
  AMBIGUOUS_TIMEMARK: grpc.status.FAILED_PRECONDITION,
  COMPACTION_RUNNING: grpc.status.FAILED_PRECONDITION,
  INITIAL_COPY_INCOMPLETE: grpc.status.FAILED_PRECONDITION,
  POINT_INEXACT: grpc.status.FAILED_PRECONDITION,
  SEQ_OUT_OF_ORDER: grpc.status.FAILED_PRECONDITION,
  TIMEMARK_NO_APPLIANCE: grpc.status.FAILED_PRECONDITION,
  TIMEMARK_REFUSED: grpc.status.FAILED_PRECONDITION,
  VIEWS_NOT_SERVED: grpc.status.FAILED_PRECONDITION,
  // A hello's new generation or size waits for an admin (appliance/store.ts); a retired history takes no writes.
  GENERATION_CHANGED: grpc.status.FAILED_PRECONDITION,
  NO_PENDING_GENERATION: grpc.status.FAILED_PRECONDITION,
  VOLUME_RETIRED: grpc.status.FAILED_PRECONDITION,
  VIEWS_OF_VOLUME: grpc.status.FAILED_PRECONDITION,
  // Gave up part way.
  TIMEMARK_LOST: grpc.status.ABORTED,
  TIMEMARK_QUIESCE_FAILED: grpc.status.ABORTED,
  TIMEMARK_NOT_CONFIRMED: grpc.status.DEADLINE_EXCEEDED,
  // Bytes that are not what they claim to be.
  BATCH_CHECKSUM: grpc.status.DATA_LOSS,
  JOURNAL_CORRUPT: grpc.status.DATA_LOSS,
  BATCH_TOO_LARGE: grpc.status.RESOURCE_EXHAUSTED,
  // A stream asked for more than its share (replication-service.ts): a misbehaving agent, refused.
  TOO_MANY_REQUESTS: grpc.status.RESOURCE_EXHAUSTED,
  // An identity over one of its caps (appliance/identity-limits.ts): configuration, not a fault; retrying does not help.
  STREAM_LIMIT: grpc.status.RESOURCE_EXHAUSTED,
  VOLUME_LIMIT: grpc.status.RESOURCE_EXHAUSTED,
  VOLUME_SIZE_LIMIT: grpc.status.RESOURCE_EXHAUSTED,
  RETIRED_LIMIT: grpc.status.RESOURCE_EXHAUSTED,
  // A volume's faults at the appliance (batch-writer.ts): the agent backs off and retries.
  NO_SPACE: grpc.status.RESOURCE_EXHAUSTED,
  JOURNAL_IO: grpc.status.UNAVAILABLE,
  // The data channel beside a Replicate stream broke (appliance/data-channel.ts): the agent reconnects.
  DATA_CHANNEL: grpc.status.UNAVAILABLE,
  // The appliance keeps no audit trail (appliance/audit-trail.ts).
  AUDIT_UNAVAILABLE: grpc.status.FAILED_PRECONDITION,
  JOURNAL_READ_ONLY: grpc.status.FAILED_PRECONDITION,
  PERMISSION_DENIED: grpc.status.PERMISSION_DENIED,
}

/** The gRPC status an error code travels as. */
export function statusOf(code: string | undefined): grpc.status {
  return (code !== undefined && Object.hasOwn(STATUS_OF, code) ? STATUS_OF[code] : undefined) ?? grpc.status.INTERNAL
}

export interface ToStatusOptions {
  /** Put "CODE: " in front of the details (the appliance's services do; the Control socket does not). */
  codeInDetails?: boolean
}

/** An error as the status a handler reports. Errors without a code are INTERNAL. */
export function toStatus(err: unknown, opts: ToStatusOptions = {}): { code: grpc.status; details: string } {
  const e = err as { code?: unknown; message?: unknown } | null
  const code = typeof e?.code === 'string' ? e.code : undefined
  const message = String(e?.message ?? err)
  const details = opts.codeInDetails === false || code === undefined ? message : `${code}: ${message}`
  return { code: statusOf(code), details }
}

const CODE_IN_DETAILS = /^([A-Z][A-Z0-9_]*): /

/**
 * A failed call as a TidemarkError: the code the server sent in the details
 * when the status agrees with it, else the status's name ('UNAVAILABLE', ...).
 * The message is `prefix` and the details as the server wrote them.
 */
export function fromStatus(err: unknown, prefix = ''): TidemarkError {
  const e = err as Partial<grpc.ServiceError>
  const detail = e.details || e.message || String(err)
  if (typeof e.code !== 'number') return new TidemarkError('ERROR', `${prefix}${detail}`)
  const sent = CODE_IN_DETAILS.exec(e.details ?? '')?.[1]
  const code = sent !== undefined && statusOf(sent) === e.code ? sent : (grpc.status[e.code] ?? 'ERROR')
  return new TidemarkError(code, `${prefix}${detail}`)
}
