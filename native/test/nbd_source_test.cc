// Native tests of the remote TimeView's NBD source (nbd_source.h), built and
// run under AddressSanitizer and UBSan: a pool of pipelined client
// connections against tidemark's own NBD front (NbdServer) over a unix
// socket, serving an export in memory (mem_export.h). Many readers at once,
// replies out of order on one connection, a server that cuts its connections
// with reads in flight (the read goes again on a fresh connection), one that
// is gone for good (the read fails, saying why), one that takes no new
// connection (the open ones carry the reads), error replies, and Close
// with reads in flight. End to end, over the appliance's NBD export, in
// test/timeview.test.ts.
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "check.h"
#include "mem_export.h"
#include "nbd_server.h"
#include "nbd_source.h"

using namespace tidemark;
using namespace tidemark::test;

namespace {

constexpr size_t kMiB = 1024 * 1024;

struct Served {
  TempDir dir{"tidemark-source-test"};
  Log logs;
  std::shared_ptr<MemExport> exp;
  std::unique_ptr<NbdServer> server;
  std::string sock;

  // answer_now: the front answers reads on its reading thread (ReadNow) and
  // hands held ones to a worker, so that a held read never holds up the rest.
  Served(std::vector<uint8_t> image, bool answer_now) {
    exp = std::make_shared<MemExport>("vol@seq=3", std::move(image), true);
    if (answer_now) exp->AnswerNow();
    server = std::make_unique<NbdServer>(std::vector<std::shared_ptr<Export>>{exp}, logs.Fn());
    sock = dir / "nbd.sock";
    std::string error;
    if (!server->ListenUnix(sock, &error)) {
      std::fprintf(stderr, "listen: %s\n", error.c_str());
      std::exit(2);
    }
    server->Start();
  }
  ~Served() {
    exp->Release();
    server->Stop();
  }
  NbdEndpoint Endpoint() const {
    NbdEndpoint e;
    e.unix_path = sock;
    e.export_name = "vol@seq=3";
    return e;
  }
};

// A Read on its own thread; the test waits for it with a bound.
struct Pending {
  std::thread t;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false, ok = false;
  std::string error;
  std::vector<uint8_t> out;

  Pending(NbdSource& src, uint64_t offset, uint32_t length) : out(length) {
    t = std::thread([this, &src, offset, length] {
      std::string e;
      const bool r = src.Read(offset, length, out.data(), &e);
      std::lock_guard<std::mutex> lk(mu);
      ok = r;
      error = e;
      done = true;
      cv.notify_all();
    });
  }
  ~Pending() { t.join(); }
  // Whether it returned within 10 s.
  bool Wait() {
    std::unique_lock<std::mutex> lk(mu);
    return cv.wait_for(lk, std::chrono::seconds(10), [&] { return done; });
  }
  bool Done() {
    std::lock_guard<std::mutex> lk(mu);
    return done;
  }
};

void TestManyReaders() {
  const auto image = Pattern(16 * kMiB, 7);
  Served s(image, false);
  s.exp->Delay(1);  // a millisecond a read: requests pile up on the connections
  NbdSource src(s.Endpoint(), nullptr, /*connections=*/2, /*depth=*/8, /*spread=*/4);
  uint64_t size = 0;
  std::string error;
  CHECK(src.Open(&size, &error) && size == image.size(), "Open says the export's size" + Said(error));
  constexpr int kThreads = 16, kReads = 30;
  std::atomic<int> wrong{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&, t] {
      std::vector<uint8_t> out(64 * 1024);
      for (int i = 0; i < kReads; i++) {
        const uint64_t off = (uint64_t(t) * 7919 + uint64_t(i) * 104729) % (size / 512 - 128) * 512 + (i % 3);
        const uint32_t len = uint32_t(512 * (1 + (t + i) % 128) - (i % 3));
        std::string e;
        if (!src.Read(off, len, out.data(), &e))
          failed++;
        else if (!Same(out.data(), image.data() + off, len))
          wrong++;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(failed == 0 && wrong == 0, "16 threads × 30 reads of any size and alignment, at once, read the export's bytes (" +
                                       std::to_string(failed) + " failed, " + std::to_string(wrong) + " wrong)");
  CHECK(src.connections_opened() == 2, "over the 2 connections allowed: " + std::to_string(src.connections_opened()));
  CHECK(src.depth_max() > 1 && src.depth_max() <= 8,
        "pipelined: up to the depth of 8 in flight on one connection, " + std::to_string(src.depth_max()) + " at most");
  s.exp->Delay(0);
  std::vector<uint8_t> big(4 * kMiB);
  CHECK(src.Read(3 * kMiB + 512, uint32_t(big.size()), big.data(), &error) &&
            Same(big.data(), image.data() + 3 * kMiB + 512, big.size()),
        "a 4 MiB read (far more than one recv) lands whole" + Said(error));
}

void TestOutOfOrder() {
  const auto image = Pattern(4 * kMiB, 8);
  Served s(image, true);
  NbdSource src(s.Endpoint(), nullptr, /*connections=*/1, /*depth=*/8, /*spread=*/8);
  uint64_t size = 0;
  std::string error;
  CHECK(src.Open(&size, &error), "Open" + Said(error));
  const uint64_t held = kMiB;
  s.exp->HoldAt(held);
  Pending first(src, held, 8192);
  CHECK(s.exp->WaitInProgress(1), "the first read reached the export and waits there");
  {
    // Each on its own thread, waited for with a bound: replies in order would hold them all behind the first.
    std::vector<std::unique_ptr<Pending>> later;
    for (int i = 0; i < 7; i++) later.push_back(std::make_unique<Pending>(src, 2 * kMiB + uint64_t(i) * 12288, 4096));
    bool all = true;
    for (int i = 0; i < 7; i++) {
      all = all && later[i]->Wait() && later[i]->ok &&
            Same(later[i]->out.data(), image.data() + 2 * kMiB + uint64_t(i) * 12288, 4096);
    }
    CHECK(all, "7 later reads on the same connection are answered while the first still waits");
  }
  CHECK(!first.Done(), "the first is still out");
  s.exp->Release();
  CHECK(first.Wait() && first.ok && Same(first.out.data(), image.data() + held, 8192),
        "then the first is answered, last, and its bytes go to its own reader" + Said(first.error));
  const auto order = s.exp->finished();
  CHECK(order.size() == 8 && order.back() == held, "the server finished it last");
  CHECK(src.connections_opened() == 1 && src.depth_max() >= 2, "all on one connection, replies out of order");
}

void TestServerCutsConnections() {
  const auto image = Pattern(4 * kMiB, 9);
  Served s(image, true);
  NbdSource src(s.Endpoint(), nullptr, /*connections=*/2, /*depth=*/8, /*spread=*/4);
  uint64_t size = 0;
  std::string error;
  CHECK(src.Open(&size, &error), "Open" + Said(error));
  const uint64_t held = 512 * 1024;
  s.exp->HoldAt(held);
  Pending a(src, held, 4096), b(src, held, 4096);
  CHECK(s.exp->WaitInProgress(2), "two reads in flight");
  const int cut = s.server->Disconnect(s.exp.get());
  CHECK(cut >= 1, "the server cuts the connections serving them: " + std::to_string(cut));
  // Each read goes again on a fresh connection, where it is held again until released.
  CHECK(s.exp->WaitInProgress(4), "the reads were sent again on fresh connections");
  s.exp->Release();
  CHECK(a.Wait() && a.ok && Same(a.out.data(), image.data() + held, 4096) && b.Wait() && b.ok &&
            Same(b.out.data(), image.data() + held, 4096),
        "and read the right bytes there" + Said(a.error + b.error));
  CHECK(src.connections_opened() >= 2, "on a connection opened after the cut");
  std::vector<uint8_t> out(4096);
  CHECK(src.Read(0, 4096, out.data(), &error) && Same(out.data(), image.data(), 4096),
        "later reads go on as before" + Said(error));
}

void TestServerGone() {
  const auto image = Pattern(4 * kMiB, 10);
  Served s(image, true);
  NbdSource src(s.Endpoint(), nullptr, /*connections=*/2, /*depth=*/8, /*spread=*/4);
  uint64_t size = 0;
  std::string error;
  CHECK(src.Open(&size, &error), "Open" + Said(error));
  const uint64_t held = 64 * 1024;
  s.exp->HoldAt(held);
  Pending a(src, held, 4096);
  CHECK(s.exp->WaitInProgress(1), "a read in flight");
  // Nobody can connect any more (the socket's name is gone), and the connections are cut.
  unlink(s.sock.c_str());
  s.server->Disconnect(s.exp.get());
  CHECK(a.Wait() && !a.ok, "the read fails when a fresh connection fails too");
  CHECK(a.error.find("No such file or directory (ENOENT)") != std::string::npos,
        "saying why the fresh connection failed: " + a.error);
  std::vector<uint8_t> out(4096);
  CHECK(!src.Read(0, 4096, out.data(), &error) && error.find("ENOENT") != std::string::npos,
        "and so does the next read: " + error);
  s.exp->Release();
}

void TestNoNewConnection() {
  const auto image = Pattern(2 * kMiB, 13);
  Served s(image, true);
  NbdSource src(s.Endpoint(), nullptr, /*connections=*/2, /*depth=*/8, /*spread=*/1);
  uint64_t size = 0;
  std::string error;
  CHECK(src.Open(&size, &error), "Open" + Said(error));
  const uint64_t held = 8192;
  s.exp->HoldAt(held);
  Pending a(src, held, 4096);
  CHECK(s.exp->WaitInProgress(1), "a read in flight on the one connection");
  unlink(s.sock.c_str());  // a second connection cannot be opened
  std::vector<uint8_t> out(4096);
  CHECK(src.Read(kMiB, 4096, out.data(), &error) && Same(out.data(), image.data() + kMiB, 4096),
        "a read that would open a second connection, and cannot, goes on the open one" + Said(error));
  CHECK(src.connections_opened() == 1, "still one connection");
  s.exp->Release();
  CHECK(a.Wait() && a.ok && Same(a.out.data(), image.data() + held, 4096), "the held read is answered too" + Said(a.error));
}

void TestErrorReply() {
  const auto image = Pattern(2 * kMiB, 11);
  Served s(image, false);
  NbdSource src(s.Endpoint(), nullptr, /*connections=*/2);
  uint64_t size = 0;
  std::string error;
  CHECK(src.Open(&size, &error), "Open" + Said(error));
  s.exp->FailAt(kMiB + 100);
  std::vector<uint8_t> out(8192);
  CHECK(!src.Read(kMiB, 8192, out.data(), &error), "a READ the server fails, twice, fails");
  CHECK(error.find("failed a READ of 8192 bytes at 1048576: EIO (Input/output error)") != std::string::npos,
        "naming the request and the server's error: " + error);
  const uint64_t before = src.connections_opened();
  s.exp->FailAt(UINT64_MAX);
  CHECK(src.Read(kMiB, 8192, out.data(), &error) && Same(out.data(), image.data() + kMiB, 8192),
        "once the server answers again, so does the source" + Said(error));
  CHECK(before >= 2, "the second try was on a fresh connection: " + std::to_string(before) + " opened");
}

void TestCloseWakesReaders() {
  const auto image = Pattern(2 * kMiB, 12);
  Served s(image, true);
  NbdSource src(s.Endpoint(), nullptr, /*connections=*/2, /*depth=*/8, /*spread=*/2);
  uint64_t size = 0;
  std::string error;
  CHECK(src.Open(&size, &error), "Open" + Said(error));
  const uint64_t held = 4096;
  s.exp->HoldAt(held);
  {
    std::vector<std::unique_ptr<Pending>> reads;
    for (int i = 0; i < 4; i++) reads.push_back(std::make_unique<Pending>(src, held, 4096));
    CHECK(s.exp->WaitInProgress(4), "four reads in flight");
    src.Close();
    bool all = true;
    for (auto& r : reads) all = all && r->Wait() && !r->ok && r->error == "the TimeView is closing";
    CHECK(all, "Close fails every read in flight at once, saying so, though the server has not answered");
    std::vector<uint8_t> out(4096);
    CHECK(!src.Read(0, 4096, out.data(), &error) && error == "the TimeView is closing", "a read after Close fails at once");
  }
  s.exp->Release();
}

}  // namespace

int main() {
  TestManyReaders();
  TestOutOfOrder();
  TestServerCutsConnections();
  TestServerGone();
  TestNoNewConnection();
  TestErrorReply();
  TestCloseWakesReaders();
  return Finish();
}
