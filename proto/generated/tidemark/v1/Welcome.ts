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
}
