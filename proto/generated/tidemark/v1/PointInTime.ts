// Original file: proto/tidemark/v1/admin.proto

import type { Long } from '@grpc/proto-loader';

export interface PointInTime {
  'seq'?: (number | string | Long);
  'latest'?: (boolean);
  'point'?: "seq"|"latest";
}

export interface PointInTime__Output {
  'seq'?: (number);
  'latest'?: (boolean);
  'point'?: "seq"|"latest";
}
