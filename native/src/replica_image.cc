#include "replica_image.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>

namespace tidemark {

// Sectors planned at a time in a round (512 MiB of the volume).
constexpr uint64_t kRoundWindow = uint64_t(1) << 20;

// A round writes behind itself: every kWriteBehind bytes copied, the image's
// dirty pages are written and waited for before it copies more. Without
// this a round after a busy minute left up to the volume's size dirty and
// its final fdatasync queued all of it at once: the journal's O_DIRECT
// appends waited behind it and acks stopped for 0.5 s (bench:churn's RPO
// rung with the protected volume apart: p99 20-25 ms without replica
// rounds, 516-574 ms with them). With at most this much of the image in the
// disk's queue, an append waits behind a few milliseconds of it.
constexpr uint64_t kWriteBehind = uint64_t(8) << 20;

namespace {

// Writes the image's dirty pages and waits for them (and for any writeback
// already under way). A file system without sync_file_range is left to the
// final fdatasync.
bool WriteBehind(int fd, std::string* error) {
  const unsigned flags = SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER;
  while (sync_file_range(fd, 0, 0, flags) != 0) {
    if (errno == EINTR) continue;
    if (errno == ENOSYS || errno == EINVAL || errno == ESPIPE) return true;
    *error = std::string("writing the replica image back: ") + std::strerror(errno);
    return false;
  }
  return true;
}

}  // namespace

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

bool ReplicaImage::Round(std::shared_ptr<const PointReader> live, bool full, JournalLoc from, bool yieldable,
                         RoundResult* r, std::string* error) {
  Invalidate();  // waits for the reads under way; later ones read the journal
  // A request to stop is for this round only, however it ends.
  struct YieldReset {
    std::atomic<bool>& y;
    ~YieldReset() { y.store(false, std::memory_order_relaxed); }
  } reset{yield_};
  *r = RoundResult{};
  r->newest = from;
  std::vector<PointReader::Piece> pieces;
  uint64_t unsynced = 0;
  const uint64_t sectors = live->size() / kMapSector;
  for (uint64_t lo = 0; lo < sectors; lo += kRoundWindow) {
    pieces.clear();
    live->Plan(lo, std::min(sectors, lo + kRoundWindow), &pieces);
    for (const PointReader::Piece& p : pieces) {
      if (yieldable && yield_.load(std::memory_order_relaxed)) {
        r->interrupted = true;
        return true;
      }
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
      unsynced += len;
      if (unsynced >= kWriteBehind) {
        if (!WriteBehind(fd_, error)) return false;
        unsynced = 0;
      }
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
