#include "point_map.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace tidemark {

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

// The first extent of a that ends after sector lo.
static const MapExtent* FirstFrom(const ExtentArray* a, uint64_t lo) {
  const MapExtent* b = a->data();
  const MapExtent* e = b + a->size();
  const MapExtent* it = std::upper_bound(b, e, lo, [](uint64_t s, const MapExtent& x) { return s < x.sector; });
  if (it != b && (it - 1)->sector + (it - 1)->count > lo) --it;
  return it;
}

bool PointReader::ReadSectors(uint64_t lo, uint64_t hi, uint8_t* out, std::string* error, bool* would_wait) const {
  std::vector<Piece> pieces;
  if (!delta_ || delta_->size() == 0) {
    PlanLayer(base_.get(), lo, hi, out, &pieces);
  } else {
    // The delta wins where it has extents; the base fills the gaps between them.
    uint64_t at = lo;
    const MapExtent* end = delta_->data() + delta_->size();
    for (const MapExtent* x = FirstFrom(delta_.get(), lo); x != end && x->sector < hi; ++x) {
      const uint64_t a = std::max(x->sector, lo);
      const uint64_t b = std::min(x->sector + x->count, hi);
      if (a > at) PlanLayer(base_.get(), at, a, out + (at - lo) * kMapSector, &pieces);
      pieces.push_back({x, a, b, out + (a - lo) * kMapSector});
      at = b;
    }
    if (at < hi) PlanLayer(base_.get(), at, hi, out + (at - lo) * kMapSector, &pieces);
  }
  // A read that spans many extents (a journal's scattered records) asks the
  // kernel for all of them first, so a cold read waits for the disk's
  // parallel reads rather than one pread after another.
  size_t file_pieces = 0;
  for (const Piece& p : pieces) file_pieces += p.e && p.e->file != kZeroFile;
  if (file_pieces > 1 && !would_wait) {
    for (const Piece& p : pieces) {
      if (!p.e || p.e->file == kZeroFile) continue;
      auto f = files_->find(p.e->file);
      if (f != files_->end()) {
        posix_fadvise(f->second->fd(), off_t(p.e->pos + (p.lo - p.e->sector) * kMapSector), off_t((p.hi - p.lo) * kMapSector),
                      POSIX_FADV_WILLNEED);
      }
    }
  }
  for (const Piece& p : pieces) {
    if (!p.e) {
      std::memset(p.out, 0, (p.hi - p.lo) * kMapSector);
    } else if (!ReadExtent(*p.e, p.lo, p.hi, p.out, error, would_wait)) {
      return false;
    }
  }
  return true;
}

void PointReader::PlanLayer(const ExtentArray* a, uint64_t lo, uint64_t hi, uint8_t* out, std::vector<Piece>* pieces) const {
  uint64_t at = lo;
  if (a && a->size()) {
    const MapExtent* end = a->data() + a->size();
    for (const MapExtent* x = FirstFrom(a, lo); x != end && x->sector < hi; ++x) {
      const uint64_t s = std::max(x->sector, lo);
      const uint64_t t = std::min(x->sector + x->count, hi);
      if (s > at) pieces->push_back({nullptr, at, s, out + (at - lo) * kMapSector});
      pieces->push_back({x, s, t, out + (s - lo) * kMapSector});
      at = t;
    }
  }
  if (at < hi) pieces->push_back({nullptr, at, hi, out + (at - lo) * kMapSector});
}

bool PointReader::ReadExtent(const MapExtent& e, uint64_t lo, uint64_t hi, uint8_t* out, std::string* error,
                             bool* would_wait) const {
  const size_t len = (hi - lo) * kMapSector;
  if (e.file == kZeroFile) {
    std::memset(out, 0, len);
    return true;
  }
  auto f = files_->find(e.file);
  if (f == files_->end()) {
    *error = e.file == kBaseFile ? std::string("the base image named by the point map is not open")
                                 : "segment " + std::to_string(e.file) + " named by the point map is not open";
    return false;
  }
  const uint64_t pos = e.pos + (lo - e.sector) * kMapSector;
  size_t done = 0;
  while (done < len) {
    ssize_t n;
    if (would_wait) {
      iovec v{out + done, len - done};
      n = preadv2(f->second->fd(), &v, 1, off_t(pos + done), RWF_NOWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EOPNOTSUPP)) {
        *would_wait = true;
        return false;
      }
    } else {
      n = pread(f->second->fd(), out + done, len - done, off_t(pos + done));
    }
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string what = e.file == kBaseFile ? std::string("the base image") : "segment " + std::to_string(e.file);
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
  return std::make_shared<PointReader>(base_, delta_snapshot_, files_, size_);
}

size_t LiveMap::delta_extents() {
  std::lock_guard<std::mutex> lk(mu_);
  return delta_.size();
}

}  // namespace tidemark
