// Original file: proto/tidemark/v1/admin.proto

import type { Long } from '@grpc/proto-loader';

export interface ApplianceStats {
  'id'?: (string);
  /**
   * ISO 8601.
   */
  'startedAt'?: (string);
  /**
   * Replication streams attached now.
   */
  'streams'?: (number);
  /**
   * Streams ended by the appliance, by error code.
   */
  'rejected'?: ({[key: string]: number | string | Long});
}

export interface ApplianceStats__Output {
  'id': (string);
  /**
   * ISO 8601.
   */
  'startedAt': (string);
  /**
   * Replication streams attached now.
   */
  'streams': (number);
  /**
   * Streams ended by the appliance, by error code.
   */
  'rejected': ({[key: string]: number});
}
