// TLS for NBD (NBD_OPT_STARTTLS, as nbdkit and qemu do it), with GnuTLS: the
// library nbdkit, qemu and libnbd use, so the same certificates and the same
// clients work. Both sides load the same PEM files the CLI gives gRPC
// (--tls-cert, --tls-key, --tls-ca) into one TlsCredentials.
//
// The server side (TlsSession) is the NBD front's. A server that has credentials requires TLS
// (nbd_server.cc refuses every option but STARTTLS and ABORT before it) and
// mutual authentication: the client presents a certificate the CA signed,
// and its identity (the subject's CN, else its first DNS subjectAltName,
// the rule appliance/authorizer.ts applies to gRPC) decides which exports it
// may open.
//
// One server session is used by two threads at most, one receiving and one
// sending, which GnuTLS allows.
//
// The client side (TlsClientSession) is the copier's and the remote
// TimeView's (nbd_copy_client.h): the server's certificate must chain to the
// CA and, over TCP, name the host connected to (an IP subjectAltName for an
// address), as gRPC checks it. A client session is used by one thread, or
// by two, one receiving and one sending (the remote TimeView's pipelined
// connections, nbd_source.h): each side keeps its own error text.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>

namespace tidemark {

class TlsCredentials {
 public:
  // PEM files: this side's certificate chain and key, and the CA that signs the other side's.
  static std::shared_ptr<TlsCredentials> Load(const std::string& cert, const std::string& key, const std::string& ca,
                                              std::string* error);
  ~TlsCredentials();
  TlsCredentials(const TlsCredentials&) = delete;
  TlsCredentials& operator=(const TlsCredentials&) = delete;

 private:
  TlsCredentials() = default;
  friend class TlsSession;
  friend class TlsClientSession;
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

class TlsClientSession {
 public:
  explicit TlsClientSession(std::shared_ptr<TlsCredentials> creds) : creds_(std::move(creds)) {}
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
  // Why the last Recv failed, else the last Send.
  const std::string& error() const { return recv_error_.empty() ? send_error_ : recv_error_; }
  // Decrypted bytes waiting in the session (poll() cannot see them).
  bool Pending() const;
  void Bye();

 private:
  ssize_t Result(ssize_t r, std::string* error);

  std::shared_ptr<TlsCredentials> creds_;
  void* session_ = nullptr;  // gnutls_session_t
  std::string recv_error_, send_error_;
};

}  // namespace tidemark
