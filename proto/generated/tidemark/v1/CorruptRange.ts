// Original file: proto/tidemark/v1/admin.proto

import type { Long } from '@grpc/proto-loader';

/**
 * Damaged journal bytes, skipped to the next intact frame.
 */
export interface CorruptRange {
  'segment'?: (string);
  'offset'?: (number | string | Long);
  'bytes'?: (number | string | Long);
  /**
   * Last seq of the last intact batch before the damage.
   */
  'afterSeq'?: (number | string | Long);
  'message'?: (string);
}

/**
 * Damaged journal bytes, skipped to the next intact frame.
 */
export interface CorruptRange__Output {
  'segment': (string);
  'offset': (number);
  'bytes': (number);
  /**
   * Last seq of the last intact batch before the damage.
   */
  'afterSeq': (number);
  'message': (string);
}
