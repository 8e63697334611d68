// MicroScan in native code: the per-sector and per-record work of
// agent/microscan.ts, which states the semantics (the cache invariant, RESYNC
// records compared against the appliance's fingerprints, TRIM/ZERO as
// metadata, FLUSH passing, runs of changed sectors as records that keep the
// captured write's seq, kind, flags and time). This file keeps them exactly;
// agent/microscan.ts keeps the policy and the fingerprint round trip.
//
// The fingerprint cache: one page of 128 u64 fingerprints per 64 KiB region
// (0 = unknown), pages in 1 MiB slabs allocated as the cache fills, at most
// max_pages() of them, evicted whole, least recently used first. The region
// -> slot map is an open-addressing table and the LRU order a list threaded
// through per-slot arrays, so a scan allocates nothing per record or per
// page once the cache has grown (the JavaScript version kept a Map entry and
// a BigInt per sector).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "record.h"

namespace tidemark {

constexpr uint32_t kScanSectorsPerRegion = 128;  // kRegionSize / kSectorSize (dirty_map.h)
// A page's fingerprints and its share of the bookkeeping, counted against the
// budget as agent/microscan.ts always counted them (PAGE_BYTES + PAGE_OVERHEAD).
constexpr uint64_t kScanPageBytes = kScanSectorsPerRegion * 8;
constexpr uint64_t kScanPageOverhead = 64;
// A TRIM/ZERO over more sectors than this only updates pages already cached
// (a mkfs discarding the whole device must not fill the cache with zeroes).
constexpr uint64_t kScanTrimCreateLimit = 16 * kScanSectorsPerRegion;

// The appliance's fingerprints for one region (regionSectors of them),
// taken after every batch produced before the one being scanned.
struct ReplicaRegion {
  uint64_t region = 0;
  const uint64_t* fps = nullptr;
  uint32_t sectors = 0;
};

struct ScanStats {
  uint64_t sectors_seen = 0;
  uint64_t sectors_dropped = 0;
  uint64_t misses = 0;
  uint64_t evictions = 0;
};

struct ScanResult {
  size_t bytes = 0;          // records written to out
  uint64_t records = 0;      // records written
  uint64_t app_bytes = 0;    // bytes the application wrote (WRITE records)
  uint64_t changed_sectors = 0;  // WRITE and RESYNC sectors sent
  std::string error;         // empty: scanned; else the batch was not a whole list of records
};

class MicroScanner {
 public:
  MicroScanner(uint64_t volume_bytes, uint64_t cache_bytes, bool enabled);

  bool enabled() const { return enabled_; }
  uint64_t max_pages() const { return max_pages_; }
  uint64_t pages() const { return pages_; }
  // Bytes of fingerprint state allocated: slabs plus the per-page overhead.
  uint64_t state_bytes() const { return slab_bytes_ + pages_ * kScanPageOverhead; }
  const ScanStats& stats() const { return st_; }
  // Sectors in a region (the volume's last one may be short; 0 past its end).
  uint32_t RegionSectors(uint64_t region) const {
    const uint64_t first = region * kScanSectorsPerRegion;
    return first >= total_sectors_ ? 0 : uint32_t(std::min<uint64_t>(kScanSectorsPerRegion, total_sectors_ - first));
  }

  // Forgets everything: the replica may no longer hold what the cache says.
  void Clear();

  // The most bytes Scan writes for a batch of `length` bytes: every other
  // sector changed, a 32-byte header per 512 bytes of data.
  static size_t OutputBound(size_t length) { return (length * 17 + 15) / 16 + kRecordHeaderSize; }

  // Drops the sectors the replica already holds from the records in raw
  // (whole records as the tap writes them) and writes the records to send
  // into out (OutputBound(length) bytes). replica: the appliance's
  // fingerprints for the regions of the batch's RESYNC records, or nullptr
  // (RESYNC records then compare against the cache).
  void Scan(const uint8_t* raw, size_t length, const ReplicaRegion* replica, size_t replica_count, uint8_t* out,
            ScanResult* r);

 private:
  struct Touched {
    uint64_t region;
    const ReplicaRegion* fps;
    uint64_t bits[2];  // sectors of the region written earlier in this batch
  };

  uint64_t* PageFps(uint32_t slot) { return &slabs_[slot >> kSlabShift][(slot & (kSlabPages - 1)) * kScanSectorsPerRegion]; }
  // The slot of a region's page, most recently used now; with create,
  // allocated (evicting) if absent. -1 if none.
  int64_t Page(uint64_t region, bool create);
  // The slot of a region's page without touching the LRU order, or -1.
  int64_t Find(uint64_t region) const;
  Touched* FindTouched(uint64_t region);
  void SetZero(uint64_t first, uint64_t count);
  // Does the replica (as this batch has left it so far) read [first, first+count) as zeroes?
  bool KnownZero(uint64_t first, uint32_t count);
  void FillZero(uint64_t region, int64_t slot, uint64_t first, uint64_t end);

  // The region -> slot table (linear probing, backward-shift deletion).
  void MapPut(uint64_t region, uint32_t slot);
  void MapErase(uint64_t region);
  void MapGrow();
  void LruUnlink(uint32_t slot);
  void LruPushNewest(uint32_t slot);

  static constexpr uint32_t kSlabShift = 10;
  static constexpr uint32_t kSlabPages = 1u << kSlabShift;
  static constexpr uint64_t kEmpty = ~uint64_t(0);
  static constexpr uint32_t kNone = ~uint32_t(0);

  bool enabled_;
  uint64_t total_sectors_;
  uint64_t max_pages_;
  uint64_t zero_fp_;
  std::vector<std::unique_ptr<uint64_t[]>> slabs_;
  uint64_t slab_bytes_ = 0;
  uint64_t pages_ = 0;       // pages held
  uint32_t next_slot_ = 0;   // slots handed out so far (until max_pages_)
  std::vector<uint64_t> slot_region_;
  std::vector<uint32_t> prev_, next_;
  uint32_t oldest_ = kNone, newest_ = kNone;
  std::vector<uint64_t> keys_;
  std::vector<uint32_t> vals_;
  uint64_t mask_ = 0;
  std::vector<Touched> touched_;  // sorted by region, reused across scans
  ScanStats st_;
};

}  // namespace tidemark
