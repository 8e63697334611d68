// Original file: proto/tidemark/v1/admin.proto

import type { Long } from '@grpc/proto-loader';

export interface VolumeSeed {
  'source'?: (string);
  'seq'?: (number | string | Long);
  /**
   * ISO 8601.
   */
  'seededAt'?: (string);
  'dataBytes'?: (number | string | Long);
}

export interface VolumeSeed__Output {
  'source': (string);
  'seq': (number);
  /**
   * ISO 8601.
   */
  'seededAt': (string);
  'dataBytes': (number);
}
