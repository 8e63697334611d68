// Original file: proto/tidemark/v1/admin.proto

import type { Long } from '@grpc/proto-loader';

export interface SeedVolumeReply {
  'volume'?: (string);
  'generation'?: (string);
  'size'?: (number | string | Long);
  /**
   * The seeded point (a TimeMark labelled "seed").
   */
  'seq'?: (number | string | Long);
  /**
   * Bytes of the source that were not zero (written), and zero (left as holes).
   */
  'dataBytes'?: (number | string | Long);
  'zeroBytes'?: (number | string | Long);
  'seconds'?: (number | string);
}

export interface SeedVolumeReply__Output {
  'volume': (string);
  'generation': (string);
  'size': (number);
  /**
   * The seeded point (a TimeMark labelled "seed").
   */
  'seq': (number);
  /**
   * Bytes of the source that were not zero (written), and zero (left as holes).
   */
  'dataBytes': (number);
  'zeroBytes': (number);
  'seconds': (number);
}
