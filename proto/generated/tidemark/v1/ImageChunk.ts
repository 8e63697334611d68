// Original file: proto/tidemark/v1/admin.proto

import type { Long } from '@grpc/proto-loader';

export interface ImageChunk {
  'offset'?: (number | string | Long);
  'data'?: (Buffer | Uint8Array | string);
  /**
   * In the first message.
   */
  'volumeSize'?: (number | string | Long);
  'seq'?: (number | string | Long);
  /**
   * Progress: bytes of the volume scanned so far.
   */
  'scanned'?: (number | string | Long);
}

export interface ImageChunk__Output {
  'offset': (number);
  'data': (Buffer);
  /**
   * In the first message.
   */
  'volumeSize': (number);
  'seq': (number);
  /**
   * Progress: bytes of the volume scanned so far.
   */
  'scanned': (number);
}
