// Original file: proto/tidemark/v1/admin.proto

import type { Long } from '@grpc/proto-loader';

export interface SeedVolumeRequest {
  'volume'?: (string);
  /**
   * The generation the volume's agent will announce.
   */
  'generation'?: (string);
  /**
   * An NBD URI the appliance itself connects to (its view of the network):
   * nbd+unix:///EXPORT?socket=PATH or nbd://HOST[:PORT]/EXPORT.
   */
  'source'?: (string);
  /**
   * The size the volume must have (its agent's disk); 0: the source's size.
   */
  'size'?: (number | string | Long);
}

export interface SeedVolumeRequest__Output {
  'volume': (string);
  /**
   * The generation the volume's agent will announce.
   */
  'generation': (string);
  /**
   * An NBD URI the appliance itself connects to (its view of the network):
   * nbd+unix:///EXPORT?socket=PATH or nbd://HOST[:PORT]/EXPORT.
   */
  'source': (string);
  /**
   * The size the volume must have (its agent's disk); 0: the source's size.
   */
  'size': (number);
}
