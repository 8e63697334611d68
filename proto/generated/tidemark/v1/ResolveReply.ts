// Original file: proto/tidemark/v1/admin.proto

import type { TimeMark as _tidemark_v1_TimeMark, TimeMark__Output as _tidemark_v1_TimeMark__Output } from '../../tidemark/v1/TimeMark';
import type { Long } from '@grpc/proto-loader';

export interface ResolveReply {
  'seq'?: (number | string | Long);
  'volumeSize'?: (number | string | Long);
  /**
   * Set when the point is a TimeMark.
   */
  'timemark'?: (_tidemark_v1_TimeMark | null);
  /**
   * Wall time of the newest change at or below seq (0 if unknown).
   */
  'timeMs'?: (number | string | Long);
}

export interface ResolveReply__Output {
  'seq': (number);
  'volumeSize': (number);
  /**
   * Set when the point is a TimeMark.
   */
  'timemark': (_tidemark_v1_TimeMark__Output | null);
  /**
   * Wall time of the newest change at or below seq (0 if unknown).
   */
  'timeMs': (number);
}
