// The copy-on-write overlay of a writable TimeView: block storage only.
//
// Written sectors live in a sparse temporary file that has no name: it is
// opened with O_TMPFILE (or created and unlinked at once where the file
// system lacks O_TMPFILE), so nothing is left behind however the process
// ends, kill -9 included. Which sectors the overlay holds is a bitmap in
// memory, one bit per 512-byte sector, in pages of 4096 sectors (2 MiB of
// volume) allocated on first write: memory follows what a DR test writes, not
// the volume's size. Zeroed sectors are holes punched in the file and marked
// held, so they read as zeroes without taking space.
//
// Callers pass whole sectors (the TimeView does the read-modify-write of
// unaligned edges). Data is written before its bits are set, so a reader
// that sees a bit reads the new bytes. Nothing here knows about seqs, the
// journal or replication: the overlay is discarded when it is closed.
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

  Overlay() = default;
  ~Overlay() { Close(); }
  Overlay(const Overlay&) = delete;
  Overlay& operator=(const Overlay&) = delete;

  // Creates the unnamed file in dir, `size` bytes, sparse.
  bool Open(const std::string& dir, uint64_t size, std::string* error);
  void Close();

  // Byte ranges of [offset, offset+length) the overlay holds, clipped to the
  // range, in order (one entry per run of held sectors).
  void Runs(uint64_t offset, uint64_t length, std::vector<std::pair<uint64_t, uint64_t>>* runs);
  // Reads bytes the overlay holds (a range Runs returned). Returns errno or 0.
  int Read(uint64_t offset, uint64_t length, uint8_t* out);
  // Whole sectors. Return errno or 0.
  int Write(uint64_t offset, uint64_t length, const uint8_t* data);
  int Zero(uint64_t offset, uint64_t length);

  uint64_t held_sectors();
  bool empty() {
    std::lock_guard<std::mutex> lk(mu_);
    return held_ == 0;
  }

 private:
  static constexpr uint64_t kPageSectors = 4096;
  static constexpr uint64_t kPageWords = kPageSectors / 64;
  bool Test(uint64_t sector) const;  // mu_ held
  void Set(uint64_t first, uint64_t count);

  int fd_ = -1;
  uint64_t size_ = 0;
  std::mutex mu_;  // the bitmap
  std::vector<std::unique_ptr<uint64_t[]>> pages_;
  uint64_t held_ = 0;
};

}  // namespace tidemark
