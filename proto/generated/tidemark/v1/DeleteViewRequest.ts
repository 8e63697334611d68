// Original file: proto/tidemark/v1/admin.proto


export interface DeleteViewRequest {
  /**
   * Unused: the view names its volume (the caller needs the right to it).
   */
  'volume'?: (string);
  'name'?: (string);
}

export interface DeleteViewRequest__Output {
  /**
   * Unused: the view names its volume (the caller needs the right to it).
   */
  'volume': (string);
  'name': (string);
}
