// Original file: proto/tidemark/v1/admin.proto

import type { Long } from '@grpc/proto-loader';

export interface FingerprintsRequest {
  'volume'?: (string);
  'seq'?: (number | string | Long);
  /**
   * At most 1024 regions of 64 KiB (128 sectors; the last may be short).
   */
  'regions'?: (number | string | Long)[];
}

export interface FingerprintsRequest__Output {
  'volume': (string);
  'seq': (number);
  /**
   * At most 1024 regions of 64 KiB (128 sectors; the last may be short).
   */
  'regions': (number)[];
}
