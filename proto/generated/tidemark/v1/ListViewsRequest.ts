// Original file: proto/tidemark/v1/admin.proto


export interface ListViewsRequest {
  /**
   * "" for the views of every volume the caller may read.
   */
  'volume'?: (string);
}

export interface ListViewsRequest__Output {
  /**
   * "" for the views of every volume the caller may read.
   */
  'volume': (string);
}
