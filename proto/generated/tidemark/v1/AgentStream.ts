// Original file: proto/tidemark/v1/admin.proto

import type { Long } from '@grpc/proto-loader';

export interface AgentStream {
  'volume'?: (string);
  'agentId'?: (string);
  'identity'?: (string);
  'peer'?: (string);
  /**
   * ISO 8601.
   */
  'since'?: (string);
  'batches'?: (number | string | Long);
  'lastAckMs'?: (number | string | Long);
}

export interface AgentStream__Output {
  'volume': (string);
  'agentId': (string);
  'identity': (string);
  'peer': (string);
  /**
   * ISO 8601.
   */
  'since': (string);
  'batches': (number);
  'lastAckMs': (number);
}
