// Original file: proto/tidemark/v1/replication.proto

import type { Compression as _tidemark_v1_Compression, Compression__Output as _tidemark_v1_Compression__Output } from '../../tidemark/v1/Compression';
import type { Long } from '@grpc/proto-loader';

/**
 * A run of change records, seqs first_seq..last_seq. The raw payload is the
 * records in the tap's layout (native/src/record.h: a 32-byte little-endian
 * header, then the sector data for WRITE and RESYNC). MicroScan may split a
 * captured write into several records with the same seq (disjoint sectors) or
 * drop it; last_seq still says how far the stream has got.
 */
export interface ChangeBatch {
  'firstSeq'?: (number | string | Long);
  'lastSeq'?: (number | string | Long);
  'recordCount'?: (number);
  'rawLength'?: (number);
  'compression'?: (_tidemark_v1_Compression);
  /**
   * xxh64 (seed 0) of the raw payload, before compression: 8 bytes, little-endian.
   */
  'checksum'?: (Buffer | Uint8Array | string);
  'payload'?: (Buffer | Uint8Array | string);
  /**
   * Bytes the application wrote for these records and sector bytes that
   * really changed (MicroScan accounting, for stats).
   */
  'appBytes'?: (number | string | Long);
  'changedBytes'?: (number | string | Long);
  /**
   * The RPO point this batch carries: every write the agent captured before
   * this wall-clock time (its clock, ms since the epoch) has a seq at or
   * below last_seq, so once the batch is durable nothing captured before it
   * can be lost. 0: unknown (the volume is resyncing or being copied, when
   * seqs do not order the writes still missing).
   */
  'capturedBeforeMs'?: (number | string | Long);
}

/**
 * A run of change records, seqs first_seq..last_seq. The raw payload is the
 * records in the tap's layout (native/src/record.h: a 32-byte little-endian
 * header, then the sector data for WRITE and RESYNC). MicroScan may split a
 * captured write into several records with the same seq (disjoint sectors) or
 * drop it; last_seq still says how far the stream has got.
 */
export interface ChangeBatch__Output {
  'firstSeq': (number);
  'lastSeq': (number);
  'recordCount': (number);
  'rawLength': (number);
  'compression': (_tidemark_v1_Compression__Output);
  /**
   * xxh64 (seed 0) of the raw payload, before compression: 8 bytes, little-endian.
   */
  'checksum': (Buffer);
  'payload': (Buffer);
  /**
   * Bytes the application wrote for these records and sector bytes that
   * really changed (MicroScan accounting, for stats).
   */
  'appBytes': (number);
  'changedBytes': (number);
  /**
   * The RPO point this batch carries: every write the agent captured before
   * this wall-clock time (its clock, ms since the epoch) has a seq at or
   * below last_seq, so once the batch is durable nothing captured before it
   * can be lost. 0: unknown (the volume is resyncing or being copied, when
   * seqs do not order the writes still missing).
   */
  'capturedBeforeMs': (number);
}
