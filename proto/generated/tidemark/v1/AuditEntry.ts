// Original file: proto/tidemark/v1/admin.proto

import type { Long } from '@grpc/proto-loader';

export interface AuditEntry {
  'seq'?: (number | string | Long);
  'time'?: (string);
  /**
   * the caller's identity, "(unidentified)" without one
   */
  'who'?: (string);
  'action'?: (string);
  'plan'?: (string);
  'point'?: (string);
  'result'?: (string);
  'durationMs'?: (number | string | Long);
  'volumes'?: (string)[];
  'detailsJson'?: (string);
  'hash'?: (string);
}

export interface AuditEntry__Output {
  'seq': (number);
  'time': (string);
  /**
   * the caller's identity, "(unidentified)" without one
   */
  'who': (string);
  'action': (string);
  'plan': (string);
  'point': (string);
  'result': (string);
  'durationMs': (number);
  'volumes': (string)[];
  'detailsJson': (string);
  'hash': (string);
}
