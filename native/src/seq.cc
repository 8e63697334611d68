#include "seq.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace tidemark {

namespace {
constexpr uint64_t kMagic = 0x3151455344494d54ULL;  // "TMIDSEQ1" little-endian
}

SeqSpace::~SeqSpace() {
  if (fd_ >= 0) ::close(fd_);
}

bool SeqSpace::Open(const std::string& path, std::string* error) {
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd_ < 0) {
    *error = "cannot open seq file " + path + ": " + std::strerror(errno);
    return false;
  }
  uint64_t rec[2] = {0, 0};
  const ssize_t n = pread(fd_, rec, sizeof rec, 0);
  uint64_t start = 0;
  if (n == ssize_t(sizeof rec)) {
    if (rec[0] != kMagic) {
      *error = "seq file " + path + " is not a tidemark seq file";
      return false;
    }
    start = rec[1];
  } else if (n != 0) {
    *error = "seq file " + path + " is truncated";
    return false;
  }
  last_.store(start);
  if (!Persist(start + kLease)) {
    *error = "cannot write seq file " + path + ": " + std::strerror(errno);
    return false;
  }
  return true;
}

bool SeqSpace::Persist(uint64_t limit) {
  const uint64_t rec[2] = {kMagic, limit};
  if (pwrite(fd_, rec, sizeof rec, 0) != ssize_t(sizeof rec) || fdatasync(fd_) != 0) return false;
  limit_.store(limit, std::memory_order_release);
  return true;
}

uint64_t SeqSpace::Next() {
  const uint64_t s = last_.fetch_add(1, std::memory_order_acq_rel) + 1;
  if (s > limit_.load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> lk(lease_mu_);
    while (s > limit_.load(std::memory_order_acquire)) {
      // A failed sync here leaves the lease where it was; retrying is all we
      // can do, and a disk that cannot take 16 bytes has failed the volume too.
      if (!Persist(limit_.load() + kLease)) usleep(1000);
    }
  }
  return s;
}

void SeqSpace::Raise(uint64_t floor) {
  uint64_t cur = last_.load();
  while (cur < floor && !last_.compare_exchange_weak(cur, floor)) {
  }
  std::lock_guard<std::mutex> lk(lease_mu_);
  if (floor >= limit_.load()) Persist(floor + kLease);
}

}  // namespace tidemark
