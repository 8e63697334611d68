#include "overlay.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace tidemark {

bool Overlay::Open(const std::string& dir, uint64_t size, std::string* error) {
  int fd = open(dir.c_str(), O_RDWR | O_TMPFILE | O_CLOEXEC, 0600);
  if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
    // No O_TMPFILE here: a named file, unlinked before anything is written.
    std::string path = dir + "/tidemark-overlay-XXXXXX";
    fd = mkostemp(&path[0], O_CLOEXEC);
    if (fd >= 0) unlink(path.c_str());
  }
  if (fd < 0) {
    *error = "cannot create the copy-on-write overlay in " + dir + ": " + std::strerror(errno);
    return false;
  }
  if (ftruncate(fd, off_t(size)) != 0) {
    *error = "cannot size the copy-on-write overlay in " + dir + " to " + std::to_string(size) +
             " bytes: " + std::strerror(errno);
    ::close(fd);
    return false;
  }
  fd_ = fd;
  size_ = size;
  pages_.clear();
  pages_.resize((size / kSector + kPageSectors - 1) / kPageSectors);
  held_ = 0;
  return true;
}

void Overlay::Close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  std::lock_guard<std::mutex> lk(mu_);
  pages_.clear();
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
  const uint64_t end = first + count;
  for (uint64_t s = first; s < end;) {
    auto& p = pages_[s / kPageSectors];
    if (!p) p.reset(new uint64_t[kPageWords]());
    const uint64_t i = s % kPageSectors;
    uint64_t& word = p[i / 64];
    if (i % 64 == 0 && end - s >= 64) {  // a whole word at once (large writes and zeroes)
      held_ += 64 - uint64_t(__builtin_popcountll(word));
      word = ~uint64_t(0);
      s += 64;
      continue;
    }
    const uint64_t bit = uint64_t(1) << (i % 64);
    if (!(word & bit)) {
      word |= bit;
      held_++;
    }
    s++;
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

int Overlay::Read(uint64_t offset, uint64_t length, uint8_t* out) {
  uint64_t done = 0;
  while (done < length) {
    const ssize_t n = pread(fd_, out + done, length - done, off_t(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (n == 0) return EIO;  // the file is as long as the volume: cannot happen
    done += uint64_t(n);
  }
  return 0;
}

int Overlay::Write(uint64_t offset, uint64_t length, const uint8_t* data) {
  uint64_t done = 0;
  while (done < length) {
    const ssize_t n = pwrite(fd_, data + done, length - done, off_t(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n < 0 ? errno : EIO;
    done += uint64_t(n);
  }
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
      const ssize_t w = pwrite(fd_, zeroes, n, off_t(offset + at));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return w < 0 ? errno : EIO;
      at += uint64_t(w);
    }
  }
  Set(offset / kSector, length / kSector);
  return 0;
}

uint64_t Overlay::held_sectors() {
  std::lock_guard<std::mutex> lk(mu_);
  return held_;
}

}  // namespace tidemark
