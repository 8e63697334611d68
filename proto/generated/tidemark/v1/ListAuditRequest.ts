// Original file: proto/tidemark/v1/admin.proto


export interface ListAuditRequest {
  /**
   * the newest N entries (0: all)
   */
  'limit'?: (number);
  /**
   * re-read the whole log and check its chain
   */
  'verify'?: (boolean);
}

export interface ListAuditRequest__Output {
  /**
   * the newest N entries (0: all)
   */
  'limit': (number);
  /**
   * re-read the whole log and check its chain
   */
  'verify': (boolean);
}
