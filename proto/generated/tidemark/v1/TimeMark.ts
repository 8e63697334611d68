// Original file: proto/tidemark/v1/admin.proto

import type { Long } from '@grpc/proto-loader';

export interface TimeMark {
  /**
   * The mark's seq in its volume's (or group's) seq space, which names it.
   */
  'id'?: (number | string | Long);
  'seq'?: (number | string | Long);
  'label'?: (string);
  /**
   * When the agent took the barrier (milliseconds since the epoch).
   */
  'wallTimeMs'?: (number | string | Long);
  /**
   * "app" (taken after the quiesce hook) or "crash".
   */
  'consistency'?: (string);
  'group'?: (string);
  'pinned'?: (boolean);
  /**
   * A note on how it was taken (hook durations, why it is crash-consistent).
   */
  'note'?: (string);
}

export interface TimeMark__Output {
  /**
   * The mark's seq in its volume's (or group's) seq space, which names it.
   */
  'id': (number);
  'seq': (number);
  'label': (string);
  /**
   * When the agent took the barrier (milliseconds since the epoch).
   */
  'wallTimeMs': (number);
  /**
   * "app" (taken after the quiesce hook) or "crash".
   */
  'consistency': (string);
  'group': (string);
  'pinned': (boolean);
  /**
   * A note on how it was taken (hook durations, why it is crash-consistent).
   */
  'note': (string);
}
