// Original file: proto/tidemark/v1/admin.proto

import type { Long } from '@grpc/proto-loader';

// Original file: proto/tidemark/v1/admin.proto

export const _tidemark_v1_JournalRequest_Action = {
  LS: 'LS',
  SHOW: 'SHOW',
  VERIFY: 'VERIFY',
} as const;

export type _tidemark_v1_JournalRequest_Action =
  | 'LS'
  | 0
  | 'SHOW'
  | 1
  | 'VERIFY'
  | 2

export type _tidemark_v1_JournalRequest_Action__Output = typeof _tidemark_v1_JournalRequest_Action[keyof typeof _tidemark_v1_JournalRequest_Action]

export interface JournalRequest {
  'action'?: (_tidemark_v1_JournalRequest_Action);
  'volume'?: (string);
  /**
   * SHOW: records from this seq, at most limit of them.
   */
  'fromSeq'?: (number | string | Long);
  'limit'?: (number);
}

export interface JournalRequest__Output {
  'action': (_tidemark_v1_JournalRequest_Action__Output);
  'volume': (string);
  /**
   * SHOW: records from this seq, at most limit of them.
   */
  'fromSeq': (number);
  'limit': (number);
}
