// Original file: proto/tidemark/v1/replication.proto

import type { Long } from '@grpc/proto-loader';

export interface Welcome {
  /**
   * Every record at or below this seq is durable at the appliance.
   */
  'durableSeq'?: (number | string | Long);
  /**
   * The generation the appliance holds for the volume after this hello.
   */
  'generation'?: (string);
  /**
   * The appliance does not hold a complete copy of this generation: copy the
   * whole volume (skipping sectors equal to the replica's, which are zero for
   * a new volume).
   */
  'fullSync'?: (boolean);
  'applianceId'?: (string);
  /**
   * Largest ChangeBatch payload (raw bytes) the appliance accepts.
   */
  'maxBatchBytes'?: (number);
  /**
   * The appliance's data channel (proto/data-frame.ts): a TCP port on the
   * host the agent reached it at (TLS with the same certificates when this
   * stream uses TLS), 0 when it has none. The agent may send everything after
   * the Welcome there instead of on this stream: it opens a connection, sends
   * a DataHello with data_token first, and from then on every batch,
   * fingerprint request and progress report goes over that connection, in
   * order; Welcome, acks and fingerprints still come back on this stream.
   */
  'dataPort'?: (number);
  /**
   * Names this stream on the data channel: single use, valid while the stream lives.
   */
  'dataToken'?: (Buffer | Uint8Array | string);
}

export interface Welcome__Output {
  /**
   * Every record at or below this seq is durable at the appliance.
   */
  'durableSeq': (number);
  /**
   * The generation the appliance holds for the volume after this hello.
   */
  'generation': (string);
  /**
   * The appliance does not hold a complete copy of this generation: copy the
   * whole volume (skipping sectors equal to the replica's, which are zero for
   * a new volume).
   */
  'fullSync': (boolean);
  'applianceId': (string);
  /**
   * Largest ChangeBatch payload (raw bytes) the appliance accepts.
   */
  'maxBatchBytes': (number);
  /**
   * The appliance's data channel (proto/data-frame.ts): a TCP port on the
   * host the agent reached it at (TLS with the same certificates when this
   * stream uses TLS), 0 when it has none. The agent may send everything after
   * the Welcome there instead of on this stream: it opens a connection, sends
   * a DataHello with data_token first, and from then on every batch,
   * fingerprint request and progress report goes over that connection, in
   * order; Welcome, acks and fingerprints still come back on this stream.
   */
  'dataPort': (number);
  /**
   * Names this stream on the data channel: single use, valid while the stream lives.
   */
  'dataToken': (Buffer);
}
