// libFuzzer target for the agent's native MicroScan and payload encoder
// (native/src/microscan.h, batch_ingest.h EncodeBatchPayload): the code that
// walks every pulled batch and the fingerprints an appliance sent back.
//
// Input: 4 control bytes, then the batch.
//   0   cache budget in pages (0..255): small, so eviction and the table's
//       deletions run all the time
//   1   bit 0: MicroScan disabled; bit 1: compress the result
//   2   replica regions fetched (0..15), regions 0.., fingerprints derived
//       from the input so they sometimes match
//   3   volume size in regions (1..256)
// The batch is scanned twice (the second time against the cache the first
// left). Either it is refused with a message, or the output must be whole
// records inside OutputBound, each WRITE/RESYNC piece's data equal to the
// input sectors it names, the records counted, the cache within its budget,
// and the encoded payload must decode (the appliance's decoder) back to the
// output with its checksum. Any violation aborts.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "batch_ingest.h"
#include "microscan.h"

using namespace tidemark;

namespace {

[[noreturn]] void Fail(const char* what, const std::string& detail = "") {
  std::fprintf(stderr, "microscan_fuzz: invariant violated: %s %s\n", what, detail.c_str());
  std::abort();
}

RecordHeader Header(const uint8_t* p) {
  RecordHeader h;
  std::memcpy(&h, p, sizeof h);
  return h;
}

// Whether some captured record with this seq and kind wrote these bytes to `sector`.
bool FromInput(const uint8_t* raw, size_t length, uint64_t seq, uint8_t kind, uint64_t sector, const uint8_t* bytes) {
  for (size_t at = 0; at + kRecordHeaderSize <= length;) {
    const RecordHeader h = Header(raw + at);
    if (kRecordHeaderSize + size_t(h.data_length) > length - at) break;
    if (h.seq == seq && h.kind == kind && sector - h.sector < h.count && uint64_t(h.count) * kSectorSize == h.data_length &&
        std::memcmp(raw + at + kRecordHeaderSize + (sector - h.sector) * kSectorSize, bytes, kSectorSize) == 0)
      return true;
    at += kRecordHeaderSize + h.data_length;
  }
  return false;
}

void Check(MicroScanner& s, uint64_t budget, const uint8_t* raw, size_t length, const ScanResult& r, const uint8_t* out,
           bool compress) {
  if (r.bytes > MicroScanner::OutputBound(length)) Fail("output past its bound");
  uint64_t records = 0;
  for (size_t at = 0; at < r.bytes;) {
    if (r.bytes - at < kRecordHeaderSize) Fail("a torn header in the output");
    const RecordHeader h = Header(out + at);
    if (kRecordHeaderSize + size_t(h.data_length) > r.bytes - at) Fail("a record runs past the output");
    if (h.kind == kRecordWrite || h.kind == kRecordResync) {
      if (uint64_t(h.count) * kSectorSize != h.data_length || h.count == 0) Fail("a piece whose data is not its sectors");
      for (uint32_t i = 0; i < h.count; i++) {
        if (!FromInput(raw, length, h.seq, h.kind, h.sector + i, out + at + kRecordHeaderSize + size_t(i) * kSectorSize))
          Fail("a piece's sector is not what the input wrote there", std::to_string(h.sector + i));
      }
    } else if ((h.kind == kRecordTrim || h.kind == kRecordZero) && h.data_length != 0) {
      Fail("a trim with data");
    }
    records++;
    at += kRecordHeaderSize + h.data_length;
  }
  if (records != r.records) Fail("records miscounted");
  if (s.pages() > s.max_pages() || s.state_bytes() > budget) Fail("the cache is over its budget");

  std::vector<uint8_t> scratch, dscratch;
  EncodedPayload p;
  EncodeBatchPayload(out, r.bytes, compress, &scratch, &p);
  uint8_t sum[8];
  std::memcpy(sum, &p.checksum, 8);
  BatchEncoding enc;
  enc.compression = p.compression;
  enc.raw_length = r.bytes;
  enc.checksum = sum;
  BatchDecl d;
  const uint8_t* back = nullptr;
  IngestError err;
  if (!DecodeBatchPayload(p.data, p.length, enc, d, &dscratch, &back, &err)) Fail("the encoded payload does not decode", err.message);
  if (r.bytes && std::memcmp(back, out, r.bytes) != 0) Fail("the encoded payload decodes to other bytes");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  const uint64_t budget = uint64_t(data[0]) * (kScanPageBytes + kScanPageOverhead);
  const bool enabled = !(data[1] & 1), compress = data[1] & 2;
  const uint32_t nreplica = data[2] & 15;
  const uint64_t regions = 1 + data[3];
  const uint8_t* raw = data + 4;
  const size_t length = size - 4;
  MicroScanner s(regions * kScanSectorsPerRegion * kSectorSize, budget, enabled);

  // Fingerprints the appliance might send: some of them the input's own sectors'.
  std::vector<uint64_t> fps;
  std::vector<ReplicaRegion> replica;
  for (uint32_t g = 0; g < nreplica && g < regions; g++) {
    const uint32_t n = s.RegionSectors(g);
    for (uint32_t i = 0; i < n; i++) {
      const size_t at = (size_t(g) * 131 + i * 17) * 8;
      fps.push_back(at + kSectorSize <= length ? XXH64(raw + at, kSectorSize, 0) : i);
    }
  }
  for (uint32_t g = 0, at = 0; g < nreplica && g < regions; g++) {
    replica.push_back(ReplicaRegion{g, fps.data() + at, s.RegionSectors(g)});
    at += s.RegionSectors(g);
  }

  std::vector<uint8_t> out(MicroScanner::OutputBound(length));
  for (int pass = 0; pass < 2; pass++) {
    ScanResult r;
    s.Scan(raw, length, pass == 0 && !replica.empty() ? replica.data() : nullptr, replica.size(), out.data(), &r);
    if (!r.error.empty()) return 0;
    Check(s, budget, raw, length, r, out.data(), compress);
  }
  return 0;
}
