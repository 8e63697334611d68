// The NBD front: listeners, the fixed-newstyle handshake and the
// transmission phase, over a set of exports (one name each). The bottom
// layer is an Export (export.h): the tap's protected volumes, or a TimeView.
//
// Threading: per connection, one thread does the handshake, then reads and
// validates requests and hands them to up to 8 workers of that connection,
// which run them at once (a request waits only for an earlier overlapping
// change, a FLUSH for every earlier change) and send replies as they
// complete, by cookie, several in one send; small writes, and small reads
// that need no waiting (Export::ReadNow, or timed), the reading thread runs
// itself. The JavaScript event loop is never on this path.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "export.h"
#include "export_set.h"
#include "nbd_tls.h"
#include "volume.h"  // LogFn, LogLevel

namespace tidemark {

// What a listener admits. A client that connects and never finishes the
// handshake (or a crowd of them) would otherwise hold a thread each, without
// end: the cap bounds the threads, the deadline frees the ones that stall.
// The handshake's deadline, shared by a connection's thread and the
// acceptor that enforces it. It counts only time spent waiting for the
// client: while the server works on an option (opening an export, a
// TIDEMARK_COPY of a whole volume) it is paused, so a slow server never cuts
// a client that did nothing wrong.
struct HandshakeClock {
  std::atomic<bool> done{false};            // the handshake ended (served or refused)
  std::atomic<int64_t> deadline_ms{INT64_MAX};  // steady-clock ms; INT64_MAX: paused or none
  static int64_t NowMs() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
};

struct NbdServerOptions {
  std::shared_ptr<TlsCredentials> tls;  // set: every client must STARTTLS (RequireTls)
  int max_connections = 0;              // 0: no cap; else the next one is closed at once
  int handshake_timeout_ms = 10000;     // from accept to the export chosen; 0: none
};

class NbdServer {
 public:
  // Names resolved when a client asks (the appliance's VOLUME@POINT).
  NbdServer(std::shared_ptr<ExportSet> exports, LogFn log);
  NbdServer(std::vector<std::shared_ptr<Export>> exports, LogFn log)
      : NbdServer(std::make_shared<StaticExports>(std::move(exports)), std::move(log)) {}
  // Any vector of exports (the tap's std::vector<std::shared_ptr<Volume>>).
  template <class T, class = std::enable_if_t<std::is_base_of_v<Export, T>>>
  NbdServer(const std::vector<std::shared_ptr<T>>& exports, LogFn log)
      : NbdServer(std::vector<std::shared_ptr<Export>>(exports.begin(), exports.end()), std::move(log)) {}
  ~NbdServer();

  bool ListenUnix(const std::string& path, std::string* error);
  // port 0 picks a free port; *bound receives it.
  bool ListenTcp(const std::string& host, int port, int* bound, std::string* error);
  // Every client must start TLS (NBD_OPT_STARTTLS) with a certificate the
  // credentials' CA signed before anything else. Call before Start().
  void RequireTls(std::shared_ptr<TlsCredentials> creds) { tls_ = std::move(creds); }
  // The cap, the handshake deadline and TLS. Call before Start().
  void Configure(const NbdServerOptions& o) {
    if (o.tls) tls_ = o.tls;
    max_connections_ = o.max_connections;
    handshake_timeout_ms_ = o.handshake_timeout_ms;
  }
  void Start();
  // Stops accepting, lets every connection finish and answer the requests it
  // has read, then closes them all.
  void Stop();

  // Serves one already-connected socket on the calling thread (fuzzing,
  // tests); its workers are joined before it returns.
  void ServeConnection(int fd);

  uint64_t rejected_handshakes() const { return rejected_handshakes_; }
  // Closed at once because max_connections were open.
  uint64_t refused_connections() const { return refused_connections_; }
  // Closed because the handshake did not finish within its deadline.
  uint64_t handshake_timeouts() const { return handshake_timeouts_; }

  // Cuts every connection serving `exp` (a view being deleted): their sockets
  // are shut down, requests in flight fail, the clients see the end. Returns
  // how many there were.
  int Disconnect(const Export* exp);

 private:
  struct Conn {
    int fd;
    std::thread thread;
    std::atomic<bool> done{false};
    std::atomic<const Export*> serving{nullptr};  // set once the handshake chose an export
    HandshakeClock clock;
    bool timed_out = false;  // the acceptor's only
  };
  void AcceptLoop();
  void Reap(bool all);
  // Shuts down connections past their handshake deadline; returns the ms
  // until the next deadline (at most max_ms).
  int CutStalledHandshakes(int max_ms);

  std::shared_ptr<ExportSet> exports_;
  std::shared_ptr<TlsCredentials> tls_;
  LogFn log_;
  std::vector<int> listeners_;
  std::string unix_path_;
  int wake_[2] = {-1, -1};
  std::thread acceptor_;
  std::mutex conns_mu_;
  std::list<std::unique_ptr<Conn>> conns_;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> rejected_handshakes_{0};
  std::atomic<uint64_t> next_conn_id_{1};
  std::atomic<uint64_t> refused_connections_{0};
  std::atomic<uint64_t> handshake_timeouts_{0};
  int max_connections_ = 0;
  int handshake_timeout_ms_ = 10000;
  bool cap_logged_ = false;  // the acceptor's: one log line per episode at the cap
  ino_t unix_ino_ = 0;       // the socket file we bound, unlinked at Stop only if still ours
};

}  // namespace tidemark
