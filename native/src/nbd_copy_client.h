// One NBD client connection of the copier (nbd_copy.h): connecting (a unix
// socket, or TCP with a bounded connect), the fixed newstyle handshake with
// NBD_OPT_STARTTLS (nbd_tls.h) and NBD_OPT_GO, then requests and simple
// replies. Blocking sockets: a worker waits in recv, and Cancel (or the
// first failure) shuts the socket down to wake it. The protocol's constants
// are nbd_proto.h's; the wire format is doc/proto.md of NetworkBlockDevice/nbd.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "file_copy.h"
#include "nbd_copy.h"
#include "nbd_tls.h"
#include "nbd_proto.h"

namespace tidemark::nbdcopy {

// "No such file or directory (ENOENT)"
std::string ErrnoText(int e);
// An NBD error value (a Linux errno on the wire): "EIO (Input/output error)"
std::string NbdErrno(uint32_t e);

class Connection {
 public:
  Connection() = default;
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  int fd = -1;
  std::unique_ptr<TlsClientSession> tls;  // after NBD_OPT_STARTTLS
  uint64_t size = 0;
  uint16_t flags = 0;
  uint32_t max_block = nbd::kMaxPayload;
  std::string what;  // "export 'NAME' on PATH"

  // Connects and negotiates the export; on_socket sees the fd before any
  // blocking call (so it can be shut down from another thread). With
  // credentials, TLS is started first over TCP, and over a unix socket
  // when the server requires it; without, a server that requires TLS is
  // kTlsRequired.
  CopyError Open(const NbdEndpoint& e, const std::shared_ptr<TlsCredentials>& creds,
                 const std::function<void(int)>& on_socket, std::string* msg);

  // Connects and greets, stopping before any option: for ServerCopy (a unix
  // socket, no TLS: a descriptor cannot cross TLS).
  CopyError OpenForCopy(const NbdEndpoint& e, const std::function<void(int)>& on_socket, std::string* msg);
  // One NBD_OPT_TIDEMARK_COPY (nbd_proto.h): [offset, offset+length) of the
  // export copied by the server into target, adding to *t. kRefused with
  // *unsupported when the server does not copy (not tidemark's, or an
  // export that is not local files): the caller reads instead.
  CopyError ServerCopy(const std::string& name, int target, uint64_t offset, uint64_t length, bool write_zeroes,
                       CopyTally* t, bool* unsupported, std::string* msg);

  bool Send(const uint8_t* hdr, size_t hn, const uint8_t* data, size_t dn);

  bool Request(uint16_t type, uint64_t handle, uint64_t offset, uint32_t length, const uint8_t* data = nullptr);

  // 1: n bytes read; 0: the peer closed first (after *got bytes); -1: errno.
  int Recv(void* p, size_t n, size_t* got = nullptr);
  // Whatever has arrived, up to n bytes (waits for one): like recv, 0 at the end, -1: errno.
  ssize_t RecvSome(void* p, size_t n);

  // Decrypted bytes that poll() cannot see.
  bool Pending() const { return tls && tls->Pending(); }

  // A failed Recv or Send as the end of a sentence: "closed the connection", the errno or the TLS error.
  std::string RecvFailure(int rc, int e) const;

  // Reads one simple reply header; returns false with *msg on a broken stream.
  bool ReadReply(uint32_t* error, uint64_t* handle, std::string* msg);

  void Disconnect();

 private:
  bool TlsSendAll(const uint8_t* p, size_t n);

  static std::string Hex(uint32_t v);

  // Connects, then talk() under the handshake's timeouts.
  CopyError Negotiate(const NbdEndpoint& e, const std::function<void(int)>& on_socket, std::string* msg,
                      const std::function<CopyError()>& talk);

  CopyError Connect(const NbdEndpoint& e, const std::function<void(int)>& on_socket, std::string* msg);

  // An option request with no data or with `data`.
  bool SendOption(uint32_t opt, const std::vector<uint8_t>& data);

  // One option reply: its type and body; kNone or the error with *msg.
  CopyError OptionReply(uint32_t opt, uint32_t* type, std::vector<uint8_t>* body, std::string* msg);

  static std::string ReplyText(const std::vector<uint8_t>& body);

  // NBD_OPT_STARTTLS, then the TLS handshake: every later byte is encrypted.
  CopyError StartTls(const NbdEndpoint& e, const std::shared_ptr<TlsCredentials>& creds, std::string* msg);

  // The greeting and the client flags.
  CopyError Greet(const NbdEndpoint& e, std::string* msg);

  CopyError Handshake(const NbdEndpoint& e, const std::shared_ptr<TlsCredentials>& creds, std::string* msg);

  // Sockets of failed TCP attempts: tracked for Cancel until Run ends, so
  // they are closed with the connection, never while their number could be
  // reused under Cancel's shutdown.
  std::vector<int> failed_attempts_;
};

}  // namespace tidemark::nbdcopy
