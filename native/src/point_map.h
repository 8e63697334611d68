// Where every sector of a point in time lives, so that reading the point is
// a pread, not an index lookup: the appliance's NBD exports, Admin.Read and
// restores read through a PointReader.
//
// A map is a sorted array of extents, each a run of sectors whose newest
// version at or below the point sits contiguously in one file: a journal
// segment (the change record's data, stored raw) or the base image (at the
// sector's own offset). Sectors no extent covers read as zeroes (never
// written, trimmed or zeroed). appliance/point-map.ts builds the array from
// the LevelDB index in one forward pass and writes it to a file; here it is
// mmap'd, so memory stays bounded for any volume size: the kernel pages the
// map in and out like any file, and a cold read costs a binary search over
// pages plus the data's pread.
//
// A map file is a cache, rebuilt whenever it is missing: raw MapExtent
// entries in host byte order, nothing else (appliance/point-map.ts writes
// the same 24-byte layout; native.pointMapLayout says it).
//
// The newest point moves with every batch. A LiveMap keeps a built base map
// plus a delta of the extents committed since, painted over it in memory;
// a reader for the newest point is a snapshot (the base, shared, and a copy
// of the delta), taken in microseconds when a client connects. When the
// delta grows past a bound, the appliance builds a new base and swaps it in.
//
// Files are held by dup'd descriptors shared between every reader that
// needs them, so a compaction or retention that closes and deletes a segment
// never pulls data from under an open export: its bytes stay readable until
// the last reader that named it is gone.
//
// A reader may also have the volume's replica image (replica_image.h): the
// newest point copied in volume order. Where the point's version of a sector
// is the very one the image holds, the reader reads the image instead of the
// journal, so a point read in volume order becomes sequential reads.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "file_copy.h"

namespace tidemark {

struct MapExtent {
  uint64_t sector;  // first sector of the run
  uint64_t pos;     // byte offset of its first sector in the file
  uint32_t count;   // sectors
  int32_t file;     // a segment number, kBaseFile, or kZeroFile
};
static_assert(sizeof(MapExtent) == 24, "the map file layout is 24 bytes per extent");

constexpr int32_t kZeroFile = -1;
constexpr int32_t kBaseFile = -2;
// Only in a reader's plan, never in a map: the replica image, at the sector's own offset.
constexpr int32_t kReplicaFile = -3;
constexpr uint64_t kMapSector = 512;

// One open file, closed when the last reader naming it goes.
class MapFile {
 public:
  explicit MapFile(int fd);
  ~MapFile();
  MapFile(const MapFile&) = delete;
  MapFile& operator=(const MapFile&) = delete;
  int fd() const { return fd_; }
  // The same file (device and inode), whichever descriptor holds it.
  bool SameAs(const MapFile& o) const { return this == &o || (ino_ == o.ino_ && dev_ == o.dev_ && ino_ != 0); }

 private:
  int fd_;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
};

// File number -> descriptor. Immutable once shared; adding a file makes a new table.
using FileTable = std::unordered_map<int32_t, std::shared_ptr<MapFile>>;

// A sorted, non-overlapping extent array: an mmap'd map file or a vector.
class ExtentArray {
 public:
  virtual ~ExtentArray() = default;
  virtual const MapExtent* data() const = 0;
  virtual size_t size() const = 0;
};

class MappedExtents : public ExtentArray {
 public:
  static std::shared_ptr<MappedExtents> Open(const std::string& path, std::string* error);
  ~MappedExtents() override;
  const MapExtent* data() const override { return data_; }
  size_t size() const override { return n_; }

 private:
  MappedExtents() = default;
  const MapExtent* data_ = nullptr;
  size_t n_ = 0;
  size_t bytes_ = 0;
};

class VectorExtents : public ExtentArray {
 public:
  explicit VectorExtents(std::vector<MapExtent> v) : v_(std::move(v)) {}
  const MapExtent* data() const override { return v_.data(); }
  size_t size() const override { return v_.size(); }

 private:
  std::vector<MapExtent> v_;
};

class ReplicaImage;

// Reads one point: the delta's extents over the base's, zeroes elsewhere.
class PointReader {
 public:
  PointReader(std::shared_ptr<const ExtentArray> base, std::shared_ptr<const ExtentArray> delta,
              std::shared_ptr<const FileTable> files, uint64_t size_bytes, std::shared_ptr<ReplicaImage> replica = nullptr)
      : base_(std::move(base)), delta_(std::move(delta)), files_(std::move(files)), size_(size_bytes),
        replica_(std::move(replica)) {}

  uint64_t size() const { return size_; }
  // Any byte range inside the volume. Safe on many threads at once. With
  // would_wait, only from the page cache (preadv2 RWF_NOWAIT): false with
  // *would_wait set when some of it is not there (the caller reads again,
  // waiting, on a thread that may wait).
  bool Read(uint64_t offset, uint64_t length, uint8_t* out, std::string* error, bool* would_wait = nullptr) const;
  // Copies [offset, offset+length) of the point (both multiples of 512) into
  // fd at the same offsets, in the kernel (file_copy.h): a restore on the
  // appliance's own host (NBD_OPT_TIDEMARK_COPY, nbd_proto.h). Zero runs are
  // zeroed when write_zeroes, else skipped (a new sparse file reads them as
  // zeroes). Adds to *t; false with *side and *error.
  bool CopyTo(int fd, uint64_t offset, uint64_t length, bool write_zeroes, CopyTally* t, CopySide* side,
              std::string* error) const;
  // One xxh64 (seed 0) per 512-byte sector of [offset, offset+length) (both
  // multiples of 512), stored little-endian at out (length / 512 * 8 bytes):
  // what a resync or a failback compares its own sectors against. Reads in
  // windows of at most 1 MiB into *scratch (kept by the caller across the
  // ranges of one request), so memory stays bounded for any range.
  bool Fingerprints(uint64_t offset, uint64_t length, uint8_t* out, std::vector<uint8_t>* scratch, std::string* error) const;
  // Extents in the two layers (stats).
  size_t extents() const { return (base_ ? base_->size() : 0) + (delta_ ? delta_->size() : 0); }

  // Sectors [lo, hi) of one extent (e null: zeroes).
  struct Piece {
    const MapExtent* e;
    uint64_t lo, hi;
  };
  // The point's pieces covering [lo, hi) in order, zero runs included.
  void Plan(uint64_t lo, uint64_t hi, std::vector<Piece>* pieces) const;
  // The same point without the replica image (what a replica image keeps: it must not hold itself).
  std::shared_ptr<const PointReader> WithoutReplica() const {
    return std::make_shared<const PointReader>(base_, delta_, files_, size_);
  }
  // The file an extent names, or null.
  const MapFile* File(int32_t file) const;

 private:
  bool ReadSectors(uint64_t lo, uint64_t hi, uint8_t* out, std::string* error, bool* would_wait) const;
  void PlanLayer(const ExtentArray* a, uint64_t lo, uint64_t hi, std::vector<Piece>* pieces) const;
  void UseReplica(const PointReader& same, uint64_t lo, uint64_t hi, std::vector<Piece>* pieces) const;
  int FdOf(int32_t file) const;
  bool ReadExtent(const MapExtent& e, uint64_t lo, uint64_t hi, uint8_t* out, std::string* error,
                  bool* would_wait) const;

  std::shared_ptr<const ExtentArray> base_, delta_;
  std::shared_ptr<const FileTable> files_;
  uint64_t size_;
  std::shared_ptr<ReplicaImage> replica_;
};

// A map that moves: a base plus a delta painted as batches commit.
class LiveMap {
 public:
  LiveMap(std::shared_ptr<const ExtentArray> base, FileTable files, uint64_t size_bytes);

  // Paints extents in commit order (a newer one replaces what it covers;
  // kZeroFile extents make sectors zero again).
  void Apply(const MapExtent* extents, size_t n);
  // Takes ownership of fd (already dup'd by the caller).
  void AddFile(int32_t file, int fd);
  // Readers made from now on read through the volume's replica image where they can.
  void SetReplica(std::shared_ptr<ReplicaImage> replica);
  std::shared_ptr<PointReader> Snapshot();
  size_t delta_extents();

 private:
  std::mutex mu_;
  std::shared_ptr<const ExtentArray> base_;
  std::shared_ptr<const FileTable> files_;
  uint64_t size_;
  std::shared_ptr<ReplicaImage> replica_;
  std::map<uint64_t, MapExtent> delta_;  // by first sector, non-overlapping
  std::shared_ptr<const ExtentArray> delta_snapshot_;  // valid until the next Apply
};

}  // namespace tidemark
