// Original file: proto/tidemark/v1/admin.proto


export interface CompactReply {
  'json'?: (string);
}

export interface CompactReply__Output {
  'json': (string);
}
