// Native tests of the NBD copier (nbd_copy.h), built and run under
// AddressSanitizer and UBSan: the copier against tidemark's own NBD front
// (NbdServer) over unix sockets, serving in-memory exports, so that the
// threads, the slot buffers, cancellation and every failure path run where a
// sanitizer watches them. End-to-end copies against nbdkit and the appliance
// are in test/restore-fast.test.ts.
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "check.h"
#include "export.h"
#include "mem_export.h"
#include "nbd_copy.h"
#include "nbd_proto.h"
#include "nbd_server.h"

using namespace tidemark;
using namespace tidemark::test;

namespace {

constexpr size_t kMiB = 1024 * 1024;

// Data with holes: 1 MiB of data at 512 KiB, a lone 4 KiB block, the last sector.
std::vector<uint8_t> Patchwork(size_t size) {
  std::vector<uint8_t> v(size, 0);
  auto d = Pattern(kMiB, 3);
  std::copy(d.begin(), d.end(), v.begin() + 512 * 1024);
  std::copy(d.begin(), d.begin() + 4096, v.begin() + 3 * kMiB + 8192);
  std::copy(d.begin(), d.begin() + 512, v.end() - 512);
  return v;
}

struct Servers {
  TempDir dir{"tidemark-copy-test"};
  Log logs;
  std::shared_ptr<MemExport> src, dst, small;
  std::unique_ptr<NbdServer> server;
  std::string sock;

  explicit Servers(std::vector<uint8_t> image) {
    const size_t size = image.size();
    src = std::make_shared<MemExport>("vol@seq=7", std::move(image), true);
    dst = std::make_shared<MemExport>("target", Pattern(size, 11), false);  // junk to be overwritten
    small = std::make_shared<MemExport>("small", std::vector<uint8_t>(size / 2), false);
    server = std::make_unique<NbdServer>(std::vector<std::shared_ptr<Export>>{src, dst, small}, logs.Fn());
    sock = dir / "nbd.sock";
    std::string error;
    if (!server->ListenUnix(sock, &error)) {
      std::fprintf(stderr, "listen: %s\n", error.c_str());
      std::exit(2);
    }
    server->Start();
  }
  ~Servers() { server->Stop(); }

  CopyConfig Config(const std::string& exp) const {
    CopyConfig c;
    c.source.unix_path = sock;
    c.source.export_name = exp;
    c.connections = 3;
    c.requests = 4;
    c.request_bytes = 256 * 1024;
    return c;
  }
};

void TestIntoFile() {
  const auto image = Patchwork(5 * kMiB + 512);
  Servers s(image);
  CopyConfig c = s.Config("vol@seq=7");
  c.target_path = s.dir / "out.img";
  NbdCopy copy;
  CopyResult r;
  CHECK(copy.Run(c, &r), "copy an export into a file" + Said(r.message));
  CHECK(ReadFile(c.target_path) == image, "the file is byte-exact, an odd size included");
  CHECK(r.size == image.size() && r.target_kind == "file", "the result names the size and the kind of target");
  CHECK(r.data_bytes == kMiB + 4096 + 512, "only non-zero 4 KiB granules (and the 512-byte tail) were written: " + std::to_string(r.data_bytes));
  CHECK(r.data_bytes + r.zero_bytes == r.size, "data and zeroes add up to the size");
  struct stat st {};
  stat(c.target_path.c_str(), &st);
  CHECK(uint64_t(st.st_blocks) * 512 <= kMiB + 64 * 1024, "zero blocks are holes: " + std::to_string(st.st_blocks * 512) + " bytes allocated");
  CHECK(copy.done() == image.size() && copy.size() == image.size(), "progress ends at the size");
}

void TestIntoNbd() {
  const auto image = Patchwork(4 * kMiB);
  Servers s(image);
  CopyConfig c = s.Config("vol@seq=7");
  c.target_is_nbd = true;
  c.target_nbd.unix_path = s.sock;
  c.target_nbd.export_name = "target";
  NbdCopy copy;
  CopyResult r;
  CHECK(copy.Run(c, &r), "copy an export into another NBD export" + Said(r.message));
  CHECK(s.dst->bytes() == image, "the target holds the source: data written, the junk under zero runs zeroed");
  CHECK(s.dst->zeroes() > 0, "zero runs went as WRITE_ZEROES");
  CHECK(s.dst->flushes() >= 1, "the target was flushed before the copy returned");

  c.target_nbd.export_name = "small";
  NbdCopy again;
  CHECK(!again.Run(c, &r) && r.error == CopyError::kTarget, "a target smaller than the source is refused");
  CHECK(r.message.find("holds 2097152 bytes, fewer than the 4194304") != std::string::npos, "saying both sizes: " + r.message);
}

void TestFailures() {
  const auto image = Patchwork(4 * kMiB);
  Servers s(image);
  CopyConfig c = s.Config("nosuch");
  c.target_path = s.dir / "out.img";
  CopyResult r;
  {
    NbdCopy copy;
    CHECK(!copy.Run(c, &r) && r.error == CopyError::kRefused, "an unknown export is refused");
    CHECK(r.message.find("refused it (NBD_REP_ERR_UNKNOWN): no export named 'nosuch'") != std::string::npos,
          "with the server's NBD_REP_ERR text: " + r.message);
  }
  {
    c.source.export_name = "vol@seq=7";
    s.src->FailAt(3 * kMiB + 5);
    NbdCopy copy;
    CHECK(!copy.Run(c, &r) && r.error == CopyError::kSource, "a READ that fails fails the copy");
    CHECK(r.message.find("failed a READ of 262144 bytes at 3145728: EIO (Input/output error)") != std::string::npos,
          "naming the request and the error: " + r.message);
    s.src->FailAt(UINT64_MAX);
  }
  {
    CopyConfig n = c;
    n.source.unix_path = s.dir / "none.sock";
    NbdCopy copy;
    CHECK(!copy.Run(n, &r) && r.error == CopyError::kConnect, "no server: a connect error");
    CHECK(r.message.find("No such file or directory (ENOENT)") != std::string::npos, r.message);
  }
  {
    CopyConfig n = c;
    n.target_path = s.dir / "missing/out.img";
    NbdCopy copy;
    CHECK(!copy.Run(n, &r) && r.error == CopyError::kTarget, "a target in a missing directory");
    CHECK(r.message.rfind("cannot open " + n.target_path + " for writing: No such file or directory (ENOENT)", 0) == 0, r.message);
  }
  {
    CopyConfig n = c;
    n.tls_cert = s.dir / "none.pem";
    n.tls_key = s.dir / "none.key";
    n.tls_ca = s.dir / "ca.pem";
    NbdCopy copy;
    CHECK(!copy.Run(n, &r) && r.error == CopyError::kTlsFiles, "TLS files that cannot be read: " + r.message);
  }
}

void TestCancel() {
  const auto image = Pattern(8 * kMiB, 5);
  Servers s(image);
  s.src->Delay(20);
  CopyConfig c = s.Config("vol@seq=7");
  c.target_path = s.dir / "out.img";
  NbdCopy copy;
  CopyResult r;
  std::thread canceller([&] {
    for (int i = 0; i < 500 && copy.done() == 0; i++) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    copy.Cancel();
  });
  const bool ok = copy.Run(c, &r);
  canceller.join();
  CHECK(!ok && r.error == CopyError::kCancelled && r.message == "the copy was cancelled", "Cancel ends a copy in flight");
  CHECK(copy.done() > 0 && copy.done() < image.size(), "it had started and stopped before the end");

  NbdCopy early;
  early.Cancel();
  CHECK(!early.Run(c, &r) && r.error == CopyError::kCancelled, "a copy cancelled before it runs does not run");
}

void TestIsAllZero() {
  std::vector<uint8_t> z(4096 + 7, 0);
  CHECK(IsAllZero(z.data(), z.size()) && IsAllZero(z.data(), 0), "zeroes are zero, whatever the length");
  for (size_t at : {size_t(0), size_t(63), size_t(64), size_t(4095), size_t(4102)}) {
    z[at] = 1;
    CHECK(!IsAllZero(z.data(), z.size()), "one byte set at " + std::to_string(at) + " is seen");
    z[at] = 0;
  }
}

}  // namespace

int main() {
  TestIsAllZero();
  TestIntoFile();
  TestIntoNbd();
  TestFailures();
  TestCancel();
  return Finish();
}
