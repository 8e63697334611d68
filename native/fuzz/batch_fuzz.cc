// libFuzzer target for the appliance's batch ingest (native/src/batch_ingest.h),
// the code that reads every byte an agent sends (`bash native/fuzz/run.sh`).
//
// Input: 16 control bytes, then the payload.
//   0      flags: 1 the payload is an LZ4 block as it arrived (prefix and all),
//          2 compress the payload here first (the decoder then sees a valid
//          block of arbitrary records), 4 send its true checksum, 8 a wrong one
//   1..4   declared record count (u32 LE, taken modulo 4096)
//   5..6   last seq - first seq (u16 LE)
//   7..10  volume size in sectors (u32 LE)
//   11..14 declared raw length for flag 1 (u32 LE, modulo 1 MiB)
//   15     first seq - 11
// The batch is decoded, checked and framed as the addon does it. Either it is
// refused with a code and a message, and the records framed before the
// problem are whole frames; or it is accepted, and then its frames must read
// back as the journal's scan reads them: each CHANGE frame intact and equal to
// its record, seqs within the batch and never going back, changed sectors
// inside the volume, the list of records agreeing with the frames, and one
// intact COMMIT carrying the batch's fields, ending exactly at the framed
// size. Any violation aborts, which libFuzzer reports as a crash.
#include <lz4.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "batch_ingest.h"

using namespace tidemark;

namespace {

[[noreturn]] void Fail(const char* what, const std::string& detail = "") {
  std::fprintf(stderr, "batch_fuzz: invariant violated: %s %s\n", what, detail.c_str());
  std::abort();
}


bool KnownCode(const char* c) {
  for (const char* k : {"BATCH_CORRUPT", "BATCH_CHECKSUM", "SEQ_OUT_OF_ORDER", "RECORD_MALFORMED", "RECORD_OUT_OF_RANGE"}) {
    if (std::strcmp(c, k) == 0) return true;
  }
  return false;
}

// Checks `records` frames from the start of out against raw; returns the end of the last.
size_t CheckFrames(const uint8_t* out, size_t out_len, const uint8_t* raw, size_t raw_len, uint64_t records, const double* recs,
                   const BatchDecl& d) {
  size_t at = 0, off = 0;
  uint64_t prev = d.first_seq;
  for (uint64_t i = 0; i < records; i++) {
    if (at + kFrameHeaderSize + kRecordHeaderSize > out_len || off + kRecordHeaderSize > raw_len) Fail("a frame past the output");
    const uint32_t len = LoadU32(out + at + 4);
    if (out[at + 8] != kFrameChange || out[at + 9] || out[at + 10] || out[at + 11]) Fail("a CHANGE frame header");
    if (at + kFrameHeaderSize + len > out_len || off + len > raw_len) Fail("a frame longer than the batch");
    if (LoadU32(out + at) != uint32_t(XXH64(out + at + 4, 8 + size_t(len), 0))) Fail("a CHANGE frame checksum");
    if (std::memcmp(out + at + kFrameHeaderSize, raw + off, len) != 0) Fail("a CHANGE body differs from its record");
    const uint8_t* h = raw + off;
    const uint64_t seq = LoadU64(h), sector = LoadU64(h + 8);
    const uint32_t count = LoadU32(h + 16);
    const uint8_t kind = h[20];
    if (seq < prev || seq > d.last_seq) Fail("an accepted seq outside the batch or going back");
    prev = seq;
    const double* r = recs + i * kCheckedStride;
    if (r[kCheckedSeq] != double(seq) || r[kCheckedKind] != kind || r[kCheckedOffset] != double(at) || r[kCheckedSector] != double(sector)) {
      Fail("the records list disagrees with the frames");
    }
    const bool changes = kind == kRecordWrite || kind == kRecordTrim || kind == kRecordZero || kind == kRecordResync;
    if (changes && (r[kCheckedCount] != count || sector + count > d.size_sectors)) Fail("accepted sectors outside the volume");
    if (!changes && r[kCheckedCount] != 0) Fail("a record that changes no sectors lists some");
    if ((kind == kRecordWrite || kind == kRecordResync) && len != kRecordHeaderSize + uint64_t(count) * kSectorSize) Fail("a data length");
    at += kFrameHeaderSize + len;
    off += len;
  }
  return at;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 16) return 0;
  const uint8_t flags = data[0];
  BatchDecl d;
  d.record_count = LoadU32(data + 1) % 4096;
  d.first_seq = 11 + data[15];
  d.last_seq = d.first_seq + (uint32_t(data[5]) | uint32_t(data[6]) << 8);
  d.size_sectors = LoadU32(data + 7);
  d.last_accepted_seq = 10;
  d.app_bytes = size;
  d.changed_bytes = 7;
  d.wire_bytes = 9;
  d.wall_ms = 1795430400123;
  d.where = "volume f, batch seqs " + std::to_string(d.first_seq) + ".." + std::to_string(d.last_seq);
  const uint8_t* body = data + 16;
  const size_t body_len = size - 16;

  // The payload as it travels, and the raw records it should decode to (when known).
  std::vector<uint8_t> payload(body, body + body_len);
  std::vector<uint8_t> raw_expected(body, body + body_len);
  BatchEncoding enc;
  enc.raw_length = body_len;
  if (flags & 2) {
    std::vector<uint8_t> z(4 + size_t(LZ4_compressBound(int(body_len))));
    const uint32_t n = uint32_t(body_len);
    std::memcpy(z.data(), &n, 4);
    const int c = LZ4_compress_default(reinterpret_cast<const char*>(body), reinterpret_cast<char*>(z.data() + 4), int(body_len), int(z.size() - 4));
    if (c <= 0 && body_len > 0) Fail("LZ4 could not compress");
    z.resize(4 + size_t(c));
    payload = z;
    enc.compression = kCompressionLz4;
  } else if (flags & 1) {
    enc.compression = kCompressionLz4;
    enc.raw_length = LoadU32(data + 11) % (1 << 20);
    raw_expected.clear();  // unknown: whatever the block decodes to
  }
  uint8_t sum[8];
  if (flags & 12) {
    uint64_t s = XXH64(raw_expected.data(), raw_expected.size(), 0);
    if (flags & 8) s ^= 1;
    std::memcpy(sum, &s, 8);
    enc.checksum = sum;
  }

  static std::vector<uint8_t> scratch;
  IngestError err;
  const uint8_t* raw = nullptr;
  if (!DecodeBatchPayload(payload.data(), payload.size(), enc, d, &scratch, &raw, &err) || !CheckBatchDecl(size_t(enc.raw_length), d, &err)) {
    if (!err.failed() || !KnownCode(err.code) || err.message.empty()) Fail("a refusal without a known code and a message");
    if ((flags & 2) && !(flags & 8) && std::strncmp(err.code, "BATCH_", 6) == 0) Fail("a valid LZ4 block refused", err.message);
    return 0;
  }
  if (!(flags & 1) && (size_t(enc.raw_length) != raw_expected.size() ||
                       (!raw_expected.empty() && std::memcmp(raw, raw_expected.data(), raw_expected.size()) != 0))) {
    Fail("the decoded records are not the payload's");
  }
  if (flags & 8) Fail("a wrong checksum accepted");
  const size_t framed_size = FramedSize(size_t(enc.raw_length), d.record_count);
  std::vector<uint8_t> out(framed_size);
  std::vector<double> recs(size_t(d.record_count) * kCheckedStride);
  FrameResult r;
  FrameBatch(raw, size_t(enc.raw_length), d, out.data(), recs.data(), &r);
  if (r.records > d.record_count) Fail("more records framed than declared");
  const size_t end = CheckFrames(out.data(), out.size(), raw, size_t(enc.raw_length), r.records, recs.data(), d);
  if (r.error.failed()) {
    if (!KnownCode(r.error.code) || r.error.message.rfind(d.where + ": ", 0) != 0) Fail("a record refusal without its code and where", r.error.message);
    if (r.pending_mark && (r.pending_mark < raw || r.pending_mark + r.pending_mark_length > raw + enc.raw_length)) Fail("a pending MARK outside the payload");
    return 0;
  }
  if (r.records != d.record_count) Fail("accepted with a record count other than declared");
  const uint8_t* c = out.data() + end;
  if (end + kFrameHeaderSize + kCommitBodySize != out.size()) Fail("the COMMIT does not end the framed batch");
  if (LoadU32(c + 4) != kCommitBodySize || c[8] != kFrameCommit || LoadU32(c) != uint32_t(XXH64(c + 4, 8 + kCommitBodySize, 0))) Fail("the COMMIT frame");
  if (LoadU64(c + 12) != d.first_seq || LoadU64(c + 20) != d.last_seq || LoadU32(c + 28) != d.record_count || LoadU64(c + 36) != d.app_bytes ||
      LoadU64(c + 60) != d.wall_ms) {
    Fail("the COMMIT's fields");
  }
  return 0;
}
