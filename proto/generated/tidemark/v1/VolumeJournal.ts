// Original file: proto/tidemark/v1/admin.proto

import type { SegmentInfo as _tidemark_v1_SegmentInfo, SegmentInfo__Output as _tidemark_v1_SegmentInfo__Output } from '../../tidemark/v1/SegmentInfo';
import type { RecordInfo as _tidemark_v1_RecordInfo, RecordInfo__Output as _tidemark_v1_RecordInfo__Output } from '../../tidemark/v1/RecordInfo';
import type { VerifyResult as _tidemark_v1_VerifyResult, VerifyResult__Output as _tidemark_v1_VerifyResult__Output } from '../../tidemark/v1/VerifyResult';

export interface VolumeJournal {
  'volume'?: (string);
  /**
   * LS
   */
  'segments'?: (_tidemark_v1_SegmentInfo)[];
  /**
   * SHOW
   */
  'records'?: (_tidemark_v1_RecordInfo)[];
  /**
   * VERIFY
   */
  'verify'?: (_tidemark_v1_VerifyResult | null);
}

export interface VolumeJournal__Output {
  'volume': (string);
  /**
   * LS
   */
  'segments': (_tidemark_v1_SegmentInfo__Output)[];
  /**
   * SHOW
   */
  'records': (_tidemark_v1_RecordInfo__Output)[];
  /**
   * VERIFY
   */
  'verify': (_tidemark_v1_VerifyResult__Output | null);
}
