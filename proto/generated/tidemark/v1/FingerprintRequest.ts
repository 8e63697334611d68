// Original file: proto/tidemark/v1/replication.proto

import type { Long } from '@grpc/proto-loader';

/**
 * Regions are 64 KiB (128 sectors); the last region of a volume may be short.
 */
export interface FingerprintRequest {
  'id'?: (number | string | Long);
  'regions'?: (number | string | Long)[];
}

/**
 * Regions are 64 KiB (128 sectors); the last region of a volume may be short.
 */
export interface FingerprintRequest__Output {
  'id': (number);
  'regions': (number)[];
}
