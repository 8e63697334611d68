// A point read from another NBD server: the remote TimeView's bottom layer
// when the appliance's own NBD export of the point (`VOLUME@seq=N`, served
// from its point maps) is reachable from here. A View (view.h) fetches its
// cache misses and read-ahead runs through Read() on its own threads; nothing
// crosses into JavaScript per miss, and no gRPC is on the path.
//
// A small pool of client connections (nbd_copy_client.h: the copier's
// handshake, STARTTLS included), each carrying up to `depth` requests at
// once: a Read sends its request on the least busy connection, and replies
// come back in any order (matched by handle, as the protocol allows). No
// thread of our own reads them: one of the Reads waiting on a connection
// does (leader and followers). It takes replies as they come, copies each
// payload straight into its reader's buffer and wakes that reader; when its
// own reply is in, it hands the socket to another waiting Read and returns.
// So a reply costs the wake-up of the Read it answers and nothing more (a
// reader thread per connection would add its own), and several requests per
// connection let the appliance read several in one recv and answer several
// in one send. A new connection is opened only while every open one already
// has `spread` requests in flight.
//
// Failures: a connection whose stream breaks (or whose server answers a READ
// with an error) fails its requests in flight and retires every connection
// open at that moment, since they likely share the cause; retired
// connections finish what they carry and close, and take nothing new. Each
// failed Read tries once more, on a connection opened after the failure, and
// fails (the client of the view gets EIO) only when that fails too. Close()
// shuts every socket down, which fails every Read in flight at once.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "nbd_copy.h"
#include "nbd_copy_client.h"
#include "nbd_tls.h"

namespace tidemark {

class NbdSource {
 public:
  // At most `connections` open (not counting retired ones draining), each
  // with at most `depth` requests in flight; a new one is opened only while
  // every open one has `spread` or more in flight.
  NbdSource(NbdEndpoint endpoint, std::shared_ptr<TlsCredentials> creds, int connections, int depth = 8,
            int spread = 4);
  ~NbdSource();

  // Opens the first connection; the export's size in *size.
  bool Open(uint64_t* size, std::string* error);
  // [offset, offset+length) of the export. Thread-safe.
  bool Read(uint64_t offset, uint32_t length, uint8_t* out, std::string* error);
  // Wakes every waiter and shuts every socket down: reads in flight fail.
  void Close();

  // Connections opened so far, and the most requests one had in flight at once.
  uint64_t connections_opened();
  uint64_t depth_max();

 private:
  struct Wait;
  struct Upstream;

  // A connection with room for `length` bytes of requests, opened if none
  // has and there is room for one; the requests registered on it (handles
  // in *handles) before mu_ is let go. Null with *error when closing or
  // when a new connection cannot be opened.
  std::shared_ptr<Upstream> Pick(Wait* w, uint64_t offset, uint32_t length, uint8_t* out,
                                 std::vector<uint64_t>* handles, std::string* error);
  // Opens a connection; mu_ held on entry and exit (let go while connecting).
  std::shared_ptr<Upstream> OpenUpstream(std::unique_lock<std::mutex>& lk, std::string* error);
  // Receives one reply on u and hands it to its Read; the caller holds u's
  // reading turn. False with *why when the stream broke.
  bool ReceiveOne(Upstream* u, std::string* why);
  // u's stream broke: its requests fail, and every open connection retires; mu_ held.
  void BreakLocked(const std::shared_ptr<Upstream>& u, const std::string& why);
  // The connection broke, or its server failed a READ: every open one
  // retires, and those with nothing in flight close; mu_ held.
  void RetireAllLocked();
  // Drops u from the pool and shuts its socket; mu_ held.
  void DropLocked(const Upstream* u);
  // A request's end: its Wait is told, and woken when its last piece is in; mu_ held.
  void FinishLocked(Wait* w, bool ok, const std::string& error);

  const NbdEndpoint endpoint_;
  const std::shared_ptr<TlsCredentials> creds_;
  const int max_;
  const size_t depth_;
  const size_t spread_;
  std::mutex mu_;
  std::condition_variable room_cv_;  // a request finished, or a connection opened or ended
  std::vector<std::shared_ptr<Upstream>> conns_;  // open, and retired ones still carrying requests
  std::vector<int> connecting_fds_;               // sockets in a handshake, for Close
  int live_ = 0;                                  // open, not retired
  int opening_ = 0;                               // being connected
  int room_waiters_ = 0;
  bool closed_ = false;
  uint64_t next_handle_ = 1;
  uint64_t opened_ = 0;
  uint64_t depth_max_ = 0;
};

}  // namespace tidemark
