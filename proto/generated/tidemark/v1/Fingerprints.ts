// Original file: proto/tidemark/v1/replication.proto

import type { Long } from '@grpc/proto-loader';

export interface Fingerprints {
  'id'?: (number | string | Long);
  'regions'?: (number | string | Long)[];
  /**
   * For each region in order, one little-endian xxh64 (seed 0) per sector of
   * what the replica holds at its newest seq: 128 x 8 bytes per full region.
   */
  'fingerprints'?: (Buffer | Uint8Array | string);
}

export interface Fingerprints__Output {
  'id': (number);
  'regions': (number)[];
  /**
   * For each region in order, one little-endian xxh64 (seed 0) per sector of
   * what the replica holds at its newest seq: 128 x 8 bytes per full region.
   */
  'fingerprints': (Buffer);
}
