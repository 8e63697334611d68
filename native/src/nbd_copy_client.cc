#include "nbd_copy_client.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace tidemark::nbdcopy {

namespace {

constexpr uint64_t kOldstyleMagic = 0x00420281861253ULL;
// Connecting and the handshake give up after this long; transmission does
// not time out (a slow disk is not an error; Cancel ends a hung copy).
constexpr int kHandshakeSeconds = 30;

const char* RepErrName(uint32_t type) {
  switch (type & ~nbd::kRepErrBit) {
    case 1: return "NBD_REP_ERR_UNSUP";
    case 2: return "NBD_REP_ERR_POLICY";
    case 3: return "NBD_REP_ERR_INVALID";
    case 4: return "NBD_REP_ERR_PLATFORM";
    case 5: return "NBD_REP_ERR_TLS_REQD";
    case 6: return "NBD_REP_ERR_UNKNOWN";
    case 7: return "NBD_REP_ERR_SHUTDOWN";
    case 8: return "NBD_REP_ERR_BLOCK_SIZE_REQD";
    case 9: return "NBD_REP_ERR_TOO_BIG";
    case 10: return "NBD_REP_ERR_EXT_HEADER_REQD";
    default: return "an unknown NBD_REP_ERR";
  }
}

}  // namespace

std::string ErrnoText(int e) {
  const char* name = strerrorname_np(e);
  return std::string(std::strerror(e)) + (name ? std::string(" (") + name + ")" : std::string());
}

std::string NbdErrno(uint32_t e) {
  const char* name = strerrorname_np(int(e));
  return name ? std::string(name) + " (" + std::strerror(int(e)) + ")" : "error " + std::to_string(e);
}

Connection::~Connection() {
  if (fd >= 0) close(fd);
  for (int s : failed_attempts_) close(s);
}

CopyError Connection::Negotiate(const NbdEndpoint& e, const std::function<void(int)>& on_socket, std::string* msg,
                                const std::function<CopyError()>& talk) {
  what = e.Describe();
  CopyError err = Connect(e, on_socket, msg);
  if (err != CopyError::kNone) return err;
  timeval tv{kHandshakeSeconds, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  err = talk();
  // Requests (and a server copy's ranges) take as long as the disks need:
  // no timeout from here (Cancel ends a hung copy).
  timeval none{0, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof none);
  return err;
}

CopyError Connection::Open(const NbdEndpoint& e, const std::shared_ptr<TlsCredentials>& creds,
                           const std::function<void(int)>& on_socket, std::string* msg) {
  return Negotiate(e, on_socket, msg, [&] { return Handshake(e, creds, msg); });
}

bool Connection::Send(const uint8_t* hdr, size_t hn, const uint8_t* data, size_t dn) {
  if (tls) return TlsSendAll(hdr, hn) && (!dn || TlsSendAll(data, dn));
  iovec iov[2] = {{const_cast<uint8_t*>(hdr), hn}, {const_cast<uint8_t*>(data), dn}};
  int cnt = dn ? 2 : 1;
  iovec* v = iov;
  while (cnt > 0) {
    msghdr m{};
    m.msg_iov = v;
    m.msg_iovlen = size_t(cnt);
    const ssize_t n = sendmsg(fd, &m, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    size_t left = size_t(n);
    while (cnt > 0 && left >= v->iov_len) {
      left -= v->iov_len;
      v++;
      cnt--;
    }
    if (cnt > 0) {
      v->iov_base = static_cast<uint8_t*>(v->iov_base) + left;
      v->iov_len -= left;
    }
  }
  return true;
}

bool Connection::Request(uint16_t type, uint64_t handle, uint64_t offset, uint32_t length, const uint8_t* data) {
  uint8_t h[nbd::kRequestSize];
  nbd::Put32(h, nbd::kRequestMagic);
  nbd::Put16(h + 4, 0);
  nbd::Put16(h + 6, type);
  nbd::Put64(h + 8, handle);
  nbd::Put64(h + 16, offset);
  nbd::Put32(h + 24, length);
  return Send(h, sizeof h, data, data ? length : 0);
}

int Connection::Recv(void* p, size_t n, size_t* got) {
  size_t have = 0;
  while (have < n) {
    const ssize_t r = RecvSome(static_cast<uint8_t*>(p) + have, n - have);
    if (r <= 0) {
      if (got) *got = have;
      return r == 0 ? 0 : -1;
    }
    have += size_t(r);
  }
  return 1;
}

ssize_t Connection::RecvSome(void* p, size_t n) {
  for (;;) {
    const ssize_t r = tls ? tls->Recv(static_cast<uint8_t*>(p), n) : recv(fd, p, n, 0);
    if (r < 0 && errno == EINTR) continue;
    return r;
  }
}

std::string Connection::RecvFailure(int rc, int e) const {
  if (rc == 0) return "the server closed the connection";
  if (tls && e == EPROTO) return tls->error();
  if (e == EAGAIN || e == EWOULDBLOCK) return "no answer within " + std::to_string(kHandshakeSeconds) + " s";
  return ErrnoText(e);
}

bool Connection::ReadReply(uint32_t* error, uint64_t* handle, std::string* msg) {
  uint8_t r[nbd::kSimpleReplySize];
  const int rc = Recv(r, sizeof r);
  if (rc != 1) {
    *msg = "the NBD server for " + what + " failed while replying: " + RecvFailure(rc, errno);
    return false;
  }
  const uint32_t magic = nbd::Get32(r);
  if (magic != nbd::kSimpleReplyMagic) {
    *msg = "the NBD server for " + what + " sent a bad reply magic (0x" + Hex(magic) + ")";
    return false;
  }
  *error = nbd::Get32(r + 4);
  *handle = nbd::Get64(r + 8);
  return true;
}

void Connection::Disconnect() {
  Request(nbd::kCmdDisc, 0, 0, 0);
  if (tls) tls->Bye();
}

bool Connection::TlsSendAll(const uint8_t* p, size_t n) {
  while (n > 0) {
    const ssize_t w = tls->Send(p, n);
    if (w <= 0) return false;
    p += w;
    n -= size_t(w);
  }
  return true;
}

std::string Connection::Hex(uint32_t v) {
  char b[16];
  snprintf(b, sizeof b, "%x", v);
  return b;
}

CopyError Connection::Connect(const NbdEndpoint& e, const std::function<void(int)>& on_socket, std::string* msg) {
  if (!e.unix_path.empty()) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (e.unix_path.size() >= sizeof a.sun_path) {
      *msg = "cannot connect to the NBD server for " + what + ": the socket path is too long";
      return CopyError::kConnect;
    }
    std::memcpy(a.sun_path, e.unix_path.data(), e.unix_path.size());
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      *msg = "cannot connect to the NBD server for " + what + ": " + ErrnoText(errno);
      return CopyError::kConnect;
    }
    on_socket(fd);
    if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      *msg = "cannot connect to the NBD server for " + what + ": " + ErrnoText(errno);
      return CopyError::kConnect;
    }
    return CopyError::kNone;
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const int g = getaddrinfo(e.host.c_str(), std::to_string(e.port).c_str(), &hints, &res);
  if (g != 0) {
    *msg = "cannot connect to the NBD server for " + what + ": " + gai_strerror(g);
    return CopyError::kConnect;
  }
  int last = ECONNREFUSED;
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    int s = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (s < 0) {
      last = errno;
      continue;
    }
    on_socket(s);
    timeval tv{kHandshakeSeconds, 0};
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);  // bounds connect() too
    if (connect(s, ai->ai_addr, ai->ai_addrlen) == 0) {
      fd = s;
      break;
    }
    last = errno;
    failed_attempts_.push_back(s);
  }
  freeaddrinfo(res);
  if (fd < 0) {
    *msg = "cannot connect to the NBD server for " + what + ": " + ErrnoText(last);
    return CopyError::kConnect;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return CopyError::kNone;
}

bool Connection::SendOption(uint32_t opt, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> out(16 + data.size());
  nbd::Put64(out.data(), nbd::kOptMagic);
  nbd::Put32(out.data() + 8, opt);
  nbd::Put32(out.data() + 12, uint32_t(data.size()));
  std::copy(data.begin(), data.end(), out.begin() + 16);
  return Send(out.data(), out.size(), nullptr, 0);
}

CopyError Connection::OptionReply(uint32_t opt, uint32_t* type, std::vector<uint8_t>* body, std::string* msg) {
  const std::string pre = "the NBD server for " + what;
  uint8_t h[20];
  int rc = Recv(h, sizeof h);
  if (rc != 1) {
    *msg = pre + " failed during the handshake: " + RecvFailure(rc, errno);
    return CopyError::kProtocol;
  }
  *type = nbd::Get32(h + 12);
  const uint32_t len = nbd::Get32(h + 16);
  if (nbd::Get64(h) != nbd::kOptReplyMagic || nbd::Get32(h + 8) != opt) {
    *msg = pre + " sent a bad option reply";
    return CopyError::kProtocol;
  }
  if (len > nbd::kMaxOptionLength) {
    *msg = pre + " sent an option reply of " + std::to_string(len) + " bytes, which is not plausible";
    return CopyError::kProtocol;
  }
  body->resize(len);
  if (len && (rc = Recv(body->data(), len)) != 1) {
    *msg = pre + " failed during the handshake: " + RecvFailure(rc, errno);
    return CopyError::kProtocol;
  }
  return CopyError::kNone;
}

std::string Connection::ReplyText(const std::vector<uint8_t>& body) {
  std::string text(body.begin(), body.end());
  for (char& ch : text)
    if (ch == '\n' || ch == '\r' || ch == '\t') ch = ' ';
  return text.empty() ? "" : ": " + text;
}

CopyError Connection::StartTls(const NbdEndpoint& e, const std::shared_ptr<TlsCredentials>& creds, std::string* msg) {
  const std::string pre = "the NBD server for " + what;
  if (!SendOption(nbd::kOptStartTls, {})) {
    *msg = pre + " failed during the handshake: " + ErrnoText(errno);
    return CopyError::kProtocol;
  }
  uint32_t type;
  std::vector<uint8_t> body;
  if (CopyError err = OptionReply(nbd::kOptStartTls, &type, &body, msg); err != CopyError::kNone) return err;
  if (type & nbd::kRepErrBit) {
    *msg = pre + " does not offer TLS (" + RepErrName(type) + ReplyText(body) + "), which the TLS files given require";
    return CopyError::kTlsRequired;
  }
  if (type != nbd::kRepAck) {
    *msg = pre + " answered NBD_OPT_STARTTLS with something else than an acknowledgement";
    return CopyError::kProtocol;
  }
  tls = std::make_unique<TlsClientSession>(creds);
  std::string why;
  if (!tls->Handshake(fd, e.unix_path.empty() ? e.host : std::string(), kHandshakeSeconds * 1000, &why)) {
    *msg = pre + ": " + why;
    return CopyError::kRefused;
  }
  return CopyError::kNone;
}

CopyError Connection::Greet(const NbdEndpoint& e, std::string* msg) {
  const std::string pre = "the NBD server for " + what;
  uint8_t hello[18];
  int rc = Recv(hello, sizeof hello);
  if (rc != 1) {
    *msg = pre + " failed during the handshake: " + RecvFailure(rc, errno);
    return CopyError::kProtocol;
  }
  if (nbd::Get64(hello) != nbd::kNbdMagic) {
    *msg = pre + " is not an NBD server (no NBDMAGIC greeting)";
    return CopyError::kProtocol;
  }
  const uint64_t style = nbd::Get64(hello + 8);
  if (style == kOldstyleMagic) {
    *msg = pre + " speaks only the oldstyle handshake, which has no export names";
    return CopyError::kProtocol;
  }
  const uint16_t hflags = nbd::Get16(hello + 16);
  if (style != nbd::kOptMagic || !(hflags & nbd::kFlagFixedNewstyle)) {
    *msg = pre + " does not offer the fixed newstyle handshake";
    return CopyError::kProtocol;
  }
  if (e.export_name.size() > 4096) {
    *msg = pre + ": the export name is over 4096 bytes";
    return CopyError::kProtocol;
  }
  uint8_t cflags[4];
  nbd::Put32(cflags, nbd::kClientFlagFixedNewstyle | (hflags & nbd::kFlagNoZeroes ? nbd::kClientFlagNoZeroes : 0));
  if (!Send(cflags, sizeof cflags, nullptr, 0)) {
    *msg = pre + " failed during the handshake: " + ErrnoText(errno);
    return CopyError::kProtocol;
  }
  return CopyError::kNone;
}

CopyError Connection::OpenForCopy(const NbdEndpoint& e, const std::function<void(int)>& on_socket, std::string* msg) {
  return Negotiate(e, on_socket, msg, [&] { return Greet(e, msg); });
}

CopyError Connection::ServerCopy(const std::string& name, int target, uint64_t offset, uint64_t length,
                                 bool write_zeroes, CopyTally* t, bool* unsupported, std::string* msg) {
  const std::string pre = "the NBD server for " + what;
  *unsupported = false;
  std::vector<uint8_t> out(16 + 4 + name.size() + 20);
  nbd::Put64(out.data(), nbd::kOptMagic);
  nbd::Put32(out.data() + 8, nbd::kOptTidemarkCopy);
  nbd::Put32(out.data() + 12, uint32_t(out.size() - 16));
  uint8_t* d = out.data() + 16;
  nbd::Put32(d, uint32_t(name.size()));
  std::memcpy(d + 4, name.data(), name.size());
  nbd::Put64(d + 4 + name.size(), offset);
  nbd::Put64(d + 12 + name.size(), length);
  nbd::Put32(d + 20 + name.size(), write_zeroes ? nbd::kCopyWriteZeroes : 0);
  // The target's descriptor rides with the option's first byte.
  iovec v{out.data(), out.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr m{};
  m.msg_iov = &v;
  m.msg_iovlen = 1;
  m.msg_control = control;
  m.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&m);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &target, sizeof target);
  ssize_t n;
  do n = sendmsg(fd, &m, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    *msg = pre + " failed during the handshake: " + ErrnoText(errno);
    return CopyError::kProtocol;
  }
  if (size_t(n) < out.size() && !Send(out.data() + n, out.size() - size_t(n), nullptr, 0)) {
    *msg = pre + " failed during the handshake: " + ErrnoText(errno);
    return CopyError::kProtocol;
  }
  bool answered = false;
  uint8_t status = nbd::kCopied;
  std::string why;
  for (;;) {
    uint32_t type;
    std::vector<uint8_t> body;
    if (CopyError err = OptionReply(nbd::kOptTidemarkCopy, &type, &body, msg); err != CopyError::kNone) return err;
    if (type & nbd::kRepErrBit) {
      *unsupported = type == nbd::kRepErrUnsup;
      *msg = pre + " refused to copy it (" + RepErrName(type) + ")" + ReplyText(body);
      return CopyError::kRefused;
    }
    if (type == nbd::kRepAck) break;
    if (type != nbd::kRepTidemarkCopied || body.size() < 25) continue;
    answered = true;
    status = body[0];
    t->data_bytes += nbd::Get64(body.data() + 1);
    t->data_runs += nbd::Get64(body.data() + 9);
    t->zero_bytes += nbd::Get64(body.data() + 17);
    why.assign(body.begin() + 25, body.end());
  }
  if (!answered) {
    *msg = pre + " acknowledged TIDEMARK_COPY without saying what it copied";
    return CopyError::kProtocol;
  }
  if (status == nbd::kCopied) return CopyError::kNone;
  *msg = pre + " could not copy " + std::to_string(length) + " bytes at " + std::to_string(offset) + ": " + why;
  return status == nbd::kCopyTargetFailed ? CopyError::kTarget : CopyError::kSource;
}

CopyError Connection::Handshake(const NbdEndpoint& e, const std::shared_ptr<TlsCredentials>& creds, std::string* msg) {
  const std::string& name = e.export_name;
  const std::string pre = "the NBD server for " + what;
  if (CopyError err = Greet(e, msg); err != CopyError::kNone) return err;
  if (creds && e.unix_path.empty()) {
    // Over a network, with certificates, nothing goes in the clear.
    if (CopyError err = StartTls(e, creds, msg); err != CopyError::kNone) return err;
  }
  // NBD_OPT_GO with one information request: the block sizes.
  std::vector<uint8_t> go(4 + name.size() + 2 + 2);
  nbd::Put32(go.data(), uint32_t(name.size()));
  std::memcpy(go.data() + 4, name.data(), name.size());
  nbd::Put16(go.data() + 4 + name.size(), 1);
  nbd::Put16(go.data() + 6 + name.size(), nbd::kInfoBlockSize);
  if (!SendOption(nbd::kOptGo, go)) {
    *msg = pre + " failed during the handshake: " + ErrnoText(errno);
    return CopyError::kProtocol;
  }
  bool have_size = false;
  for (;;) {
    uint32_t type;
    std::vector<uint8_t> body;
    if (CopyError err = OptionReply(nbd::kOptGo, &type, &body, msg); err != CopyError::kNone) return err;
    if (type & nbd::kRepErrBit) {
      const bool tls_reqd = (type & ~nbd::kRepErrBit) == 5;
      if (tls_reqd && creds && !tls) {
        // A unix socket whose server wants TLS all the same: start it and ask again.
        if (CopyError err = StartTls(e, creds, msg); err != CopyError::kNone) return err;
        if (!SendOption(nbd::kOptGo, go)) {
          *msg = pre + " failed during the handshake: " + RecvFailure(-1, errno);
          return CopyError::kProtocol;
        }
        continue;
      }
      *msg = pre + " refused it (" + RepErrName(type) + ")" + ReplyText(body);
      return tls_reqd ? CopyError::kTlsRequired : CopyError::kRefused;
    }
    if (type == nbd::kRepAck) break;
    if (type != nbd::kRepInfo || body.size() < 2) continue;  // replies we did not ask for are skipped
    const uint16_t info = nbd::Get16(body.data());
    if (info == nbd::kInfoExport && body.size() >= 12) {
      size = nbd::Get64(body.data() + 2);
      flags = nbd::Get16(body.data() + 10);
      have_size = true;
    } else if (info == nbd::kInfoBlockSize && body.size() >= 14) {
      const uint32_t mx = nbd::Get32(body.data() + 10);
      if (mx) max_block = std::min(mx, nbd::kMaxPayload);
    }
  }
  if (!have_size) {
    *msg = pre + " ended NBD_OPT_GO without saying the export's size";
    return CopyError::kProtocol;
  }
  return CopyError::kNone;
}

}  // namespace tidemark::nbdcopy
