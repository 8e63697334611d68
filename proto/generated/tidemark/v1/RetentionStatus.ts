// Original file: proto/tidemark/v1/admin.proto

import type { Compaction as _tidemark_v1_Compaction, Compaction__Output as _tidemark_v1_Compaction__Output } from '../../tidemark/v1/Compaction';

export interface RetentionStatus {
  /**
   * Unset: the volume has no rule and keeps everything.
   */
  'rule'?: (string);
  'warning'?: (string);
  'lastCompaction'?: (_tidemark_v1_Compaction | null);
  'error'?: (string);
  /**
   * What retention gave up when a volume ran out of space (only what the rules allow).
   */
  'pressure'?: (string);
  '_rule'?: "rule";
  '_warning'?: "warning";
  '_error'?: "error";
  '_pressure'?: "pressure";
}

export interface RetentionStatus__Output {
  /**
   * Unset: the volume has no rule and keeps everything.
   */
  'rule'?: (string);
  'warning'?: (string);
  'lastCompaction': (_tidemark_v1_Compaction__Output | null);
  'error'?: (string);
  /**
   * What retention gave up when a volume ran out of space (only what the rules allow).
   */
  'pressure'?: (string);
  '_rule'?: "rule";
  '_warning'?: "warning";
  '_error'?: "error";
  '_pressure'?: "pressure";
}
