// Original file: proto/tidemark/v1/replication.proto

import type { Hello as _tidemark_v1_Hello, Hello__Output as _tidemark_v1_Hello__Output } from '../../tidemark/v1/Hello';
import type { ChangeBatch as _tidemark_v1_ChangeBatch, ChangeBatch__Output as _tidemark_v1_ChangeBatch__Output } from '../../tidemark/v1/ChangeBatch';
import type { FingerprintRequest as _tidemark_v1_FingerprintRequest, FingerprintRequest__Output as _tidemark_v1_FingerprintRequest__Output } from '../../tidemark/v1/FingerprintRequest';
import type { SyncProgress as _tidemark_v1_SyncProgress, SyncProgress__Output as _tidemark_v1_SyncProgress__Output } from '../../tidemark/v1/SyncProgress';

export interface AgentMessage {
  'hello'?: (_tidemark_v1_Hello | null);
  'batch'?: (_tidemark_v1_ChangeBatch | null);
  'fingerprintRequest'?: (_tidemark_v1_FingerprintRequest | null);
  'progress'?: (_tidemark_v1_SyncProgress | null);
  'body'?: "hello"|"batch"|"fingerprintRequest"|"progress";
}

export interface AgentMessage__Output {
  'hello'?: (_tidemark_v1_Hello__Output | null);
  'batch'?: (_tidemark_v1_ChangeBatch__Output | null);
  'fingerprintRequest'?: (_tidemark_v1_FingerprintRequest__Output | null);
  'progress'?: (_tidemark_v1_SyncProgress__Output | null);
  'body'?: "hello"|"batch"|"fingerprintRequest"|"progress";
}
