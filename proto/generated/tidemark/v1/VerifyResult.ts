// Original file: proto/tidemark/v1/admin.proto

import type { Long } from '@grpc/proto-loader';

export interface VerifyResult {
  'ok'?: (boolean);
  'records'?: (number | string | Long);
  'bytes'?: (number | string | Long);
  'problems'?: (string)[];
}

export interface VerifyResult__Output {
  'ok': (boolean);
  'records': (number);
  'bytes': (number);
  'problems': (string)[];
}
