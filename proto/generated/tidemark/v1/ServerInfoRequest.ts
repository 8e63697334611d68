// Original file: proto/tidemark/v1/admin.proto


export interface ServerInfoRequest {
  /**
   * Unused: every Admin request names a volume ("" here).
   */
  'volume'?: (string);
}

export interface ServerInfoRequest__Output {
  /**
   * Unused: every Admin request names a volume ("" here).
   */
  'volume': (string);
}
