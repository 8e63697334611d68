// Original file: proto/tidemark/v1/admin.proto


export interface FingerprintsReply {
  /**
   * For each region in order, one little-endian xxh64 (seed 0) per sector,
   * as proto/hash.ts sectorFingerprints computes them.
   */
  'fingerprints'?: (Buffer | Uint8Array | string);
}

export interface FingerprintsReply__Output {
  /**
   * For each region in order, one little-endian xxh64 (seed 0) per sector,
   * as proto/hash.ts sectorFingerprints computes them.
   */
  'fingerprints': (Buffer);
}
