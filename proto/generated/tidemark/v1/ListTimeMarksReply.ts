// Original file: proto/tidemark/v1/admin.proto

import type { TimeMark as _tidemark_v1_TimeMark, TimeMark__Output as _tidemark_v1_TimeMark__Output } from '../../tidemark/v1/TimeMark';

export interface ListTimeMarksReply {
  'timemarks'?: (_tidemark_v1_TimeMark)[];
}

export interface ListTimeMarksReply__Output {
  'timemarks': (_tidemark_v1_TimeMark__Output)[];
}
