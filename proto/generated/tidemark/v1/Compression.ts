// Original file: proto/tidemark/v1/replication.proto

export const Compression = {
  COMPRESSION_NONE: 'COMPRESSION_NONE',
  COMPRESSION_LZ4: 'COMPRESSION_LZ4',
} as const;

export type Compression =
  | 'COMPRESSION_NONE'
  | 0
  | 'COMPRESSION_LZ4'
  | 1

export type Compression__Output = typeof Compression[keyof typeof Compression]
