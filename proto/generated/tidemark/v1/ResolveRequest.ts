// Original file: proto/tidemark/v1/admin.proto

import type { PointInTime as _tidemark_v1_PointInTime, PointInTime__Output as _tidemark_v1_PointInTime__Output } from '../../tidemark/v1/PointInTime';

export interface ResolveRequest {
  'volume'?: (string);
  'point'?: (_tidemark_v1_PointInTime | null);
}

export interface ResolveRequest__Output {
  'volume': (string);
  'point': (_tidemark_v1_PointInTime__Output | null);
}
