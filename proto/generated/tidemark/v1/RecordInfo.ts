// Original file: proto/tidemark/v1/admin.proto

import type { Long } from '@grpc/proto-loader';

export interface RecordInfo {
  'seq'?: (number | string | Long);
  /**
   * write, trim, zero, flush, resync, mark, gap or exact (proto/record.ts).
   */
  'kind'?: (string);
  'sector'?: (number | string | Long);
  'count'?: (number);
  'flags'?: (number);
  'segment'?: (string);
  'offset'?: (number | string | Long);
}

export interface RecordInfo__Output {
  'seq': (number);
  /**
   * write, trim, zero, flush, resync, mark, gap or exact (proto/record.ts).
   */
  'kind': (string);
  'sector': (number);
  'count': (number);
  'flags': (number);
  'segment': (string);
  'offset': (number);
}
