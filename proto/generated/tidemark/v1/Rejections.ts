// Original file: proto/tidemark/v1/admin.proto

import type { Long } from '@grpc/proto-loader';

export interface Rejections {
  'total'?: (number | string | Long);
  'byCode'?: ({[key: string]: number | string | Long});
}

export interface Rejections__Output {
  'total': (number);
  'byCode': ({[key: string]: number});
}
