#include "point_map.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <shared_mutex>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "record.h"
#include "replica_image.h"

namespace tidemark {

MapFile::MapFile(int fd) : fd_(fd) {
  struct stat st {};
  if (fd >= 0 && fstat(fd, &st) == 0) {
    dev_ = st.st_dev;
    ino_ = st.st_ino;
  }
}

MapFile::~MapFile() {
  if (fd_ >= 0) ::close(fd_);
}

std::shared_ptr<MappedExtents> MappedExtents::Open(const std::string& path, std::string* error) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *error = "cannot open point map " + path + ": " + std::strerror(errno);
    return nullptr;
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || st.st_size % sizeof(MapExtent) != 0) {
    *error = "point map " + path + " is not a whole number of extents";
    ::close(fd);
    return nullptr;
  }
  std::shared_ptr<MappedExtents> m(new MappedExtents());
  m->bytes_ = size_t(st.st_size);
  m->n_ = m->bytes_ / sizeof(MapExtent);
  if (m->bytes_ > 0) {
    void* p = mmap(nullptr, m->bytes_, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      *error = "cannot map point map " + path + ": " + std::strerror(errno);
      ::close(fd);
      return nullptr;
    }
    // Lookups are binary searches: no read-ahead of neighbouring pages.
    madvise(p, m->bytes_, MADV_RANDOM);
    m->data_ = static_cast<const MapExtent*>(p);
  }
  ::close(fd);  // the mapping keeps the file
  return m;
}

MappedExtents::~MappedExtents() {
  if (data_) munmap(const_cast<MapExtent*>(data_), bytes_);
}

bool PointReader::Read(uint64_t offset, uint64_t length, uint8_t* out, std::string* error, bool* would_wait) const {
  if (length == 0) return true;
  if (offset + length > size_ || offset + length < offset) {
    *error = "read of " + std::to_string(length) + " bytes at " + std::to_string(offset) + " is outside the " +
             std::to_string(size_) + "-byte volume";
    return false;
  }
  const uint64_t lo = offset / kMapSector;
  const uint64_t hi = (offset + length + kMapSector - 1) / kMapSector;
  if (lo * kMapSector == offset && hi * kMapSector == offset + length) return ReadSectors(lo, hi, out, error, would_wait);
  // Unaligned: whole sectors into a scratch buffer, then the bytes asked for.
  std::vector<uint8_t> tmp((hi - lo) * kMapSector);
  if (!ReadSectors(lo, hi, tmp.data(), error, would_wait)) return false;
  std::memcpy(out, tmp.data() + (offset - lo * kMapSector), length);
  return true;
}

bool PointReader::Fingerprints(uint64_t offset, uint64_t length, uint8_t* out, std::vector<uint8_t>* scratch, std::string* error) const {
  if (offset % kMapSector != 0 || length % kMapSector != 0) {
    *error = "fingerprints of " + std::to_string(length) + " bytes at " + std::to_string(offset) + " are not whole sectors";
    return false;
  }
  constexpr uint64_t kWindow = 1 << 20;
  if (scratch->size() < std::min(length, kWindow)) scratch->resize(std::min(length, kWindow));
  uint8_t* buf = scratch->data();
  for (uint64_t done = 0; done < length;) {
    const uint64_t n = std::min(length - done, kWindow);
    if (!Read(offset + done, n, buf, error)) return false;
    for (uint64_t i = 0; i < n; i += kMapSector) StoreU64(out + (done + i) / kMapSector * 8, XXH64(buf + i, kMapSector, 0));
    done += n;
  }
  return true;
}

// The first extent of a that ends after sector lo.
static const MapExtent* FirstFrom(const ExtentArray* a, uint64_t lo) {
  const MapExtent* b = a->data();
  const MapExtent* e = b + a->size();
  const MapExtent* it = std::upper_bound(b, e, lo, [](uint64_t s, const MapExtent& x) { return s < x.sector; });
  if (it != b && (it - 1)->sector + (it - 1)->count > lo) --it;
  return it;
}

void PointReader::Plan(uint64_t lo, uint64_t hi, std::vector<Piece>* pieces) const {
  if (!delta_ || delta_->size() == 0) {
    PlanLayer(base_.get(), lo, hi, pieces);
    return;
  }
  // The delta wins where it has extents; the base fills the gaps between them.
  uint64_t at = lo;
  const MapExtent* end = delta_->data() + delta_->size();
  for (const MapExtent* x = FirstFrom(delta_.get(), lo); x != end && x->sector < hi; ++x) {
    const uint64_t a = std::max(x->sector, lo);
    const uint64_t b = std::min(x->sector + x->count, hi);
    if (a > at) PlanLayer(base_.get(), at, a, pieces);
    pieces->push_back({x, a, b});
    at = b;
  }
  if (at < hi) PlanLayer(base_.get(), at, hi, pieces);
}

void PointReader::PlanLayer(const ExtentArray* a, uint64_t lo, uint64_t hi, std::vector<Piece>* pieces) const {
  uint64_t at = lo;
  if (a && a->size()) {
    const MapExtent* end = a->data() + a->size();
    for (const MapExtent* x = FirstFrom(a, lo); x != end && x->sector < hi; ++x) {
      const uint64_t s = std::max(x->sector, lo);
      const uint64_t t = std::min(x->sector + x->count, hi);
      if (s > at) pieces->push_back({nullptr, at, s});
      pieces->push_back({x, s, t});
      at = t;
    }
  }
  if (at < hi) pieces->push_back({nullptr, at, hi});
}

const MapFile* PointReader::File(int32_t file) const {
  auto f = files_->find(file);
  return f == files_->end() ? nullptr : f->second.get();
}

int PointReader::FdOf(int32_t file) const {
  if (file == kReplicaFile) return replica_ ? replica_->fd() : -1;
  const MapFile* f = File(file);
  return f ? f->fd() : -1;
}

// The replica image at the sector's own offset, as an extent of a plan.
static const MapExtent kReplicaExtent{0, 0, 0, kReplicaFile};

// Where a piece's first sector lives in its file.
static uint64_t PosAt(const MapExtent& e, uint64_t sector) { return e.pos + (sector - e.sector) * kMapSector; }

// Replaces, in the plan, every run whose version is the one the replica
// image holds (`same`'s extent names the same file at the same offset) by a
// read of the image; adjacent image runs become one read.
void PointReader::UseReplica(const PointReader& same, uint64_t lo, uint64_t hi, std::vector<Piece>* pieces) const {
  std::vector<Piece> theirs;
  same.Plan(lo, hi, &theirs);
  std::vector<Piece> next;
  next.reserve(pieces->size());
  size_t j = 0;
  for (const Piece& p : *pieces) {
    if (!p.e || p.e->file == kZeroFile) {
      next.push_back(p);
      continue;
    }
    const MapFile* mine = File(p.e->file);
    const MapFile* other = same.File(p.e->file);
    const bool same_file = mine && other && mine->SameAs(*other);
    for (uint64_t s = p.lo; s < p.hi;) {
      while (theirs[j].hi <= s) j++;  // both plans cover [lo, hi) in order
      const Piece& q = theirs[j];
      const uint64_t t = std::min(p.hi, q.hi);
      const bool image = same_file && q.e && q.e->file == p.e->file && PosAt(*q.e, s) == PosAt(*p.e, s);
      if (image && !next.empty() && next.back().e == &kReplicaExtent && next.back().hi == s) {
        next.back().hi = t;
      } else {
        next.push_back({image ? &kReplicaExtent : p.e, s, t});
      }
      s = t;
    }
  }
  pieces->swap(next);
}

bool PointReader::ReadSectors(uint64_t lo, uint64_t hi, uint8_t* out, std::string* error, bool* would_wait) const {
  std::vector<Piece> pieces;
  Plan(lo, hi, &pieces);
  // Held until the reads are done: a replica round waits for them before it writes.
  std::shared_lock<std::shared_mutex> hold;
  if (replica_) {
    std::shared_ptr<const PointReader> same = replica_->Hold(&hold);
    if (same) UseReplica(*same, lo, hi, &pieces);
  }
  // A read that spans many extents (a journal's scattered records) asks the
  // kernel for all of them first, so a cold read waits for the disk's
  // parallel reads rather than one pread after another.
  size_t file_pieces = 0;
  for (const Piece& p : pieces) file_pieces += p.e && p.e->file != kZeroFile;
  if (file_pieces > 1 && !would_wait) {
    for (const Piece& p : pieces) {
      if (!p.e || p.e->file == kZeroFile) continue;
      const int fd = FdOf(p.e->file);
      if (fd >= 0) posix_fadvise(fd, off_t(PosAt(*p.e, p.lo)), off_t((p.hi - p.lo) * kMapSector), POSIX_FADV_WILLNEED);
    }
  }
  uint64_t from_replica = 0;
  for (const Piece& p : pieces) {
    uint8_t* to = out + (p.lo - lo) * kMapSector;
    if (!p.e) {
      std::memset(to, 0, (p.hi - p.lo) * kMapSector);
    } else if (!ReadExtent(*p.e, p.lo, p.hi, to, error, would_wait)) {
      return false;
    }
    if (p.e == &kReplicaExtent) from_replica += (p.hi - p.lo) * kMapSector;
  }
  // Counted once the read is whole: a page-cache read that would wait is read again.
  if (from_replica) replica_->CountRead(from_replica);
  return true;
}

// Sectors copied per plan (64 MiB of the volume): the replica image is held
// for one window at a time, so a long copy never keeps a round waiting long.
constexpr uint64_t kCopyWindow = uint64_t(1) << 17;

bool PointReader::CopyTo(int fd, uint64_t offset, uint64_t length, bool write_zeroes, CopyTally* t, CopySide* side,
                         std::string* error) const {
  if (offset % kMapSector || length % kMapSector || offset + length > size_ || offset + length < offset) {
    *side = CopySide::kSource;
    *error = "a copy of " + std::to_string(length) + " bytes at " + std::to_string(offset) +
             " is not whole sectors inside the volume's " + std::to_string(size_) + " bytes";
    return false;
  }
  RangeCopier copier("", "the target");
  std::vector<Piece> pieces;
  // The run being gathered: adjacent pieces of one file that follow each
  // other in it (a replica image's stretch, a sequentially written
  // journal) are one copy; adjacent zero pieces one zeroing.
  int32_t run_file = kZeroFile;
  uint64_t run_lo = 0, run_hi = 0, run_pos = 0;
  auto flush = [&]() -> bool {
    if (run_hi == run_lo) return true;
    const uint64_t len = (run_hi - run_lo) * kMapSector;
    const uint64_t at = run_lo * kMapSector;
    run_lo = run_hi;
    if (run_file == kZeroFile) {
      t->zero_bytes += len;
      if (write_zeroes && !copier.Zero(fd, at, len, error)) {
        *side = CopySide::kTarget;
        return false;
      }
      return true;
    }
    const int src = FdOf(run_file);
    if (src < 0) {
      *side = CopySide::kSource;
      *error = run_file == kBaseFile ? std::string("the base image named by the point map is not open")
                                     : "segment " + std::to_string(run_file) + " named by the point map is not open";
      return false;
    }
    copier.set_source_name(run_file == kBaseFile      ? std::string("the base image")
                           : run_file == kReplicaFile ? std::string("the replica image")
                                                      : "segment " + std::to_string(run_file));
    if (!copier.Copy(src, run_pos, fd, at, len, side, error)) return false;
    if (run_file == kReplicaFile) replica_->CountRead(len);
    t->data_bytes += len;
    t->data_runs++;
    return true;
  };
  for (uint64_t lo = offset / kMapSector, end = (offset + length) / kMapSector; lo < end; lo += kCopyWindow) {
    const uint64_t hi = std::min(end, lo + kCopyWindow);
    pieces.clear();
    Plan(lo, hi, &pieces);
    std::shared_lock<std::shared_mutex> hold;
    if (replica_) {
      std::shared_ptr<const PointReader> same = replica_->Hold(&hold);
      if (same) UseReplica(*same, lo, hi, &pieces);
    }
    for (const Piece& p : pieces) {
      const int32_t file = p.e ? p.e->file : kZeroFile;
      const uint64_t pos = file == kZeroFile ? 0 : PosAt(*p.e, p.lo);
      const bool continues = run_hi > run_lo && file == run_file && p.lo == run_hi &&
                             (file == kZeroFile || pos == run_pos + (run_hi - run_lo) * kMapSector);
      if (continues) {
        run_hi = p.hi;
        continue;
      }
      if (!flush()) return false;
      run_file = file;
      run_lo = p.lo;
      run_hi = p.hi;
      run_pos = pos;
    }
    // The image may change once the hold goes: its run is copied under it.
    if (!flush()) return false;
  }
  return true;
}

bool PointReader::ReadExtent(const MapExtent& e, uint64_t lo, uint64_t hi, uint8_t* out, std::string* error,
                             bool* would_wait) const {
  const size_t len = (hi - lo) * kMapSector;
  if (e.file == kZeroFile) {
    std::memset(out, 0, len);
    return true;
  }
  const int fd = FdOf(e.file);
  if (fd < 0) {
    *error = e.file == kBaseFile ? std::string("the base image named by the point map is not open")
                                 : "segment " + std::to_string(e.file) + " named by the point map is not open";
    return false;
  }
  const uint64_t pos = PosAt(e, lo);
  size_t done = 0;
  while (done < len) {
    ssize_t n;
    if (would_wait) {
      iovec v{out + done, len - done};
      n = preadv2(fd, &v, 1, off_t(pos + done), RWF_NOWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EOPNOTSUPP)) {
        *would_wait = true;
        return false;
      }
    } else {
      n = pread(fd, out + done, len - done, off_t(pos + done));
    }
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string what = e.file == kBaseFile      ? std::string("the base image")
                               : e.file == kReplicaFile ? std::string("the replica image")
                                                        : "segment " + std::to_string(e.file);
      *error = (n == 0 ? std::string("unexpected end of file") : std::string(std::strerror(errno))) + " reading " +
               std::to_string(len - done) + " bytes of " + what + " at " + std::to_string(pos + done);
      return false;
    }
    done += size_t(n);
  }
  return true;
}

LiveMap::LiveMap(std::shared_ptr<const ExtentArray> base, FileTable files, uint64_t size_bytes)
    : base_(std::move(base)), files_(std::make_shared<const FileTable>(std::move(files))), size_(size_bytes) {}

// The part of e from sector b to its end (e_end), which a newer extent left uncovered.
static MapExtent TailFrom(const MapExtent& e, uint64_t b, uint64_t e_end) {
  MapExtent tail = e;
  tail.sector = b;
  tail.count = uint32_t(e_end - b);
  if (tail.file != kZeroFile) tail.pos = e.pos + (b - e.sector) * kMapSector;
  return tail;
}

void LiveMap::Apply(const MapExtent* extents, size_t n) {
  std::lock_guard<std::mutex> lk(mu_);
  delta_snapshot_.reset();
  for (size_t i = 0; i < n; i++) {
    const MapExtent& x = extents[i];
    if (x.count == 0) continue;
    const uint64_t a = x.sector, b = x.sector + x.count;
    // Cut what x covers out of the delta: split an extent straddling a or b.
    auto it = delta_.lower_bound(a);
    if (it != delta_.begin()) {
      auto prev = std::prev(it);
      MapExtent& p = prev->second;
      if (p.sector + p.count > a) {
        const uint64_t p_end = p.sector + p.count;
        p.count = uint32_t(a - p.sector);
        if (p_end > b) delta_[b] = TailFrom(p, b, p_end);
      }
    }
    it = delta_.lower_bound(a);
    while (it != delta_.end() && it->first < b) {
      MapExtent e = it->second;
      it = delta_.erase(it);
      const uint64_t e_end = e.sector + e.count;
      if (e_end > b) {
        delta_[b] = TailFrom(e, b, e_end);
        break;
      }
    }
    delta_[a] = x;
  }
}

void LiveMap::SetReplica(std::shared_ptr<ReplicaImage> replica) {
  std::lock_guard<std::mutex> lk(mu_);
  replica_ = std::move(replica);
}

void LiveMap::AddFile(int32_t file, int fd) {
  std::lock_guard<std::mutex> lk(mu_);
  auto next = std::make_shared<FileTable>(*files_);
  (*next)[file] = std::make_shared<MapFile>(fd);
  files_ = std::move(next);
}

std::shared_ptr<PointReader> LiveMap::Snapshot() {
  std::lock_guard<std::mutex> lk(mu_);
  if (!delta_snapshot_) {
    std::vector<MapExtent> v;
    v.reserve(delta_.size());
    for (auto& kv : delta_) v.push_back(kv.second);
    delta_snapshot_ = std::make_shared<VectorExtents>(std::move(v));
  }
  return std::make_shared<PointReader>(base_, delta_snapshot_, files_, size_, replica_);
}

size_t LiveMap::delta_extents() {
  std::lock_guard<std::mutex> lk(mu_);
  return delta_.size();
}

}  // namespace tidemark
