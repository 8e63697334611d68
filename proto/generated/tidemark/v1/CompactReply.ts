// Original file: proto/tidemark/v1/admin.proto

import type { Compaction as _tidemark_v1_Compaction, Compaction__Output as _tidemark_v1_Compaction__Output } from '../../tidemark/v1/Compaction';
import type { Long } from '@grpc/proto-loader';

export interface CompactReply {
  'volume'?: (string);
  /**
   * The volume's retention rule as given to --retain; unset: no rule.
   */
  'rule'?: (string);
  /**
   * History up to this seq has expired (0: nothing has).
   */
  'upTo'?: (number | string | Long);
  /**
   * Set when the size cap forces out history the other rules would keep.
   */
  'warning'?: (string);
  /**
   * Unset when nothing was compacted.
   */
  'compaction'?: (_tidemark_v1_Compaction | null);
  '_rule'?: "rule";
  '_warning'?: "warning";
}

export interface CompactReply__Output {
  'volume': (string);
  /**
   * The volume's retention rule as given to --retain; unset: no rule.
   */
  'rule'?: (string);
  /**
   * History up to this seq has expired (0: nothing has).
   */
  'upTo': (number);
  /**
   * Set when the size cap forces out history the other rules would keep.
   */
  'warning'?: (string);
  /**
   * Unset when nothing was compacted.
   */
  'compaction': (_tidemark_v1_Compaction__Output | null);
  '_rule'?: "rule";
  '_warning'?: "warning";
}
