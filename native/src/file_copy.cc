#include "file_copy.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

namespace tidemark {

namespace {

constexpr size_t kBuffer = 1 << 20;

bool TargetErrno(int e) { return e == ENOSPC || e == EDQUOT || e == EFBIG || e == EROFS; }

}  // namespace

bool RangeCopier::Copy(int src, uint64_t src_pos, int dst, uint64_t dst_pos, uint64_t len, CopySide* side,
                       std::string* error) {
  while (len > 0 && !no_copy_range_) {
    loff_t in = loff_t(src_pos), out = loff_t(dst_pos);
    const ssize_t n = copy_file_range(src, &in, dst, &out, size_t(len), 0);
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
    if (n < 0 && TargetErrno(errno)) {
      *side = CopySide::kTarget;
      *error = "writing " + target_name_ + " at " + std::to_string(dst_pos) + ": " + std::strerror(errno);
      return false;
    }
    // EIO and the like (or a source shorter than its map says): the buffer
    // tells which side it was.
    break;
  }
  return CopyBuffered(src, src_pos, dst, dst_pos, len, side, error);
}

bool RangeCopier::CopyBuffered(int src, uint64_t src_pos, int dst, uint64_t dst_pos, uint64_t len, CopySide* side,
                               std::string* error) {
  if (len == 0) return true;
  std::vector<uint8_t> buf(size_t(std::min<uint64_t>(len, kBuffer)));
  while (len > 0) {
    const size_t chunk = size_t(std::min<uint64_t>(len, buf.size()));
    const ssize_t n = pread(src, buf.data(), chunk, off_t(src_pos));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      *side = CopySide::kSource;
      *error = "reading " + std::to_string(chunk) + " bytes of " + source_name_ + " at " + std::to_string(src_pos) +
               ": " + (n == 0 ? "unexpected end of file" : std::strerror(errno));
      return false;
    }
    if (!WriteAll(dst, buf.data(), size_t(n), dst_pos, error)) {
      *side = CopySide::kTarget;
      return false;
    }
    src_pos += uint64_t(n);
    dst_pos += uint64_t(n);
    len -= uint64_t(n);
  }
  return true;
}

bool RangeCopier::WriteAll(int dst, const uint8_t* p, size_t n, uint64_t pos, std::string* error) {
  size_t done = 0;
  while (done < n) {
    const ssize_t w = pwrite(dst, p + done, n - done, off_t(pos + done));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      *error = "writing " + target_name_ + " at " + std::to_string(pos + done) + ": " +
               (w == 0 ? "no progress" : std::strerror(errno));
      return false;
    }
    done += size_t(w);
  }
  return true;
}

bool RangeCopier::Zero(int dst, uint64_t pos, uint64_t len, std::string* error) {
  if (len == 0) return true;
  struct stat st{};
  if (fstat(dst, &st) == 0 && S_ISBLK(st.st_mode)) {
    uint64_t range[2] = {pos, len};
    if (ioctl(dst, BLKZEROOUT, range) == 0) return true;
  } else if (!no_zero_range_) {
    if (fallocate(dst, FALLOC_FL_ZERO_RANGE, off_t(pos), off_t(len)) == 0) return true;
    if (TargetErrno(errno)) {
      *error = "zeroing " + target_name_ + " at " + std::to_string(pos) + ": " + std::strerror(errno);
      return false;
    }
    no_zero_range_ = true;
  }
  static const std::vector<uint8_t> zeroes(kBuffer);
  while (len > 0) {
    const size_t chunk = size_t(std::min<uint64_t>(len, zeroes.size()));
    if (!WriteAll(dst, zeroes.data(), chunk, pos, error)) return false;
    pos += chunk;
    len -= chunk;
  }
  return true;
}

}  // namespace tidemark
