// Original file: proto/tidemark/v1/admin.proto

import type { Long } from '@grpc/proto-loader';

export interface ReadRequest {
  'volume'?: (string);
  'seq'?: (number | string | Long);
  'offset'?: (number | string | Long);
  /**
   * At most 4 MiB.
   */
  'length'?: (number);
}

export interface ReadRequest__Output {
  'volume': (string);
  'seq': (number);
  'offset': (number);
  /**
   * At most 4 MiB.
   */
  'length': (number);
}
