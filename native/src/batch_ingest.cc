// See batch_ingest.h. The checks and their wording follow
// appliance/record-check.ts line by line, in the same order, so a bad batch
// is refused with the same reason whichever side checks it.
#include "batch_ingest.h"

#include <lz4.h>

#include <climits>
#include <cstdio>
#include <cstring>

#define XXH_INLINE_ALL
#include <xxhash.h>

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the journal and the records are little-endian");

namespace tidemark {

namespace {

// Bytes copied and hashed at a time when framing a record: the copy is still
// in the cache when the checksum reads it back (a 1 MiB record copied whole
// and then hashed would read it from memory twice).
constexpr size_t kFrameChunk = 64 * 1024;
// Seqs and sectors above this high word do not fit a double exactly.
constexpr uint32_t kMaxSafeHigh = 0x1fffff;


const char* UpperKind(uint8_t kind) {
  static const char* const names[] = {"", "WRITE", "TRIM", "ZERO", "FLUSH", "RESYNC", "MARK", "GAP", "EXACT"};
  return kind >= kRecordWrite && kind <= kRecordExact ? names[kind] : "?";
}
bool IsMarker(uint8_t k) { return k == kRecordMark || k == kRecordGap || k == kRecordExact; }
bool CarriesSectorData(uint8_t k) { return k == kRecordWrite || k == kRecordResync; }
bool ChangesSectors(uint8_t k) { return k == kRecordWrite || k == kRecordTrim || k == kRecordZero || k == kRecordResync; }

std::string N(uint64_t v) { return std::to_string(v); }

// The 8 bytes of a little-endian u64 as hex, as Buffer.toString('hex') prints them.
std::string HexLe(uint64_t v) {
  char s[17];
  for (int i = 0; i < 8; i++) std::snprintf(s + 2 * i, 3, "%02x", unsigned((v >> (8 * i)) & 0xff));
  return std::string(s, 16);
}

bool Fail(IngestError* e, const char* code, std::string message) {
  e->code = code;
  e->message = std::move(message);
  return false;
}

// Seals the frame whose body is already at out[12 .. 12+length].
void SealFrame(uint8_t* out, uint8_t type, uint32_t length) {
  StoreU32(out + 4, length);
  out[8] = type;
  out[9] = out[10] = out[11] = 0;
  StoreU32(out, FrameChecksum(out + 4, 8 + size_t(length)));
}

// Copies a record behind its frame header and seals the frame, hashing each
// chunk right after copying it.
void FrameRecord(uint8_t* out, const uint8_t* rec, uint32_t length) {
  StoreU32(out + 4, length);
  out[8] = kFrameChange;
  out[9] = out[10] = out[11] = 0;
  XXH64_state_t st;
  XXH64_reset(&st, 0);
  XXH64_update(&st, out + 4, 8);
  uint8_t* body = out + kFrameHeaderSize;
  for (size_t done = 0; done < length;) {
    const size_t n = length - done < kFrameChunk ? length - done : kFrameChunk;
    std::memcpy(body + done, rec + done, n);
    XXH64_update(&st, body + done, n);
    done += n;
  }
  StoreU32(out, uint32_t(XXH64_digest(&st)));
}

}  // namespace

uint32_t FrameChecksum(const uint8_t* data, size_t length) { return uint32_t(XXH64(data, length, 0)); }

size_t FramedSize(size_t raw_length, uint64_t record_count) {
  return raw_length + size_t(record_count) * kFrameHeaderSize + kFrameHeaderSize + kCommitBodySize;
}

void EncodeBatchPayload(const uint8_t* raw, size_t length, bool compress, std::vector<uint8_t>* scratch, EncodedPayload* out) {
  out->data = raw;
  out->length = length;
  out->compression = kCompressionNone;
  out->checksum = XXH64(raw, length, 0);
  if (!compress || length < kEncodeMinCompress || length > size_t(LZ4_MAX_INPUT_SIZE)) return;
  const size_t bound = 4 + size_t(LZ4_compressBound(int(length)));
  if (scratch->size() < bound) scratch->resize(bound);
  char* dst = reinterpret_cast<char*>(scratch->data()) + 4;
  const char* src = reinterpret_cast<const char*>(raw);
  // Incompressible data costs LZ4 time for nothing: a sample decides first.
  if (length > kEncodeSample * 2) {
    const int n = LZ4_compress_default(src, dst, int(kEncodeSample), LZ4_compressBound(int(kEncodeSample)));
    if (n <= 0 || double(4 + n) >= kEncodeSample * kEncodeWorth) return;
  }
  const int n = LZ4_compress_default(src, dst, int(length), int(bound - 4));
  if (n <= 0 || double(4 + n) >= double(length) * kEncodeWorth) return;
  StoreU32(scratch->data(), uint32_t(length));
  out->data = scratch->data();
  out->length = 4 + size_t(n);
  out->compression = kCompressionLz4;
}

bool DecodeBatchPayload(const uint8_t* payload, size_t length, const BatchEncoding& enc, const BatchDecl& d,
                        std::vector<uint8_t>* scratch, const uint8_t** raw, IngestError* err) {
  size_t got = length;
  if (enc.compression == kCompressionLz4) {
    if (length < 4 || LoadU32(payload) != enc.raw_length) {
      return Fail(err, "BATCH_CORRUPT", "LZ4 payload does not announce the batch's " + N(enc.raw_length) + " raw bytes");
    }
    if (enc.raw_length > uint64_t(INT_MAX) || length - 4 > size_t(INT_MAX)) {
      return Fail(err, "BATCH_CORRUPT", "LZ4 payload cannot be decompressed: " + N(enc.raw_length) + " bytes is more than one LZ4 block holds");
    }
    // Grown to the largest batch seen and kept: no allocation per batch.
    if (scratch->size() < enc.raw_length) scratch->resize(enc.raw_length);
    const int n = LZ4_decompress_safe(reinterpret_cast<const char*>(payload + 4), reinterpret_cast<char*>(scratch->data()),
                                      int(length - 4), int(enc.raw_length));
    if (n < 0) {
      return Fail(err, "BATCH_CORRUPT", "LZ4 payload cannot be decompressed: the block is malformed or holds more than the " +
                                            N(enc.raw_length) + " bytes it announces");
    }
    got = size_t(n);
    *raw = scratch->data();
  } else if (enc.compression == kCompressionNone) {
    *raw = payload;
  } else {
    return Fail(err, "BATCH_CORRUPT", "unknown compression " + std::to_string(enc.compression));
  }
  if (got != enc.raw_length) {
    return Fail(err, "BATCH_CORRUPT", "batch payload is " + N(got) + " bytes, the batch says " + N(enc.raw_length));
  }
  if (enc.checksum != nullptr) {
    const uint64_t sum = XXH64(*raw, got, 0);
    const uint64_t want = LoadU64(enc.checksum);
    if (sum != want) {
      return Fail(err, "BATCH_CHECKSUM", "batch checksum mismatch (seqs " + N(d.first_seq) + ".." + N(d.last_seq) +
                                             "): computed " + HexLe(sum) + ", batch says " + HexLe(want));
    }
  }
  return true;
}

bool CheckBatchDecl(size_t raw_length, const BatchDecl& d, IngestError* err) {
  if (d.first_seq <= d.last_accepted_seq) {
    return Fail(err, "SEQ_OUT_OF_ORDER", d.where + ": first seq " + N(d.first_seq) + " is not above the last accepted seq " +
                                             N(d.last_accepted_seq));
  }
  if (d.last_seq < d.first_seq) {
    return Fail(err, "SEQ_OUT_OF_ORDER", d.where + ": last seq " + N(d.last_seq) + " is below first seq " + N(d.first_seq));
  }
  // (record_count is below 2^53: * 32 cannot wrap.)
  if (d.record_count > (uint64_t(1) << 53) || d.record_count * kRecordHeaderSize > raw_length) {
    return Fail(err, "RECORD_MALFORMED", d.where + ": record count " + N(d.record_count) + " does not fit " + N(raw_length) +
                                             " payload bytes");
  }
  return true;
}

void FrameBatch(const uint8_t* raw, size_t raw_length, const BatchDecl& d, uint8_t* out, double* recs, FrameResult* r) {
  IngestError* e = &r->error;
  const std::string& where = d.where;
  uint64_t prev = d.first_seq;
  uint64_t n = 0;
  size_t off = 0;
  size_t at = 0;  // where the next frame goes in out
  while (off < raw_length) {
    if (off + kRecordHeaderSize > raw_length) {
      Fail(e, "RECORD_MALFORMED", where + ": truncated record header at payload byte " + N(off) + " (" + N(raw_length - off) +
                                      " bytes left)");
      break;
    }
    const uint8_t* h = raw + off;
    if (LoadU32(h + offsetof(RecordHeader, seq) + 4) > kMaxSafeHigh || LoadU32(h + offsetof(RecordHeader, sector) + 4) > kMaxSafeHigh) {
      Fail(e, "RECORD_MALFORMED", where + ": record at payload byte " + N(off) + " has a seq or sector beyond 2^53");
      break;
    }
    const uint64_t seq = LoadU64(h + offsetof(RecordHeader, seq));
    const uint64_t sector = LoadU64(h + offsetof(RecordHeader, sector));
    const uint32_t count = LoadU32(h + offsetof(RecordHeader, count));
    const uint8_t kind = h[offsetof(RecordHeader, kind)];
    uint16_t reserved;
    std::memcpy(&reserved, h + offsetof(RecordHeader, reserved0), 2);
    const uint32_t data_length = LoadU32(h + offsetof(RecordHeader, data_length));
    // Built only when a message needs it.
    auto at_text = [&] { return "record " + N(n) + " (seq " + N(seq) + ", payload byte " + N(off) + ")"; };
    auto bad = [&](const char* code, const std::string& what) { Fail(e, code, where + ": " + at_text() + ": " + what); };
    if (seq < prev) {
      bad("SEQ_OUT_OF_ORDER", "seq goes back from " + N(prev));
      break;
    }
    if (seq > d.last_seq) {
      bad("SEQ_OUT_OF_ORDER", "seq is past the batch's last seq " + N(d.last_seq));
      break;
    }
    prev = seq;
    if (kind < kRecordWrite || kind > kRecordExact) {
      bad("RECORD_MALFORMED", "unknown kind " + N(kind));
      break;
    }
    if (reserved != 0) {
      bad("RECORD_MALFORMED", "reserved header field is not zero");
      break;
    }
    const uint64_t end = uint64_t(off) + kRecordHeaderSize + data_length;
    if (IsMarker(kind)) {
      if (count != 0 || sector != 0) {
        bad("RECORD_MALFORMED", std::string("a ") + UpperKind(kind) + " marker names sectors");
        break;
      }
      if (kind != kRecordMark && data_length != 0) {
        bad("RECORD_MALFORMED", std::string("a ") + UpperKind(kind) + " marker carries " + N(data_length) + " data bytes");
        break;
      }
      if (kind == kRecordMark && (data_length > kMaxMarkData || end > raw_length)) {
        bad("RECORD_MALFORMED", "MARK metadata of " + N(data_length) + " bytes is over " + N(kMaxMarkData) + " or runs past the payload");
        break;
      }
    } else if (CarriesSectorData(kind)) {
      if (uint64_t(data_length) != uint64_t(count) * kSectorSize) {
        bad("RECORD_MALFORMED", N(count) + " sectors need " + N(uint64_t(count) * kSectorSize) + " data bytes, record has " +
                                    N(data_length));
        break;
      }
    } else if (data_length != 0) {
      bad("RECORD_MALFORMED", std::string(UpperKind(kind)) + " record carries " + N(data_length) + " data bytes");
      break;
    }
    if (end > raw_length) {
      bad("RECORD_MALFORMED", "data runs past the end of the " + N(raw_length) + "-byte payload");
      break;
    }
    if (ChangesSectors(kind) && sector + count > d.size_sectors) {
      // The last sector as JavaScript computes it (sector + count - 1 in
      // doubles): the same digits whenever the sum is exact, which it is
      // for every sector a volume can have.
      const double last = double(sector) + double(count) - 1;
      bad("RECORD_OUT_OF_RANGE", "sectors " + N(sector) + ".." + N(uint64_t(last)) + " are past the end of the volume (" +
                                     N(d.size_sectors) + " sectors)");
      break;
    }
    if (n >= d.record_count) {
      Fail(e, "RECORD_MALFORMED", where + ": payload holds more than the " + N(d.record_count) + " records the batch declares");
      if (kind == kRecordMark) {
        r->pending_mark = h + kRecordHeaderSize;
        r->pending_mark_length = data_length;
        r->pending_mark_at = where + ": " + at_text();
      }
      break;
    }
    const uint32_t length = uint32_t(kRecordHeaderSize + data_length);
    FrameRecord(out + at, h, length);
    double* o = recs + n * kCheckedStride;
    o[kCheckedSeq] = double(seq);
    o[kCheckedSector] = double(sector);
    o[kCheckedCount] = ChangesSectors(kind) ? double(count) : 0;
    o[kCheckedKind] = kind;
    o[kCheckedOffset] = double(at);
    if (kind == kRecordMark) r->marks++;
    n++;
    at += kFrameHeaderSize + length;
    off = size_t(end);
  }
  r->records = n;
  if (e->failed()) return;
  if (n != d.record_count) {
    Fail(e, "RECORD_MALFORMED", where + ": payload holds " + N(n) + " records, the batch declares " + N(d.record_count));
    return;
  }
  uint8_t* c = out + at + kFrameHeaderSize;
  StoreU64(c, d.first_seq);
  StoreU64(c + 8, d.last_seq);
  StoreU32(c + 16, uint32_t(d.record_count));
  StoreU32(c + 20, 0);
  StoreU64(c + 24, d.app_bytes);
  StoreU64(c + 32, d.changed_bytes);
  StoreU64(c + 40, d.wire_bytes);
  StoreU64(c + 48, d.wall_ms);
  SealFrame(out + at, kFrameCommit, uint32_t(kCommitBodySize));
}

}  // namespace tidemark
