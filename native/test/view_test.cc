// Native tests of the TimeView export (native/src/view.h, overlay.h,
// chunk_cache.h), run under AddressSanitizer and UBSan (`npm run test:native`).
//
// The appliance is replaced by a fetch function over an image in memory (it
// records every fetch, and can be told to fail); everything else is real: the
// NBD front serves the view over a socketpair, as it serves the tap, and the
// overlay is a real unnamed file. The harness is check.h, as for tap_test.

#include <dirent.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "nbd_proto.h"
#include "nbd_server.h"
#include "view.h"

#include "check.h"

using namespace tidemark;
using namespace tidemark::test;

namespace {

// The appliance's side of Admin.Read, over an image in memory.
class FakePoint {
 public:
  explicit FakePoint(std::vector<uint8_t> image) : image_(std::move(image)) {}
  FetchFn Fn() {
    return [this](uint64_t offset, uint32_t length, uint8_t* out, std::string* error) {
      std::lock_guard<std::mutex> lk(mu_);
      calls_.emplace_back(offset, length);
      if (length > kViewMaxFetch || offset + length > image_.size()) {
        bad_ = true;
        *error = "fetch out of range";
        return false;
      }
      if (fail_at_ != UINT64_MAX && fail_at_ >= offset && fail_at_ < offset + length) {
        *error = "appliance unavailable (test)";
        return false;
      }
      std::memcpy(out, image_.data() + offset, length);
      return true;
    };
  }
  size_t calls() {
    std::lock_guard<std::mutex> lk(mu_);
    return calls_.size();
  }
  std::pair<uint64_t, uint32_t> call(size_t i) {
    std::lock_guard<std::mutex> lk(mu_);
    return calls_.at(i);
  }
  bool bad() {
    std::lock_guard<std::mutex> lk(mu_);
    return bad_;
  }
  void FailAt(uint64_t offset) {
    std::lock_guard<std::mutex> lk(mu_);
    fail_at_ = offset;
  }
  const std::vector<uint8_t>& image() const { return image_; }

 private:
  std::mutex mu_;
  std::vector<uint8_t> image_;
  std::vector<std::pair<uint64_t, uint32_t>> calls_;
  uint64_t fail_at_ = UINT64_MAX;
  bool bad_ = false;
};

// ---------------------------------------------------------------- the view, called directly

void TestReadsAndCache() {
  // 9 MiB and 3 sectors: more than two fetch limits, a short last chunk.
  const size_t size = 9 * 1024 * 1024 + 1536;
  FakePoint point(Pattern(size, 1));
  Log logs;
  ViewConfig c;
  c.name = "vol";
  c.size = size;
  View v(c, point.Fn(), logs.Fn());
  std::string error;
  CHECK(v.Open(&error), "a read-only view opens" + error);
  CHECK(v.read_only() && v.size() == size && v.name() == "vol", "read-only, the point's size and the volume's name");

  std::vector<uint8_t> out(6 << 20);
  // Across the boundary of chunks 0 and 1: one fetch of both whole chunks.
  CHECK(v.Read(kViewChunk - 4000, 10000, out.data()) == 0 && Same(out.data(), point.image().data() + kViewChunk - 4000, 10000),
        "a read across a chunk boundary returns the point's bytes");
  CHECK(point.calls() == 1 && point.call(0) == std::make_pair(uint64_t(0), uint32_t(2 * kViewChunk)),
        "it fetched the two whole chunks in one call");
  CHECK(v.Read(100, 2 * kViewChunk - 200, out.data()) == 0 && Same(out.data(), point.image().data() + 100, 2 * kViewChunk - 200) &&
            point.calls() == 1,
        "a second read inside those chunks is served from the cache (no fetch)");
  ViewStats s = v.Stats();
  CHECK(s.chunk_hits == 2 && s.chunk_misses == 2 && s.fetches == 1, "hits and misses counted per chunk");

  // Chunks 1 (cached) .. 4: the run starts after the cached chunk.
  CHECK(v.Read(kViewChunk + 5, 3 * kViewChunk, out.data()) == 0 &&
            Same(out.data(), point.image().data() + kViewChunk + 5, 3 * kViewChunk),
        "a read that starts in a cached chunk and runs past it");
  CHECK(point.calls() == 2 && point.call(1) == std::make_pair(uint64_t(2 * kViewChunk), uint32_t(3 * kViewChunk)),
        "only the missing chunks were fetched, as one run");

  // 5 MiB from 1 MiB: runs of at most 4 MiB.
  const size_t before = point.calls();
  CHECK(v.Read(1 << 20, 5 << 20, out.data()) == 0 && Same(out.data(), point.image().data() + (1 << 20), 5 << 20),
        "a 5 MiB read returns the point's bytes");
  bool within = true;
  for (size_t i = before; i < point.calls(); i++) within &= point.call(i).second <= kViewMaxFetch;
  CHECK(point.calls() - before == 2 && within, "it took two fetches, none over the 4 MiB Admin.Read limit");

  // The end of the volume: a short last chunk.
  CHECK(v.Read(size - 700, 700, out.data()) == 0 && Same(out.data(), point.image().data() + size - 700, 700),
        "the last bytes of a volume whose last chunk is short");
  CHECK(!point.bad(), "no fetch ever asked past the end or over the limit");
  CHECK(v.Stats().cache_bytes <= c.cache_bytes, "the cache stays within its budget");
  CHECK(v.Write(0, 512, out.data(), false) == nbd::kEperm && v.Trim(0, 512, false) == nbd::kEperm &&
            v.Zero(0, 512, false, false) == nbd::kEperm,
        "a read-only view refuses writes, trims and zeroes itself too (EPERM)");
  CHECK(v.Flush() == 0, "FLUSH on a read-only view succeeds (nothing to flush)");
}

void TestCacheBudget() {
  const size_t size = 1 << 20;
  FakePoint point(Pattern(size, 2));
  Log logs;
  ViewConfig c;
  c.name = "vol";
  c.size = size;
  c.cache_bytes = 2 * kViewChunk;
  View v(c, point.Fn(), logs.Fn());
  std::string error;
  CHECK(v.Open(&error), "a view with a two-chunk cache" + error);
  std::vector<uint8_t> out(4096);
  for (uint64_t k = 0; k < 3; k++) v.Read(k * kViewChunk, 4096, out.data());
  CHECK(point.calls() == 3 && v.Stats().cache_bytes == 2 * kViewChunk && v.Stats().cache_evictions == 1,
        "three chunks through a two-chunk cache: one eviction, the budget held");
  v.Read(2 * kViewChunk, 4096, out.data());
  CHECK(point.calls() == 3, "the most recent chunk is still cached");
  CHECK(v.Read(0, 4096, out.data()) == 0 && point.calls() == 4 && Same(out.data(), point.image().data(), 4096),
        "the least recently used one was evicted and is fetched again, correctly");

  ViewConfig none = c;
  none.cache_bytes = 0;
  FakePoint p2(Pattern(size, 3));
  View u(none, p2.Fn(), logs.Fn());
  CHECK(u.Open(&error), "a view without a cache" + error);
  u.Read(0, 4096, out.data());
  u.Read(0, 4096, out.data());
  CHECK(p2.calls() == 2 && u.Stats().cache_bytes == 0 && Same(out.data(), p2.image().data(), 4096),
        "with no cache every read fetches");
}

void TestOverlay() {
  const size_t size = 2 * 1024 * 1024;
  FakePoint point(Pattern(size, 4));
  const std::vector<uint8_t> original = point.image();
  TempDir dir("tidemark-view-test");
  Log logs;
  ViewConfig c;
  c.name = "vol";
  c.size = size;
  c.writable = true;
  c.overlay_dir = dir.path();
  View v(c, point.Fn(), logs.Fn());
  std::string error;
  CHECK(v.Open(&error), "a writable view opens" + error);
  CHECK(!v.read_only(), "it is not read-only");
  CHECK(dir.Entries() == 0, "the overlay file has no name in its directory (nothing to leave behind)");

  std::vector<uint8_t> shadow = original;
  auto write = [&](uint64_t off, const std::vector<uint8_t>& d) {
    std::copy(d.begin(), d.end(), shadow.begin() + off);
    return v.Write(off, uint32_t(d.size()), d.data(), false);
  };
  auto zero = [&](uint64_t off, uint64_t len, bool trim) {
    std::fill(shadow.begin() + off, shadow.begin() + off + len, 0);
    return trim ? v.Trim(off, len, false) : v.Zero(off, len, false, false);
  };
  CHECK(write(4096, Pattern(8192, 10)) == 0, "an aligned write");
  CHECK(write(1000, Pattern(3000, 11)) == 0, "an unaligned write across sectors (edges read-modify-written)");
  CHECK(write(70000, Pattern(100, 12)) == 0, "a write inside one sector");
  CHECK(write(kViewChunk - 300, Pattern(600, 13)) == 0, "an unaligned write across a chunk boundary");
  CHECK(zero(200000, 70000, true) == 0, "an unaligned trim");
  CHECK(zero(300000, 5000, false) == 0, "unaligned write-zeroes");
  CHECK(zero(1 << 20, 1 << 20, false) == 0, "write-zeroes of the whole second half");
  CHECK(write((1 << 20) + 512, Pattern(1024, 14)) == 0, "a write over zeroed sectors");
  CHECK(zero(1000, 100, false) == 0, "zeroes inside one written sector");

  std::vector<uint8_t> out(size);
  CHECK(v.Read(0, uint32_t(size), out.data()) == 0 && out == shadow,
        "the whole view reads back as the point with every write, trim and zero laid over it");
  bool pieces = true;
  for (uint64_t off = 0; off + 777 <= size; off += 4099) {
    std::vector<uint8_t> p(777);
    pieces &= v.Read(off, 777, p.data()) == 0 && Same(p.data(), shadow.data() + off, 777);
  }
  CHECK(pieces, "unaligned reads everywhere agree with it");
  CHECK(point.image() == original, "the point itself (the appliance's bytes) never changed");
  CHECK(v.Stats().overlay_bytes > 0 && v.Stats().overlay_bytes <= size, "the overlay holds the changed sectors");
  const size_t fetched = point.calls();
  std::vector<uint8_t> z(4096);
  CHECK(v.Read((1 << 20) + 8192, 4096, z.data()) == 0 && point.calls() == fetched &&
            std::all_of(z.begin(), z.end(), [](uint8_t b) { return b == 0; }),
        "a read wholly inside the overlay reads zeroes without fetching");
  CHECK(v.Flush() == 0, "FLUSH succeeds");
  v.Close();
  CHECK(dir.Entries() == 0, "closed: nothing left in the overlay directory");

  View again(c, point.Fn(), logs.Fn());
  CHECK(again.Open(&error), "a new writable view of the same point" + error);
  CHECK(again.Read(0, uint32_t(size), out.data()) == 0 && out == original, "shows the original bytes: the overlay was discarded");

  ViewConfig bad = c;
  bad.overlay_dir = dir.path() + "/missing";
  View nodir(bad, point.Fn(), logs.Fn());
  error.clear();
  CHECK(!nodir.Open(&error) && error.find("overlay") != std::string::npos && error.find("missing") != std::string::npos,
        "an overlay directory that does not exist is refused with a clear reason" + (error.empty() ? "" : ": " + error));
}

void TestConcurrentWriters() {
  const size_t size = 1 << 20;
  FakePoint point(Pattern(size, 5));
  TempDir dir("tidemark-view-test");
  Log logs;
  ViewConfig c;
  c.name = "vol";
  c.size = size;
  c.writable = true;
  c.overlay_dir = dir.path();
  c.cache_bytes = 4 * kViewChunk;  // small, so readers also evict and fetch
  View v(c, point.Fn(), logs.Fn());
  std::string error;
  CHECK(v.Open(&error), "a writable view for concurrent clients" + error);
  // Each thread owns every 4th 4 KiB block and writes 1 KiB unaligned pieces
  // into it; the others read everywhere meanwhile.
  std::vector<uint8_t> expect = point.image();
  std::vector<std::thread> ts;
  std::atomic<int> errors{0};
  for (int t = 0; t < 4; t++) {
    for (uint64_t blk = uint64_t(t); blk * 4096 < size; blk += 4) {
      const uint64_t off = blk * 4096 + 700;
      const auto d = Pattern(1024, uint32_t(blk));
      std::copy(d.begin(), d.end(), expect.begin() + off);
    }
    ts.emplace_back([&, t] {
      std::vector<uint8_t> r(9000);
      for (uint64_t blk = uint64_t(t); blk * 4096 < size; blk += 4) {
        const auto d = Pattern(1024, uint32_t(blk));
        if (v.Write(blk * 4096 + 700, 1024, d.data(), false)) errors++;
        if (v.Read((blk * 7919) % (size - 9000), 9000, r.data())) errors++;
      }
    });
  }
  for (auto& t : ts) t.join();
  std::vector<uint8_t> out(size);
  CHECK(errors == 0 && v.Read(0, uint32_t(size), out.data()) == 0 && out == expect,
        "four threads writing unaligned pieces while reading: every write is there, nothing else changed");
}

// ---------------------------------------------------------------- through the NBD front

// A blocking NBD client on one end of a socket (check.h): GO, then simple
// requests and replies.
struct Client : SocketEnd {
  using SocketEnd::SocketEnd;
  // Greeting, GO for `name`, its replies up to the ACK. *flags: transmission flags.
  bool Open(const std::string& name, uint64_t* size, uint16_t* flags, std::string* desc) {
    uint8_t g[18];
    if (!Recv(g, 18) || nbd::Get64(g) != nbd::kNbdMagic) return false;
    std::vector<uint8_t> b(4);
    nbd::Put32(b.data(), nbd::kClientFlagFixedNewstyle | nbd::kClientFlagNoZeroes);
    std::vector<uint8_t> d(4 + name.size() + 2 + 2);
    nbd::Put32(d.data(), uint32_t(name.size()));
    std::memcpy(d.data() + 4, name.data(), name.size());
    nbd::Put16(d.data() + 4 + name.size(), 1);
    nbd::Put16(d.data() + 6 + name.size(), nbd::kInfoDescription);
    std::vector<uint8_t> o(16);
    nbd::Put64(o.data(), nbd::kOptMagic);
    nbd::Put32(o.data() + 8, nbd::kOptGo);
    nbd::Put32(o.data() + 12, uint32_t(d.size()));
    o.insert(o.end(), d.begin(), d.end());
    b.insert(b.end(), o.begin(), o.end());
    if (!Send(b)) return false;
    for (;;) {
      uint8_t h[20];
      if (!Recv(h, 20)) return false;
      const uint32_t type = nbd::Get32(h + 12);
      std::vector<uint8_t> data(nbd::Get32(h + 16));
      if (!data.empty() && !Recv(data.data(), data.size())) return false;
      if (type == nbd::kRepAck) return true;
      if (type != nbd::kRepInfo) return false;
      const uint16_t info = nbd::Get16(data.data());
      if (info == nbd::kInfoExport) {
        *size = nbd::Get64(data.data() + 2);
        *flags = nbd::Get16(data.data() + 10);
      } else if (info == nbd::kInfoDescription) {
        desc->assign(data.begin() + 2, data.end());
      }
    }
  }
  bool Request(uint16_t type, uint64_t cookie, uint64_t offset, uint32_t length, const std::vector<uint8_t>& payload = {}) {
    std::vector<uint8_t> b(nbd::kRequestSize);
    nbd::Put32(b.data(), nbd::kRequestMagic);
    nbd::Put16(b.data() + 6, type);
    nbd::Put64(b.data() + 8, cookie);
    nbd::Put64(b.data() + 16, offset);
    nbd::Put32(b.data() + 24, length);
    b.insert(b.end(), payload.begin(), payload.end());
    return Send(b);
  }
  // A simple reply; *error, and `length` bytes of data when it succeeded.
  bool Reply(uint64_t cookie, uint32_t* error, std::vector<uint8_t>* data, uint32_t length) {
    uint8_t h[nbd::kSimpleReplySize];
    if (!Recv(h, sizeof h) || nbd::Get32(h) != nbd::kSimpleReplyMagic || nbd::Get64(h + 8) != cookie) return false;
    *error = nbd::Get32(h + 4);
    if (*error == 0 && data) {
      data->resize(length);
      return Recv(data->data(), length);
    }
    return true;
  }
  uint32_t Do(uint16_t type, uint64_t offset, uint32_t length, std::vector<uint8_t>* out = nullptr,
              const std::vector<uint8_t>& payload = {}) {
    static uint64_t cookie = 100;
    const uint64_t k = ++cookie;
    uint32_t e = 0xffffffff;
    if (!Request(type, k, offset, length, payload) || !Reply(k, &e, type == nbd::kCmdRead ? out : nullptr, length))
      return 0xffffffff;
    return e;
  }
};

using Served = ServedOver<NbdServer, Client>;

void TestNbdReadOnly() {
  using namespace nbd;
  const size_t size = 3 * 1024 * 1024;
  FakePoint point(Pattern(size, 6));
  Log logs;
  ViewConfig c;
  c.name = "vol";
  c.size = size;
  c.description = "tidemark TimeView of vol at seq 42, read-only";
  auto view = std::make_shared<View>(c, point.Fn(), logs.Fn());
  std::string error;
  CHECK(view->Open(&error), "a read-only view for the NBD front" + error);
  NbdServer server(std::vector<std::shared_ptr<Export>>{view}, logs.Fn());
  Served sv(server);
  Client& cl = *sv.client;
  uint64_t sz = 0;
  uint16_t flags = 0;
  std::string desc;
  CHECK(cl.Open("vol", &sz, &flags, &desc), "NBD handshake: GO vol");
  CHECK(sz == size && (flags & kTxReadOnly), "the export has the point's size and the read-only flag");
  CHECK(desc == c.description, "NBD_INFO_DESCRIPTION says what the view is: " + desc);

  std::vector<uint8_t> out;
  CHECK(cl.Do(kCmdRead, 65000, 200000, &out) == 0 && Same(out.data(), point.image().data() + 65000, 200000),
        "NBD READ across chunks returns the point's bytes");
  CHECK(cl.Do(kCmdWrite, 0, 4096, nullptr, Pattern(4096, 9)) == kEperm, "NBD WRITE gets EPERM");
  CHECK(cl.Do(kCmdTrim, 0, 4096) == kEperm && cl.Do(kCmdWriteZeroes, 0, 4096) == kEperm,
        "NBD TRIM and WRITE_ZEROES get EPERM");
  CHECK(cl.Do(kCmdFlush, 0, 0) == 0, "NBD FLUSH succeeds");
  CHECK(cl.Do(kCmdRead, 0, 4096, &out) == 0 && Same(out.data(), point.image().data(), 4096),
        "the connection still serves after the refusals");

  // The appliance fails: that request gets EIO, the connection keeps serving.
  point.FailAt(2 * 1024 * 1024 + 10);
  CHECK(cl.Do(kCmdRead, 2 * 1024 * 1024, 4096, &out) == kEio, "a read whose fetch fails gets EIO");
  CHECK(logs.Has("failed: appliance unavailable (test); the client gets EIO"), "the failure is logged with its reason");
  CHECK(cl.Do(kCmdRead, 1024 * 1024, 8192, &out) == 0 && Same(out.data(), point.image().data() + 1024 * 1024, 8192),
        "the same connection keeps serving other reads");
  point.FailAt(UINT64_MAX);
  CHECK(cl.Do(kCmdRead, 2 * 1024 * 1024, 4096, &out) == 0 && Same(out.data(), point.image().data() + 2 * 1024 * 1024, 4096),
        "once the appliance answers again, the failed range reads correctly (no error was cached)");
  CHECK(cl.Do(kCmdRead, size - 512, 1024, &out) == kEinval, "a read past the end is refused by the front (EINVAL)");
  const ViewStats s = view->Stats();
  CHECK(s.fetch_errors == 1 && s.io_errors == 1 && s.rejected >= 4 && s.connections == 1,
        "counted: one fetch error, the rejected requests, one connection");
}

void TestNbdWritable() {
  using namespace nbd;
  const size_t size = 1024 * 1024;
  FakePoint point(Pattern(size, 7));
  TempDir dir("tidemark-view-test");
  Log logs;
  ViewConfig c;
  c.name = "vol";
  c.size = size;
  c.writable = true;
  c.overlay_dir = dir.path();
  auto view = std::make_shared<View>(c, point.Fn(), logs.Fn());
  std::string error;
  CHECK(view->Open(&error), "a writable view for the NBD front" + error);
  NbdServer server(std::vector<std::shared_ptr<Export>>{view}, logs.Fn());
  Served sv(server);
  Client& cl = *sv.client;
  uint64_t sz = 0;
  uint16_t flags = 0;
  std::string desc;
  CHECK(cl.Open("", &sz, &flags, &desc) && !(flags & kTxReadOnly), "the default export is the view, not read-only");
  std::vector<uint8_t> shadow = point.image();
  const auto d = Pattern(5000, 8);
  std::copy(d.begin(), d.end(), shadow.begin() + 3333);
  CHECK(cl.Do(kCmdWrite, 3333, 5000, nullptr, d) == 0, "NBD WRITE, unaligned");
  std::fill(shadow.begin() + 100000, shadow.begin() + 100000 + 30000, 0);
  CHECK(cl.Do(kCmdWriteZeroes, 100000, 30000) == 0, "NBD WRITE_ZEROES, unaligned");
  std::fill(shadow.begin() + 500000, shadow.begin() + 500000 + 65536, 0);
  CHECK(cl.Do(kCmdTrim, 500000, 65536) == 0, "NBD TRIM");
  CHECK(cl.Do(kCmdFlush, 0, 0) == 0, "NBD FLUSH");
  std::vector<uint8_t> out;
  CHECK(cl.Do(kCmdRead, 0, uint32_t(size), &out) == 0 && out == shadow, "NBD READ of the whole view shows the merged bytes");
  std::vector<uint8_t> orig = Pattern(size, 7);
  CHECK(point.image() == orig, "the point's bytes are untouched");
}

// ---------------------------------------------------------------- parallel misses and read-ahead

// A point whose fetches wait at a gate until the test opens it, so a test can
// see which fetches are in flight at the same time.
class GatedPoint {
 public:
  explicit GatedPoint(std::vector<uint8_t> image) : image_(std::move(image)) {}
  FetchFn Fn() {
    return [this](uint64_t offset, uint32_t length, uint8_t* out, std::string* error) {
      std::unique_lock<std::mutex> lk(mu_);
      calls_++;
      inside_++;
      cv_.notify_all();
      cv_.wait(lk, [&] { return open_; });
      inside_--;
      if (fail_next_ > 0) {
        fail_next_--;
        *error = "appliance unavailable (test)";
        return false;
      }
      if (length > kViewMaxFetch || offset + length > image_.size()) {
        bad_ = true;
        *error = "fetch out of range";
        return false;
      }
      std::memcpy(out, image_.data() + offset, length);
      return true;
    };
  }
  // Waits (up to 20 s) until n fetches wait at the closed gate together.
  bool WaitInside(size_t n) {
    std::unique_lock<std::mutex> lk(mu_);
    return cv_.wait_for(lk, std::chrono::seconds(20), [&] { return inside_ >= n; });
  }
  void Open() {
    std::lock_guard<std::mutex> lk(mu_);
    open_ = true;
    cv_.notify_all();
  }
  void Shut() {
    std::lock_guard<std::mutex> lk(mu_);
    open_ = false;
  }
  void FailNext(int n) {
    std::lock_guard<std::mutex> lk(mu_);
    fail_next_ = n;
  }
  size_t calls() {
    std::lock_guard<std::mutex> lk(mu_);
    return calls_;
  }
  bool bad() {
    std::lock_guard<std::mutex> lk(mu_);
    return bad_;
  }
  const std::vector<uint8_t>& image() const { return image_; }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<uint8_t> image_;
  size_t calls_ = 0, inside_ = 0;
  int fail_next_ = 0;
  bool open_ = false, bad_ = false;
};

// Polls a condition (a view's counters) until it holds, up to 20 s.
template <typename F>
bool Eventually(F cond) {
  for (int i = 0; i < 20000; i++) {
    if (cond()) return true;
    usleep(1000);
  }
  return cond();
}

void TestParallelMisses() {
  const size_t size = 4 << 20;
  GatedPoint point(Pattern(size, 31));
  Log logs;
  ViewConfig c;
  c.name = "vol";
  c.size = size;
  View v(c, point.Fn(), logs.Fn());
  std::string error;
  CHECK(v.Open(&error), "a read-only view over a point that answers only when told" + error);

  // Four readers, four different chunks: four fetches at the appliance at once.
  std::atomic<int> wrong{0};
  std::vector<std::thread> ts;
  for (int i = 0; i < 4; i++) {
    ts.emplace_back([&, i] {
      std::vector<uint8_t> out(4096);
      const uint64_t off = uint64_t(i) * 3 * kViewChunk + 512 * uint64_t(i);
      if (v.Read(off, 4096, out.data()) != 0 || !Same(out.data(), point.image().data() + off, 4096)) wrong++;
    });
  }
  CHECK(point.WaitInside(4), "four readers missing four chunks: four fetches in flight together");
  point.Open();
  for (auto& t : ts) t.join();
  ts.clear();
  ViewStats s = v.Stats();
  CHECK(wrong == 0 && point.calls() == 4 && s.fetches_in_flight_max == 4,
        "each got the point's bytes; the view counted four in flight at most");

  // Six readers of the same two chunks: one fetch, five wait for it.
  point.Shut();
  const uint64_t base = 20 * kViewChunk;
  for (int i = 0; i < 6; i++) {
    ts.emplace_back([&, i] {
      std::vector<uint8_t> out(70000);
      const uint64_t off = base + 1000 * uint64_t(i);
      if (v.Read(off, 70000, out.data()) != 0 || !Same(out.data(), point.image().data() + off, 70000)) wrong++;
    });
  }
  CHECK(point.WaitInside(1) && Eventually([&] { return v.Stats().fetch_waits - s.fetch_waits >= 10; }),
        "six readers missing the same two chunks: one fetch in flight, the other five wait on it");
  point.Open();
  for (auto& t : ts) t.join();
  ts.clear();
  CHECK(wrong == 0 && point.calls() == 5, "all six got the point's bytes from that one fetch (5 fetches in all)");

  // The shared fetch fails: its reader gets EIO, the waiters ask again themselves.
  point.Shut();
  point.FailNext(1);
  const uint64_t off = 40 * kViewChunk + 100;
  std::atomic<int> eio{0}, good{0};
  const uint64_t waits = v.Stats().fetch_waits;
  for (int i = 0; i < 3; i++) {
    ts.emplace_back([&] {
      std::vector<uint8_t> out(8192);
      const uint32_t e = v.Read(off, 8192, out.data());
      if (e == nbd::kEio) eio++;
      else if (e == 0 && Same(out.data(), point.image().data() + off, 8192)) good++;
    });
  }
  CHECK(point.WaitInside(1) && Eventually([&] { return v.Stats().fetch_waits - waits >= 2; }),
        "three readers of one chunk: one fetch, two waiting");
  point.Open();
  for (auto& t : ts) t.join();
  ts.clear();
  CHECK(eio == 1 && good == 2 && point.calls() == 8,
        "the failed fetch's reader gets EIO; the two waiters fetch again and get the bytes (no error is shared or cached)");
  CHECK(!point.bad(), "no fetch past the end or over the limit");
}

void TestParallelMissesOverNbd() {
  using namespace nbd;
  const size_t size = 2 << 20;
  GatedPoint point(Pattern(size, 32));
  Log logs;
  ViewConfig c;
  c.name = "vol";
  c.size = size;
  auto view = std::make_shared<View>(c, point.Fn(), logs.Fn());
  std::string error;
  CHECK(view->Open(&error), "a view for two NBD connections" + error);
  NbdServer server(std::vector<std::shared_ptr<Export>>{view}, logs.Fn());
  Served a(server), b(server);
  uint64_t sz = 0;
  uint16_t flags = 0;
  std::string desc;
  CHECK(a.client->Open("vol", &sz, &flags, &desc) && b.client->Open("vol", &sz, &flags, &desc), "two connections to the view");
  // Both ask for bytes of chunk 3 while its fetch is held: one fetch serves both.
  const uint64_t off = 3 * kViewChunk + 4096;
  CHECK(a.client->Request(kCmdRead, 1, off, 4096) && b.client->Request(kCmdRead, 2, off + 8192, 4096),
        "each connection sends a read of the same chunk");
  CHECK(point.WaitInside(1) && Eventually([&] { return view->Stats().fetch_waits >= 1; }),
        "one fetch in flight, the other connection waiting on it");
  point.Open();
  uint32_t ea = 1, eb = 1;
  std::vector<uint8_t> da, db;
  CHECK(a.client->Reply(1, &ea, &da, 4096) && b.client->Reply(2, &eb, &db, 4096) && ea == 0 && eb == 0 &&
            Same(da.data(), point.image().data() + off, 4096) && Same(db.data(), point.image().data() + off + 8192, 4096),
        "both connections get the point's bytes");
  CHECK(point.calls() == 1, "from one fetch");
}

void TestReadAhead() {
  const size_t size = 32 << 20;
  FakePoint point(Pattern(size, 33));
  Log logs;
  ViewConfig c;
  c.name = "vol";
  c.size = size;
  c.cache_bytes = 64 << 20;
  c.read_ahead_bytes = 4 << 20;
  View v(c, point.Fn(), logs.Fn());
  std::string error;
  CHECK(v.Open(&error), "a view with a 4 MiB read-ahead" + error);
  const uint32_t step = 256 * 1024;
  std::vector<uint8_t> out(step);
  bool right = true;
  for (uint64_t off = 0; off < (12u << 20); off += step)
    right &= v.Read(off, step, out.data()) == 0 && Same(out.data(), point.image().data() + off, step);
  CHECK(right, "12 MiB read sequentially in 256 KiB requests: the point's bytes");
  // The window is 4 MiB past the last read (ending at 12 MiB); read-ahead asks
  // in whole 2 MiB runs, so at least up to 14 MiB is asked for.
  CHECK(Eventually([&] { return v.Stats().fetch_bytes >= (14u << 20); }),
        "read-ahead fetched at least 2 MiB past the last read");
  ViewStats s = v.Stats();
  bool once = true;
  for (size_t i = 0; i < point.calls(); i++)
    for (size_t j = i + 1; j < point.calls(); j++) {
      const auto a = point.call(i), b = point.call(j);
      once &= a.first + a.second <= b.first || b.first + b.second <= a.first;
    }
  CHECK(once && s.fetch_bytes <= (16u << 20) && s.read_ahead_bytes >= (2u << 20) && s.read_ahead_fetches > 0,
        "nothing was fetched twice or past the window (" + std::to_string(s.fetch_bytes) + " bytes fetched, " +
            std::to_string(s.read_ahead_bytes) + " ahead)");
  for (uint64_t off = 12u << 20; off < (14u << 20); off += step)
    right &= v.Read(off, step, out.data()) == 0 && Same(out.data(), point.image().data() + off, step);
  CHECK(right && v.Stats().chunk_misses == s.chunk_misses, "the stream's next 2 MiB come from the cache: no miss");
  // To the end of the volume: read-ahead stops at the end.
  for (uint64_t off = 16u << 20; off < size; off += step)
    right &= v.Read(off, step, out.data()) == 0 && Same(out.data(), point.image().data() + off, step);
  CHECK(right && Eventually([&] { return v.Stats().fetch_bytes >= size; }) && v.Stats().fetch_bytes == size && !point.bad(),
        "to the end of the volume: each byte fetched once, nothing asked past the end");

  // Two streams interleaved (two connections copying two halves): both read ahead.
  FakePoint p2(Pattern(size, 34));
  View w(c, p2.Fn(), logs.Fn());
  CHECK(w.Open(&error), "a second view" + error);
  for (uint64_t k = 0; k < 8; k++) {
    right &= w.Read(k * step, step, out.data()) == 0 && Same(out.data(), p2.image().data() + k * step, step);
    const uint64_t o = (16u << 20) + k * step;
    right &= w.Read(o, step, out.data()) == 0 && Same(out.data(), p2.image().data() + o, step);
  }
  // Each stream ends 2 MiB in; at least its next 2 MiB are asked for.
  auto covered = [&](uint64_t from, uint64_t to) {
    std::vector<std::pair<uint64_t, uint64_t>> calls;
    for (size_t i = 0; i < p2.calls(); i++) calls.emplace_back(p2.call(i).first, p2.call(i).first + p2.call(i).second);
    std::sort(calls.begin(), calls.end());
    uint64_t at = from;
    for (const auto& c : calls)
      if (c.first <= at && c.second > at) at = c.second;
    return at >= to;
  };
  CHECK(right && Eventually([&] { return covered(2u << 20, 4u << 20) && covered(18u << 20, 20u << 20); }) &&
            w.Stats().read_ahead_fetches >= 2,
        "two interleaved sequential streams are each read ahead");
  w.Close();

  // Random reads start no read-ahead; neither does a view whose cache could not hold it.
  FakePoint p3(Pattern(size, 35));
  View r(c, p3.Fn(), logs.Fn());
  CHECK(r.Open(&error), "a third view" + error);
  uint64_t x = 12345;
  for (int i = 0; i < 300; i++) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    const uint64_t o = (x >> 20) % (size / 4096) * 4096;
    right &= r.Read(o, 4096, out.data()) == 0 && Same(out.data(), p3.image().data() + o, 4096);
  }
  CHECK(right && r.Stats().read_ahead_fetches == 0, "300 random 4 KiB reads: no read-ahead");
  ViewConfig small = c;
  small.cache_bytes = 4 * kViewChunk;
  FakePoint p4(Pattern(size, 36));
  View u(small, p4.Fn(), logs.Fn());
  CHECK(u.Open(&error), "a view with a four-chunk cache" + error);
  for (uint64_t off = 0; off < (2u << 20); off += 4096) right &= u.Read(off, 4096, out.data()) == 0;
  CHECK(right && u.Stats().read_ahead_fetches == 0 && p4.calls() == (2u << 20) / kViewChunk,
        "a four-chunk cache has no room for read-ahead: each chunk fetched once, by its reader");
  ViewConfig off = c;
  off.read_ahead_bytes = 0;
  FakePoint p5(Pattern(size, 37));
  View n(off, p5.Fn(), logs.Fn());
  CHECK(n.Open(&error), "a view without read-ahead" + error);
  for (uint64_t o = 0; o < (4u << 20); o += step) right &= n.Read(o, step, out.data()) == 0;
  CHECK(right && n.Stats().read_ahead_fetches == 0 && n.Stats().fetch_bytes == (4u << 20), "read_ahead_bytes 0: none");
}

void TestReadAheadFailure() {
  // Read-ahead meets a failing appliance: nothing is reported for it; the
  // reader that reaches those bytes fetches them again and gets the error
  // (or, once the appliance answers, the bytes).
  const size_t size = 8 << 20;
  FakePoint point(Pattern(size, 38));
  Log logs;
  ViewConfig c;
  c.name = "vol";
  c.size = size;
  c.read_ahead_bytes = 2 << 20;
  View v(c, point.Fn(), logs.Fn());
  std::string error;
  CHECK(v.Open(&error), "a view with read-ahead" + error);
  const uint64_t bad = 7 << 19;  // 3.5 MiB: inside what read-ahead asks for first
  point.FailAt(bad);
  std::vector<uint8_t> out(1 << 20);
  bool right = true;
  for (uint64_t off = 0; off < (3u << 20); off += 1 << 20) right &= v.Read(off, 1 << 20, out.data()) == 0;
  CHECK(right, "three sequential reads of 1 MiB (read-ahead then asks for the next 2 MiB)");
  CHECK(Eventually([&] { return v.Stats().read_ahead_fetches >= 1 && point.calls() >= 4; }),
        "read-ahead asked for the bytes past the reads");
  CHECK(v.Stats().fetch_errors == 0 && v.Stats().io_errors == 0 && !logs.Has("the client gets EIO"),
        "a read-ahead that fails is not reported as a client's error");
  const uint32_t e = v.Read(bad, 4096, out.data());
  CHECK(e == nbd::kEio && v.Stats().io_errors == 1, "the reader that needs the failed bytes asks again and gets EIO");
  point.FailAt(UINT64_MAX);
  CHECK(v.Read(bad, 1 << 20, out.data()) == 0 && Same(out.data(), point.image().data() + bad, 1 << 20),
        "and the bytes once the appliance answers");
}


// ---------------------------------------------------------------- durable overlays (views the appliance keeps)

ViewConfig DurableConfig(const TempDir& dir, uint64_t size) {
  ViewConfig c;
  c.name = "keep";
  c.size = size;
  c.writable = true;
  c.durable = true;
  c.overlay_path = dir / "keep.overlay";
  c.overlay_map_path = dir / "keep.map";
  return c;
}

// Runs `body` in a child process that dies by SIGKILL (a kill -9 of the
// appliance: no destructor, no close, no sync runs; `body` raises it itself,
// before its locals go). True if it died so.
template <typename F>
bool InKilledChild(F body) {
  std::fflush(stdout);
  const pid_t pid = fork();
  if (pid == 0) {
    body();
    raise(SIGKILL);
    _exit(3);  // not reached
  }
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) != pid) return false;
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
}

void TestDurableOverlayCrash() {
  const size_t size = 4 * 1024 * 1024;
  FakePoint point(Pattern(size, 21));
  const std::vector<uint8_t> original = point.image();
  TempDir dir("tidemark-view-durable");
  Log logs;
  const ViewConfig c = DurableConfig(dir, size);
  // What the child does, replayed here on a shadow image: flushed writes,
  // zeroes and trims, a FUA write, then writes nobody flushed.
  std::vector<uint8_t> flushed = original;
  const auto a = Pattern(70000, 22), b = Pattern(3000, 23), f = Pattern(8192, 24), late = Pattern(65536, 25);
  std::copy(a.begin(), a.end(), flushed.begin() + 4096);
  std::copy(b.begin(), b.end(), flushed.begin() + 1000000 + 100);  // unaligned
  std::fill(flushed.begin() + 2000000, flushed.begin() + 2000000 + 300000, 0);
  std::fill(flushed.begin() + 3 * 1024 * 1024, flushed.end(), 0);
  std::copy(f.begin(), f.end(), flushed.begin() + 2 * 1024 * 1024 + 512);  // the FUA write
  const bool killed = InKilledChild([&] {
    View v(c, point.Fn(), logs.Fn());
    std::string error;
    if (!v.Open(&error)) _exit(4);
    v.Write(4096, uint32_t(a.size()), a.data(), false);
    v.Write(1000000 + 100, uint32_t(b.size()), b.data(), false);
    v.Zero(2000000, 300000, false, false);
    v.Trim(3 * 1024 * 1024, 1024 * 1024, false);
    if (v.Flush() != 0) _exit(5);
    v.Write(2 * 1024 * 1024 + 512, uint32_t(f.size()), f.data(), true);
    v.Write(1024 * 1024 + 4096, uint32_t(late.size()), late.data(), false);  // never flushed
    raise(SIGKILL);  // here, before the view's destructor could close (and sync) it
  });
  CHECK(killed, "a child wrote to a durable view, flushed, wrote with FUA and more, and was killed with SIGKILL");
  CHECK(std::filesystem::exists(c.overlay_path) && std::filesystem::exists(c.overlay_map_path),
        "the overlay's data and map files are named and still there");

  View v(c, point.Fn(), logs.Fn());
  std::string error;
  CHECK(v.Open(&error), "the durable view reopens after the kill" + Said(error));
  std::vector<uint8_t> out(size);
  CHECK(v.Read(0, uint32_t(size), out.data()) == 0, "it reads whole");
  const size_t lo = 1024 * 1024 + 4096, hi = lo + late.size();
  bool flushed_ok = true, late_whole = true;
  for (size_t i = 0; i < size; i++) {
    if (i >= lo && i < hi) continue;
    if (out[i] != flushed[i]) flushed_ok = false;
  }
  // The write after the last FLUSH may or may not be there; it is never torn
  // (here: its bits were never synced, so the point's bytes show).
  const bool late_old = Same(out.data() + lo, original.data() + lo, late.size());
  const bool late_new = Same(out.data() + lo, late.data(), late.size());
  late_whole = late_old || late_new;
  CHECK(flushed_ok, "everything written before the FLUSH, and the FUA write, reads back exactly");
  CHECK(late_whole, std::string("the write nobody flushed is wholly absent or wholly there, never torn (") +
                        (late_old ? "absent" : "there") + ")");
  CHECK(point.image() == original, "the point's bytes never changed");

  // A second view over the same files while this one is open would keep a
  // bitmap of its own: refused.
  View twin(c, point.Fn(), logs.Fn());
  error.clear();
  CHECK(!twin.Open(&error) && error.find("in use") != std::string::npos,
        "a second view of the same overlay is refused while the first is open" + Said(error));

  // Written, not flushed, then a clean close: kept too.
  const auto tail = Pattern(4096, 26);
  CHECK(v.Write(size - 4096, 4096, tail.data(), false) == 0, "a write, then a clean close without FLUSH");
  v.Close();
  View again(c, point.Fn(), logs.Fn());
  error.clear();
  CHECK(again.Open(&error), "reopened after the clean close" + Said(error));
  CHECK(again.Read(uint32_t(size - 4096), 4096, out.data()) == 0 && Same(out.data(), tail.data(), 4096),
        "a clean close keeps what was written since the last FLUSH");
  CHECK(again.Read(4096, uint32_t(a.size()), out.data()) == 0 && Same(out.data(), a.data(), a.size()),
        "and what the killed child flushed");
  again.Close();
}

void TestDurableOverlayRefusals() {
  const size_t size = 1024 * 1024;
  FakePoint point(Pattern(size, 31));
  TempDir dir("tidemark-view-durable");
  Log logs;
  ViewConfig c = DurableConfig(dir, size);
  {
    View v(c, point.Fn(), logs.Fn());
    std::string error;
    CHECK(v.Open(&error), "a new durable view creates its files" + Said(error));
    const auto d = Pattern(512, 32);
    CHECK(v.Write(0, 512, d.data(), false) == 0 && v.Flush() == 0, "a write and a FLUSH");
  }
  ViewConfig bigger = c;
  bigger.size = 2 * size;
  View wrong(bigger, point.Fn(), logs.Fn());
  std::string error;
  CHECK(!wrong.Open(&error) && error.find(std::to_string(size)) != std::string::npos,
        "an overlay reopened for a volume of another size is refused" + Said(error));
  ViewConfig no_paths = c;
  no_paths.overlay_map_path.clear();
  View half(no_paths, point.Fn(), logs.Fn());
  error.clear();
  CHECK(!half.Open(&error) && error.find("map path") != std::string::npos, "a durable view without a map path is refused" + Said(error));
  std::filesystem::remove(c.overlay_path);
  View lost(c, point.Fn(), logs.Fn());
  error.clear();
  CHECK(!lost.Open(&error) && error.find("missing") != std::string::npos && error.find("lost") != std::string::npos,
        "a map whose data file is gone is refused, saying the data is lost" + Said(error));
  std::filesystem::remove(c.overlay_map_path);
  {
    // A data file without a map is a creation that never finished: started afresh.
    FILE* stale = std::fopen(c.overlay_path.c_str(), "w");
    std::fputs("left over", stale);
    std::fclose(stale);
  }
  View fresh(c, point.Fn(), logs.Fn());
  error.clear();
  std::vector<uint8_t> out(size);
  CHECK(fresh.Open(&error) && fresh.Read(0, uint32_t(size), out.data()) == 0 && out == point.image() &&
            fresh.Stats().overlay_bytes == 0,
        "a data file without its map starts afresh: the view shows the point" + Said(error));
}

void TestDurableOverlayLarge() {
  // 64 GiB: the files are sparse and opening reads only the map pages that
  // were written, so memory and time follow what the view holds.
  const uint64_t size = uint64_t(64) << 30;
  TempDir dir("tidemark-view-durable");
  Log logs;
  const ViewConfig c = DurableConfig(dir, size);
  auto zero_fetch = [](uint64_t, uint32_t length, uint8_t* out, std::string*) {
    std::memset(out, 0, length);
    return true;
  };
  const auto d = Pattern(4096, 41);
  {
    View v(c, zero_fetch, logs.Fn());
    std::string error;
    CHECK(v.Open(&error), "a 64 GiB durable view opens" + Said(error));
    CHECK(v.Write(size - 4096, 4096, d.data(), false) == 0 && v.Write(12345 * 512, 4096, d.data(), false) == 0 &&
              v.Flush() == 0,
          "writes at both ends, flushed");
  }
  struct stat st {};
  stat(c.overlay_map_path.c_str(), &st);
  CHECK(uint64_t(st.st_blocks) * 512 < 1024 * 1024, "the map takes " + std::to_string(st.st_blocks * 512) + " bytes on disk (sparse)");
  View v(c, zero_fetch, logs.Fn());
  std::string error;
  CHECK(v.Open(&error) && v.Stats().overlay_bytes == 8192, "reopened, it holds exactly the 16 written sectors" + Said(error));
  std::vector<uint8_t> out(4096);
  CHECK(v.Read(size - 4096, 4096, out.data()) == 0 && out == d, "the last block reads back");
}

void TestDurableOverNbd() {
  using namespace nbd;
  const size_t size = 1024 * 1024;
  FakePoint point(Pattern(size, 51));
  TempDir dir("tidemark-view-durable");
  Log logs;
  const ViewConfig c = DurableConfig(dir, size);
  std::vector<uint8_t> shadow = point.image();
  {
    auto view = std::make_shared<View>(c, point.Fn(), logs.Fn());
    std::string error;
    CHECK(view->Open(&error), "a durable view for the NBD front" + Said(error));
    NbdServer server(std::vector<std::shared_ptr<Export>>{view}, logs.Fn());
    Served sv(server);
    Client& cl = *sv.client;
    uint64_t sz = 0;
    uint16_t flags = 0;
    std::string desc;
    CHECK(cl.Open("keep", &sz, &flags, &desc) && !(flags & kTxReadOnly), "NBD GO keep: writable");
    const auto d = Pattern(9000, 52);
    std::copy(d.begin(), d.end(), shadow.begin() + 777);
    CHECK(cl.Do(kCmdWrite, 777, 9000, nullptr, d) == 0 && cl.Do(kCmdFlush, 0, 0) == 0, "NBD WRITE, then FLUSH");
    CHECK(view->Stats().flushes == 1, "the FLUSH reached the view");
  }
  View v(c, point.Fn(), logs.Fn());
  std::string error;
  std::vector<uint8_t> out(size);
  CHECK(v.Open(&error) && v.Read(0, uint32_t(size), out.data()) == 0 && out == shadow,
        "reopened, the view holds what the NBD client wrote" + Said(error));
}
}  // namespace

int main() {
  TestReadsAndCache();
  TestCacheBudget();
  TestOverlay();
  TestConcurrentWriters();
  TestNbdReadOnly();
  TestNbdWritable();
  TestParallelMisses();
  TestParallelMissesOverNbd();
  TestReadAhead();
  TestReadAheadFailure();
  TestDurableOverlayCrash();
  TestDurableOverlayRefusals();
  TestDurableOverlayLarge();
  TestDurableOverNbd();
  return Finish();
}
