// Original file: proto/tidemark/v1/admin.proto


export interface ListTimeMarksRequest {
  'volume'?: (string);
}

export interface ListTimeMarksRequest__Output {
  'volume': (string);
}
