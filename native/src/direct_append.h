// Appending to a journal segment with O_DIRECT: the bytes go from a user
// buffer to the disk without the kernel's copy into the page cache.
//
// Measured on the test bed (a virtio disk, 1 MiB writes with fdatasync every
// 8 MiB): buffered writes cost 0.3 to 2 CPU-seconds per GiB in the kernel's
// copy_folio_from_iter and page allocation, the largest single cost of the
// appliance's ingest (45 % of its CPU under churn, perf); the same bytes
// written with O_DIRECT cost 0.06 CPU-s/GiB and finish sooner.
//
// O_DIRECT wants the buffer, the file offset and the length aligned, while
// journal frames end anywhere. The appender keeps the segment's last partial
// block in memory; each write starts at that block, with the kept bytes in
// front of the new ones, in an aligned bounce buffer, and ends with the last
// block padded with zeroes. The kept prefix is rewritten with the same bytes,
// so a write that fails or is cut off never changes what the segment held
// before it. The file may therefore hold up to kDirectAlign - 1 zero bytes
// past the journal's end: Trim() cuts them (a clean close, a segment that is
// complete); after a crash, recovery finds them as a tail of zeroes after the
// last batch and cuts it (appliance/volume-recovery.ts).
//
// Not thread-safe by design of its one caller: the journal writes a
// segment's rounds one after another (appliance/journal.ts writeAll).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace tidemark {

// Alignment of every direct write: 4096 covers 512-byte and 4 KiB sector disks.
constexpr uint64_t kDirectAlign = 4096;

class DirectAppender {
 public:
  DirectAppender() = default;
  ~DirectAppender();
  DirectAppender(const DirectAppender&) = delete;
  DirectAppender& operator=(const DirectAppender&) = delete;

  // Opens path for direct appends at end (the journal's end of this
  // segment; the bytes before it are read back for the partial block).
  // false with *unsupported set when the file system refuses O_DIRECT
  // (tmpfs): the caller writes through the page cache instead.
  bool Open(const std::string& path, uint64_t end, bool* unsupported, std::string* error);
  // Appends the pieces at offset, which must be the current end. On failure
  // the end stays where it was (bytes past it may have been written).
  bool Append(const std::vector<std::pair<const uint8_t*, size_t>>& pieces, uint64_t offset, std::string* error);
  // Cuts the file back to the journal's end (drops the padding).
  bool Trim(std::string* error);
  void Close();
  uint64_t end() const { return end_; }
  // The errno of the last failure (0: none, or not a system call's).
  int last_errno() const { return errno_; }

 private:
  bool WriteAligned(const uint8_t* buf, size_t len, uint64_t pos, std::string* error);
  // "what PATH: strerror", remembering err.
  std::string Fail(const std::string& what, int err);

  int fd_ = -1;
  std::string path_;
  uint64_t end_ = 0;
  int errno_ = 0;
  uint8_t* bounce_ = nullptr;     // kWindow bytes, kDirectAlign-aligned
  std::vector<uint8_t> tail_;     // the bytes of the last partial block before end_
};

}  // namespace tidemark
