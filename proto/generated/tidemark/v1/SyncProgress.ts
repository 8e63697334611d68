// Original file: proto/tidemark/v1/replication.proto

import type { Long } from '@grpc/proto-loader';

export interface SyncProgress {
  'regionsDone'?: (number | string | Long);
  'regionsTotal'?: (number | string | Long);
  'bytesPerSecond'?: (number | string | Long);
}

export interface SyncProgress__Output {
  'regionsDone': (number);
  'regionsTotal': (number);
  'bytesPerSecond': (number);
}
