// See microscan.h; agent/microscan.ts states what is kept and why.
#include "microscan.h"

#include <algorithm>
#include <cstring>

#define XXH_INLINE_ALL
#include <xxhash.h>

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the records are little-endian");

namespace tidemark {

namespace {


uint64_t Fingerprint(const uint8_t* sector) { return XXH64(sector, kSectorSize, 0); }

// One record for `count` sectors of the captured record at rec (its seq,
// kind, flags and time), starting `from` sectors into its data.
uint8_t* Emit(uint8_t* w, const uint8_t* rec, uint64_t sector, uint32_t from, uint32_t count) {
  std::memcpy(w, rec, kRecordHeaderSize);
  StoreU64(w + offsetof(RecordHeader, sector), sector);
  StoreU32(w + offsetof(RecordHeader, count), count);
  StoreU32(w + offsetof(RecordHeader, data_length), count * kSectorSize);
  std::memcpy(w + kRecordHeaderSize, rec + kRecordHeaderSize + size_t(from) * kSectorSize, size_t(count) * kSectorSize);
  return w + kRecordHeaderSize + size_t(count) * kSectorSize;
}

}  // namespace

MicroScanner::MicroScanner(uint64_t volume_bytes, uint64_t cache_bytes, bool enabled)
    : enabled_(enabled), total_sectors_(volume_bytes / kSectorSize) {
  const uint64_t regions = (total_sectors_ + kScanSectorsPerRegion - 1) / kScanSectorsPerRegion;
  max_pages_ = std::min<uint64_t>(regions, cache_bytes / (kScanPageBytes + kScanPageOverhead));
  // Slots are u32 with kNone reserved: 4 G pages would be a 4 TiB budget.
  max_pages_ = std::min<uint64_t>(max_pages_, kNone - 1);
  uint8_t zero[kSectorSize] = {};
  zero_fp_ = Fingerprint(zero);
}

void MicroScanner::Clear() {
  pages_ = 0;
  next_slot_ = 0;
  oldest_ = newest_ = kNone;
  std::fill(keys_.begin(), keys_.end(), kEmpty);
}

// ---- the region -> slot table ----

namespace {
uint64_t Hash(uint64_t region) { return (region * 0x9E3779B97F4A7C15ull) ^ (region >> 29); }
}  // namespace

int64_t MicroScanner::Find(uint64_t region) const {
  if (keys_.empty()) return -1;
  for (uint64_t i = Hash(region) & mask_;; i = (i + 1) & mask_) {
    if (keys_[i] == region) return vals_[i];
    if (keys_[i] == kEmpty) return -1;
  }
}

void MicroScanner::MapGrow() {
  std::vector<uint64_t> old_keys = std::move(keys_);
  std::vector<uint32_t> old_vals = std::move(vals_);
  const size_t cap = old_keys.empty() ? 1024 : old_keys.size() * 2;
  keys_.assign(cap, kEmpty);
  vals_.assign(cap, 0);
  mask_ = cap - 1;
  for (size_t i = 0; i < old_keys.size(); i++)
    if (old_keys[i] != kEmpty) MapPut(old_keys[i], old_vals[i]);
}

void MicroScanner::MapPut(uint64_t region, uint32_t slot) {
  // Kept at most half full, so probes stay short.
  if ((pages_ + 1) * 2 > keys_.size()) MapGrow();
  uint64_t i = Hash(region) & mask_;
  while (keys_[i] != kEmpty && keys_[i] != region) i = (i + 1) & mask_;
  keys_[i] = region;
  vals_[i] = slot;
}

void MicroScanner::MapErase(uint64_t region) {
  uint64_t i = Hash(region) & mask_;
  while (keys_[i] != region) {
    if (keys_[i] == kEmpty) return;
    i = (i + 1) & mask_;
  }
  // Backward shift: move later entries of the probe run into the hole when
  // their home position allows it, so lookups never need tombstones.
  for (uint64_t j = (i + 1) & mask_;; j = (j + 1) & mask_) {
    if (keys_[j] == kEmpty) break;
    const uint64_t home = Hash(keys_[j]) & mask_;
    const bool movable = i <= j ? (home <= i || home > j) : (home <= i && home > j);
    if (movable) {
      keys_[i] = keys_[j];
      vals_[i] = vals_[j];
      i = j;
    }
  }
  keys_[i] = kEmpty;
}

// ---- LRU order ----

void MicroScanner::LruUnlink(uint32_t s) {
  if (prev_[s] != kNone) next_[prev_[s]] = next_[s];
  else oldest_ = next_[s];
  if (next_[s] != kNone) prev_[next_[s]] = prev_[s];
  else newest_ = prev_[s];
}

void MicroScanner::LruPushNewest(uint32_t s) {
  prev_[s] = newest_;
  next_[s] = kNone;
  if (newest_ != kNone) next_[newest_] = s;
  else oldest_ = s;
  newest_ = s;
}

int64_t MicroScanner::Page(uint64_t region, bool create) {
  const int64_t found = Find(region);
  if (found >= 0) {
    const uint32_t s = uint32_t(found);
    if (newest_ != s) {
      LruUnlink(s);
      LruPushNewest(s);
    }
    return found;
  }
  if (!create || max_pages_ == 0) return -1;
  uint32_t s;
  if (next_slot_ < max_pages_) {
    s = next_slot_++;
    if ((s >> kSlabShift) >= slabs_.size()) {
      const uint64_t left = max_pages_ - (uint64_t(slabs_.size()) << kSlabShift);
      const uint64_t n = std::min<uint64_t>(kSlabPages, left) * kScanSectorsPerRegion;
      slabs_.emplace_back(new uint64_t[n]);
      slab_bytes_ += n * 8;
    }
    if (s >= slot_region_.size()) {
      slot_region_.resize(s + 1);
      prev_.resize(s + 1);
      next_.resize(s + 1);
    }
  } else {
    s = oldest_;
    LruUnlink(s);
    MapErase(slot_region_[s]);
    pages_--;
    st_.evictions++;
  }
  std::fill_n(PageFps(s), kScanSectorsPerRegion, uint64_t(0));
  slot_region_[s] = region;
  MapPut(region, s);
  pages_++;
  LruPushNewest(s);
  return s;
}

// ---- the scan ----

MicroScanner::Touched* MicroScanner::FindTouched(uint64_t region) {
  auto it = std::lower_bound(touched_.begin(), touched_.end(), region,
                             [](const Touched& t, uint64_t g) { return t.region < g; });
  return it != touched_.end() && it->region == region ? &*it : nullptr;
}

void MicroScanner::Scan(const uint8_t* raw, size_t length, const ReplicaRegion* replica, size_t replica_count,
                        uint8_t* out, ScanResult* r) {
  *r = ScanResult();
  touched_.clear();
  if (replica) {
    for (size_t i = 0; i < replica_count; i++) touched_.push_back(Touched{replica[i].region, &replica[i], {0, 0}});
    std::sort(touched_.begin(), touched_.end(), [](const Touched& a, const Touched& b) { return a.region < b.region; });
    // The cache learns what the replica holds, as of the start of this batch.
    for (size_t i = 0; i < replica_count; i++) {
      const int64_t slot = Page(replica[i].region, true);
      if (slot < 0) continue;
      std::memcpy(PageFps(uint32_t(slot)), replica[i].fps,
                  std::min<uint32_t>(replica[i].sectors, kScanSectorsPerRegion) * sizeof(uint64_t));
    }
  }

  uint8_t* w = out;
  for (size_t at = 0; at < length;) {
    if (length - at < kRecordHeaderSize) {
      r->error = "truncated record header at byte " + std::to_string(at);
      break;
    }
    const uint8_t* rec = raw + at;
    const uint32_t data_length = LoadU32(rec + offsetof(RecordHeader, data_length));
    const size_t n = kRecordHeaderSize + size_t(data_length);
    if (n > length - at) {
      r->error = "record at byte " + std::to_string(at) + " runs past the end of the batch";
      break;
    }
    const uint8_t kind = rec[offsetof(RecordHeader, kind)];
    const uint64_t first = LoadU64(rec + offsetof(RecordHeader, sector));
    const uint32_t count = LoadU32(rec + offsetof(RecordHeader, count));
    if (kind == kRecordWrite || kind == kRecordResync) {
      if (uint64_t(count) * kSectorSize != data_length) {
        r->error = "record at byte " + std::to_string(at) + " holds " + std::to_string(data_length) +
                   " bytes of data for " + std::to_string(count) + " sectors";
        break;
      }
      if (kind == kRecordWrite) r->app_bytes += data_length;
      st_.sectors_seen += count;
      const uint8_t* data = rec + kRecordHeaderSize;
      int64_t run_start = -1;
      uint64_t region = ~uint64_t(0);
      uint64_t* page = nullptr;
      const ReplicaRegion* rf = nullptr;
      Touched* tm = nullptr;
      for (uint32_t i = 0; i < count; i++) {
        const uint64_t sector = first + i;
        const uint64_t g = sector / kScanSectorsPerRegion;
        if (g != region) {
          region = g;
          const int64_t slot = Page(g, true);
          page = slot < 0 ? nullptr : PageFps(uint32_t(slot));
          tm = replica ? FindTouched(g) : nullptr;
          rf = kind == kRecordResync && tm ? tm->fps : nullptr;
        }
        const uint32_t off = uint32_t(sector - g * kScanSectorsPerRegion);
        const uint64_t fp = Fingerprint(data + size_t(i) * kSectorSize);
        const uint64_t bit = uint64_t(1) << (off & 63);
        uint64_t known;
        if (rf && off < rf->sectors && !(tm->bits[off >> 6] & bit)) known = rf->fps[off];
        else known = page ? page[off] : 0;
        if (tm) tm->bits[off >> 6] |= bit;
        if (enabled_ && known != 0 && known == fp) {
          st_.sectors_dropped++;
          if (run_start >= 0) {
            w = Emit(w, rec, first + uint64_t(run_start), uint32_t(run_start), i - uint32_t(run_start));
            r->changed_sectors += i - uint32_t(run_start);
            r->records++;
            run_start = -1;
          }
        } else {
          if (known == 0) st_.misses++;
          if (run_start < 0) run_start = i;
        }
        if (page) page[off] = fp;
      }
      if (run_start >= 0) {
        w = Emit(w, rec, first + uint64_t(run_start), uint32_t(run_start), count - uint32_t(run_start));
        r->changed_sectors += count - uint32_t(run_start);
        r->records++;
      }
    } else if (kind == kRecordZero && (rec[offsetof(RecordHeader, flags)] & kRecordFlagResync) && enabled_ &&
               KnownZero(first, count)) {
      // The resync of a hole (volume.cc) in a region the replica already
      // holds as zeroes: nothing to send, as for a RESYNC record of zeroes.
      st_.sectors_seen += count;
      st_.sectors_dropped += count;
      SetZero(first, count);
    } else if (kind == kRecordTrim || kind == kRecordZero) {
      // Metadata only: the header as captured, with no data.
      std::memcpy(w, rec, kRecordHeaderSize);
      StoreU32(w + offsetof(RecordHeader, data_length), 0);
      w += kRecordHeaderSize;
      r->records++;
      SetZero(first, count);
    } else {
      // FLUSH, the markers (and any kind newer than this reader): passed through whole.
      std::memcpy(w, rec, n);
      w += n;
      r->records++;
    }
    at += n;
  }
  r->bytes = size_t(w - out);
}

bool MicroScanner::KnownZero(uint64_t first, uint32_t count) {
  if (count == 0 || first >= total_sectors_ || first + count > total_sectors_) return false;
  for (uint64_t s = first; s < first + count; s++) {
    const uint64_t g = s / kScanSectorsPerRegion;
    const uint32_t off = uint32_t(s - g * kScanSectorsPerRegion);
    // The cache page holds the replica's fingerprints (loaded at the batch's
    // start) as the records before this one in the batch changed them.
    const int64_t slot = Find(g);
    uint64_t known = slot >= 0 ? PageFps(uint32_t(slot))[off] : 0;
    if (slot < 0) {
      // No page (the cache is full): the replica's own, if this batch has not touched the sector.
      const Touched* tm = FindTouched(g);
      if (tm && off < tm->fps->sectors && !(tm->bits[off >> 6] & (uint64_t(1) << (off & 63)))) known = tm->fps->fps[off];
    }
    if (known != zero_fp_) return false;
  }
  return true;
}

void MicroScanner::FillZero(uint64_t g, int64_t slot, uint64_t first, uint64_t end) {
  const uint64_t base = g * kScanSectorsPerRegion;
  const uint32_t lo = uint32_t(std::max(first, base) - base);
  const uint32_t hi = uint32_t(std::min(end, base + kScanSectorsPerRegion) - base);
  if (slot >= 0) std::fill(PageFps(uint32_t(slot)) + lo, PageFps(uint32_t(slot)) + hi, zero_fp_);
  if (Touched* tm = FindTouched(g))
    for (uint32_t i = lo; i < hi; i++) tm->bits[i >> 6] |= uint64_t(1) << (i & 63);
}

void MicroScanner::SetZero(uint64_t first, uint64_t count) {
  // Sectors past the volume's end hold nothing to remember (and a range that
  // wraps past 2^64 must not turn into one that covers everything).
  if (count == 0 || first >= total_sectors_) return;
  const uint64_t end = std::min(first + count, total_sectors_);
  count = end - first;
  const uint64_t g0 = first / kScanSectorsPerRegion;
  const uint64_t g1 = (end - 1) / kScanSectorsPerRegion;
  if (count <= kScanTrimCreateLimit) {
    for (uint64_t g = g0; g <= g1; g++) FillZero(g, Page(g, true), first, end);
    return;
  }
  // A huge range (a mkfs discarding the device): update only what is held,
  // without changing the LRU order, and the replica regions of this batch.
  if (g1 - g0 + 1 <= pages_) {
    for (uint64_t g = g0; g <= g1; g++) {
      const int64_t slot = Find(g);
      if (slot >= 0 || FindTouched(g)) FillZero(g, slot, first, end);
    }
    return;
  }
  for (uint32_t s = 0; s < next_slot_; s++) {
    const uint64_t g = slot_region_[s];
    if (g >= g0 && g <= g1 && Find(g) == int64_t(s)) FillZero(g, s, first, end);
  }
  for (const Touched& t : touched_)
    if (t.region >= g0 && t.region <= g1 && Find(t.region) < 0) FillZero(t.region, -1, first, end);
}

}  // namespace tidemark
