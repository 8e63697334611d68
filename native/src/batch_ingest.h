// A ChangeBatch on its way into the journal, with no JavaScript per byte:
// decode the payload (LZ4 or raw, checked against its xxh64), check every
// record at the boundary (appliance/record-check.ts states the rules and owns
// the messages' wording), and frame the records for the journal in the same
// pass: one CHANGE frame per record, then the batch's COMMIT frame, written
// into one buffer that the journal appends with one writev per group.
//
// The frame format is appliance/journal-format.ts's, mirrored here as
// record.h mirrors proto/record.ts (the addon exports these constants and a
// test frames the same batch both ways and compares the bytes):
//
//   frame   u32 checksum (low 32 bits of xxh64, seed 0, over bytes 4 ..
//           12+length), u32 length, u8 type (1 CHANGE, 2 COMMIT), u8[3] 0,
//           body
//   CHANGE  body = the record, header and data, exactly as in the payload
//   COMMIT  body (56 bytes) = u64 first seq, u64 last seq, u32 record count,
//           u32 0, u64 app bytes, u64 changed bytes, u64 wire bytes, u64 wall ms
//
// What the caller gets back per record is what the index needs, as doubles
// in a flat array (kCheckedStride per record: seq, first sector, sectors
// changed, kind, offset of its CHANGE frame in the framed buffer), never an
// object per record. Seqs and sectors are below 2^53 (checked), so doubles
// hold them exactly.
//
// One thing is left to the caller: a MARK record's metadata is JSON whose
// rules live in TypeScript (proto/timemark-meta.ts). The result says how
// many MARK records were framed, and when the batch fails on the record count
// right after a MARK's bounds were checked, it points at that MARK's
// metadata, so the caller can check the metadata in record order first and
// report whichever problem comes first, as record-check always has.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "record.h"

namespace tidemark {

constexpr size_t kFrameHeaderSize = 12;
constexpr uint8_t kFrameChange = 1;
constexpr uint8_t kFrameCommit = 2;
constexpr size_t kCommitBodySize = 56;

// The fields of one checked record in the output array.
enum CheckedField { kCheckedSeq = 0, kCheckedSector, kCheckedCount, kCheckedKind, kCheckedOffset, kCheckedStride };

enum BatchCompression { kCompressionNone = 0, kCompressionLz4 = 1 };

// How the payload travels (the ChangeBatch's fields). checksum: the 8-byte
// little-endian xxh64 of the raw records, or nullptr when the caller hands
// over raw records it made itself (tests, benchmarks).
struct BatchEncoding {
  int compression = kCompressionNone;
  uint64_t raw_length = 0;
  const uint8_t* checksum = nullptr;
};

// What the batch declares and what the volume says, and the COMMIT's fields.
struct BatchDecl {
  uint64_t first_seq = 0;
  uint64_t last_seq = 0;
  uint64_t record_count = 0;
  uint64_t last_accepted_seq = 0;
  uint64_t size_sectors = 0;
  uint64_t app_bytes = 0;
  uint64_t changed_bytes = 0;
  uint64_t wire_bytes = 0;
  uint64_t wall_ms = 0;
  // "volume V, batch seqs A..B": how every record-check message begins.
  std::string where;
};

struct IngestError {
  const char* code = nullptr;  // a stable code (proto/errors.ts), nullptr: no error
  std::string message;
  bool failed() const { return code != nullptr; }
};

// The raw records of a payload: the payload itself, or its LZ4 block
// (lz4-napi's layout: the u32 LE raw length, then one LZ4 block) decompressed
// into *scratch. Checks the length and the checksum. Errors: BATCH_CORRUPT,
// BATCH_CHECKSUM. The caller has already checked what the batch announces
// (size limit, checksum width, LZ4 length prefix), which costs nothing per byte.
bool DecodeBatchPayload(const uint8_t* payload, size_t length, const BatchEncoding& enc, const BatchDecl& d,
                        std::vector<uint8_t>* scratch, const uint8_t** raw, IngestError* err);

// The agent's side of the same payload (proto/change-batch.ts states the
// rule and keeps a TypeScript encoder for tests): checksum = xxh64 (seed 0)
// of the raw records; LZ4 (the u32 LE raw length, then one block, as
// lz4-napi's compressSync writes it) when the raw records are at least
// kEncodeMinCompress bytes, a kEncodeSample-byte sample shrinks below
// kEncodeWorth of its size (skipped for batches up to twice the sample) and
// the whole batch does too; otherwise raw. The sizes compared include the
// 4-byte prefix, as they do in TypeScript.
constexpr size_t kEncodeMinCompress = 1024;
constexpr size_t kEncodeSample = 64 * 1024;
constexpr double kEncodeWorth = 0.9;

struct EncodedPayload {
  const uint8_t* data = nullptr;  // raw itself, or the LZ4 payload in *scratch
  size_t length = 0;
  int compression = kCompressionNone;
  uint64_t checksum = 0;
};

// Encodes raw (at most INT_MAX bytes) for a ChangeBatch; *scratch is grown
// to the largest batch and kept, so nothing is allocated per batch.
void EncodeBatchPayload(const uint8_t* raw, size_t length, bool compress, std::vector<uint8_t>* scratch, EncodedPayload* out);

// The checks on the declared seqs and record count, before any output is
// sized from them (SEQ_OUT_OF_ORDER, RECORD_MALFORMED).
bool CheckBatchDecl(size_t raw_length, const BatchDecl& d, IngestError* err);

// Bytes the framed batch takes: every record behind a frame header, then the
// COMMIT frame. Valid once CheckBatchDecl passed (record_count * 32 <= raw_length).
size_t FramedSize(size_t raw_length, uint64_t record_count);

struct FrameResult {
  uint64_t records = 0;  // records checked and framed (all of them, or those before the error)
  uint64_t marks = 0;    // MARK records among them
  // The batch failed on the record count at a MARK record whose bounds were
  // fine: its metadata (inside raw) and the "record N (seq S, payload byte O)"
  // text that names it.
  const uint8_t* pending_mark = nullptr;
  size_t pending_mark_length = 0;
  std::string pending_mark_at;
  IngestError error;
};

// Checks raw (raw_length bytes, CheckBatchDecl passed) record by record and
// frames it into out (FramedSize bytes) and recs (record_count *
// kCheckedStride doubles). Stops at the first problem (r->error): the records
// before it are framed and listed; nothing after.
void FrameBatch(const uint8_t* raw, size_t raw_length, const BatchDecl& d, uint8_t* out, double* recs,
                FrameResult* r);

// Low 32 bits of xxh64 (seed 0): the frame checksum.
uint32_t FrameChecksum(const uint8_t* data, size_t length);

}  // namespace tidemark
