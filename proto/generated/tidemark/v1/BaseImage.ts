// Original file: proto/tidemark/v1/admin.proto

import type { Long } from '@grpc/proto-loader';

export interface BaseImage {
  'seq'?: (number | string | Long);
  'timeMs'?: (number | string | Long);
  'throughSegment'?: (number | string | Long);
}

export interface BaseImage__Output {
  'seq': (number);
  'timeMs': (number);
  'throughSegment': (number);
}
