// DirectAppender (direct_append.h): the segment's bytes equal a model after
// appends of every size, across the bounce buffer's windows and across a
// reopen; the padding past the end is zeroes and Trim cuts it; a misplaced
// append fails and changes nothing; tmpfs says "unsupported".
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "direct_append.h"

using tidemark::DirectAppender;
using tidemark::kDirectAlign;

namespace {

std::vector<uint8_t> ReadAll(const std::string& path) {
  std::vector<uint8_t> out;
  const int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) return out;
  uint8_t buf[65536];
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) break;
    out.insert(out.end(), buf, buf + n);
  }
  close(fd);
  return out;
}

uint64_t FileSize(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 ? uint64_t(st.st_size) : 0;
}

// The file holds the model, then only zeroes (the padding), shorter than a block.
bool Holds(const std::string& path, const std::vector<uint8_t>& model, std::string* why) {
  const std::vector<uint8_t> got = ReadAll(path);
  if (got.size() < model.size() || got.size() - model.size() >= kDirectAlign) {
    *why = "file of " + std::to_string(got.size()) + " bytes for " + std::to_string(model.size());
    return false;
  }
  if (!std::equal(model.begin(), model.end(), got.begin())) {
    *why = "bytes differ";
    return false;
  }
  for (size_t i = model.size(); i < got.size(); i++) {
    if (got[i] != 0) {
      *why = "padding is not zero at " + std::to_string(i);
      return false;
    }
  }
  return true;
}

}  // namespace

int main() {
  tidemark::test::TempDir dir;
  const std::string path = dir.path() + "/00000001.tmj";
  std::mt19937_64 rng(7);
  // A header written the ordinary way, as SegmentFile.create does.
  std::vector<uint8_t> model(100);
  for (auto& b : model) b = uint8_t(rng());
  {
    const int fd = open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0600);
    CHECK(fd >= 0 && write(fd, model.data(), model.size()) == ssize_t(model.size()), "the segment header is written");
    close(fd);
  }

  DirectAppender a;
  bool unsupported = false;
  std::string error;
  if (!a.Open(path, model.size(), &unsupported, &error)) {
    // A TMPDIR on tmpfs: nothing more to test here, but say so.
    CHECK(unsupported, "open fails only because the file system refuses O_DIRECT" + std::string(": ") + error);
    return tidemark::test::Finish();
  }
  CHECK(a.end() == model.size(), "the appender starts at the end it was given");

  // Appends of every size: single bytes, odd sizes, whole blocks, several pieces, more than a window.
  const std::vector<std::vector<size_t>> rounds = {{1}, {7, 4089}, {4096}, {12}, {65536, 3, 100000}, {9 << 20, 1}, {4095}, {1}};
  bool ok = true;
  std::string why;
  for (const auto& sizes : rounds) {
    std::vector<std::vector<uint8_t>> bufs;
    std::vector<std::pair<const uint8_t*, size_t>> pieces;
    for (size_t n : sizes) {
      bufs.emplace_back(n);
      for (auto& b : bufs.back()) b = uint8_t(rng());
    }
    for (auto& b : bufs) {
      pieces.emplace_back(b.data(), b.size());
      model.insert(model.end(), b.begin(), b.end());
    }
    if (!a.Append(pieces, a.end(), &error)) {
      ok = false;
      why = error;
      break;
    }
    if (a.end() != model.size() || !Holds(path, model, &why)) {
      ok = false;
      break;
    }
  }
  CHECK(ok, "after every append the file holds the bytes appended, then less than a block of zeroes" + (why.empty() ? "" : ": " + why));

  // A misplaced append fails, names both offsets, and changes nothing.
  std::vector<uint8_t> stray(10, 0xee);
  const uint64_t end0 = a.end();
  CHECK(!a.Append({{stray.data(), stray.size()}}, end0 + 1, &error) && error.find("ends at " + std::to_string(end0)) != std::string::npos,
        "an append that is not at the end fails: " + error);
  CHECK(a.end() == end0 && Holds(path, model, &why), "and changes nothing");

  // Trim cuts the padding; appending goes on after it.
  error.clear();
  CHECK(a.Trim(&error) && FileSize(path) == model.size(), "trim leaves the file at the journal's end" + (error.empty() ? std::string() : ": " + error));
  std::vector<uint8_t> more(5000, 0x42);
  CHECK(a.Append({{more.data(), more.size()}}, a.end(), &error), "an append after a trim" + (error.empty() ? std::string() : ": " + error));
  model.insert(model.end(), more.begin(), more.end());
  CHECK(Holds(path, model, &why), "holds the bytes after a trim and an append" + (why.empty() ? std::string() : ": " + why));

  // A second appender opened at the end (a restart) goes on where the first stopped.
  CHECK(a.Trim(&error), "trim before close" + (error.empty() ? std::string() : ": " + error));
  a.Close();
  DirectAppender b;
  CHECK(b.Open(path, model.size(), &unsupported, &error), "reopened at the end" + (error.empty() ? std::string() : ": " + error));
  std::vector<uint8_t> tail(777);
  for (auto& x : tail) x = uint8_t(rng());
  CHECK(b.Append({{tail.data(), tail.size()}}, model.size(), &error), "an append after reopening" + (error.empty() ? std::string() : ": " + error));
  model.insert(model.end(), tail.begin(), tail.end());
  CHECK(Holds(path, model, &why), "the reopened appender kept the partial block's bytes" + (why.empty() ? std::string() : ": " + why));
  b.Close();
  CHECK(!b.Append({{tail.data(), tail.size()}}, b.end(), &error) && error.find("closed") != std::string::npos,
        "an append after close fails: " + error);

  // tmpfs: older kernels refuse O_DIRECT there (the caller is then told to
  // write through the page cache), newer ones take it.
  struct statfs sf {};
  if (statfs("/dev/shm", &sf) == 0 && sf.f_type == 0x01021994 /* TMPFS_MAGIC */) {
    const std::string shm = "/dev/shm/tidemark-direct-" + std::to_string(getpid());
    const int fd = open(shm.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0600);
    close(fd);
    DirectAppender c;
    error.clear();
    if (c.Open(shm, 0, &unsupported, &error)) {
      CHECK(c.Append({{tail.data(), tail.size()}}, 0, &error) && c.Trim(&error) && ReadAll(shm) == tail, "tmpfs takes O_DIRECT here, and an append" + error);
    } else {
      CHECK(unsupported, "tmpfs: O_DIRECT unsupported, said as such (" + error + ")");
    }
    unlink(shm.c_str());
  }
  return tidemark::test::Finish();
}
