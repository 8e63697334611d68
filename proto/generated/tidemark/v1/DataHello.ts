// Original file: proto/tidemark/v1/replication.proto


/**
 * The first frame on a data channel: which Replicate stream it carries.
 */
export interface DataHello {
  'token'?: (Buffer | Uint8Array | string);
}

/**
 * The first frame on a data channel: which Replicate stream it carries.
 */
export interface DataHello__Output {
  'token': (Buffer);
}
