#include "replica_image.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <vector>

namespace tidemark {

// Sectors planned at a time in a round (512 MiB of the volume).
constexpr uint64_t kRoundWindow = uint64_t(1) << 20;

ReplicaImage::ReplicaImage(int fd) : fd_(fd) {}

ReplicaImage::~ReplicaImage() {
  if (fd_ >= 0) ::close(fd_);
}

std::shared_ptr<const PointReader> ReplicaImage::Hold(std::shared_lock<std::shared_mutex>* lk) const {
  std::shared_lock<std::shared_mutex> l(mu_);
  if (!same_) return nullptr;
  *lk = std::move(l);
  return same_;
}

void ReplicaImage::Invalidate() {
  std::unique_lock<std::shared_mutex> l(mu_);
  same_.reset();
}

bool ReplicaImage::Copy(int src, uint64_t src_pos, uint64_t dst_pos, uint64_t len, std::string* error) {
  while (len > 0 && !no_copy_range_) {
    loff_t in = loff_t(src_pos), out = loff_t(dst_pos);
    const ssize_t n = copy_file_range(src, &in, fd_, &out, size_t(len), 0);
    if (n > 0) {
      src_pos += uint64_t(n);
      dst_pos += uint64_t(n);
      len -= uint64_t(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
      no_copy_range_ = true;  // another file system, or a kernel without it
      break;
    }
    *error = n == 0 ? "unexpected end of file copying into the replica image"
                    : std::string("copying into the replica image: ") + std::strerror(errno);
    return false;
  }
  std::vector<uint8_t> buf;
  while (len > 0) {
    const size_t chunk = size_t(std::min<uint64_t>(len, 1 << 20));
    buf.resize(chunk);
    ssize_t n = pread(src, buf.data(), chunk, off_t(src_pos));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      *error = n == 0 ? "unexpected end of file reading for the replica image"
                      : std::string("reading for the replica image: ") + std::strerror(errno);
      return false;
    }
    size_t done = 0;
    while (done < size_t(n)) {
      const ssize_t w = pwrite(fd_, buf.data() + done, size_t(n) - done, off_t(dst_pos + done));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        *error = std::string("writing the replica image: ") + std::strerror(errno);
        return false;
      }
      done += size_t(w);
    }
    src_pos += uint64_t(n);
    dst_pos += uint64_t(n);
    len -= uint64_t(n);
  }
  return true;
}

bool ReplicaImage::Round(std::shared_ptr<const PointReader> live, bool full, JournalLoc from, RoundResult* r,
                         std::string* error) {
  Invalidate();  // waits for the reads under way; later ones read the journal
  r->newest = from;
  std::vector<PointReader::Piece> pieces;
  const uint64_t sectors = live->size() / kMapSector;
  for (uint64_t lo = 0; lo < sectors; lo += kRoundWindow) {
    pieces.clear();
    live->Plan(lo, std::min(sectors, lo + kRoundWindow), &pieces);
    for (const PointReader::Piece& p : pieces) {
      if (!p.e || p.e->file == kZeroFile) continue;
      const uint64_t pos = p.e->pos + (p.lo - p.e->sector) * kMapSector;
      const uint64_t len = (p.hi - p.lo) * kMapSector;
      const bool journal = p.e->file >= 0;
      if (journal) {
        const JournalLoc end{p.e->file, pos + len};
        if (r->newest < end) r->newest = end;
      }
      // A delta round copies what came after the last round; the base only changes with a full one.
      if (!full && (!journal || JournalLoc{p.e->file, pos} < from)) continue;
      const MapFile* f = live->File(p.e->file);
      if (!f) {
        *error = "the replica image round names a file that is not open (" + std::to_string(p.e->file) + ")";
        return false;
      }
      if (!Copy(f->fd(), pos, p.lo * kMapSector, len, error)) return false;
      r->bytes += len;
      r->extents++;
    }
  }
  if (fdatasync(fd_) != 0) {
    *error = std::string("fdatasync of the replica image: ") + std::strerror(errno);
    return false;
  }
  std::shared_ptr<const PointReader> same = live->WithoutReplica();
  live.reset();
  std::unique_lock<std::shared_mutex> l(mu_);
  same_ = std::move(same);
  return true;
}

}  // namespace tidemark
