// The agent's native MicroScan (native/src/microscan.h) and payload encoder
// (batch_ingest.h EncodeBatchPayload) on their own: same-content sectors
// dropped, changed runs split into records that keep the write's seq, kind,
// flags and time, eviction of the least recently used page, RESYNC compared
// against fetched fingerprints (stale where the batch wrote first), trims and
// write-zeroes as metadata, huge trims that only touch what is cached, and
// the encoder's output decoding back through the appliance's decoder.
// test/microscan.test.ts drives the same code through the addon.
#include <cstring>
#include <list>
#include <map>
#include <string>
#include <vector>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "batch_ingest.h"
#include "check.h"
#include "records.h"
#include "microscan.h"

using namespace tidemark;
using namespace tidemark::test;

namespace {

constexpr uint64_t kGiB = 1ull << 30;
constexpr uint32_t kPerRegion = kScanSectorsPerRegion;


Bytes Cat(const std::vector<Bytes>& parts) {
  Bytes out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// `n` sectors, sector i filled with byte (seed + i).
Bytes Sectors(uint32_t n, uint32_t seed) {
  Bytes b(size_t(n) * kSectorSize);
  for (uint32_t i = 0; i < n; i++) std::memset(&b[size_t(i) * kSectorSize], int((seed + i) & 0xff), kSectorSize);
  return b;
}

struct Out {
  RecordHeader h;
  Bytes data;
};

struct Scanned {
  ScanResult r;
  std::vector<Out> recs;
};

Scanned Scan(MicroScanner& s, const Bytes& raw, const std::vector<ReplicaRegion>& replica = {}, bool with_replica = false) {
  Scanned x;
  Bytes out(MicroScanner::OutputBound(raw.size()));
  s.Scan(raw.data(), raw.size(), with_replica ? replica.data() : nullptr, replica.size(), out.data(), &x.r);
  for (size_t at = 0; at < x.r.bytes;) {
    Out o;
    std::memcpy(&o.h, &out[at], sizeof o.h);
    o.data.assign(out.begin() + long(at + kRecordHeaderSize), out.begin() + long(at + kRecordHeaderSize + o.h.data_length));
    at += kRecordHeaderSize + o.h.data_length;
    x.recs.push_back(std::move(o));
  }
  return x;
}

uint64_t Fp(const uint8_t* sector) { return XXH64(sector, kSectorSize, 0); }

void TestRuns() {
  MicroScanner s(kGiB, 256 << 20, true);
  const Bytes v1 = Sectors(64, 1);
  auto a = Scan(s, Rec(10, 100, 64, kRecordWrite, v1));
  CHECK(a.r.records == 1 && a.r.changed_sectors == 64, "a first write is all misses: sent whole");
  CHECK(a.r.app_bytes == 64 * kSectorSize, "app bytes count the write");

  Bytes v2 = v1;
  std::memset(&v2[3 * kSectorSize], 0xee, kSectorSize);
  std::memset(&v2[40 * kSectorSize], 0xdd, 2 * kSectorSize);
  auto b = Scan(s, Rec(11, 100, 64, kRecordWrite, v2, kRecordFlagFua));
  CHECK(b.recs.size() == 2, "two runs of changed sectors become two records");
  if (b.recs.size() == 2) {
    CHECK(b.recs[0].h.seq == 11 && b.recs[0].h.sector == 103 && b.recs[0].h.count == 1, "first run: sector 103, one sector, seq 11");
    CHECK(b.recs[1].h.seq == 11 && b.recs[1].h.sector == 140 && b.recs[1].h.count == 2, "second run: sectors 140-141, seq 11");
    CHECK(b.recs[0].h.kind == kRecordWrite && b.recs[0].h.flags == kRecordFlagFua && b.recs[1].h.flags == kRecordFlagFua,
          "both keep the write's kind and FUA flag");
    CHECK(b.recs[0].h.time_ms == 0x12345678 && b.recs[1].h.time_ms == 0x12345678, "both keep the capture time");
    CHECK(Same(b.recs[0].data.data(), &v2[3 * kSectorSize], kSectorSize), "first run carries the new sector");
    CHECK(b.recs[1].data.size() == 2 * kSectorSize && Same(b.recs[1].data.data(), &v2[40 * kSectorSize], 2 * kSectorSize),
          "second run carries the new sectors");
  }
  CHECK(b.r.changed_sectors == 3, "three sectors changed");
  CHECK(s.stats().sectors_dropped == 61, "61 unchanged sectors dropped");

  auto c = Scan(s, Cat({Rec(12, 100, 64, kRecordWrite, v2), Rec(13, 0, 0, kRecordFlush)}));
  CHECK(c.recs.size() == 1 && c.recs[0].h.kind == kRecordFlush && c.recs[0].h.seq == 13,
        "an unchanged rewrite is dropped whole; the flush passes");

  MicroScanner off(kGiB, 256 << 20, false);
  Scan(off, Rec(1, 0, 8, kRecordWrite, Sectors(8, 1)));
  CHECK(Scan(off, Rec(2, 0, 8, kRecordWrite, Sectors(8, 1))).r.changed_sectors == 8, "disabled: every sector is sent");
}

void TestEviction() {
  MicroScanner s(kGiB, 2 * (kScanPageBytes + kScanPageOverhead), true);
  CHECK(s.max_pages() == 2, "a budget of two pages holds two pages");
  const Bytes d = Sectors(8, 7);
  auto w = [&](uint64_t seq, uint64_t region) { return Scan(s, Rec(seq, region * kPerRegion, 8, kRecordWrite, d)).r.changed_sectors; };
  CHECK(w(1, 0) == 8, "region 0: first write sent");
  CHECK(w(2, 0) == 0, "region 0: rewrite dropped (cached)");
  w(3, 1);
  CHECK(w(4, 0) == 0, "region 0 touched again: now the most recently used");
  w(5, 2);  // evicts region 1, the least recently used
  CHECK(w(6, 0) == 0, "region 0 survived the eviction");
  CHECK(w(7, 1) == 8, "region 1 was evicted: unknown, so sent");
  CHECK(s.stats().evictions == 2 && s.pages() == 2, "evictions counted; never more than two pages");
  CHECK(s.state_bytes() <= 2 * (kScanPageBytes + kScanPageOverhead), "state within the budget");

  // Many regions through a small cache: the table survives eviction churn.
  MicroScanner big(64 * 1024 * kGiB, 1 << 20, true);
  bool ok = true;
  for (uint64_t i = 0; i < 20000; i++) {
    const uint64_t g = (i * 7919) % (64ull * 1024 * 16384);
    Scan(big, Rec(i + 1, g * kPerRegion, 8, kRecordWrite, d));
    if (big.pages() > big.max_pages()) ok = false;
  }
  CHECK(ok && big.state_bytes() <= (1 << 20), "20000 regions through a 1 MiB cache stay within it");
  // The newest page is still known after all that churn.
  const uint64_t last = (19999ull * 7919) % (64ull * 1024 * 16384);
  CHECK(Scan(big, Rec(30000, last * kPerRegion, 8, kRecordWrite, d)).r.changed_sectors == 0, "the newest region is still cached");
  big.Clear();
  CHECK(big.pages() == 0, "clear forgets every page");
  CHECK(Scan(big, Rec(30001, last * kPerRegion, 8, kRecordWrite, d)).r.changed_sectors == 8, "after clear, every sector is unknown");
}

// A plain model of the cache (a map and a list) against the scanner, over
// random writes to more regions than the cache holds: the same sectors
// dropped, the same evictions, through the table's deletions and regrowth.
void TestAgainstModel() {
  constexpr uint64_t kMaxPages = 8;
  MicroScanner s(kGiB, kMaxPages * (kScanPageBytes + kScanPageOverhead), true);
  std::map<uint64_t, std::vector<uint64_t>> pages;
  std::list<uint64_t> lru;  // oldest first
  uint64_t evictions = 0;
  std::vector<Bytes> contents;
  for (uint32_t i = 0; i < 4; i++) contents.push_back(Bytes(kSectorSize, uint8_t(i + 1)));
  uint32_t x = 12345;
  auto rnd = [&](uint32_t n) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    return x % n;
  };
  bool same = true;
  for (uint64_t seq = 1; seq <= 3000 && same; seq++) {
    const uint64_t sector = uint64_t(rnd(40)) * kPerRegion + rnd(kPerRegion);
    const uint32_t count = 1 + rnd(200);
    Bytes data;
    for (uint32_t i = 0; i < count; i++) {
      const Bytes& c = contents[rnd(4)];
      data.insert(data.end(), c.begin(), c.end());
    }
    uint64_t want = 0;
    uint64_t region = ~uint64_t(0);
    std::vector<uint64_t>* page = nullptr;
    for (uint32_t i = 0; i < count; i++) {
      const uint64_t g = (sector + i) / kPerRegion;
      if (g != region) {
        region = g;
        auto it = pages.find(g);
        if (it != pages.end()) {
          lru.remove(g);
        } else {
          if (pages.size() == kMaxPages) {
            pages.erase(lru.front());
            lru.pop_front();
            evictions++;
          }
          it = pages.emplace(g, std::vector<uint64_t>(kPerRegion, 0)).first;
        }
        lru.push_back(g);
        page = &it->second;
      }
      const uint64_t fp = Fp(&data[size_t(i) * kSectorSize]);
      uint64_t& known = (*page)[(sector + i) % kPerRegion];
      if (!(known != 0 && known == fp)) want++;
      known = fp;
    }
    const uint64_t got = Scan(s, Rec(seq, sector, count, kRecordWrite, data)).r.changed_sectors;
    if (got != want) {
      std::printf("# seq %llu: the scanner sent %llu sectors, the model %llu\n", (unsigned long long)seq, (unsigned long long)got,
                  (unsigned long long)want);
      same = false;
    }
  }
  CHECK(same, "3000 random writes over 40 regions through 8 pages: the sectors sent match the model's");
  CHECK(s.stats().evictions == evictions && evictions > 1000, "evictions match the model's (" + std::to_string(evictions) + ")");
}

void TestResync() {
  MicroScanner s(kGiB, 256 << 20, true);
  Bytes zero(kSectorSize, 0), A(kSectorSize, 0xaa), B(kSectorSize, 0xbb);
  std::vector<uint64_t> fps(kPerRegion, Fp(zero.data()));
  fps[7] = Fp(A.data());
  Bytes region(size_t(kPerRegion) * kSectorSize, 0);
  std::memset(&region[5 * kSectorSize], 0x55, kSectorSize);
  std::memcpy(&region[7 * kSectorSize], A.data(), kSectorSize);
  const uint64_t base = 3 * kPerRegion;
  std::vector<ReplicaRegion> replica{{3, fps.data(), kPerRegion}};
  auto x = Scan(s, Cat({Rec(20, base + 7, 1, kRecordWrite, B), Rec(21, base, kPerRegion, kRecordResync, region)}), replica, true);
  CHECK(x.recs.size() == 3, "the write, then two resync runs");
  if (x.recs.size() == 3) {
    CHECK(x.recs[0].h.seq == 20 && x.recs[0].h.sector == base + 7, "the write of sector 7 passes");
    CHECK(x.recs[1].h.seq == 21 && x.recs[1].h.sector == base + 5 && x.recs[1].h.kind == kRecordResync,
          "sector 5 differs from the replica's fingerprint");
    CHECK(x.recs[2].h.seq == 21 && x.recs[2].h.sector == base + 7 && x.recs[2].h.count == 1,
          "sector 7 equals the stale fetched fingerprint, but the batch wrote B there first: sent");
  }
  // The cache learned the replica: the region is now known, so a rewrite of it is dropped.
  CHECK(Scan(s, Rec(22, base, kPerRegion, kRecordWrite, region)).r.changed_sectors == 0,
        "after the resync the cache holds the region's contents");

  // A brand-new replica holds zeroes: an all-zero region is not sent.
  MicroScanner fresh(kGiB, 256 << 20, true);
  std::vector<uint64_t> zeroes(kPerRegion, Fp(zero.data()));
  std::vector<ReplicaRegion> zr{{0, zeroes.data(), kPerRegion}};
  auto c = Scan(fresh, Rec(30, 0, kPerRegion, kRecordResync, Bytes(size_t(kPerRegion) * kSectorSize, 0)), zr, true);
  CHECK(c.r.records == 0 && c.r.app_bytes == 0, "an all-zero region is not sent to a new replica (and is not app bytes)");

  // A hole the tap sent as a flagged ZERO record (volume.cc): dropped where
  // the replica already reads as zeroes, sent where it holds data.
  {
    MicroScanner h(kGiB, 256 << 20, true);
    auto dropped = Scan(h, Rec(50, 0, kPerRegion, kRecordZero, {}, kRecordFlagResync), zr, true);
    CHECK(dropped.r.records == 0 && dropped.r.bytes == 0, "a hole over a replica of zeroes is not sent");
    std::vector<uint64_t> some(kPerRegion, Fp(zero.data()));
    some[9] = Fp(A.data());
    std::vector<ReplicaRegion> sr{{1, some.data(), kPerRegion}};
    auto sent = Scan(h, Rec(51, kPerRegion, kPerRegion, kRecordZero, {}, kRecordFlagResync), sr, true);
    CHECK(sent.recs.size() == 1 && sent.recs[0].h.kind == kRecordZero && sent.recs[0].h.flags == kRecordFlagResync &&
              sent.recs[0].h.data_length == 0,
          "a hole over a replica that holds data there is sent, as the header it is");
    CHECK(Scan(h, Rec(52, kPerRegion, kPerRegion, kRecordZero, {}, kRecordFlagResync)).r.records == 0,
          "then the cache knows the region reads as zeroes");
    CHECK(Scan(h, Rec(53, 5 * kPerRegion, kPerRegion, kRecordZero, {}, kRecordFlagResync)).r.records == 1,
          "without fingerprints or a cached page, a hole is sent");
    MicroScanner off(kGiB, 256 << 20, false);
    CHECK(Scan(off, Rec(54, 0, kPerRegion, kRecordZero, {}, kRecordFlagResync), zr, true).r.records == 1,
          "with MicroScan off, every hole is sent");
  }

  // Without fetched fingerprints a RESYNC compares with the cache.
  MicroScanner cold(kGiB, 256 << 20, true);
  CHECK(Scan(cold, Rec(40, 0, 4, kRecordResync, Sectors(4, 3))).r.changed_sectors == 4, "a resync with no fingerprints: all misses, sent");
  CHECK(Scan(cold, Rec(41, 0, 4, kRecordResync, Sectors(4, 3))).r.changed_sectors == 0, "then the cache knows them");

  // A short last region: the volume ends 10 sectors into region 1.
  MicroScanner shortv(uint64_t(kPerRegion + 10) * kSectorSize, 256 << 20, true);
  CHECK(shortv.RegionSectors(1) == 10 && shortv.RegionSectors(2) == 0, "the last region is short; none past it");
}

void TestTrims() {
  MicroScanner s(kGiB, 256 << 20, true);
  Scan(s, Rec(1, 0, 16, kRecordWrite, Sectors(16, 9)));
  auto t = Scan(s, Cat({Rec(2, 0, 16, kRecordTrim), Rec(3, 1000, 4000, kRecordZero, {}, kRecordFlagFua)}));
  CHECK(t.r.bytes == 2 * kRecordHeaderSize && t.recs.size() == 2, "trim and write-zeroes are headers only");
  if (t.recs.size() == 2) {
    CHECK(t.recs[0].h.kind == kRecordTrim && t.recs[0].h.count == 16 && t.recs[0].h.data_length == 0, "the trim as captured");
    CHECK(t.recs[1].h.kind == kRecordZero && t.recs[1].h.sector == 1000 && t.recs[1].h.flags == kRecordFlagFua, "the write-zeroes as captured");
  }
  CHECK(Scan(s, Rec(4, 0, 16, kRecordWrite, Bytes(16 * kSectorSize, 0))).r.changed_sectors == 0,
        "zeroes written over trimmed sectors are already on the replica");

  // A 1 TiB trim is one header and only updates the pages held.
  const uint64_t pages = s.pages();
  auto h = Scan(s, Rec(5, 0, 1u << 31, kRecordTrim));
  CHECK(h.r.bytes == kRecordHeaderSize, "a 1 TiB trim is one header");
  CHECK(s.pages() == pages, "a huge trim creates no pages");
  Scan(s, Rec(6, 200, 4, kRecordWrite, Sectors(4, 5)));
  Scan(s, Rec(7, 0, 1u << 31, kRecordTrim));
  CHECK(Scan(s, Rec(8, 200, 4, kRecordWrite, Bytes(4 * kSectorSize, 0))).r.changed_sectors == 0,
        "a huge trim zeroes the cached pages it covers");
  // Found by microscan_fuzz: a range that wraps past 2^64 once filled pages out of bounds.
  CHECK(Scan(s, Rec(9, ~uint64_t(0) - 100, 200, kRecordZero)).r.bytes == kRecordHeaderSize, "a range that wraps past 2^64 is one header, nothing more");
}

void TestBadBatches() {
  MicroScanner s(kGiB, 256 << 20, true);
  Bytes rec = Rec(1, 0, 2, kRecordWrite, Sectors(2, 1));
  Bytes lying = rec;
  const uint32_t three = 3;
  std::memcpy(&lying[offsetof(RecordHeader, count)], &three, 4);
  CHECK(Scan(s, lying).r.error.find("holds 1024 bytes of data for 3 sectors") != std::string::npos, "a count that disagrees with the data is refused");
  Bytes cut(rec.begin(), rec.end() - 1);
  CHECK(Scan(s, cut).r.error.find("runs past the end") != std::string::npos, "a truncated record is refused");
  Bytes head(rec.begin(), rec.begin() + 20);
  CHECK(Scan(s, head).r.error.find("truncated record header") != std::string::npos, "a truncated header is refused");
}

void TestEncode() {
  std::vector<uint8_t> scratch;
  // Compressible: LZ4, decoded back by the appliance's decoder with the checksum checked.
  const Bytes text = Cat({Rec(1, 0, 256, kRecordWrite, Bytes(256 * kSectorSize, 0x41))});
  EncodedPayload p;
  EncodeBatchPayload(text.data(), text.size(), true, &scratch, &p);
  CHECK(p.compression == kCompressionLz4 && p.length < text.size() / 4, "compressible records are sent as LZ4");
  uint8_t sum[8];
  std::memcpy(sum, &p.checksum, 8);
  BatchEncoding enc;
  enc.compression = p.compression;
  enc.raw_length = text.size();
  enc.checksum = sum;
  BatchDecl d;
  std::vector<uint8_t> dscratch;
  const uint8_t* raw = nullptr;
  IngestError err;
  CHECK(DecodeBatchPayload(p.data, p.length, enc, d, &dscratch, &raw, &err) && Same(raw, text.data(), text.size()),
        "the appliance decodes it to the same records, checksum and all" + Said(err.message));
  // Incompressible: the sample says no, sent raw.
  const Bytes noise = Pattern(512 * 1024, 3);
  EncodeBatchPayload(noise.data(), noise.size(), true, &scratch, &p);
  CHECK(p.compression == kCompressionNone && p.data == noise.data() && p.length == noise.size(), "incompressible records are sent raw");
  CHECK(p.checksum == XXH64(noise.data(), noise.size(), 0), "the checksum is xxh64 seed 0 of the raw records");
  EncodeBatchPayload(text.data(), text.size(), false, &scratch, &p);
  CHECK(p.compression == kCompressionNone, "compression off: raw");
  EncodeBatchPayload(text.data(), 512, true, &scratch, &p);
  CHECK(p.compression == kCompressionNone, "below the minimum: raw");
}

}  // namespace

int main() {
  TestRuns();
  TestEviction();
  TestAgainstModel();
  TestResync();
  TestTrims();
  TestBadBatches();
  TestEncode();
  return Finish();
}
