// Original file: proto/tidemark/v1/admin.proto


export interface ReadReply {
  'data'?: (Buffer | Uint8Array | string);
}

export interface ReadReply__Output {
  'data': (Buffer);
}
