// Original file: proto/tidemark/v1/admin.proto


export interface StatsRequest {
  /**
   * "" for every volume
   */
  'volume'?: (string);
}

export interface StatsRequest__Output {
  /**
   * "" for every volume
   */
  'volume': (string);
}
