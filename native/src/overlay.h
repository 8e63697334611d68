// The copy-on-write overlay of a writable TimeView: block storage only.
//
// Two modes, one bitmap:
// - throw-away (a client-side `tidemark timeview --writable`): written
//   sectors live in a sparse temporary file that has no name: it is opened
//   with O_TMPFILE (or created and unlinked at once where the file system
//   lacks O_TMPFILE), so nothing is left behind however the process ends,
//   kill -9 included. Sync() does nothing: there is nothing to keep.
// - durable (a view the appliance keeps, `timeview create --writable`): a
//   named data file (sparse, the volume's size) plus a map file recording
//   which sectors are held. Sync() makes every write that returned before it
//   survive a crash; reopening the two files gives that state back.
//
// Which sectors the overlay holds is a bitmap in memory, one bit per 512-byte
// sector, in pages of 4096 sectors (2 MiB of volume, 512 bytes of bitmap)
// allocated on first write: memory follows what a DR test writes, not the
// volume's size. Zeroed sectors are holes punched in the data file and marked
// held, so they read as zeroes without taking space.
//
// The map file is the bitmap itself, not a log of ranges, because bits are
// only ever set while an overlay lives (a sector once held stays held; a
// later zero is a hole, still held). So the map needs no compaction, is
// bounded by the volume's size (1/4096 of it, sparse where nothing was
// written), rewriting a page is idempotent, and any mix of a page's old and
// new bytes (a write torn by a power cut) is still a valid state as long as
// each new bit's data reached the disk first. Sync() orders it so: it copies
// the pages changed since the last sync, fsyncs the data file, and only then
// writes those copies into the map and fsyncs it. A bit on disk therefore
// always has its data on disk; a write after the last Sync may or may not
// survive, never half of it under a set bit.
//
// Map file: a 4096-byte header (kMapMagic, version, sector size, volume
// size, sectors per page; written once, through a temporary file renamed into
// place after the data file is sized and synced), then page p of the bitmap at
// 4096 + p * 512, little-endian 64-bit words, bit i of word w = sector
// p * 4096 + w * 64 + i. A missing page (a hole) holds nothing. The map is
// locked (flock) while open: two views over one overlay would each keep a
// bitmap and lose the other's bits.
//
// Callers pass whole sectors (the TimeView does the read-modify-write of
// unaligned edges). Data is written before its bits are set, so a reader
// that sees a bit reads the new bytes. Nothing here knows about seqs, the
// journal or replication.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace tidemark {

class Overlay {
 public:
  static constexpr uint32_t kSector = 512;
  static constexpr uint64_t kPageSectors = 4096;
  static constexpr uint64_t kMapHeader = 4096;
  static constexpr char kMapMagic[8] = {'T', 'M', 'O', 'V', 'M', 'A', 'P', '1'};

  Overlay() = default;
  ~Overlay() { Close(); }
  Overlay(const Overlay&) = delete;
  Overlay& operator=(const Overlay&) = delete;

  // Throw-away: creates the unnamed file in dir, `size` bytes, sparse.
  bool Open(const std::string& dir, uint64_t size, std::string* error);
  // Durable: reopens data_path + map_path as of their last Sync, or creates
  // both when the map does not exist yet (a data file without a map is from a
  // creation that never finished: nothing in it was ever acknowledged).
  bool OpenDurable(const std::string& data_path, const std::string& map_path, uint64_t size, std::string* error);
  // Durable: Sync() first; errors are the caller's to log (Sync() itself).
  void Close();

  // Byte ranges of [offset, offset+length) the overlay holds, clipped to the
  // range, in order (one entry per run of held sectors).
  void Runs(uint64_t offset, uint64_t length, std::vector<std::pair<uint64_t, uint64_t>>* runs);
  // Reads bytes the overlay holds (a range Runs returned). Returns errno or 0.
  int Read(uint64_t offset, uint64_t length, uint8_t* out);
  // Whole sectors. Return errno or 0.
  int Write(uint64_t offset, uint64_t length, const uint8_t* data);
  int Zero(uint64_t offset, uint64_t length);
  // Durable: every Write and Zero that returned before this call survives a
  // crash once it returns 0. Throw-away: 0 at once. Returns errno or 0; after
  // an error nothing is lost from memory, and the next Sync tries again.
  int Sync();

  bool durable() const { return durable_; }
  uint64_t held_sectors();
  bool empty() {
    std::lock_guard<std::mutex> lk(mu_);
    return held_ == 0;
  }

 private:
  static constexpr uint64_t kPageWords = kPageSectors / 64;
  static constexpr uint64_t kPageBytes = kPageWords * 8;
  bool Test(uint64_t sector) const;  // mu_ held
  void Set(uint64_t first, uint64_t count);
  void Reset(uint64_t size);
  bool LoadMap(const std::string& map_path, std::string* error);

  int fd_ = -1;
  int map_fd_ = -1;  // durable only
  bool durable_ = false;
  uint64_t size_ = 0;
  std::mutex mu_;  // the bitmap and the dirty list
  std::vector<std::unique_ptr<uint64_t[]>> pages_;
  uint64_t held_ = 0;
  // Durable: pages whose bits changed since the last Sync, once each.
  std::vector<uint8_t> page_dirty_;
  std::vector<uint64_t> dirty_;
  bool data_unsynced_ = false;  // mu_ held: a Write or Zero since the last Sync began
  // One Sync at a time: two overlapping ones could write a page's older copy
  // over the newer one after the newer Sync had returned.
  std::mutex sync_mu_;
};

}  // namespace tidemark
