#include "replica_image.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>

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
      copier_.set_source_name(journal ? "segment " + std::to_string(p.e->file) : std::string("the base image"));
      CopySide side = CopySide::kNone;
      if (!copier_.Copy(f->fd(), pos, fd_, p.lo * kMapSector, len, &side, error)) return false;
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
