#include "dirty_map.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace tidemark {

namespace {
constexpr size_t kHeader = 4096;
constexpr char kMagic[8] = {'T', 'M', 'D', 'I', 'R', 'T', 'Y', '1'};
constexpr uint32_t kVersion = 1;

struct Header {
  char magic[8];
  uint32_t version;
  uint32_t region_shift;
  uint64_t volume_size;
  uint64_t regions;
};
}  // namespace

DirtyMap::~DirtyMap() { Close(); }

bool DirtyMap::Open(const std::string& path, uint64_t volume_size, bool* reset, std::string* error) {
  *reset = false;
  regions_ = (volume_size + kRegionSize - 1) >> kRegionShift;
  bytes_ = (regions_ + 7) / 8;
  map_len_ = kHeader + bytes_;
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd_ < 0) {
    *error = "cannot open dirty map " + path + ": " + std::strerror(errno);
    return false;
  }
  struct stat st;
  if (fstat(fd_, &st) != 0) {
    *error = "cannot stat dirty map " + path + ": " + std::strerror(errno);
    return false;
  }
  Header want{};
  std::memcpy(want.magic, kMagic, 8);
  want.version = kVersion;
  want.region_shift = kRegionShift;
  want.volume_size = volume_size;
  want.regions = regions_;

  bool fresh = st.st_size == 0;
  bool mismatch = false;
  if (!fresh) {
    Header have{};
    if (st.st_size != off_t(map_len_) || pread(fd_, &have, sizeof have, 0) != ssize_t(sizeof have) ||
        std::memcmp(&have, &want, sizeof have) != 0) {
      mismatch = true;
    }
  }
  if (fresh || mismatch) {
    if (ftruncate(fd_, 0) != 0 || ftruncate(fd_, off_t(map_len_)) != 0 ||
        pwrite(fd_, &want, sizeof want, 0) != ssize_t(sizeof want)) {
      *error = "cannot initialise dirty map " + path + ": " + std::strerror(errno);
      return false;
    }
  }
  void* m = mmap(nullptr, map_len_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
  if (m == MAP_FAILED) {
    *error = "cannot map dirty map " + path + ": " + std::strerror(errno);
    return false;
  }
  map_ = static_cast<uint8_t*>(m);
  bits_ = map_ + kHeader;
  if (mismatch) {
    // The volume changed size under us: nothing is known, everything is dirty.
    std::memset(bits_, 0xff, bytes_);
    if (regions_ % 8) bits_[bytes_ - 1] = uint8_t((1u << (regions_ % 8)) - 1);
    *reset = true;
  }
  count_ = 0;
  for (size_t i = 0; i < bytes_; i++) count_ += __builtin_popcount(bits_[i]);
  unsynced_.store(true);
  return Sync() || (*error = "cannot sync dirty map " + path + ": " + std::strerror(errno), false);
}

bool DirtyMap::Sync() {
  if (!map_) return true;
  if (!unsynced_.exchange(false, std::memory_order_acq_rel)) return true;
  if (msync(map_, map_len_, MS_SYNC) != 0) {
    unsynced_.store(true);
    return false;
  }
  return true;
}

void DirtyMap::Close() {
  if (map_) {
    msync(map_, map_len_, MS_SYNC);
    munmap(map_, map_len_);
    map_ = nullptr;
    bits_ = nullptr;
  }
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

}  // namespace tidemark
