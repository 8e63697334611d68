// Original file: proto/tidemark/v1/admin.proto

import type { Long } from '@grpc/proto-loader';

/**
 * One compaction: history up to base_seq folded into the base image.
 */
export interface Compaction {
  'volume'?: (string);
  'baseSeq'?: (number | string | Long);
  /**
   * ISO 8601; unset when the base's time is not known.
   */
  'baseTime'?: (string);
  'segmentsDropped'?: (number | string | Long);
  'journalBytesBefore'?: (number | string | Long);
  'journalBytesAfter'?: (number | string | Long);
  'expiredTimeMarks'?: (number | string | Long);
  'indexKeysDeleted'?: (number | string | Long);
  'ms'?: (number | string);
  '_baseTime'?: "baseTime";
}

/**
 * One compaction: history up to base_seq folded into the base image.
 */
export interface Compaction__Output {
  'volume': (string);
  'baseSeq': (number);
  /**
   * ISO 8601; unset when the base's time is not known.
   */
  'baseTime'?: (string);
  'segmentsDropped': (number);
  'journalBytesBefore': (number);
  'journalBytesAfter': (number);
  'expiredTimeMarks': (number);
  'indexKeysDeleted': (number);
  'ms': (number);
  '_baseTime'?: "baseTime";
}
