// Original file: proto/tidemark/v1/control.proto

import type { Long } from '@grpc/proto-loader';

export interface CreateTimeMarkReply {
  'id'?: (number | string | Long);
  'seq'?: (number | string | Long);
  'label'?: (string);
  'consistency'?: (string);
  'wallTimeMs'?: (number | string | Long);
  'volumes'?: (string)[];
  'group'?: (string);
  /**
   * Every volume's appliance holds the mark durably.
   */
  'durable'?: (boolean);
  /**
   * Milliseconds: quiesce hook, barrier, thaw hook, until durable.
   */
  'quiesceMs'?: (number | string);
  'barrierMs'?: (number | string);
  'thawMs'?: (number | string);
  'durableMs'?: (number | string);
  'note'?: (string);
}

export interface CreateTimeMarkReply__Output {
  'id': (number);
  'seq': (number);
  'label': (string);
  'consistency': (string);
  'wallTimeMs': (number);
  'volumes': (string)[];
  'group': (string);
  /**
   * Every volume's appliance holds the mark durably.
   */
  'durable': (boolean);
  /**
   * Milliseconds: quiesce hook, barrier, thaw hook, until durable.
   */
  'quiesceMs': (number);
  'barrierMs': (number);
  'thawMs': (number);
  'durableMs': (number);
  'note': (string);
}
