// Original file: proto/tidemark/v1/admin.proto


export interface CompactRequest {
  'volume'?: (string);
}

export interface CompactRequest__Output {
  'volume': (string);
}
