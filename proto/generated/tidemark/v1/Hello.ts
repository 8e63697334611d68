// Original file: proto/tidemark/v1/replication.proto

import type { Long } from '@grpc/proto-loader';

export interface Hello {
  /**
   * Wire protocol version; this file is version 1.
   */
  'protocol'?: (number);
  'agentId'?: (string);
  'volume'?: (string);
  /**
   * Chosen by the agent the first time it protects the volume; a new one
   * means "a different disk under the same name": the appliance starts a new
   * journal and the agent copies the whole volume.
   */
  'generation'?: (string);
  /**
   * Volume size in bytes, a multiple of 512.
   */
  'size'?: (number | string | Long);
  /**
   * Consistency group ("" for none): volumes of a group share one seq space.
   */
  'group'?: (string);
  /**
   * The highest seq the agent has seen acknowledged by this appliance.
   */
  'ackedSeq'?: (number | string | Long);
}

export interface Hello__Output {
  /**
   * Wire protocol version; this file is version 1.
   */
  'protocol': (number);
  'agentId': (string);
  'volume': (string);
  /**
   * Chosen by the agent the first time it protects the volume; a new one
   * means "a different disk under the same name": the appliance starts a new
   * journal and the agent copies the whole volume.
   */
  'generation': (string);
  /**
   * Volume size in bytes, a multiple of 512.
   */
  'size': (number);
  /**
   * Consistency group ("" for none): volumes of a group share one seq space.
   */
  'group': (string);
  /**
   * The highest seq the agent has seen acknowledged by this appliance.
   */
  'ackedSeq': (number);
}
