// The harness shared by the native test programs (tap_test.cc, view_test.cc):
// checks, the summary line .ci/run reads, temporary directories, test data,
// captured log lines, and the socket end of a blocking NBD client.
//
// No framework: each CHECK prints "ok - what" or "not ok - what (file:line)";
// Finish() prints "N passed, N failed" and is main's return value, non-zero if
// anything failed or if nothing was checked at all (a program whose tests were
// compiled out must not look green). Header-only, one copy per program.
#ifndef TIDEMARK_NATIVE_TEST_CHECK_H_
#define TIDEMARK_NATIVE_TEST_CHECK_H_

#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "volume.h"  // LogFn

namespace tidemark::test {

inline int g_passed = 0, g_failed = 0;

inline void Check(bool ok, const std::string& what, const char* file, int line) {
  if (ok) {
    g_passed++;
    std::printf("ok - %s\n", what.c_str());
  } else {
    g_failed++;
    std::printf("not ok - %s (%s:%d)\n", what.c_str(), file, line);
  }
  std::fflush(stdout);
}

// The summary line and the exit status.
inline int Finish() {
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  std::fflush(stdout);
  return g_failed == 0 && g_passed > 0 ? 0 : 1;
}

// " (the error)" when there is one, for check messages.
inline std::string Said(const std::string& error) { return error.empty() ? "" : " (" + error + ")"; }

// A directory of its own under $TMPDIR, removed with everything in it.
class TempDir {
 public:
  explicit TempDir(const char* prefix = "tidemark-test") {
    const char* base = std::getenv("TMPDIR");
    std::string t = std::string(base && *base ? base : "/tmp") + "/" + prefix + "-XXXXXX";
    if (!mkdtemp(&t[0])) {
      std::perror("mkdtemp");
      std::exit(2);
    }
    path_ = t;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  size_t Entries() const {
    size_t n = 0;
    for (auto it = std::filesystem::directory_iterator(path_); it != std::filesystem::directory_iterator(); ++it) n++;
    return n;
  }

 private:
  std::string path_;
};

// Deterministic bytes that differ from zeroes and from each other.
inline std::vector<uint8_t> Pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& b : v) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    b = uint8_t(x);
  }
  return v;
}

inline void WriteFile(const std::string& path, const std::vector<uint8_t>& bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size() || std::fclose(f) != 0) {
    std::perror(path.c_str());
    std::exit(2);
  }
}

inline std::vector<uint8_t> ReadFile(const std::string& path) {
  std::vector<uint8_t> out;
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return out;
  uint8_t buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.insert(out.end(), buf, buf + n);
  std::fclose(f);
  return out;
}

inline bool Same(const uint8_t* a, const uint8_t* b, size_t n) { return std::memcmp(a, b, n) == 0; }
inline bool AllZero(const uint8_t* p, size_t n) { return std::all_of(p, p + n, [](uint8_t b) { return b == 0; }); }

// Log lines from the core, kept so tests can check what a user would read.
class Log {
 public:
  LogFn Fn() {
    return [this](int, const std::string& m) {
      std::lock_guard<std::mutex> lk(mu_);
      lines_.push_back(m);
    };
  }
  bool Has(const std::string& s) {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto& l : lines_)
      if (l.find(s) != std::string::npos) return true;
    return false;
  }

 private:
  std::mutex mu_;
  std::vector<std::string> lines_;
};

// One end of a socket, blocking, with a timeout so that a server that stops
// answering fails the test instead of hanging it. Each program's NBD client
// builds its conversation on this.
struct SocketEnd {
  int fd = -1;
  explicit SocketEnd(int f) : fd(f) {
    timeval tv{10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }
  ~SocketEnd() {
    if (fd >= 0) ::close(fd);
  }
  SocketEnd(const SocketEnd&) = delete;
  SocketEnd& operator=(const SocketEnd&) = delete;
  bool Send(const std::vector<uint8_t>& b) {
    for (size_t off = 0; off < b.size();) {
      const ssize_t n = send(fd, b.data() + off, b.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += size_t(n);
    }
    return true;
  }
  bool Recv(void* dst, size_t n) {
    auto* p = static_cast<uint8_t*>(dst);
    for (size_t off = 0; off < n;) {
      const ssize_t r = recv(fd, p + off, n - off, 0);
      if (r <= 0) return false;
      off += size_t(r);
    }
    return true;
  }
  bool AtEof() {
    uint8_t b;
    return recv(fd, &b, 1, 0) == 0;
  }
};

// A server's ServeConnection on a thread over a socketpair, a ClientT on the
// other end; the server end is closed when the connection ends, so the client
// sees end-of-file.
template <typename Server, typename ClientT>
struct ServedOver {
  std::thread thread;
  std::atomic<bool> done{false};
  std::unique_ptr<ClientT> client;
  explicit ServedOver(Server& server) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) std::exit(2);
    client = std::make_unique<ClientT>(sv[0]);
    thread = std::thread([this, &server, s = sv[1]] {
      server.ServeConnection(s);
      ::close(s);
      done = true;
    });
  }
  // Waits (up to 5 s) for the server to end the connection.
  bool WaitDone() {
    for (int i = 0; i < 500 && !done; i++) usleep(10000);
    return done;
  }
  ~ServedOver() {
    shutdown(client->fd, SHUT_RDWR);  // unblocks a server still reading
    thread.join();
  }
};

}  // namespace tidemark::test

// The condition is evaluated before the message, so a message may show what
// the condition left behind (an error string).
#define CHECK(cond, what)                                         \
  do {                                                            \
    const bool check_ok_ = static_cast<bool>(cond);               \
    ::tidemark::test::Check(check_ok_, (what), __FILE__, __LINE__); \
  } while (0)

#endif  // TIDEMARK_NATIVE_TEST_CHECK_H_
