// The NBD copier: a client connection (handshake and transmission), the
// target (file, block device or NBD export) and the per-connection worker.
// Design notes are in nbd_copy.h.
#include "nbd_copy.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>

#include "nbd_copy_tls.h"
#include "nbd_proto.h"

namespace tidemark {

namespace {

// Zero detection and hole granularity: a file system's block.
constexpr uint32_t kGranule = 4096;
constexpr uint64_t kOldstyleMagic = 0x00420281861253ULL;
// Connecting and the handshake give up after this long; transmission does
// not time out (a slow disk is not an error; Cancel ends a hung copy).
constexpr int kHandshakeSeconds = 30;

std::string ErrnoText(int e) {
  const char* name = strerrorname_np(e);
  return std::string(std::strerror(e)) + (name ? std::string(" (") + name + ")" : std::string());
}

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

// NBD error values are Linux errno numbers on the wire.
std::string NbdErrno(uint32_t e) {
  const char* name = strerrorname_np(int(e));
  return name ? std::string(name) + " (" + std::strerror(int(e)) + ")" : "error " + std::to_string(e);
}

// One NBD client connection. Blocking sockets: a worker waits in recv, and
// Cancel (or the first failure) shuts the socket down to wake it.
class Conn {
 public:
  ~Conn() {
    if (fd >= 0) close(fd);
    for (int s : failed_attempts_) close(s);
  }

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
  CopyError Open(const NbdEndpoint& e, const std::shared_ptr<TlsClientCredentials>& creds,
                 const std::function<void(int)>& on_socket, std::string* msg) {
    what = e.Describe();
    CopyError err = Connect(e, on_socket, msg);
    if (err != CopyError::kNone) return err;
    timeval tv{kHandshakeSeconds, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    err = Handshake(e, creds, msg);
    if (err != CopyError::kNone) return err;
    timeval none{0, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof none);
    return CopyError::kNone;
  }

  bool Send(const uint8_t* hdr, size_t hn, const uint8_t* data, size_t dn) {
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

  bool Request(uint16_t type, uint64_t handle, uint64_t offset, uint32_t length, const uint8_t* data = nullptr) {
    uint8_t h[nbd::kRequestSize];
    nbd::Put32(h, nbd::kRequestMagic);
    nbd::Put16(h + 4, 0);
    nbd::Put16(h + 6, type);
    nbd::Put64(h + 8, handle);
    nbd::Put64(h + 16, offset);
    nbd::Put32(h + 24, length);
    return Send(h, sizeof h, data, data ? length : 0);
  }

  // 1: n bytes read; 0: the peer closed first (after *got bytes); -1: errno.
  int Recv(void* p, size_t n, size_t* got = nullptr) {
    size_t have = 0;
    while (have < n) {
      const ssize_t r = tls ? tls->Recv(static_cast<uint8_t*>(p) + have, n - have)
                            : recv(fd, static_cast<uint8_t*>(p) + have, n - have, 0);
      if (r == 0) {
        if (got) *got = have;
        return 0;
      }
      if (r < 0) {
        if (errno == EINTR) continue;
        if (got) *got = have;
        return -1;
      }
      have += size_t(r);
    }
    return 1;
  }

  // Decrypted bytes that poll() cannot see.
  bool Pending() const { return tls && tls->Pending(); }

  // A failed Recv or Send as the end of a sentence: "closed the connection", the errno or the TLS error.
  std::string RecvFailure(int rc, int e) const {
    if (rc == 0) return "the server closed the connection";
    if (tls && e == EPROTO) return tls->error();
    if (e == EAGAIN || e == EWOULDBLOCK) return "no answer within " + std::to_string(kHandshakeSeconds) + " s";
    return ErrnoText(e);
  }

  // Reads one simple reply header; returns false with *msg on a broken stream.
  bool ReadReply(uint32_t* error, uint64_t* handle, std::string* msg) {
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

  void Disconnect() {
    Request(nbd::kCmdDisc, 0, 0, 0);
    if (tls) tls->Bye();
  }

 private:
  bool TlsSendAll(const uint8_t* p, size_t n) {
    while (n > 0) {
      const ssize_t w = tls->Send(p, n);
      if (w <= 0) return false;
      p += w;
      n -= size_t(w);
    }
    return true;
  }

  static std::string Hex(uint32_t v) {
    char b[16];
    snprintf(b, sizeof b, "%x", v);
    return b;
  }

  CopyError Connect(const NbdEndpoint& e, const std::function<void(int)>& on_socket, std::string* msg) {
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

  // An option request with no data or with `data`.
  bool SendOption(uint32_t opt, const std::vector<uint8_t>& data) {
    std::vector<uint8_t> out(16 + data.size());
    nbd::Put64(out.data(), nbd::kOptMagic);
    nbd::Put32(out.data() + 8, opt);
    nbd::Put32(out.data() + 12, uint32_t(data.size()));
    std::copy(data.begin(), data.end(), out.begin() + 16);
    return Send(out.data(), out.size(), nullptr, 0);
  }

  // One option reply: its type and body; kNone or the error with *msg.
  CopyError OptionReply(uint32_t opt, uint32_t* type, std::vector<uint8_t>* body, std::string* msg) {
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

  static std::string ReplyText(const std::vector<uint8_t>& body) {
    std::string text(body.begin(), body.end());
    for (char& ch : text)
      if (ch == '\n' || ch == '\r' || ch == '\t') ch = ' ';
    return text.empty() ? "" : ": " + text;
  }

  // NBD_OPT_STARTTLS, then the TLS handshake: every later byte is encrypted.
  CopyError StartTls(const NbdEndpoint& e, const std::shared_ptr<TlsClientCredentials>& creds, std::string* msg) {
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

  CopyError Handshake(const NbdEndpoint& e, const std::shared_ptr<TlsClientCredentials>& creds, std::string* msg) {
    const std::string& name = e.export_name;
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
    if (name.size() > 4096) {
      *msg = pre + ": the export name is over 4096 bytes";
      return CopyError::kProtocol;
    }
    uint8_t cflags[4];
    nbd::Put32(cflags, nbd::kClientFlagFixedNewstyle | (hflags & nbd::kFlagNoZeroes ? nbd::kClientFlagNoZeroes : 0));
    if (!Send(cflags, sizeof cflags, nullptr, 0)) {
      *msg = pre + " failed during the handshake: " + ErrnoText(errno);
      return CopyError::kProtocol;
    }
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

  // Sockets of failed TCP attempts: tracked for Cancel until Run ends, so
  // they are closed with the connection, never while their number could be
  // reused under Cancel's shutdown.
  std::vector<int> failed_attempts_;
};

// Calls fn(offset, length, zero) for each maximal run of kGranule pieces of
// p[0, n) that are all zeroes or not; stops at the first false.
template <class F>
bool ForEachRun(const uint8_t* p, uint32_t n, F fn) {
  uint32_t start = 0;
  bool zero = false;
  for (uint32_t at = 0; at < n; at += kGranule) {
    const bool z = IsAllZero(p + at, std::min(kGranule, n - at));
    if (at == 0) {
      zero = z;
    } else if (z != zero) {
      if (!fn(start, at - start, zero)) return false;
      start = at;
      zero = z;
    }
  }
  return n == 0 || fn(start, n - start, zero);
}

enum SlotState { kFree, kReading, kWriting };

struct Slot {
  std::vector<uint8_t> buf;
  uint64_t offset = 0;
  uint32_t length = 0;
  int pending = 0;  // target requests not yet answered
  SlotState state = kFree;
};

}  // namespace

std::string NbdEndpoint::Describe() const {
  return "export '" + export_name + "' on " + (unix_path.empty() ? host + ":" + std::to_string(port) : unix_path);
}

bool IsAllZero(const uint8_t* p, size_t n) {
  size_t i = 0;
  // 64 bytes at a time, OR-ed: compilers vectorize this; the early exit
  // makes data blocks cost a few bytes to classify.
  for (; i + 64 <= n; i += 64) {
    uint64_t w[8];
    std::memcpy(w, p + i, 64);
    if ((w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7]) != 0) return false;
  }
  for (; i < n; i++)
    if (p[i]) return false;
  return true;
}

struct NbdCopy::Shared {
  const CopyConfig* c = nullptr;
  std::vector<std::unique_ptr<Conn>> src, dst;
  int fd = -1;  // a file or device target
  bool device = false;
  bool skip_zeroes = false;
  bool write_zeroes = false;  // the NBD target takes WRITE_ZEROES
  std::string target_name;    // for error lines
  uint64_t size = 0;
  uint32_t block = 0;
  std::atomic<uint64_t> next{0};
  std::atomic<uint64_t> data_bytes{0}, data_runs{0}, zero_bytes{0};
};

void NbdCopy::Fail(CopyError e, const std::string& message) {
  std::lock_guard<std::mutex> lk(mu_);
  if (error_ == CopyError::kNone) {
    error_ = e;
    message_ = message;
  }
  stop_ = true;
  for (int fd : fds_) shutdown(fd, SHUT_RDWR);
}

void NbdCopy::Cancel() { Fail(CopyError::kCancelled, "the copy was cancelled"); }

void NbdCopy::Track(int fd) {
  std::lock_guard<std::mutex> lk(mu_);
  fds_.push_back(fd);
  if (stop_) shutdown(fd, SHUT_RDWR);
}

namespace {

bool WriteAll(int fd, const uint8_t* p, size_t n, uint64_t off, int* err) {
  while (n > 0) {
    const ssize_t w = pwrite(fd, p, n, off_t(off));
    if (w < 0) {
      if (errno == EINTR) continue;
      *err = errno;
      return false;
    }
    if (w == 0) {
      *err = ENOSPC;
      return false;
    }
    p += w;
    n -= size_t(w);
    off += uint64_t(w);
  }
  return true;
}

}  // namespace

bool NbdCopy::Worker(int index, Shared* s) {
  Conn& src = *s->src[size_t(index)];
  Conn* dst = s->c->target_is_nbd ? s->dst[size_t(index)].get() : nullptr;
  const int nslots = std::max(1, s->c->requests);
  std::vector<Slot> slots(static_cast<size_t>(nslots));
  int busy = 0, reading = 0;

  // Starts a READ into slot i if there is work left; false on failure.
  auto issue = [&](int i) -> bool {
    if (stop_) return false;
    const uint64_t off = s->next.fetch_add(s->block);
    if (off >= s->size) return true;
    Slot& sl = slots[size_t(i)];
    if (sl.buf.empty()) sl.buf.resize(s->block);
    sl.offset = off;
    sl.length = uint32_t(std::min<uint64_t>(s->block, s->size - off));
    sl.state = kReading;
    busy++;
    reading++;
    if (!src.Request(nbd::kCmdRead, uint64_t(i), off, sl.length)) {
      Fail(CopyError::kSource, "sending a READ to the NBD server for " + src.what + ": " + ErrnoText(errno));
      return false;
    }
    return true;
  };

  auto finished = [&](int i) -> bool {
    Slot& sl = slots[size_t(i)];
    sl.state = kFree;
    busy--;
    done_.fetch_add(sl.length, std::memory_order_relaxed);
    return issue(i);
  };

  // The data of slot i goes to a file or a device, synchronously.
  auto commit_local = [&](int i) -> bool {
    Slot& sl = slots[size_t(i)];
    int err = 0;
    uint64_t bad = 0;
    const bool ok = ForEachRun(sl.buf.data(), sl.length, [&](uint32_t at, uint32_t n, bool zero) {
      const uint64_t off = sl.offset + at;
      if (!zero) {
        s->data_bytes.fetch_add(n, std::memory_order_relaxed);
        s->data_runs.fetch_add(1, std::memory_order_relaxed);
        if (WriteAll(s->fd, sl.buf.data() + at, n, off, &err)) return true;
        bad = off;
        return false;
      }
      s->zero_bytes.fetch_add(n, std::memory_order_relaxed);
      if (s->skip_zeroes) return true;
      uint64_t range[2] = {off, n};
      if (ioctl(s->fd, BLKZEROOUT, range) == 0) return true;
      // No BLKZEROOUT here: the run is zeroes in the buffer, write it.
      if (WriteAll(s->fd, sl.buf.data() + at, n, off, &err)) return true;
      bad = off;
      return false;
    });
    if (!ok) {
      Fail(CopyError::kTarget, "writing " + s->target_name + " at " + std::to_string(bad) + ": " + ErrnoText(err));
      return false;
    }
    return finished(i);
  };

  // The data of slot i goes to the NBD target: requests are sent, the slot
  // is finished when the target has answered them all.
  auto commit_nbd = [&](int i) -> bool {
    Slot& sl = slots[size_t(i)];
    sl.pending = 0;
    sl.state = kWriting;
    const bool ok = ForEachRun(sl.buf.data(), sl.length, [&](uint32_t at, uint32_t n, bool zero) {
      const uint64_t off = sl.offset + at;
      bool sent;
      if (!zero) {
        s->data_bytes.fetch_add(n, std::memory_order_relaxed);
        s->data_runs.fetch_add(1, std::memory_order_relaxed);
        sent = dst->Request(nbd::kCmdWrite, uint64_t(i), off, n, sl.buf.data() + at);
      } else {
        s->zero_bytes.fetch_add(n, std::memory_order_relaxed);
        if (s->skip_zeroes) return true;
        sent = s->write_zeroes ? dst->Request(nbd::kCmdWriteZeroes, uint64_t(i), off, n)
                               : dst->Request(nbd::kCmdWrite, uint64_t(i), off, n, sl.buf.data() + at);
      }
      if (!sent) {
        Fail(CopyError::kTarget, "sending a write to the NBD target " + dst->what + ": " + ErrnoText(errno));
        return false;
      }
      sl.pending++;
      return true;
    });
    if (!ok) return false;
    return sl.pending ? true : finished(i);
  };

  auto source_reply = [&]() -> bool {
    uint32_t error;
    uint64_t handle;
    std::string msg;
    if (!src.ReadReply(&error, &handle, &msg)) {
      Fail(CopyError::kSource, msg);
      return false;
    }
    if (handle >= uint64_t(nslots) || slots[size_t(handle)].state != kReading) {
      Fail(CopyError::kProtocol, "the NBD server for " + src.what + " replied to handle " + std::to_string(handle) +
                                     ", which is not in flight");
      return false;
    }
    const int i = int(handle);
    Slot& sl = slots[size_t(i)];
    const std::string req = "READ of " + std::to_string(sl.length) + " bytes at " + std::to_string(sl.offset);
    if (error) {
      Fail(CopyError::kSource, "the NBD server for " + src.what + " failed a " + req + ": " + NbdErrno(error));
      return false;
    }
    size_t got = 0;
    const int rc = src.Recv(sl.buf.data(), sl.length, &got);
    if (rc != 1) {
      Fail(CopyError::kSource, "short read: the NBD server for " + src.what + " sent " + std::to_string(got) + " of " +
                                   std::to_string(sl.length) + " bytes of a " + req + " (" +
                                   src.RecvFailure(rc, errno) + ")");
      return false;
    }
    reading--;
    return dst ? commit_nbd(i) : commit_local(i);
  };

  auto target_reply = [&]() -> bool {
    uint32_t error;
    uint64_t handle;
    std::string msg;
    if (!dst->ReadReply(&error, &handle, &msg)) {
      Fail(CopyError::kTarget, msg);
      return false;
    }
    if (handle >= uint64_t(nslots) || slots[size_t(handle)].state != kWriting) {
      Fail(CopyError::kProtocol, "the NBD target " + dst->what + " replied to handle " + std::to_string(handle) +
                                     ", which is not in flight");
      return false;
    }
    Slot& sl = slots[size_t(handle)];
    if (error) {
      Fail(CopyError::kTarget, "the NBD target " + dst->what + " failed a write in the block at " +
                                   std::to_string(sl.offset) + ": " + NbdErrno(error));
      return false;
    }
    return --sl.pending ? true : finished(int(handle));
  };

  for (int i = 0; i < nslots; i++)
    if (!issue(i)) return false;
  while (busy > 0) {
    if (stop_) return false;
    if (!dst) {
      if (!source_reply()) return false;
      continue;
    }
    // Replies TLS has already decrypted: poll() would not see them.
    if (dst->Pending()) {
      if (!target_reply()) return false;
      continue;
    }
    if (reading && src.Pending()) {
      if (!source_reply()) return false;
      continue;
    }
    pollfd p[2] = {{src.fd, short(reading ? POLLIN : 0), 0}, {dst->fd, POLLIN, 0}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      Fail(CopyError::kSource, std::string("poll: ") + ErrnoText(errno));
      return false;
    }
    // The target's replies first: they free buffers.
    if (p[1].revents) {
      if (!target_reply()) return false;
    } else if (p[0].revents) {
      if (!source_reply()) return false;
    }
  }
  if (stop_) return false;
  if (dst && s->c->sync && (dst->flags & nbd::kTxSendFlush)) {
    // Each connection flushes the writes it made (multi-conn or not, that
    // covers every write of the copy).
    uint32_t error;
    uint64_t handle;
    std::string msg;
    if (!dst->Request(nbd::kCmdFlush, uint64_t(nslots), 0, 0)) {
      Fail(CopyError::kTarget, "sending FLUSH to the NBD target " + dst->what + ": " + ErrnoText(errno));
      return false;
    }
    if (!dst->ReadReply(&error, &handle, &msg)) {
      Fail(CopyError::kTarget, msg);
      return false;
    }
    if (error) {
      Fail(CopyError::kTarget, "the NBD target " + dst->what + " failed a FLUSH: " + NbdErrno(error));
      return false;
    }
  }
  return true;
}

bool NbdCopy::Run(const CopyConfig& c, CopyResult* r) {
  done_ = 0;
  size_ = 0;
  Shared s;
  s.c = &c;
  auto track = [this](int fd) { Track(fd); };
  auto result = [&](bool ok) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      fds_.clear();  // the connections close below; their numbers may be reused
      r->error = ok ? CopyError::kNone : error_;
      r->message = ok ? std::string() : message_;
    }
    for (auto& x : s.src)
      if (ok) x->Disconnect();
    for (auto& x : s.dst)
      if (ok) x->Disconnect();
    s.src.clear();
    s.dst.clear();
    if (s.fd >= 0 && close(s.fd) != 0 && ok) {
      r->error = CopyError::kTarget;
      r->message = "closing " + s.target_name + ": " + ErrnoText(errno);
      ok = false;
    }
    r->data_bytes = s.data_bytes;
    r->data_runs = s.data_runs;
    r->zero_bytes = s.zero_bytes;
    return ok;
  };

  // TLS: the same files for the source and an NBD target.
  std::string msg;
  std::shared_ptr<TlsClientCredentials> creds;
  if (!c.tls_cert.empty()) {
    creds = TlsClientCredentials::Load(c.tls_cert, c.tls_key, c.tls_ca, &msg);
    if (!creds) {
      Fail(CopyError::kTlsFiles, msg);
      return result(false);
    }
  }

  // The source: the first connection says whether more are allowed.
  s.src.push_back(std::make_unique<Conn>());
  CopyError e = s.src[0]->Open(c.source, creds, track, &msg);
  if (e != CopyError::kNone) {
    Fail(e, msg);
    return result(false);
  }
  s.size = s.src[0]->size;
  size_ = s.size;
  r->size = s.size;
  int conns = std::clamp(c.connections, 1, 64);
  if (!(s.src[0]->flags & nbd::kTxCanMultiConn)) conns = 1;
  for (int i = 1; i < conns; i++) {
    s.src.push_back(std::make_unique<Conn>());
    e = s.src.back()->Open(c.source, creds, track, &msg);
    if (e != CopyError::kNone) {
      Fail(e, msg);
      return result(false);
    }
    if (s.src.back()->size != s.size) {
      Fail(CopyError::kProtocol, "the NBD server for " + c.source.Describe() + " gave two connections different sizes");
      return result(false);
    }
  }
  uint32_t block = std::max<uint32_t>(c.request_bytes, kGranule);
  block = std::min(block, s.src[0]->max_block);

  // The target.
  s.skip_zeroes = c.target_zeroed;
  if (c.target_is_nbd) {
    r->target_kind = "nbd";
    s.target_name = c.target_nbd.Describe();
    for (int i = 0; i < conns; i++) {
      s.dst.push_back(std::make_unique<Conn>());
      e = s.dst.back()->Open(c.target_nbd, creds, track, &msg);
      if (e != CopyError::kNone) {
        // Whatever failed, it is the target's: not a reason to read the source another way.
        Fail(CopyError::kTarget, "the NBD target: " + msg);
        return result(false);
      }
      const Conn& d = *s.dst.back();
      if (d.flags & nbd::kTxReadOnly) {
        Fail(CopyError::kTarget, "the NBD target " + d.what + " is read-only");
        return result(false);
      }
      if (d.size < s.size) {
        Fail(CopyError::kTarget, "the NBD target " + d.what + " holds " + std::to_string(d.size) + " bytes, fewer than the " +
                                     std::to_string(s.size) + " of " + c.source.Describe());
        return result(false);
      }
      block = std::min(block, d.max_block);
    }
    s.write_zeroes = (s.dst[0]->flags & nbd::kTxSendWriteZeroes) != 0;
  } else {
    s.target_name = c.target_path;
    struct stat st{};
    const bool exists = stat(c.target_path.c_str(), &st) == 0;
    s.device = exists && S_ISBLK(st.st_mode);
    r->target_kind = s.device ? "device" : "file";
    s.fd = s.device ? open(c.target_path.c_str(), O_WRONLY | O_CLOEXEC)
                    : open(c.target_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (s.fd < 0) {
      Fail(CopyError::kTarget, "cannot open " + c.target_path + " for writing: " + ErrnoText(errno));
      return result(false);
    }
    if (s.device) {
      uint64_t bytes = 0;
      if (ioctl(s.fd, BLKGETSIZE64, &bytes) != 0 || bytes < s.size) {
        Fail(CopyError::kTarget, "the block device " + c.target_path + " holds " + std::to_string(bytes) +
                                     " bytes, fewer than the " + std::to_string(s.size) + " of " + c.source.Describe());
        return result(false);
      }
    } else {
      if (fstat(s.fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        Fail(CopyError::kTarget, c.target_path + " is neither a regular file nor a block device");
        return result(false);
      }
      // Created empty: the size, then only the data; zero runs stay holes.
      if (ftruncate(s.fd, off_t(s.size)) != 0) {
        Fail(CopyError::kTarget, "cannot size " + c.target_path + " to " + std::to_string(s.size) + " bytes: " + ErrnoText(errno));
        return result(false);
      }
      s.skip_zeroes = true;
    }
  }
  if (block >= kGranule) block -= block % kGranule;
  s.block = block;
  r->connections = conns;
  r->request_bytes = block;

  if (s.size > 0) {
    std::vector<std::thread> threads;
    for (int i = 1; i < conns; i++) threads.emplace_back([this, i, &s] { Worker(i, &s); });
    Worker(0, &s);
    for (auto& t : threads) t.join();
  }
  if (stop_) return result(false);
  if (c.sync && s.fd >= 0 && fdatasync(s.fd) != 0) {
    Fail(CopyError::kTarget, "syncing " + c.target_path + ": " + ErrnoText(errno));
    return result(false);
  }
  return result(true);
}

}  // namespace tidemark
