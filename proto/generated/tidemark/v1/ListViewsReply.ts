// Original file: proto/tidemark/v1/admin.proto

import type { ViewInfo as _tidemark_v1_ViewInfo, ViewInfo__Output as _tidemark_v1_ViewInfo__Output } from '../../tidemark/v1/ViewInfo';

export interface ListViewsReply {
  'views'?: (_tidemark_v1_ViewInfo)[];
}

export interface ListViewsReply__Output {
  'views': (_tidemark_v1_ViewInfo__Output)[];
}
