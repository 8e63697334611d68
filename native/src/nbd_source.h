// A point read from another NBD server: the remote TimeView's bottom layer
// when the appliance's own NBD export of the point (`VOLUME@seq=N`, served
// from its point maps) is reachable from here. A View (view.h) fetches its
// cache misses and read-ahead runs through Read() on its own threads; nothing
// crosses into JavaScript per miss, and no gRPC is on the path.
//
// A small pool of client connections (nbd_copy_client.h: the copier's
// handshake, STARTTLS included), each serving one request at a time, so up
// to `connections` fetches are in flight at once. A connection that fails is
// dropped and the next read opens a new one; a read fails (and the client
// of the view gets EIO) only when a fresh connection fails too.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "nbd_copy.h"
#include "nbd_copy_client.h"
#include "nbd_tls.h"

namespace tidemark {

class NbdSource {
 public:
  NbdSource(NbdEndpoint endpoint, std::shared_ptr<TlsCredentials> creds, int connections);
  ~NbdSource();

  // Opens the first connection; the export's size in *size.
  bool Open(uint64_t* size, std::string* error);
  // [offset, offset+length) of the export. Thread-safe.
  bool Read(uint64_t offset, uint32_t length, uint8_t* out, std::string* error);
  // Wakes every waiter and shuts every socket down: reads in flight fail.
  void Close();

 private:
  std::unique_ptr<nbdcopy::Connection> Take(std::string* error);
  void Give(std::unique_ptr<nbdcopy::Connection> c);
  bool ReadOn(nbdcopy::Connection& c, uint64_t offset, uint32_t length, uint8_t* out, std::string* error);
  std::unique_ptr<nbdcopy::Connection> Connect(std::string* error);

  const NbdEndpoint endpoint_;
  const std::shared_ptr<TlsCredentials> creds_;
  const int max_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<nbdcopy::Connection>> idle_;
  std::vector<int> busy_fds_;  // sockets of connections in use, for Close
  int open_ = 0;               // connections that exist (idle or busy)
  bool closed_ = false;
  uint64_t next_handle_ = 1;
};

}  // namespace tidemark
