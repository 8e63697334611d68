// The client side of NBD TLS (NBD_OPT_STARTTLS) for the copier, with GnuTLS,
// as libnbd and qemu do it: mutual authentication with the same PEM files
// the CLI gives gRPC (--tls-cert, --tls-key, --tls-ca). The server's
// certificate must chain to the CA and, over TCP, name the host connected to
// (an IP subjectAltName for an address), as gRPC checks it.
//
// A session is used by one thread (the connection's worker), so no locking.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>

namespace tidemark {

class TlsClientCredentials {
 public:
  static std::shared_ptr<TlsClientCredentials> Load(const std::string& cert, const std::string& key, const std::string& ca,
                                                    std::string* error);
  ~TlsClientCredentials();
  TlsClientCredentials(const TlsClientCredentials&) = delete;
  TlsClientCredentials& operator=(const TlsClientCredentials&) = delete;

 private:
  TlsClientCredentials() = default;
  friend class TlsClientSession;
  void* creds_ = nullptr;     // gnutls_certificate_credentials_t
  void* priority_ = nullptr;  // gnutls_priority_t
};

class TlsClientSession {
 public:
  explicit TlsClientSession(std::shared_ptr<TlsClientCredentials> creds) : creds_(std::move(creds)) {}
  ~TlsClientSession();
  TlsClientSession(const TlsClientSession&) = delete;
  TlsClientSession& operator=(const TlsClientSession&) = delete;

  // The client handshake on a connected socket; `host` ("" for a unix
  // socket: the chain alone is checked) must be named by the server's
  // certificate.
  bool Handshake(int fd, const std::string& host, int timeout_ms, std::string* error);
  // Like recv/send on a blocking socket: bytes moved, 0 at the end of the
  // stream, -1 on an error (error() says which).
  ssize_t Recv(uint8_t* buf, size_t n);
  ssize_t Send(const uint8_t* buf, size_t n);
  const std::string& error() const { return error_; }
  // Decrypted bytes waiting in the session (poll() cannot see them).
  bool Pending() const;
  void Bye();

 private:
  ssize_t Result(ssize_t r);

  std::shared_ptr<TlsClientCredentials> creds_;
  void* session_ = nullptr;  // gnutls_session_t
  std::string error_;
};

}  // namespace tidemark
