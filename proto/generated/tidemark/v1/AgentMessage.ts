// Original file: proto/tidemark/v1/replication.proto

import type { Hello as _tidemark_v1_Hello, Hello__Output as _tidemark_v1_Hello__Output } from '../../tidemark/v1/Hello';
import type { ChangeBatch as _tidemark_v1_ChangeBatch, ChangeBatch__Output as _tidemark_v1_ChangeBatch__Output } from '../../tidemark/v1/ChangeBatch';
import type { FingerprintRequest as _tidemark_v1_FingerprintRequest, FingerprintRequest__Output as _tidemark_v1_FingerprintRequest__Output } from '../../tidemark/v1/FingerprintRequest';
import type { SyncProgress as _tidemark_v1_SyncProgress, SyncProgress__Output as _tidemark_v1_SyncProgress__Output } from '../../tidemark/v1/SyncProgress';
import type { DataHello as _tidemark_v1_DataHello, DataHello__Output as _tidemark_v1_DataHello__Output } from '../../tidemark/v1/DataHello';
import type { Heartbeat as _tidemark_v1_Heartbeat, Heartbeat__Output as _tidemark_v1_Heartbeat__Output } from '../../tidemark/v1/Heartbeat';

export interface AgentMessage {
  'hello'?: (_tidemark_v1_Hello | null);
  'batch'?: (_tidemark_v1_ChangeBatch | null);
  'fingerprintRequest'?: (_tidemark_v1_FingerprintRequest | null);
  'progress'?: (_tidemark_v1_SyncProgress | null);
  /**
   * Only as the first frame on a data channel (proto/data-frame.ts).
   */
  'dataHello'?: (_tidemark_v1_DataHello | null);
  'heartbeat'?: (_tidemark_v1_Heartbeat | null);
  'body'?: "hello"|"batch"|"fingerprintRequest"|"progress"|"dataHello"|"heartbeat";
}

export interface AgentMessage__Output {
  'hello'?: (_tidemark_v1_Hello__Output | null);
  'batch'?: (_tidemark_v1_ChangeBatch__Output | null);
  'fingerprintRequest'?: (_tidemark_v1_FingerprintRequest__Output | null);
  'progress'?: (_tidemark_v1_SyncProgress__Output | null);
  /**
   * Only as the first frame on a data channel (proto/data-frame.ts).
   */
  'dataHello'?: (_tidemark_v1_DataHello__Output | null);
  'heartbeat'?: (_tidemark_v1_Heartbeat__Output | null);
  'body'?: "hello"|"batch"|"fingerprintRequest"|"progress"|"dataHello"|"heartbeat";
}
