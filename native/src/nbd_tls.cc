#include "nbd_tls.h"

#ifndef TIDEMARK_HAVE_GNUTLS

namespace tidemark {

std::shared_ptr<TlsCredentials> TlsCredentials::Load(const std::string&, const std::string&, const std::string&,
                                                     std::string* error) {
  *error = "this build of tidemark has no NBD TLS: GnuTLS (libgnutls28-dev) was missing when it was built";
  return nullptr;
}
TlsCredentials::~TlsCredentials() = default;
TlsSession::~TlsSession() = default;
bool TlsSession::Handshake(int, int, std::string* error) {
  *error = "no TLS in this build";
  return false;
}
ssize_t TlsSession::Recv(uint8_t*, size_t) { return -1; }
ssize_t TlsSession::Send(const uint8_t*, size_t) { return -1; }
void TlsSession::Bye() {}
TlsClientSession::~TlsClientSession() = default;
bool TlsClientSession::Handshake(int, const std::string&, int, std::string* error) {
  *error = "no TLS in this build";
  return false;
}
ssize_t TlsClientSession::Recv(uint8_t*, size_t) { return -1; }
ssize_t TlsClientSession::Send(const uint8_t*, size_t) { return -1; }
bool TlsClientSession::Pending() const { return false; }
void TlsClientSession::Bye() {}
ssize_t TlsClientSession::Result(ssize_t r, std::string*) { return r; }


}  // namespace tidemark

#else

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace tidemark {

namespace {

std::string Gnutls(const char* what, int rc) { return std::string(what) + ": " + gnutls_strerror(rc); }

// The subject's CN, else the first DNS subjectAltName.
// An identity is a name we log and match: at most 128 bytes
// (proto/bounded-strings.ts MAX_NAME_BYTES), no control characters (no NUL
// to cut it short in a log, no escape to rewrite a terminal).
std::string Bounded(std::string id) {
  if (id.size() > 128) return std::string();
  // "uid:N" names a local user on a unix socket (nbd_server.cc PeerUidIdentity): no certificate may claim it.
  if (id.rfind("uid:", 0) == 0) return std::string();
  for (unsigned char c : id)
    if (c < 0x20 || c == 0x7f) return std::string();
  return id;
}

// The subject's first CN, else the first subjectAltName of type DNS (typed
// by the certificate, never found by searching text: a URI SAN
// spiffe://x/DNS:admin names nobody). appliance/authorizer.ts reads the same.
std::string IdentityOf(gnutls_x509_crt_t crt) {
  char buf[1024];
  size_t len = sizeof buf;
  if (gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, buf, &len) == 0 && len > 0) {
    return Bounded(std::string(buf, len));
  }
  for (unsigned i = 0;; i++) {
    len = sizeof buf;
    const int type = gnutls_x509_crt_get_subject_alt_name(crt, i, buf, &len, nullptr);
    if (type < 0) break;
    if (type == GNUTLS_SAN_DNSNAME && len > 0) return Bounded(std::string(buf, len));
  }
  return std::string();
}

}  // namespace

std::shared_ptr<TlsCredentials> TlsCredentials::Load(const std::string& cert, const std::string& key,
                                                     const std::string& ca, std::string* error) {
  std::shared_ptr<TlsCredentials> c(new TlsCredentials());
  gnutls_certificate_credentials_t creds;
  if (int rc = gnutls_certificate_allocate_credentials(&creds); rc < 0) {
    *error = Gnutls("TLS credentials", rc);
    return nullptr;
  }
  c->creds_ = creds;
  if (int rc = gnutls_certificate_set_x509_key_file(creds, cert.c_str(), key.c_str(), GNUTLS_X509_FMT_PEM); rc < 0) {
    *error = "cannot load the TLS certificate " + cert + " and key " + key + ": " + gnutls_strerror(rc);
    return nullptr;
  }
  const int n = gnutls_certificate_set_x509_trust_file(creds, ca.c_str(), GNUTLS_X509_FMT_PEM);
  if (n <= 0) {
    *error = "cannot load the TLS CA " + ca + (n < 0 ? std::string(": ") + gnutls_strerror(n) : ": no certificate in it");
    return nullptr;
  }
  gnutls_priority_t prio;
  if (int rc = gnutls_priority_init(&prio, "NORMAL", nullptr); rc < 0) {
    *error = Gnutls("TLS priorities", rc);
    return nullptr;
  }
  c->priority_ = prio;
  return c;
}

TlsCredentials::~TlsCredentials() {
  if (priority_) gnutls_priority_deinit(static_cast<gnutls_priority_t>(priority_));
  if (creds_) gnutls_certificate_free_credentials(static_cast<gnutls_certificate_credentials_t>(creds_));
}

TlsSession::~TlsSession() {
  if (session_) gnutls_deinit(static_cast<gnutls_session_t>(session_));
}

bool TlsSession::Handshake(int fd, int timeout_ms, std::string* error) {
  gnutls_session_t s;
  if (int rc = gnutls_init(&s, GNUTLS_SERVER | GNUTLS_NO_SIGNAL); rc < 0) {
    *error = Gnutls("TLS session", rc);
    return false;
  }
  session_ = s;
  gnutls_priority_set(s, static_cast<gnutls_priority_t>(creds_->priority_));
  gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, static_cast<gnutls_certificate_credentials_t>(creds_->creds_));
  gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUIRE);
  gnutls_transport_set_int(s, fd);
  gnutls_handshake_set_timeout(s, unsigned(timeout_ms));
  int rc;
  do {
    rc = gnutls_handshake(s);
  } while (rc < 0 && !gnutls_error_is_fatal(rc));
  if (rc < 0) {
    *error = Gnutls("TLS handshake failed", rc);
    return false;
  }
  unsigned status = 0;
  if ((rc = gnutls_certificate_verify_peers2(s, &status)) < 0) {
    *error = Gnutls("cannot verify the client certificate", rc);
    return false;
  }
  if (status != 0) {
    gnutls_datum_t out{};
    gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0);
    *error = "the client certificate is not trusted: " + std::string(out.data ? reinterpret_cast<char*>(out.data) : "?");
    gnutls_free(out.data);
    return false;
  }
  unsigned n = 0;
  const gnutls_datum_t* chain = gnutls_certificate_get_peers(s, &n);
  if (!chain || n == 0) {
    *error = "the client sent no certificate";
    return false;
  }
  gnutls_x509_crt_t crt;
  gnutls_x509_crt_init(&crt);
  if ((rc = gnutls_x509_crt_import(crt, &chain[0], GNUTLS_X509_FMT_DER)) < 0) {
    gnutls_x509_crt_deinit(crt);
    *error = Gnutls("cannot read the client certificate", rc);
    return false;
  }
  identity_ = IdentityOf(crt);
  gnutls_x509_crt_deinit(crt);
  if (identity_.empty()) {
    *error = "the client certificate names no identity (no CN, no DNS subjectAltName)";
    return false;
  }
  return true;
}

ssize_t TlsSession::Recv(uint8_t* buf, size_t n) {
  for (;;) {
    const ssize_t r = gnutls_record_recv(static_cast<gnutls_session_t>(session_), buf, n);
    if (r == GNUTLS_E_INTERRUPTED || r == GNUTLS_E_AGAIN) continue;
    if (r == GNUTLS_E_PREMATURE_TERMINATION) return 0;  // the client closed without a TLS goodbye
    return r < 0 ? -1 : r;
  }
}

ssize_t TlsSession::Send(const uint8_t* buf, size_t n) {
  for (;;) {
    const ssize_t r = gnutls_record_send(static_cast<gnutls_session_t>(session_), buf, n);
    if (r == GNUTLS_E_INTERRUPTED || r == GNUTLS_E_AGAIN) continue;
    return r < 0 ? -1 : r;
  }
}

void TlsSession::Bye() {
  if (session_) gnutls_bye(static_cast<gnutls_session_t>(session_), GNUTLS_SHUT_WR);
}

TlsClientSession::~TlsClientSession() {
  if (session_) gnutls_deinit(static_cast<gnutls_session_t>(session_));
}

bool TlsClientSession::Handshake(int fd, const std::string& host, int timeout_ms, std::string* error) {
  gnutls_session_t s;
  if (int rc = gnutls_init(&s, GNUTLS_CLIENT | GNUTLS_NO_SIGNAL); rc < 0) {
    *error = Gnutls("TLS session", rc);
    return false;
  }
  session_ = s;
  gnutls_priority_set(s, static_cast<gnutls_priority_t>(creds_->priority_));
  gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, static_cast<gnutls_certificate_credentials_t>(creds_->creds_));
  // The chain against the CA, and over TCP the host (DNS name or IP address) against the certificate.
  gnutls_session_set_verify_cert(s, host.empty() ? nullptr : host.c_str(), 0);
  gnutls_transport_set_int(s, fd);
  gnutls_handshake_set_timeout(s, unsigned(timeout_ms));
  int rc;
  do {
    rc = gnutls_handshake(s);
  } while (rc < 0 && !gnutls_error_is_fatal(rc));
  if (rc == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
    const unsigned status = gnutls_session_get_verify_cert_status(s);
    gnutls_datum_t out{};
    gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0);
    std::string why(out.data ? reinterpret_cast<char*>(out.data) : "?");
    while (!why.empty() && why.back() == ' ') why.pop_back();
    *error = "the server's TLS certificate is not trusted: " + why;
    gnutls_free(out.data);
    return false;
  }
  if (rc < 0) {
    *error = Gnutls("TLS handshake failed", rc);
    return false;
  }
  return true;
}

// The socket is blocking: GNUTLS_E_AGAIN means its SO_RCVTIMEO/SO_SNDTIMEO
// ran out (the handshake phase), reported as EAGAIN like recv would.
ssize_t TlsClientSession::Recv(uint8_t* buf, size_t n) {
  for (;;) {
    const ssize_t r = gnutls_record_recv(static_cast<gnutls_session_t>(session_), buf, n);
    if (r == GNUTLS_E_INTERRUPTED) continue;
    if (r == GNUTLS_E_PREMATURE_TERMINATION) return 0;  // closed without a TLS goodbye
    return Result(r, &recv_error_);
  }
}

ssize_t TlsClientSession::Send(const uint8_t* buf, size_t n) {
  for (;;) {
    const ssize_t r = gnutls_record_send(static_cast<gnutls_session_t>(session_), buf, n);
    if (r == GNUTLS_E_INTERRUPTED) continue;
    return Result(r, &send_error_);
  }
}

ssize_t TlsClientSession::Result(ssize_t r, std::string* error) {
  if (r >= 0) return r;
  if (r == GNUTLS_E_AGAIN) {
    *error = "no answer in time";
    errno = EAGAIN;
  } else if (r == GNUTLS_E_PULL_ERROR || r == GNUTLS_E_PUSH_ERROR) {
    // The socket failed under TLS: after a TLS 1.3 handshake this is how a
    // server that refused the client's certificate is seen.
    *error = std::string("the TLS session was cut (") + std::strerror(errno) +
             "): does the server accept this client's certificate?";
    errno = EPROTO;
  } else {
    *error = std::string("TLS: ") + gnutls_strerror(int(r));
    errno = EPROTO;
  }
  return -1;
}

bool TlsClientSession::Pending() const {
  return session_ && gnutls_record_check_pending(static_cast<gnutls_session_t>(session_)) > 0;
}

void TlsClientSession::Bye() {
  if (session_) gnutls_bye(static_cast<gnutls_session_t>(session_), GNUTLS_SHUT_WR);
}

}  // namespace tidemark

#endif  // TIDEMARK_HAVE_GNUTLS
