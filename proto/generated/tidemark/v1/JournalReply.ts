// Original file: proto/tidemark/v1/admin.proto


export interface JournalReply {
  'json'?: (string);
}

export interface JournalReply__Output {
  'json': (string);
}
