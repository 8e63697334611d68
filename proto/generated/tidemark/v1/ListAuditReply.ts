// Original file: proto/tidemark/v1/admin.proto

import type { AuditEntry as _tidemark_v1_AuditEntry, AuditEntry__Output as _tidemark_v1_AuditEntry__Output } from '../../tidemark/v1/AuditEntry';

export interface ListAuditReply {
  'entries'?: (_tidemark_v1_AuditEntry)[];
  /**
   * set when verify was asked
   */
  'verified'?: (boolean);
  /**
   * what verify found wrong, naming the line; empty when it is intact
   */
  'problem'?: (string);
}

export interface ListAuditReply__Output {
  'entries': (_tidemark_v1_AuditEntry__Output)[];
  /**
   * set when verify was asked
   */
  'verified': (boolean);
  /**
   * what verify found wrong, naming the line; empty when it is intact
   */
  'problem': (string);
}
