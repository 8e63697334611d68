// Original file: proto/tidemark/v1/replication.proto

import type { Long } from '@grpc/proto-loader';

export interface Ack {
  'durableSeq'?: (number | string | Long);
}

export interface Ack__Output {
  'durableSeq': (number);
}
