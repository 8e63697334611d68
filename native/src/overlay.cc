#include "overlay.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace tidemark {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the overlay map stores its bitmap words as they are in memory");

namespace {

std::string Errno(int err = errno) { return std::strerror(err); }

std::string DirOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

int SyncDir(const std::string& dir) {
  const int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno;
  const int r = fsync(fd) == 0 ? 0 : errno;
  ::close(fd);
  return r;
}

int PwriteAll(int fd, const void* buf, uint64_t length, uint64_t offset) {
  const auto* p = static_cast<const uint8_t*>(buf);
  for (uint64_t done = 0; done < length;) {
    const ssize_t n = pwrite(fd, p + done, length - done, off_t(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n < 0 ? errno : EIO;
    done += uint64_t(n);
  }
  return 0;
}

int PreadAll(int fd, void* buf, uint64_t length, uint64_t offset) {
  auto* p = static_cast<uint8_t*>(buf);
  for (uint64_t done = 0; done < length;) {
    const ssize_t n = pread(fd, p + done, length - done, off_t(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (n == 0) return EIO;  // shorter than it must be
    done += uint64_t(n);
  }
  return 0;
}

// The map's header: the first bytes of its 4096-byte header block.
struct MapHeader {
  char magic[8];
  uint32_t version;
  uint32_t sector;
  uint64_t size;
  uint64_t page_sectors;
};
constexpr uint32_t kMapVersion = 1;

}  // namespace

void Overlay::Reset(uint64_t size) {
  std::lock_guard<std::mutex> lk(mu_);
  size_ = size;
  const uint64_t n = (size / kSector + kPageSectors - 1) / kPageSectors;
  pages_.clear();
  pages_.resize(n);
  held_ = 0;
  page_dirty_.assign(durable_ ? n : 0, 0);
  dirty_.clear();
  data_unsynced_ = false;
}

bool Overlay::Open(const std::string& dir, uint64_t size, std::string* error) {
  int fd = open(dir.c_str(), O_RDWR | O_TMPFILE | O_CLOEXEC, 0600);
  if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
    // No O_TMPFILE here: a named file, unlinked before anything is written.
    std::string path = dir + "/tidemark-overlay-XXXXXX";
    fd = mkostemp(&path[0], O_CLOEXEC);
    if (fd >= 0) unlink(path.c_str());
  }
  if (fd < 0) {
    *error = "cannot create the copy-on-write overlay in " + dir + ": " + Errno();
    return false;
  }
  if (ftruncate(fd, off_t(size)) != 0) {
    *error = "cannot size the copy-on-write overlay in " + dir + " to " + std::to_string(size) + " bytes: " + Errno();
    ::close(fd);
    return false;
  }
  fd_ = fd;
  durable_ = false;
  Reset(size);
  return true;
}

bool Overlay::OpenDurable(const std::string& data_path, const std::string& map_path, uint64_t size, std::string* error) {
  const std::string what = "the copy-on-write overlay " + data_path;
  durable_ = true;
  Reset(size);
  int map_fd = open(map_path.c_str(), O_RDWR | O_CLOEXEC);
  if (map_fd < 0 && errno != ENOENT) {
    *error = "cannot open the map of " + what + " (" + map_path + "): " + Errno();
    return false;
  }
  int fd = -1;
  if (map_fd < 0) {
    // A new overlay. The data file is sized and synced before the map
    // exists, so a map on disk always has a data file of the right size.
    fd = open(data_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    int err = fd < 0 ? errno : 0;
    if (!err && (ftruncate(fd, 0) != 0 || ftruncate(fd, off_t(size)) != 0 || fsync(fd) != 0)) err = errno;
    if (err) {
      *error = "cannot create " + what + " (" + std::to_string(size) + " bytes): " + Errno(err);
      if (fd >= 0) ::close(fd);
      return false;
    }
    char block[kMapHeader] = {};
    MapHeader h{};
    std::memcpy(h.magic, kMapMagic, sizeof h.magic);
    h.version = kMapVersion;
    h.sector = kSector;
    h.size = size;
    h.page_sectors = kPageSectors;
    std::memcpy(block, &h, sizeof h);
    const std::string tmp = map_path + ".tmp";
    const int t = open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    err = t < 0 ? errno : PwriteAll(t, block, sizeof block, 0);
    if (!err && fsync(t) != 0) err = errno;
    if (t >= 0) ::close(t);
    if (!err && rename(tmp.c_str(), map_path.c_str()) != 0) err = errno;
    if (!err) err = SyncDir(DirOf(map_path));
    if (!err && DirOf(data_path) != DirOf(map_path)) err = SyncDir(DirOf(data_path));
    if (err) {
      *error = "cannot create the map of " + what + " (" + map_path + "): " + Errno(err);
      unlink(tmp.c_str());
      ::close(fd);
      return false;
    }
    map_fd = open(map_path.c_str(), O_RDWR | O_CLOEXEC);
    if (map_fd < 0) {
      *error = "cannot open the map of " + what + " (" + map_path + "): " + Errno();
      ::close(fd);
      return false;
    }
  } else {
    fd = open(data_path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) {
      *error = what + " is missing (" + Errno() + ") although its map " + map_path +
               " exists: the data it held is lost; delete the view";
      ::close(map_fd);
      return false;
    }
  }
  if (flock(map_fd, LOCK_EX | LOCK_NB) != 0) {
    *error = what + " is in use by another view (" + map_path + " is locked)";
    ::close(map_fd);
    ::close(fd);
    return false;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || uint64_t(st.st_size) != size) {
    *error = what + " is " + std::to_string(uint64_t(st.st_size)) + " bytes, not the volume's " + std::to_string(size);
    ::close(map_fd);
    ::close(fd);
    return false;
  }
  map_fd_ = map_fd;
  fd_ = fd;
  if (!LoadMap(map_path, error)) {
    ::close(map_fd_);
    ::close(fd_);
    map_fd_ = fd_ = -1;
    return false;
  }
  return true;
}

bool Overlay::LoadMap(const std::string& map_path, std::string* error) {
  char block[kMapHeader];
  if (const int err = PreadAll(map_fd_, block, sizeof block, 0)) {
    *error = "cannot read the header of the overlay map " + map_path + ": " + Errno(err);
    return false;
  }
  MapHeader h;
  std::memcpy(&h, block, sizeof h);
  if (std::memcmp(h.magic, kMapMagic, sizeof h.magic) != 0 || h.version != kMapVersion || h.sector != kSector ||
      h.page_sectors != kPageSectors) {
    *error = map_path + " is not a tidemark overlay map (version " + std::to_string(kMapVersion) + ")";
    return false;
  }
  if (h.size != size_) {
    *error = "the overlay map " + map_path + " is for a volume of " + std::to_string(h.size) + " bytes, not " +
             std::to_string(size_);
    return false;
  }
  // Only the pages that were ever written are read: SEEK_DATA skips the
  // holes, so opening costs what the view holds, not the volume's size.
  const uint64_t sectors = size_ / kSector;
  const uint64_t end = kMapHeader + pages_.size() * kPageBytes;
  std::lock_guard<std::mutex> lk(mu_);
  uint64_t at = kMapHeader;
  uint64_t page[kPageWords];
  while (at < end) {
    const off_t data = lseek(map_fd_, off_t(at), SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // nothing more but holes
      *error = "cannot read the overlay map " + map_path + ": " + Errno();
      return false;
    }
    uint64_t p = (uint64_t(data) - kMapHeader) / kPageBytes;
    if (p >= pages_.size()) break;
    off_t hole = lseek(map_fd_, data, SEEK_HOLE);
    const uint64_t stop = std::min<uint64_t>(end, hole < 0 ? end : uint64_t(hole));
    for (; kMapHeader + p * kPageBytes < stop; p++) {
      const uint64_t off = kMapHeader + p * kPageBytes;
      std::memset(page, 0, sizeof page);
      // A map whose last page was never written in full reads short: zeroes.
      const ssize_t n = pread(map_fd_, page, kPageBytes, off_t(off));
      if (n < 0) {
        *error = "cannot read the overlay map " + map_path + ": " + Errno();
        return false;
      }
      uint64_t count = 0;
      for (uint64_t w = 0; w < kPageWords; w++) {
        // Bits past the volume's last sector never count.
        const uint64_t first = p * kPageSectors + w * 64;
        if (first >= sectors) page[w] = 0;
        else if (sectors - first < 64) page[w] &= (uint64_t(1) << (sectors - first)) - 1;
        count += uint64_t(__builtin_popcountll(page[w]));
      }
      if (count == 0) continue;
      pages_[p].reset(new uint64_t[kPageWords]);
      std::memcpy(pages_[p].get(), page, sizeof page);
      held_ += count;
    }
    at = kMapHeader + p * kPageBytes;
  }
  return true;
}

void Overlay::Close() {
  if (fd_ >= 0 && durable_) Sync();
  if (fd_ >= 0) ::close(fd_);
  if (map_fd_ >= 0) ::close(map_fd_);  // releases the lock
  fd_ = map_fd_ = -1;
  std::lock_guard<std::mutex> lk(mu_);
  pages_.clear();
  page_dirty_.clear();
  dirty_.clear();
  held_ = 0;
}

bool Overlay::Test(uint64_t s) const {
  const auto& p = pages_[s / kPageSectors];
  if (!p) return false;
  const uint64_t i = s % kPageSectors;
  return (p[i / 64] >> (i % 64)) & 1;
}

void Overlay::Set(uint64_t first, uint64_t count) {
  std::lock_guard<std::mutex> lk(mu_);
  data_unsynced_ = true;
  const uint64_t end = first + count;
  for (uint64_t s = first; s < end;) {
    const uint64_t pi = s / kPageSectors;
    auto& p = pages_[pi];
    if (!p) p.reset(new uint64_t[kPageWords]());
    const uint64_t i = s % kPageSectors;
    uint64_t& word = p[i / 64];
    const uint64_t before = held_;
    if (i % 64 == 0 && end - s >= 64) {  // a whole word at once (large writes and zeroes)
      held_ += 64 - uint64_t(__builtin_popcountll(word));
      word = ~uint64_t(0);
      s += 64;
    } else {
      const uint64_t bit = uint64_t(1) << (i % 64);
      if (!(word & bit)) {
        word |= bit;
        held_++;
      }
      s++;
    }
    if (durable_ && held_ != before && !page_dirty_[pi]) {
      page_dirty_[pi] = 1;
      dirty_.push_back(pi);
    }
  }
}

void Overlay::Runs(uint64_t offset, uint64_t length, std::vector<std::pair<uint64_t, uint64_t>>* runs) {
  runs->clear();
  const uint64_t end = offset + length;
  std::lock_guard<std::mutex> lk(mu_);
  if (held_ == 0) return;
  for (uint64_t s = offset / kSector; s * kSector < end;) {
    if (!pages_[s / kPageSectors]) {  // a whole page holds nothing: skip it
      s = (s / kPageSectors + 1) * kPageSectors;
      continue;
    }
    if (!Test(s)) {
      s++;
      continue;
    }
    uint64_t e = s + 1;
    while (e * kSector < end && Test(e)) e++;
    const uint64_t from = std::max(offset, s * kSector);
    const uint64_t to = std::min(end, e * kSector);
    runs->emplace_back(from, to - from);
    s = e;
  }
}

int Overlay::Read(uint64_t offset, uint64_t length, uint8_t* out) { return PreadAll(fd_, out, length, offset); }

int Overlay::Write(uint64_t offset, uint64_t length, const uint8_t* data) {
  if (const int err = PwriteAll(fd_, data, length, offset)) return err;
  Set(offset / kSector, length / kSector);
  return 0;
}

int Overlay::Zero(uint64_t offset, uint64_t length) {
  if (fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off_t(offset), off_t(length)) != 0) {
    if (errno != EOPNOTSUPP) return errno;
    // No hole punching on this file system: write the zeroes.
    static const uint8_t zeroes[64 * 1024] = {};
    for (uint64_t at = 0; at < length;) {
      const uint64_t n = std::min<uint64_t>(sizeof zeroes, length - at);
      if (const int err = PwriteAll(fd_, zeroes, n, offset + at)) return err;
      at += n;
    }
  }
  Set(offset / kSector, length / kSector);
  return 0;
}

int Overlay::Sync() {
  if (!durable_ || fd_ < 0) return 0;
  std::lock_guard<std::mutex> sl(sync_mu_);
  // Copies of the changed pages, taken before the data is synced: every bit
  // in them belongs to a Write or Zero that had returned, so the fdatasync
  // below covers its data. Bits set after the copy wait for the next Sync.
  std::vector<std::pair<uint64_t, std::unique_ptr<uint64_t[]>>> copies;
  bool data;
  {
    std::lock_guard<std::mutex> lk(mu_);
    data = data_unsynced_;
    data_unsynced_ = false;
    copies.reserve(dirty_.size());
    for (const uint64_t p : dirty_) {
      std::unique_ptr<uint64_t[]> c(new uint64_t[kPageWords]);
      std::memcpy(c.get(), pages_[p].get(), kPageBytes);
      copies.emplace_back(p, std::move(c));
      page_dirty_[p] = 0;
    }
    dirty_.clear();
  }
  int err = 0;
  if (data && fdatasync(fd_) != 0) err = errno;
  for (size_t i = 0; !err && i < copies.size(); i++)
    err = PwriteAll(map_fd_, copies[i].second.get(), kPageBytes, kMapHeader + copies[i].first * kPageBytes);
  if (!err && !copies.empty() && fdatasync(map_fd_) != 0) err = errno;
  if (err) {
    // Nothing is lost from memory: the pages and the data are synced again next time.
    std::lock_guard<std::mutex> lk(mu_);
    data_unsynced_ = true;
    for (const auto& c : copies) {
      if (!page_dirty_[c.first]) {
        page_dirty_[c.first] = 1;
        dirty_.push_back(c.first);
      }
    }
  }
  return err;
}

uint64_t Overlay::held_sectors() {
  std::lock_guard<std::mutex> lk(mu_);
  return held_;
}

}  // namespace tidemark
