// Original file: proto/tidemark/v1/admin.proto

import type { Long } from '@grpc/proto-loader';

export interface SegmentInfo {
  'segment'?: (string);
  'bytes'?: (number | string | Long);
  'records'?: (number | string | Long);
  'batches'?: (number | string | Long);
  'firstSeq'?: (number | string | Long);
  'lastSeq'?: (number | string | Long);
}

export interface SegmentInfo__Output {
  'segment': (string);
  'bytes': (number);
  'records': (number);
  'batches': (number);
  'firstSeq': (number);
  'lastSeq': (number);
}
