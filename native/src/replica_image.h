// A volume's replica image: its newest point copied into one file in volume
// order (sector n at byte n * 512), like the replica disk that Zerto and
// RecoverPoint keep beside their journals. The journal holds every write in
// the order it came, so a point read in volume order is, after many random
// writes, as many random reads; where the point's version of a sector is
// the one the replica holds, a PointReader (point_map.h) reads the replica
// instead, and a restore or a VM booting from a recent point reads the disk
// sequentially.
//
// A round (appliance/replica-image.ts schedules them, off the write path)
// makes the image equal a snapshot of the newest point's live map: it copies
// every extent that is newer than the previous round's newest journal
// location (all of them in a full round: a new image, a new base), with
// copy_file_range, then fdatasyncs. From then on the snapshot says what the
// image holds: a reader of any point compares its extent for a sector with
// the snapshot's, and only the very same version (the same file, the same
// offset) is read from the image. Sectors the snapshot has as zeroes are
// never read from it, so a round never needs to clear anything.
//
// While a round writes, the image is not used: readers read the journal, as
// without a replica, and a round waits only for reads already under way.
// The image is a cache, never the only copy: after a crash the next round
// copies again whatever a torn round may have left half written (it is newer
// than the location the last finished round recorded), and a replica that
// cannot be written (a full disk, an I/O error) is only left unused.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>

#include "file_copy.h"
#include "point_map.h"

namespace tidemark {

// A position in the journal: segment number, byte offset. Records are
// appended in seq order, so a later location is a later write.
struct JournalLoc {
  int32_t file = -1;
  uint64_t pos = 0;
  bool operator<(const JournalLoc& o) const { return file < o.file || (file == o.file && pos < o.pos); }
};

struct RoundResult {
  JournalLoc newest;      // the newest journal location the image now holds
  uint64_t bytes = 0;     // bytes copied
  uint64_t extents = 0;   // extents copied
  bool interrupted = false;  // stopped by Yield(): the image stays unusable, newest is not to be saved
};

class ReplicaImage {
 public:
  // Takes ownership of fd (the image file, the volume's size).
  explicit ReplicaImage(int fd);
  ~ReplicaImage();
  ReplicaImage(const ReplicaImage&) = delete;
  ReplicaImage& operator=(const ReplicaImage&) = delete;

  int fd() const { return fd_; }

  // The snapshot the image equals, held (lk locked) until lk goes; null
  // (lk not locked) while the image is not usable.
  std::shared_ptr<const PointReader> Hold(std::shared_lock<std::shared_mutex>* lk) const;

  // Makes the image equal `live` (a snapshot of the newest point's map):
  // copies the extents newer than `from`, or all of them when full, then
  // fdatasyncs. On failure the image stays unusable until a full round.
  // A yieldable round stops early (r->interrupted) once Yield() is called:
  // the volume is being written again, and its journal appends go first. The
  // next round from the same `from` copies everything again, so nothing a
  // stopped round left half done is ever read.
  bool Round(std::shared_ptr<const PointReader> live, bool full, JournalLoc from, bool yieldable, RoundResult* r,
             std::string* error);

  // Asks the yieldable round under way to stop (one asked for between
  // rounds stops the next at its first extent; appliance/replica-image.ts
  // asks only while one runs).
  void Yield() { yield_.store(true, std::memory_order_relaxed); }

  // Not usable until the next round (the base or the segments changed).
  void Invalidate();

  void CountRead(uint64_t bytes) { bytes_read_.fetch_add(bytes, std::memory_order_relaxed); }
  uint64_t bytes_read() const { return bytes_read_.load(std::memory_order_relaxed); }

 private:
  const int fd_;
  mutable std::shared_mutex mu_;
  std::shared_ptr<const PointReader> same_;  // guarded by mu_
  std::atomic<uint64_t> bytes_read_{0};
  std::atomic<bool> yield_{false};
  RangeCopier copier_{"", "the replica image"};  // rounds only: one at a time
};

}  // namespace tidemark
