// Original file: proto/tidemark/v1/admin.proto

import type { Long } from '@grpc/proto-loader';

/**
 * The volume's newest point kept in volume order (appliance/replica-image.ts).
 */
export interface ReplicaImageStatus {
  /**
   * The seq the image equals (0 before its first round).
   */
  'seq'?: (number | string | Long);
  /**
   * Readers use it now (false while a round writes, after a compaction, after a failure).
   */
  'ready'?: (boolean);
  'rounds'?: (number | string | Long);
  'bytesCopied'?: (number | string | Long);
  /**
   * Bytes readers took from the image instead of the journal.
   */
  'bytesRead'?: (number | string | Long);
  'error'?: (string);
  /**
   * Rounds stopped because the volume was written again (the journal's appends come first).
   */
  'roundsStopped'?: (number | string | Long);
  '_error'?: "error";
}

/**
 * The volume's newest point kept in volume order (appliance/replica-image.ts).
 */
export interface ReplicaImageStatus__Output {
  /**
   * The seq the image equals (0 before its first round).
   */
  'seq': (number);
  /**
   * Readers use it now (false while a round writes, after a compaction, after a failure).
   */
  'ready': (boolean);
  'rounds': (number);
  'bytesCopied': (number);
  /**
   * Bytes readers took from the image instead of the journal.
   */
  'bytesRead': (number);
  'error'?: (string);
  /**
   * Rounds stopped because the volume was written again (the journal's appends come first).
   */
  'roundsStopped': (number);
  '_error'?: "error";
}
