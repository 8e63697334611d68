// Original file: proto/tidemark/v1/admin.proto

import type { Long } from '@grpc/proto-loader';

export interface RecordAuditRequest {
  /**
   * "plan test", "plan failover", ...
   */
  'action'?: (string);
  'plan'?: (string);
  /**
   * the point the plan ran at, as the CLI names points ("seq=42", "mark=nightly")
   */
  'point'?: (string);
  /**
   * "passed", "failed", ...
   */
  'result'?: (string);
  'durationMs'?: (number | string | Long);
  'volumes'?: (string)[];
  /**
   * a JSON object: per-machine results, the measured RTO (at most 16 KiB)
   */
  'detailsJson'?: (string);
}

export interface RecordAuditRequest__Output {
  /**
   * "plan test", "plan failover", ...
   */
  'action': (string);
  'plan': (string);
  /**
   * the point the plan ran at, as the CLI names points ("seq=42", "mark=nightly")
   */
  'point': (string);
  /**
   * "passed", "failed", ...
   */
  'result': (string);
  'durationMs': (number);
  'volumes': (string)[];
  /**
   * a JSON object: per-machine results, the measured RTO (at most 16 KiB)
   */
  'detailsJson': (string);
}
