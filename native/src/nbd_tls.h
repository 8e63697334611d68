// TLS for the NBD front (NBD_OPT_STARTTLS, as nbdkit and qemu do it), with
// GnuTLS: the library nbdkit, qemu and libnbd use, so the same certificates
// and the same clients work. A server that has credentials requires TLS
// (nbd_server.cc refuses every option but STARTTLS and ABORT before it) and
// mutual authentication: the client presents a certificate the CA signed,
// and its identity (the subject's CN, else its first DNS subjectAltName,
// the rule appliance/authorizer.ts applies to gRPC) decides which exports it
// may open.
//
// One session is used by two threads at most, one receiving and one sending,
// which GnuTLS allows.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>

namespace tidemark {

class TlsCredentials {
 public:
  // PEM files: the server's certificate chain and key, and the CA that signs clients.
  static std::shared_ptr<TlsCredentials> Load(const std::string& cert, const std::string& key, const std::string& ca,
                                              std::string* error);
  ~TlsCredentials();
  TlsCredentials(const TlsCredentials&) = delete;
  TlsCredentials& operator=(const TlsCredentials&) = delete;

 private:
  TlsCredentials() = default;
  friend class TlsSession;
  void* creds_ = nullptr;     // gnutls_certificate_credentials_t
  void* priority_ = nullptr;  // gnutls_priority_t
};

class TlsSession {
 public:
  explicit TlsSession(std::shared_ptr<TlsCredentials> creds) : creds_(std::move(creds)) {}
  ~TlsSession();
  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;

  // The server side of the handshake on a connected socket, within
  // timeout_ms; then the client's certificate is verified against the CA.
  bool Handshake(int fd, int timeout_ms, std::string* error);
  // The client certificate's identity (after a successful handshake).
  const std::string& identity() const { return identity_; }

  // Like recv/send on a blocking socket: bytes moved, 0 at the end of the
  // stream, -1 on an error.
  ssize_t Recv(uint8_t* buf, size_t n);
  ssize_t Send(const uint8_t* buf, size_t n);
  // Tells the client the session ends (best effort).
  void Bye();

 private:
  std::shared_ptr<TlsCredentials> creds_;
  void* session_ = nullptr;  // gnutls_session_t
  std::string identity_;
};

}  // namespace tidemark
