// The appliance's batch ingest (native/src/batch_ingest.h) on its own: a
// batch of every kind framed and read back frame by frame (lengths, types,
// checksums, bodies, the COMMIT's fields, the records list), LZ4 and raw
// payloads alike, each rule refusing with its code and message, the MARK
// hand-off, and mangled batches that must be refused without reading or
// writing out of bounds (AddressSanitizer watches). The words of every
// message are checked against the TypeScript side's by
// test/record-check.test.ts; here, their codes and a few whole messages.
#include <lz4.h>

#include <cstring>
#include <string>
#include <vector>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "batch_ingest.h"
#include "check.h"
#include "records.h"

using namespace tidemark;
using namespace tidemark::test;

namespace {


constexpr uint64_t kSizeSectors = 2048;


Bytes Write(uint64_t seq, uint64_t sector, uint32_t count) { return Rec(seq, sector, count, kRecordWrite, Pattern(count * kSectorSize, uint32_t(seq + sector))); }

Bytes Cat(const std::vector<Bytes>& parts) {
  Bytes out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

BatchDecl Decl(uint64_t first, uint64_t last, uint64_t count) {
  BatchDecl d;
  d.first_seq = first;
  d.last_seq = last;
  d.record_count = count;
  d.last_accepted_seq = 10;
  d.size_sectors = kSizeSectors;
  d.app_bytes = 4096;
  d.changed_bytes = 2048;
  d.wire_bytes = 1000;
  d.wall_ms = 1795430400123;
  d.where = "volume v, batch seqs " + std::to_string(first) + ".." + std::to_string(last);
  return d;
}


struct Outcome {
  IngestError error;  // decode or declaration problems
  FrameResult frame;
  Bytes framed;
  std::vector<double> recs;
  const char* code() const { return error.failed() ? error.code : frame.error.code; }
  const std::string& message() const { return error.failed() ? error.message : frame.error.message; }
};

// What the addon does: decode, check the declaration, size the output, frame.
Outcome Ingest(const Bytes& payload, const BatchDecl& d, BatchEncoding enc = {}, std::vector<uint8_t>* scratch = nullptr) {
  static std::vector<uint8_t> own;
  if (!scratch) scratch = &own;
  if (enc.compression == kCompressionNone && enc.checksum == nullptr) enc.raw_length = payload.size();
  Outcome o;
  const uint8_t* raw = nullptr;
  if (!DecodeBatchPayload(payload.data(), payload.size(), enc, d, scratch, &raw, &o.error) ||
      !CheckBatchDecl(size_t(enc.raw_length), d, &o.error)) {
    return o;
  }
  o.framed.resize(FramedSize(size_t(enc.raw_length), d.record_count));
  o.recs.resize(size_t(d.record_count) * kCheckedStride);
  FrameBatch(raw, size_t(enc.raw_length), d, o.framed.data(), o.recs.data(), &o.frame);
  return o;
}

// Reads frames back as the journal's scan does: every frame intact, CHANGE
// bodies equal to the records, then one COMMIT with the batch's fields.
bool FramesRead(const Bytes& framed, const std::vector<Bytes>& records, const BatchDecl& d, const std::vector<double>& recs,
                std::string* why) {
  size_t at = 0;
  for (size_t i = 0; i < records.size(); i++) {
    const uint32_t len = LoadU32(&framed[at + 4]);
    if (len != records[i].size() || framed[at + 8] != kFrameChange || framed[at + 9] || framed[at + 10] || framed[at + 11]) {
      *why = "frame " + std::to_string(i) + " header";
      return false;
    }
    if (LoadU32(&framed[at]) != uint32_t(XXH64(&framed[at + 4], 8 + size_t(len), 0))) {
      *why = "frame " + std::to_string(i) + " checksum";
      return false;
    }
    if (std::memcmp(&framed[at + kFrameHeaderSize], records[i].data(), len) != 0) {
      *why = "frame " + std::to_string(i) + " body";
      return false;
    }
    if (recs[i * kCheckedStride + kCheckedOffset] != double(at) || recs[i * kCheckedStride + kCheckedSeq] != double(LoadU64(records[i].data()))) {
      *why = "record " + std::to_string(i) + " in the list";
      return false;
    }
    at += kFrameHeaderSize + len;
  }
  const uint8_t* c = &framed[at + kFrameHeaderSize];
  if (LoadU32(&framed[at + 4]) != kCommitBodySize || framed[at + 8] != kFrameCommit ||
      LoadU32(&framed[at]) != uint32_t(XXH64(&framed[at + 4], 8 + kCommitBodySize, 0))) {
    *why = "the COMMIT frame";
    return false;
  }
  if (LoadU64(c) != d.first_seq || LoadU64(c + 8) != d.last_seq || LoadU32(c + 16) != d.record_count || LoadU32(c + 20) != 0 ||
      LoadU64(c + 24) != d.app_bytes || LoadU64(c + 32) != d.changed_bytes || LoadU64(c + 40) != d.wire_bytes || LoadU64(c + 48) != d.wall_ms) {
    *why = "the COMMIT's fields";
    return false;
  }
  if (at + kFrameHeaderSize + kCommitBodySize != framed.size()) {
    *why = "the framed size";
    return false;
  }
  return true;
}

Bytes Lz4(const Bytes& raw) {
  Bytes out(4 + size_t(LZ4_compressBound(int(raw.size()))));
  const uint32_t n = uint32_t(raw.size());
  std::memcpy(out.data(), &n, 4);
  const int c = LZ4_compress_default(reinterpret_cast<const char*>(raw.data()), reinterpret_cast<char*>(out.data() + 4), int(raw.size()),
                                     int(out.size() - 4));
  out.resize(4 + size_t(c));
  return out;
}

void TestEveryKind() {
  const std::string meta = R"({"v":1,"label":"x","consistency":"app","wallMs":1,"group":""})";
  std::vector<Bytes> records = {
      Write(11, 0, 8),
      Rec(11, 100, 4, kRecordTrim),
      Rec(12, 40, 64, kRecordZero),
      Rec(13, 0, 0, kRecordFlush),
      Rec(14, 0, 0, kRecordGap),
      Rec(15, 512, 2, kRecordResync, Bytes(1024, 0xab)),
      Rec(15, 0, 0, kRecordExact),
      Rec(16, 0, 0, kRecordMark, Bytes(meta.begin(), meta.end())),
      Write(17, kSizeSectors - 1, 1),
  };
  const Bytes raw = Cat(records);
  const BatchDecl d = Decl(11, 17, records.size());
  Outcome o = Ingest(raw, d);
  CHECK(!o.error.failed() && !o.frame.error.failed(), "a batch of every kind is accepted" + Said(o.message()));
  CHECK(o.frame.records == records.size() && o.frame.marks == 1, "all its records are framed, one MARK among them");
  std::string why;
  CHECK(FramesRead(o.framed, records, d, o.recs, &why), "its frames read back: headers, checksums, bodies, COMMIT" + Said(why));
  const double* r2 = &o.recs[2 * kCheckedStride];
  CHECK(r2[kCheckedSector] == 40 && r2[kCheckedCount] == 64 && r2[kCheckedKind] == kRecordZero, "a ZERO record's sectors are listed");
  CHECK(o.recs[3 * kCheckedStride + kCheckedCount] == 0, "a FLUSH changes no sectors");

  // The same records as an LZ4 payload with its checksum, then raw again with
  // the scratch buffer already grown: the same frames.
  const uint64_t sum = XXH64(raw.data(), raw.size(), 0);
  uint8_t sum_le[8];
  std::memcpy(sum_le, &sum, 8);
  std::vector<uint8_t> scratch;
  BatchEncoding lz{kCompressionLz4, raw.size(), sum_le};
  Outcome z = Ingest(Lz4(raw), d, lz, &scratch);
  CHECK(!z.error.failed() && !z.frame.error.failed() && z.framed == o.framed, "LZ4 with its checksum: the same frames" + Said(z.message()));
  BatchEncoding plain{kCompressionNone, raw.size(), sum_le};
  Outcome p = Ingest(raw, d, plain, &scratch);
  CHECK(!p.error.failed() && p.framed == o.framed, "raw with its checksum: the same frames");
  const Bytes small = Write(11, 0, 1);
  Outcome s = Ingest(small, Decl(11, 11, 1), {}, &scratch);
  CHECK(!s.frame.error.failed() && s.framed.size() == FramedSize(small.size(), 1), "a small batch after a larger one");
}

void TestPayloadProblems() {
  const Bytes raw = Cat({Write(11, 0, 8), Rec(12, 0, 0, kRecordFlush)});
  const BatchDecl d = Decl(11, 12, 2);
  const uint64_t sum = XXH64(raw.data(), raw.size(), 0);
  uint8_t sum_le[8];
  std::memcpy(sum_le, &sum, 8);
  Bytes flipped = raw;
  flipped[40] ^= 0xff;
  Outcome o = Ingest(flipped, d, {kCompressionNone, raw.size(), sum_le});
  CHECK(o.code() && std::string(o.code()) == "BATCH_CHECKSUM", "a flipped byte: BATCH_CHECKSUM");
  CHECK(o.message().rfind("batch checksum mismatch (seqs 11..12): computed ", 0) == 0, "... naming the seqs" + Said(o.message()));
  Bytes z = Lz4(raw);
  Outcome cut = Ingest(Bytes(z.begin(), z.end() - 3), d, {kCompressionLz4, raw.size(), sum_le});
  CHECK(cut.code() && std::string(cut.code()) == "BATCH_CORRUPT" && cut.message().find("LZ4 payload cannot be decompressed") == 0,
        "a cut LZ4 block: BATCH_CORRUPT" + Said(cut.message()));
  Bytes lying = z;
  const uint32_t less = uint32_t(raw.size() - 1);
  std::memcpy(lying.data(), &less, 4);
  Outcome l = Ingest(lying, d, {kCompressionLz4, raw.size() - 1, sum_le});
  CHECK(l.code() && std::string(l.code()) == "BATCH_CORRUPT", "an LZ4 block longer than it announces: BATCH_CORRUPT" + Said(l.message()));
  Outcome wrong = Ingest(z, d, {kCompressionLz4, raw.size() + 5, sum_le});
  CHECK(wrong.code() && wrong.message() == "LZ4 payload does not announce the batch's " + std::to_string(raw.size() + 5) + " raw bytes",
        "an LZ4 prefix that disagrees" + Said(wrong.message()));
  Outcome shortz = Ingest(z, d, {kCompressionLz4, 0, sum_le});
  CHECK(shortz.code() && std::string(shortz.code()) == "BATCH_CORRUPT", "an LZ4 block announcing 0 bytes");
  Outcome sh = Ingest(Bytes(raw.begin(), raw.begin() + 100), d, {kCompressionNone, raw.size(), sum_le});
  CHECK(sh.message() == "batch payload is 100 bytes, the batch says " + std::to_string(raw.size()), "a payload shorter than announced" + Said(sh.message()));
  Outcome unk = Ingest(raw, d, {7, raw.size(), sum_le});
  CHECK(unk.code() && std::string(unk.code()) == "BATCH_CORRUPT", "an unknown compression");
}

void Refused(const char* what, const Bytes& raw, const BatchDecl& d, const char* code, const std::string& message = "") {
  Outcome o = Ingest(raw, d);
  const bool ok = o.code() && std::string(o.code()) == code && (message.empty() || o.message() == message);
  CHECK(ok, std::string(what) + ": " + code + Said(o.message()));
}

void TestRecordRules() {
  Refused("first seq not above the last accepted", Rec(10, 0, 1, kRecordTrim), Decl(10, 10, 1), "SEQ_OUT_OF_ORDER",
          "volume v, batch seqs 10..10: first seq 10 is not above the last accepted seq 10");
  Refused("last seq below first", Rec(12, 0, 1, kRecordTrim), Decl(12, 11, 1), "SEQ_OUT_OF_ORDER");
  Refused("record count does not fit", Rec(11, 0, 1, kRecordTrim), Decl(11, 11, 2), "RECORD_MALFORMED",
          "volume v, batch seqs 11..11: record count 2 does not fit 32 payload bytes");
  Refused("a huge record count", Rec(11, 0, 1, kRecordTrim), Decl(11, 11, uint64_t(1) << 60), "RECORD_MALFORMED");
  Refused("truncated header", Cat({Rec(11, 0, 1, kRecordTrim), Bytes(10)}), Decl(11, 11, 1), "RECORD_MALFORMED",
          "volume v, batch seqs 11..11: truncated record header at payload byte 32 (10 bytes left)");
  Bytes unsafe = Rec(11, 0, 1, kRecordTrim);
  unsafe[14] = 0x20;  // the sector's high word: 0x200000
  Refused("a sector beyond 2^53", unsafe, Decl(11, 11, 1), "RECORD_MALFORMED");
  Refused("seqs going back", Cat({Rec(13, 0, 1, kRecordTrim), Rec(12, 1, 1, kRecordTrim)}), Decl(12, 13, 2), "SEQ_OUT_OF_ORDER",
          "volume v, batch seqs 12..13: record 1 (seq 12, payload byte 32): seq goes back from 13");
  Refused("a seq past the batch", Rec(14, 0, 1, kRecordTrim), Decl(12, 13, 1), "SEQ_OUT_OF_ORDER");
  Refused("unknown kind", Rec(11, 0, 1, 9), Decl(11, 11, 1), "RECORD_MALFORMED",
          "volume v, batch seqs 11..11: record 0 (seq 11, payload byte 0): unknown kind 9");
  Bytes reserved = Rec(11, 0, 1, kRecordTrim);
  reserved[22] = 7;
  Refused("nonzero reserved field", reserved, Decl(11, 11, 1), "RECORD_MALFORMED");
  Refused("a GAP with sectors", Rec(11, 0, 1, kRecordGap), Decl(11, 11, 1), "RECORD_MALFORMED",
          "volume v, batch seqs 11..11: record 0 (seq 11, payload byte 0): a GAP marker names sectors");
  Refused("an EXACT with data", Rec(11, 0, 0, kRecordExact, Bytes(4)), Decl(11, 11, 1), "RECORD_MALFORMED");
  Refused("MARK metadata over the limit", Rec(11, 0, 0, kRecordMark, Bytes(5000, ' ')), Decl(11, 11, 1), "RECORD_MALFORMED");
  Bytes w = Write(11, 0, 2);
  w.resize(kRecordHeaderSize + 1000);
  const uint32_t thousand = 1000;
  std::memcpy(&w[offsetof(RecordHeader, data_length)], &thousand, 4);
  Refused("WRITE data length", w, Decl(11, 11, 1), "RECORD_MALFORMED",
          "volume v, batch seqs 11..11: record 0 (seq 11, payload byte 0): 2 sectors need 1024 data bytes, record has 1000");
  Refused("ZERO with data", Rec(11, 0, 1, kRecordZero, Bytes(512)), Decl(11, 11, 1), "RECORD_MALFORMED",
          "volume v, batch seqs 11..11: record 0 (seq 11, payload byte 0): ZERO record carries 512 data bytes");
  Bytes cut = Write(11, 0, 8);
  cut.pop_back();
  Refused("data past the payload", cut, Decl(11, 11, 1), "RECORD_MALFORMED",
          "volume v, batch seqs 11..11: record 0 (seq 11, payload byte 0): data runs past the end of the 4127-byte payload");
  Refused("a write past the end", Write(11, kSizeSectors - 1, 2), Decl(11, 11, 1), "RECORD_OUT_OF_RANGE",
          "volume v, batch seqs 11..11: record 0 (seq 11, payload byte 0): sectors 2047..2048 are past the end of the volume (2048 sectors)");
  Refused("a trim far past the end", Rec(11, uint64_t(1) << 52, 0xffffffffu, kRecordTrim), Decl(11, 11, 1), "RECORD_OUT_OF_RANGE",
          "volume v, batch seqs 11..11: record 0 (seq 11, payload byte 0): sectors 4503599627370496..4503603922337790 are past the end of the "
          "volume (2048 sectors)");
  Refused("more records than declared", Cat({Rec(11, 0, 1, kRecordTrim), Rec(11, 5, 1, kRecordTrim)}), Decl(11, 11, 1), "RECORD_MALFORMED",
          "volume v, batch seqs 11..11: payload holds more than the 1 records the batch declares");
  Refused("fewer records than declared", Write(11, 0, 1), Decl(11, 11, 2), "RECORD_MALFORMED",
          "volume v, batch seqs 11..11: payload holds 1 records, the batch declares 2");

  // The records before a problem are framed and listed, for the caller's MARK checks.
  const std::string meta = "not json";
  Outcome o = Ingest(Cat({Rec(11, 0, 0, kRecordMark, Bytes(meta.begin(), meta.end())), Rec(12, 0, 1, 9)}), Decl(11, 12, 2));
  CHECK(o.frame.error.failed() && o.frame.records == 1 && o.frame.marks == 1 && o.recs[kCheckedKind] == kRecordMark,
        "failing at record 1: record 0, a MARK, is framed and listed");
  const Bytes two = Cat({Rec(11, 0, 1, kRecordTrim), Rec(11, 0, 0, kRecordMark, Bytes(meta.begin(), meta.end()))});
  Outcome extra = Ingest(two, Decl(11, 11, 1));
  CHECK(extra.frame.pending_mark && std::string(reinterpret_cast<const char*>(extra.frame.pending_mark), extra.frame.pending_mark_length) == meta &&
            extra.frame.pending_mark_at == "volume v, batch seqs 11..11: record 1 (seq 11, payload byte 32)",
        "a MARK past the declared count is handed over with the text naming it");
}

// Mangled batches: every byte of a good one flipped in turn, and random
// truncations, raw and LZ4. Each must be accepted or refused with a code,
// never read or written out of bounds (AddressSanitizer), and an accepted one
// must read back.
void TestMangled() {
  std::vector<Bytes> records = {Write(11, 0, 1), Rec(12, 8, 2, kRecordTrim), Rec(13, 0, 0, kRecordFlush), Write(14, 64, 2)};
  const Bytes raw = Cat(records);
  const BatchDecl d = Decl(11, 14, records.size());
  size_t accepted = 0, refused = 0, unnamed = 0;
  for (size_t i = 0; i < raw.size(); i++) {
    for (uint8_t flip : {uint8_t(0x01), uint8_t(0x80), uint8_t(0xff)}) {
      Bytes m = raw;
      m[i] ^= flip;
      Outcome o = Ingest(m, d);
      if (!o.code()) {
        accepted++;
      } else {
        refused++;
        if (o.message().empty()) unnamed++;
      }
      // Cut at i: each prefix, as an LZ4 payload that announces the whole length.
      Bytes z = Lz4(Bytes(m.begin(), m.begin() + i));
      const uint32_t n = uint32_t(raw.size());
      std::memcpy(z.data(), &n, 4);
      Outcome c = Ingest(z, d, {kCompressionLz4, raw.size(), nullptr});
      if (c.code() && c.message().empty()) unnamed++;
    }
  }
  CHECK(accepted > 0 && refused > 0, "flipped bytes: some still valid (data), the rest refused (" + std::to_string(accepted) + " / " +
                                         std::to_string(refused) + ")");
  CHECK(unnamed == 0, "every refusal says why");
}

}  // namespace

int main() {
  TestEveryKind();
  TestPayloadProblems();
  TestRecordRules();
  TestMangled();
  return Finish();
}
