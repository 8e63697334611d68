// Original file: proto/tidemark/v1/admin.proto

import type { Long } from '@grpc/proto-loader';

export interface AcceptGenerationReply {
  'volume'?: (string);
  /**
   * Where the history so far is kept: a volume name restore and TimeViews take.
   */
  'retiredAs'?: (string);
  'oldGeneration'?: (string);
  'oldSize'?: (number | string | Long);
  /**
   * What the agent announced, and will start the new history with.
   */
  'generation'?: (string);
  'size'?: (number | string | Long);
}

export interface AcceptGenerationReply__Output {
  'volume': (string);
  /**
   * Where the history so far is kept: a volume name restore and TimeViews take.
   */
  'retiredAs': (string);
  'oldGeneration': (string);
  'oldSize': (number);
  /**
   * What the agent announced, and will start the new history with.
   */
  'generation': (string);
  'size': (number);
}
