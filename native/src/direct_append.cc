#include "direct_append.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace tidemark {

namespace {

// The bounce buffer: rounds larger than this go out as several writes.
constexpr size_t kWindow = 4 << 20;

}  // namespace

std::string DirectAppender::Fail(const std::string& what, int err) {
  errno_ = err;
  return what + " " + path_ + ": " + std::strerror(err);
}

DirectAppender::~DirectAppender() { Close(); }

void DirectAppender::Close() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
  std::free(bounce_);
  bounce_ = nullptr;
}

bool DirectAppender::Open(const std::string& path, uint64_t end, bool* unsupported, std::string* error) {
  Close();
  *unsupported = false;
  errno_ = 0;
  path_ = path;
  fd_ = open(path.c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC);
  if (fd_ < 0) {
    *unsupported = errno == EINVAL;
    *error = Fail("opening for direct writes", errno);
    return false;
  }
  void* p = nullptr;
  if (posix_memalign(&p, kDirectAlign, kWindow) != 0) {
    Close();
    *error = "no memory for a direct-write buffer of " + path;
    return false;
  }
  bounce_ = static_cast<uint8_t*>(p);
  // The partial block before end, read through an ordinary descriptor.
  const uint64_t start = end & ~(kDirectAlign - 1);
  tail_.assign(end - start, 0);
  if (!tail_.empty()) {
    const int rfd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    size_t got = 0;
    while (rfd >= 0 && got < tail_.size()) {
      const ssize_t n = pread(rfd, tail_.data() + got, tail_.size() - got, off_t(start + got));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      got += size_t(n);
    }
    const int err = errno;
    if (rfd >= 0) close(rfd);
    if (got < tail_.size()) {
      Close();
      *error = Fail("reading the last block of", got == 0 && err == 0 ? EIO : err);
      return false;
    }
  }
  end_ = end;
  return true;
}

bool DirectAppender::WriteAligned(const uint8_t* buf, size_t len, uint64_t pos, std::string* error) {
  size_t done = 0;
  while (done < len) {
    const ssize_t n = pwrite(fd_, buf + done, len - done, off_t(pos + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      *error = Fail("writing", errno);
      return false;
    }
    if (n == 0 || size_t(n) % kDirectAlign != 0) {
      // A short direct write is the disk filling up part-way; what is left
      // can no longer be written aligned from here.
      *error = Fail("writing", ENOSPC);
      return false;
    }
    done += size_t(n);
  }
  return true;
}

bool DirectAppender::Append(const std::vector<std::pair<const uint8_t*, size_t>>& pieces, uint64_t offset, std::string* error) {
  errno_ = 0;
  if (fd_ < 0) {
    *error = "direct append to " + path_ + " after it was closed";
    return false;
  }
  if (offset != end_) {
    *error = "direct append to " + path_ + " at " + std::to_string(offset) + ", where the segment ends at " + std::to_string(end_);
    return false;
  }
  uint64_t pos = end_ & ~(kDirectAlign - 1);
  size_t fill = tail_.size();
  if (fill > 0) std::memcpy(bounce_, tail_.data(), fill);
  uint64_t total = 0;
  for (const auto& piece : pieces) {
    const uint8_t* p = piece.first;
    size_t left = piece.second;
    total += left;
    while (left > 0) {
      const size_t n = std::min(left, kWindow - fill);
      std::memcpy(bounce_ + fill, p, n);
      fill += n;
      p += n;
      left -= n;
      if (fill == kWindow) {
        if (!WriteAligned(bounce_, kWindow, pos, error)) return false;
        pos += kWindow;
        fill = 0;
      }
    }
  }
  const size_t whole = fill & ~(kDirectAlign - 1);
  if (fill > 0) {
    const size_t padded = (fill + kDirectAlign - 1) & ~(kDirectAlign - 1);
    std::memset(bounce_ + fill, 0, padded - fill);
    if (!WriteAligned(bounce_, padded, pos, error)) return false;
  }
  tail_.assign(bounce_ + whole, bounce_ + fill);
  end_ = offset + total;
  return true;
}

bool DirectAppender::Trim(std::string* error) {
  if (fd_ < 0) return true;
  if (ftruncate(fd_, off_t(end_)) != 0) {
    *error = Fail("cutting the padding off", errno);
    return false;
  }
  return true;
}

}  // namespace tidemark
