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

#include <atomic>
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
  void Start();
  // Stops accepting, lets every connection finish and answer the requests it
  // has read, then closes them all.
  void Stop();

  // Serves one already-connected socket on the calling thread (fuzzing,
  // tests); its workers are joined before it returns.
  void ServeConnection(int fd);

  uint64_t rejected_handshakes() const { return rejected_handshakes_; }

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
  };
  void AcceptLoop();
  void Reap(bool all);

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
};

}  // namespace tidemark
