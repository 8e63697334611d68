// The persistent dirty map: one bit per 64 KiB region of a volume.
//
// A set bit means "this region may hold changes the appliance has not
// acknowledged". The map is a memory-mapped file in the agent's state
// directory, so a bit set in memory survives kill -9 of the agent at once
// (it is in the page cache); Sync() makes it durable against power loss and is
// called before any FLUSH or FUA write is acknowledged.
//
// 64 KiB regions (qemu's default dirty-bitmap granularity) keep the map small
// (2 KiB per GiB, 2 MiB per TiB) while bounding the resync of one stray write
// to 64 KiB. DRBD uses 4 KiB bits; we trade resync bytes for a map that stays
// in cache.
//
// File layout: a 4096-byte header (magic "TMDIRTY1", u32 version, u32 region
// shift, u64 volume size, u64 region count, little-endian), then the bitmap.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

namespace tidemark {

constexpr uint32_t kRegionShift = 16;  // 64 KiB
constexpr uint64_t kRegionSize = uint64_t(1) << kRegionShift;

class DirtyMap {
 public:
  DirtyMap() = default;
  ~DirtyMap();
  DirtyMap(const DirtyMap&) = delete;
  DirtyMap& operator=(const DirtyMap&) = delete;

  // Opens or creates the map for a volume of `volume_size` bytes. A map left
  // by a volume of another size cannot be trusted: every region becomes dirty
  // and *reset is set, so the caller can say so.
  bool Open(const std::string& path, uint64_t volume_size, bool* reset, std::string* error);

  uint64_t regions() const { return regions_; }
  uint64_t count() const { return count_; }
  bool Test(uint64_t r) const { return bits_[r >> 3] & (1u << (r & 7)); }
  // Returns true if the bit was clear.
  bool Set(uint64_t r) {
    uint8_t& b = bits_[r >> 3];
    const uint8_t m = uint8_t(1u << (r & 7));
    if (b & m) return false;
    b |= m;
    count_++;
    unsynced_.store(true, std::memory_order_relaxed);
    return true;
  }
  void Clear(uint64_t r) {
    uint8_t& b = bits_[r >> 3];
    const uint8_t m = uint8_t(1u << (r & 7));
    if (!(b & m)) return;
    b &= uint8_t(~m);
    count_--;
    unsynced_.store(true, std::memory_order_relaxed);
  }
  // Makes every bit set so far durable. Thread-safe against Set/Clear.
  bool Sync();
  std::vector<uint8_t> Copy() const { return std::vector<uint8_t>(bits_, bits_ + bytes_); }
  void Close();

 private:
  int fd_ = -1;
  uint8_t* map_ = nullptr;
  size_t map_len_ = 0;
  uint8_t* bits_ = nullptr;
  size_t bytes_ = 0;
  uint64_t regions_ = 0;
  uint64_t count_ = 0;
  std::atomic<bool> unsynced_{false};
};

}  // namespace tidemark
