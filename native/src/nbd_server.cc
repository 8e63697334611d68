#include "nbd_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>

#include "nbd_proto.h"

namespace tidemark {

using namespace nbd;

namespace {

constexpr size_t kInBuffer = 256 * 1024;
// Per connection: requests run at once (qemu asks 16 deep, the kernel's
// client up to 128; beyond a few threads a connection gains nothing on a
// page-cache write, while a read that waits on a disk or a fetch does).
constexpr size_t kMaxWorkers = 8;
// Read and not yet answered, per connection: at most this many requests, and
// no new one once their READ and WRITE bytes reach kMaxInFlightBytes (one
// request of the largest size still goes through).
constexpr size_t kMaxInFlight = 64;
// The largest WRITE or READ the reader runs itself (RunsInline); a READ it
// ran that took longer than kSlowReadUs (a disk or a fetch, not the page
// cache) sends the next kReadsToWorkers reads to the workers.
constexpr uint32_t kInlineMax = 64 * 1024;
constexpr int kSlowReadUs = 50;
constexpr uint32_t kReadsToWorkers = 256;
constexpr size_t kMaxInFlightBytes = 64 << 20;
// Buffers kept for reuse per connection: up to 4 MiB each, 32 MiB in all.
constexpr size_t kPoolBufferMax = 4 << 20;
constexpr size_t kPoolBytes = 32 << 20;
constexpr uint32_t kMaxWarnings = 10;
// A client that starts TLS and then stalls is cut after this.
constexpr int kTlsHandshakeMs = 10000;

std::string Hex(uint64_t v) {
  char b[24];
  std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
  return b;
}

const char* CommandName(uint16_t t) {
  switch (t) {
    case kCmdRead: return "READ";
    case kCmdWrite: return "WRITE";
    case kCmdDisc: return "DISC";
    case kCmdFlush: return "FLUSH";
    case kCmdTrim: return "TRIM";
    case kCmdWriteZeroes: return "WRITE_ZEROES";
    default: return "command";
  }
}

// A client on a unix socket is the uid the kernel recorded when it
// connected (SO_PEERCRED): "uid:N", as the appliance's gRPC unix listener
// names local users (appliance/unix-listener.ts). That is its identity
// until STARTTLS replaces it with its certificate's (which can never be
// "uid:...", nbd_tls.cc). A TCP client has none.
std::string PeerUidIdentity(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0 || ss.ss_family != AF_UNIX) return std::string();
  ucred cred{};
  socklen_t clen = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0 || clen != sizeof cred) return std::string();
  return "uid:" + std::to_string(cred.uid);
}

// One client connection: handshake, then requests served concurrently.
class Connection {
 public:
  Connection(int fd, uint64_t id, ExportSet& exports, const std::shared_ptr<TlsCredentials>& tls, const LogFn& log,
             std::atomic<uint64_t>& rejected_handshakes, std::atomic<const Export*>* serving = nullptr,
             HandshakeClock* clock = nullptr)
      : fd_(fd), id_(id), exports_(exports), tls_creds_(tls), log_(log), rejected_handshakes_(rejected_handshakes),
        serving_(serving), clock_(clock), in_(kInBuffer) {
    identity_ = PeerUidIdentity(fd_);
  }

  ~Connection() { DropPassedFd(); }

  void Run() {
    const bool served = Handshake();
    if (clock_) clock_->done = true;  // the acceptor's deadline no longer applies
    handshaking_ = false;
    DropPassedFd();
    copy_export_.reset();
    if (served) {
      vol_->CountConnection(1);
      Transmission();
      vol_->CountConnection(-1);
      if (rejected_ > kMaxWarnings) {
        Log(kLogWarn, std::to_string(rejected_) + " requests were rejected on this connection in all");
      }
    }
    FlushOut();
    if (tls_) tls_->Bye();
  }

 private:
  void Log(int level, const std::string& msg) {
    std::string who = "nbd connection " + std::to_string(id_);
    if (!identity_.empty()) who += " (" + identity_ + ")";
    if (vol_) who += " (volume " + vol_->name() + ")";
    log_(level, who + ": " + msg);
  }
  void Warn(const std::string& msg) {
    warnings_++;
    if (warnings_ <= kMaxWarnings) Log(kLogWarn, msg);
    if (warnings_ == kMaxWarnings) Log(kLogWarn, "further warnings on this connection are not logged (still counted)");
  }
  void RejectHandshake(const std::string& msg) {
    rejected_handshakes_++;
    Warn(msg + "; closing the connection");
  }

  // ---- buffered I/O ----
  bool Recv(uint8_t* dst, size_t n, size_t* got) {
    for (;;) {
      const ssize_t r = tls_ ? tls_->Recv(dst, n) : handshaking_ ? RecvWithFds(dst, n) : recv(fd_, dst, n, 0);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return false;
      *got = size_t(r);
      return true;
    }
  }
  // During the handshake a unix socket client may pass a file descriptor
  // with its bytes (NBD_OPT_TIDEMARK_COPY's target): kept until an option
  // takes it or the handshake ends; only the latest is kept. A plain recv
  // would drop it (the kernel closes descriptors nobody receives).
  ssize_t RecvWithFds(uint8_t* dst, size_t n) {
    iovec v{dst, n};
    alignas(cmsghdr) char control[CMSG_SPACE(4 * sizeof(int))];
    msghdr m{};
    m.msg_iov = &v;
    m.msg_iovlen = 1;
    m.msg_control = control;
    m.msg_controllen = sizeof control;
    const ssize_t r = recvmsg(fd_, &m, MSG_CMSG_CLOEXEC);
    if (r < 0) return r;
    for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; i++) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        DropPassedFd();
        passed_fd_ = fd;
      }
    }
    return r;
  }
  void DropPassedFd() {
    if (passed_fd_ >= 0) ::close(passed_fd_);
    passed_fd_ = -1;
  }

  // Reads exactly n bytes; *partial says whether any were read before a failure.
  bool ReadExact(uint8_t* dst, size_t n, bool* partial = nullptr) {
    size_t done = 0;
    while (done < n) {
      if (in_pos_ < in_len_) {
        const size_t take = std::min(n - done, in_len_ - in_pos_);
        std::memcpy(dst + done, &in_[in_pos_], take);
        in_pos_ += take;
        done += take;
        continue;
      }
      // About to block: send the replies we owe first.
      if (!FlushOut()) break;
      SendDeferred();
      size_t got = 0;
      if (n - done >= in_.size()) {
        if (!Recv(dst + done, n - done, &got)) break;
        done += got;
      } else {
        if (!Recv(in_.data(), in_.size(), &got)) break;
        in_pos_ = 0;
        in_len_ = got;
      }
    }
    if (partial) *partial = done > 0 && done < n;
    return done == n;
  }
  bool Discard(size_t n) {
    uint8_t scratch[4096];
    while (n > 0) {
      const size_t k = std::min(n, sizeof scratch);
      if (!ReadExact(scratch, k)) return false;
      n -= k;
    }
    return true;
  }
  bool FlushOut() {
    size_t off = 0;
    while (off < out_.size()) {
      const ssize_t r = tls_ ? tls_->Send(out_.data() + off, out_.size() - off)
                             : send(fd_, out_.data() + off, out_.size() - off, MSG_NOSIGNAL);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        out_.clear();
        return false;
      }
      off += size_t(r);
    }
    out_.clear();
    return true;
  }
  uint8_t* Append(size_t n) {
    const size_t at = out_.size();
    out_.resize(at + n);
    return out_.data() + at;
  }

  // ---- handshake ----
  // The deadline runs while we wait for the client and stops while we work
  // on what it asked (HandshakeClock).
  void ResumeClock() {
    if (!paused_) return;  // running since accept, or no deadline
    paused_ = false;
    clock_->deadline_ms = HandshakeClock::NowMs() + budget_ms_;
  }
  void PauseClock() {
    if (!clock_ || paused_ || clock_->deadline_ms == INT64_MAX) return;
    paused_ = true;
    budget_ms_ = std::max<int64_t>(0, clock_->deadline_ms - HandshakeClock::NowMs());
    clock_->deadline_ms = INT64_MAX;
  }
  uint16_t TransmissionFlags(const Export* v) const {
    uint16_t f = kTxHasFlags | kTxSendFlush | kTxSendFua | kTxSendTrim | kTxSendWriteZeroes | kTxCanMultiConn;
    if (v->read_only()) f |= kTxReadOnly;
    return f;
  }
  bool OptReply(uint32_t opt, uint32_t type, const void* data, size_t len) {
    uint8_t* p = Append(20 + len);
    Put64(p, kOptReplyMagic);
    Put32(p + 8, opt);
    Put32(p + 12, type);
    Put32(p + 16, uint32_t(len));
    if (len) std::memcpy(p + 20, data, len);
    return true;
  }
  bool OptError(uint32_t opt, uint32_t type, const std::string& msg) {
    if (type == kRepErrUnsup) {
      // Clients probe for extensions (structured replies, meta contexts) as a matter of course.
      Log(kLogDebug, "option " + std::to_string(opt) + " answered unsupported");
    } else {
      rejected_handshakes_++;
      Warn("option " + std::to_string(opt) + " refused: " + msg);
    }
    return OptReply(opt, type, msg.data(), msg.size());
  }
  bool SendInfo(uint32_t opt, uint16_t info, const std::string& bytes) {
    std::string d(2, '\0');
    Put16(reinterpret_cast<uint8_t*>(&d[0]), info);
    d += bytes;
    return OptReply(opt, kRepInfo, d.data(), d.size());
  }

  bool Handshake() {
    uint8_t hello[18];
    Put64(hello, kNbdMagic);
    Put64(hello + 8, kOptMagic);
    Put16(hello + 16, kFlagFixedNewstyle | kFlagNoZeroes);
    std::memcpy(Append(sizeof hello), hello, sizeof hello);
    if (!FlushOut()) return false;

    uint8_t cf[4];
    if (!ReadExact(cf, 4)) return false;
    const uint32_t client_flags = Get32(cf);
    if (client_flags & ~(kClientFlagFixedNewstyle | kClientFlagNoZeroes)) {
      RejectHandshake("unknown client flags " + Hex(client_flags));
      return false;
    }
    no_zeroes_ = client_flags & kClientFlagNoZeroes;

    for (;;) {
      ResumeClock();
      uint8_t h[16];
      bool partial = false;
      if (!ReadExact(h, 16, &partial)) {
        if (partial) RejectHandshake("truncated option header");
        return false;
      }
      if (Get64(h) != kOptMagic) {
        RejectHandshake("bad option magic " + Hex(Get64(h)));
        return false;
      }
      const uint32_t opt = Get32(h + 8);
      const uint32_t len = Get32(h + 12);
      if (len > kMaxOptionLength) {
        RejectHandshake("option " + std::to_string(opt) + " has length " + std::to_string(len) + ", over the " +
                        std::to_string(kMaxOptionLength) + "-byte limit");
        return false;
      }
      std::vector<uint8_t> data(len);
      if (len && !ReadExact(data.data(), len)) {
        RejectHandshake("truncated option " + std::to_string(opt) + " (" + std::to_string(len) + " bytes announced)");
        return false;
      }
      PauseClock();
      if (tls_creds_ && !tls_ && opt != kOptStartTls && opt != kOptAbort) {
        // Forced TLS (the NBD protocol's name for it): nothing before STARTTLS.
        if (opt == kOptExportName) {
          RejectHandshake("EXPORT_NAME before STARTTLS: this server requires TLS");
          return false;
        }
        OptError(opt, kRepErrTlsReqd, "this server requires TLS: start it with NBD_OPT_STARTTLS and a client certificate");
        if (!FlushOut()) return false;
        continue;
      }
      switch (opt) {
        case kOptStartTls: {
          if (!tls_creds_) {
            OptError(opt, kRepErrUnsup, "this server does not do TLS");
            break;
          }
          if (tls_ || len != 0) {
            OptError(opt, kRepErrInvalid, tls_ ? "TLS is already started" : "STARTTLS takes no data");
            break;
          }
          if (in_pos_ < in_len_) {
            RejectHandshake("the client sent data after STARTTLS before the TLS handshake");
            return false;
          }
          OptReply(opt, kRepAck, nullptr, 0);
          if (!FlushOut()) return false;
          auto session = std::make_unique<TlsSession>(tls_creds_);
          std::string error;
          if (!session->Handshake(fd_, kTlsHandshakeMs, &error)) {
            RejectHandshake(error);
            return false;
          }
          identity_ = session->identity();
          tls_ = std::move(session);
          Log(kLogDebug, "TLS started");
          continue;
        }
        case kOptExportName: {
          const std::string name(data.begin(), data.end());
          uint32_t rep_err = kRepErrUnknown;
          std::string why;
          std::shared_ptr<Export> v = exports_.Open(name, identity_, &rep_err, &why);
          if (!v) {
            // NBD_OPT_EXPORT_NAME has no error reply: the reason goes to the log only.
            RejectHandshake("EXPORT_NAME '" + name + "' refused: " + why);
            return false;
          }
          vol_ = v;
          if (serving_) *serving_ = v.get();
          uint8_t* p = Append(10 + (no_zeroes_ ? 0 : 124));
          Put64(p, v->size());
          Put16(p + 8, TransmissionFlags(v.get()));
          if (!no_zeroes_) std::memset(p + 10, 0, 124);
          return FlushOut();
        }
        case kOptAbort:
          OptReply(opt, kRepAck, nullptr, 0);
          FlushOut();
          return false;
        case kOptList: {
          if (len != 0) {
            OptError(opt, kRepErrInvalid, "LIST takes no data");
            break;
          }
          for (const ExportListing& e : exports_.List(identity_)) {
            std::string d(4, '\0');
            Put32(reinterpret_cast<uint8_t*>(&d[0]), uint32_t(e.name.size()));
            d += e.name;
            d += e.description;  // NBD_REP_SERVER: text after the name describes the export (nbdinfo --list shows it)
            OptReply(opt, kRepServer, d.data(), d.size());
          }
          OptReply(opt, kRepAck, nullptr, 0);
          break;
        }
        case kOptInfo:
        case kOptGo: {
          const char* what = opt == kOptGo ? "GO" : "INFO";
          if (len < 6) {
            OptError(opt, kRepErrInvalid, std::string(what) + " data is truncated");
            break;
          }
          const uint32_t nlen = Get32(data.data());
          if (uint64_t(nlen) + 6 > len) {
            OptError(opt, kRepErrInvalid, std::string(what) + " export name length runs past the option");
            break;
          }
          const uint16_t nreq = Get16(data.data() + 4 + nlen);
          if (uint64_t(nlen) + 6 + 2 * uint64_t(nreq) != len) {
            OptError(opt, kRepErrInvalid, std::string(what) + " information request count does not match its length");
            break;
          }
          const std::string name(data.begin() + 4, data.begin() + 4 + nlen);
          uint32_t rep_err = kRepErrUnknown;
          std::string why;
          std::shared_ptr<Export> v = exports_.Open(name, identity_, &rep_err, &why);
          if (!v) {
            OptError(opt, rep_err, why);
            break;
          }
          bool want_name = false, want_desc = false;
          for (uint16_t i = 0; i < nreq; i++) {
            const uint16_t t = Get16(data.data() + 6 + nlen + 2 * i);
            want_name |= t == kInfoName;
            want_desc |= t == kInfoDescription;
          }
          std::string ex(10, '\0');
          Put64(reinterpret_cast<uint8_t*>(&ex[0]), v->size());
          Put16(reinterpret_cast<uint8_t*>(&ex[8]), TransmissionFlags(v.get()));
          SendInfo(opt, kInfoExport, ex);
          std::string bs(12, '\0');
          Put32(reinterpret_cast<uint8_t*>(&bs[0]), 1);
          Put32(reinterpret_cast<uint8_t*>(&bs[4]), kPreferredBlock);
          Put32(reinterpret_cast<uint8_t*>(&bs[8]), kMaxPayload);
          SendInfo(opt, kInfoBlockSize, bs);
          if (want_name) SendInfo(opt, kInfoName, v->name());
          if (want_desc) SendInfo(opt, kInfoDescription, v->description());
          OptReply(opt, kRepAck, nullptr, 0);
          if (opt == kOptGo) {
            vol_ = v;
            if (serving_) *serving_ = v.get();
            return FlushOut();
          }
          break;
        }
        case kOptTidemarkCopy:
          if (!CopyOption(data)) return false;
          break;
        default:
          OptError(opt, kRepErrUnsup, "option " + std::to_string(opt) + " is not supported by this server");
          break;
      }
      if (!FlushOut()) return false;
    }
  }

  // NBD_OPT_TIDEMARK_COPY (nbd_proto.h): a range of the export copied into
  // the descriptor that came with the option. Every refusal changes nothing
  // and names its cause; the descriptor is closed when the option is answered.
  bool CopyOption(const std::vector<uint8_t>& data) {
    const uint32_t opt = kOptTidemarkCopy;
    const int target = passed_fd_;
    passed_fd_ = -1;
    struct Closer {
      int fd;
      ~Closer() {
        if (fd >= 0) ::close(fd);
      }
    } closer{target};
    const size_t len = data.size();
    if (len < 4 || uint64_t(Get32(data.data())) + 24 != len) {
      return OptError(opt, kRepErrInvalid, "TIDEMARK_COPY data is not a name, an offset, a length and flags");
    }
    const uint32_t nlen = Get32(data.data());
    const std::string name(data.begin() + 4, data.begin() + 4 + nlen);
    const uint64_t offset = Get64(data.data() + 4 + nlen);
    const uint64_t length = Get64(data.data() + 12 + nlen);
    const uint32_t flags = Get32(data.data() + 20 + nlen);
    if (flags & ~kCopyWriteZeroes) return OptError(opt, kRepErrInvalid, "TIDEMARK_COPY has unknown flags " + Hex(flags));
    if (!copy_export_ || copy_name_ != name) {
      // One export for every range a connection copies: the same point throughout.
      uint32_t rep_err = kRepErrUnknown;
      std::string why;
      copy_export_ = exports_.Open(name, identity_, &rep_err, &why);
      copy_name_ = name;
      if (!copy_export_) return OptError(opt, rep_err, why);
    }
    Export& v = *copy_export_;
    if (!v.can_copy()) return OptError(opt, kRepErrUnsup, "export '" + name + "' is not copied by the server: read it");
    if (target < 0) {
      return OptError(opt, kRepErrInvalid, "no file descriptor came with TIDEMARK_COPY (it is passed over a unix socket)");
    }
    struct stat st{};
    const int fl = fcntl(target, F_GETFL);
    if (fstat(target, &st) != 0 || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode))) {
      return OptError(opt, kRepErrInvalid, "the descriptor passed is neither a regular file nor a block device");
    }
    if (fl < 0 || (fl & O_ACCMODE) == O_RDONLY || (fl & O_APPEND)) {
      return OptError(opt, kRepErrInvalid, "the descriptor passed is not open for positioned writes");
    }
    uint64_t room = uint64_t(st.st_size);
    if (S_ISBLK(st.st_mode) && ioctl(target, BLKGETSIZE64, &room) != 0) room = 0;
    if (offset % 512 || length % 512 || offset > v.size() || length > v.size() - offset ||
        offset + length > room) {
      return OptError(opt, kRepErrInvalid,
                      "TIDEMARK_COPY of " + std::to_string(length) + " bytes at " + std::to_string(offset) +
                          " is not whole sectors inside both the export's " + std::to_string(v.size()) +
                          " bytes and the target's " + std::to_string(room));
    }
    CopyTally t;
    CopySide side = CopySide::kNone;
    std::string error;
    const bool ok = v.CopyTo(target, offset, length, flags & kCopyWriteZeroes, &t, &side, &error);
    if (!ok) Warn("TIDEMARK_COPY of export '" + name + "' failed: " + error);
    std::string body(25, '\0');
    uint8_t* b = reinterpret_cast<uint8_t*>(&body[0]);
    b[0] = ok ? kCopied : side == CopySide::kTarget ? kCopyTargetFailed : kCopySourceFailed;
    Put64(b + 1, t.data_bytes);
    Put64(b + 9, t.data_runs);
    Put64(b + 17, t.zero_bytes);
    if (!ok) body += error;
    OptReply(opt, kRepTidemarkCopied, body.data(), body.size());
    return OptReply(opt, kRepAck, nullptr, 0);
  }

  // ---- transmission ----
  //
  // This thread reads and validates requests; a few workers (spawned as the
  // client's queue depth asks for them, up to kMaxWorkers) run them against
  // the export and send their replies as they complete, in any order (the
  // client matches them by cookie). Two rules keep the order a client may
  // count on: a request that overlaps an earlier one from this connection,
  // where either changes data, waits for it (a write, then a read of it,
  // pipelined, reads the write); a FLUSH waits for every change read before
  // it, then flushes. What this thread has read but not yet answered is
  // bounded in count and bytes: past the bound it stops reading, and the
  // client's socket buffer fills instead of our memory.

  // A payload or a reply, reused across requests (pool_).
  struct Buf {
    std::unique_ptr<uint8_t[]> p;
    size_t cap = 0;
    size_t len = 0;  // bytes to send
  };
  struct Job {
    Request r;
    Buf buf;          // WRITE: a reply header's room, then the payload
    size_t cost = 0;  // bytes counted against the in-flight bound
    bool running = false;
  };
  struct Out {
    Buf buf;
    size_t cost = 0;
  };

  static bool IsChange(uint16_t t) { return t == kCmdWrite || t == kCmdTrim || t == kCmdWriteZeroes; }
  // Whether `later` must wait until `earlier` (read before it) has completed.
  static bool MustWait(const Request& earlier, const Request& later) {
    if (later.type == kCmdFlush) return IsChange(earlier.type);
    if (earlier.type == kCmdFlush) return false;
    if (!IsChange(earlier.type) && !IsChange(later.type)) return false;
    return earlier.offset < later.offset + later.length && later.offset < earlier.offset + earlier.length;
  }

  // A small sector-aligned WRITE without FUA costs less than handing it to a
  // worker (a page-cache write of a few KiB against a wake-up and a context
  // switch: measured, 4 KiB random writes at queue depth 16 ran at half the
  // rate when every one went through a worker), so the reader runs it itself
  // when nothing earlier is in its way. A small READ too, when it needs no
  // waiting: one that waits on a disk or a fetch must not stop the reader.
  // An export that can tell (Export::ReadNow: a TimeView's chunk cache, the
  // page cache under an appliance export) answers here or says it would
  // wait, and only those go to the workers. For the others, a READ run here
  // that took longer than kSlowReadUs sends the next kReadsToWorkers reads to
  // the workers, after which one is tried here again.
  bool RunsInline(const Request& r) const {
    if (r.type == kCmdWrite)
      return !(r.flags & kCmdFlagFua) && r.length <= kInlineMax && ((r.offset | r.length) & 511) == 0;
    return r.type == kCmdRead && r.length <= kInlineMax && (vol_->can_read_now() || reads_to_workers_ == 0);
  }

  Buf GetBuf(size_t n) {
    {
      std::lock_guard<std::mutex> lk(pool_mu_);
      size_t best = pool_.size();
      for (size_t i = 0; i < pool_.size(); i++)
        if (pool_[i].cap >= n && (best == pool_.size() || pool_[i].cap < pool_[best].cap)) best = i;
      if (best < pool_.size()) {
        Buf b = std::move(pool_[best]);
        pool_[best] = std::move(pool_.back());
        pool_.pop_back();
        pooled_bytes_ -= b.cap;
        b.len = n;
        return b;
      }
    }
    Buf b;
    b.cap = std::max<size_t>(n, 4096);
    b.p.reset(new uint8_t[b.cap]);
    b.len = n;
    return b;
  }
  void PutBuf(Buf b) {
    if (!b.p) return;
    std::lock_guard<std::mutex> lk(pool_mu_);
    if (b.cap > kPoolBufferMax || pooled_bytes_ + b.cap > kPoolBytes) return;  // freed here
    pooled_bytes_ += b.cap;
    pool_.push_back(std::move(b));
  }
  static void PutReplyHeader(uint8_t* p, uint32_t error, uint64_t cookie) {
    Put32(p, kSimpleReplyMagic);
    Put32(p + 4, error);
    Put64(p + 8, cookie);
  }

  // Queues a whole reply. The first thread to find nobody sending becomes
  // the sender and sends everything queued (one sendmsg for many replies,
  // which is where a pipelining client's throughput comes from) until the
  // queue is empty; the others return to their work at once. The reader
  // defers the replies of what it ran itself while more requests are
  // buffered, and sends them before it would block (SendDeferred).
  void Send(Out o, bool defer = false) {
    std::unique_lock<std::mutex> lk(send_mu_);
    outq_.push_back(std::move(o));
    if (defer || sending_) return;
    SendQueued(lk);
  }
  void SendDeferred() {
    std::unique_lock<std::mutex> lk(send_mu_);
    if (!sending_ && !outq_.empty()) SendQueued(lk);
  }
  void SendQueued(std::unique_lock<std::mutex>& lk) {
    sending_ = true;
    std::vector<Out> batch;
    while (!outq_.empty()) {
      batch.swap(outq_);
      lk.unlock();
      if (!broken_.load() && !SendBatch(batch)) {
        // The client is gone: drop every reply from now on, and stop reading.
        broken_ = true;
        shutdown(fd_, SHUT_RD);
      }
      size_t bytes = 0;
      for (auto& b : batch) {
        bytes += b.cost;
        PutBuf(std::move(b.buf));
      }
      {
        std::lock_guard<std::mutex> ml(mu_);
        outstanding_ -= batch.size();
        outstanding_bytes_ -= bytes;
      }
      room_cv_.notify_one();
      batch.clear();
      lk.lock();
    }
    sending_ = false;
  }
  bool SendBatch(const std::vector<Out>& batch) {
    if (tls_) return SendBatchTls(batch);
    std::vector<iovec> iov;
    iov.reserve(batch.size());
    for (const auto& o : batch) iov.push_back({o.buf.p.get(), o.buf.len});
    size_t at = 0;
    while (at < iov.size()) {
      msghdr m{};
      m.msg_iov = &iov[at];
      m.msg_iovlen = std::min<size_t>(iov.size() - at, IOV_MAX);
      ssize_t n = sendmsg(fd_, &m, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      while (n > 0) {
        if (size_t(n) >= iov[at].iov_len) {
          n -= ssize_t(iov[at].iov_len);
          at++;
        } else {
          iov[at].iov_base = static_cast<uint8_t*>(iov[at].iov_base) + n;
          iov[at].iov_len -= size_t(n);
          n = 0;
        }
      }
    }
    return true;
  }
  // Over TLS there is no writev: small replies are gathered into one buffer
  // (one TLS record for many), large ones go as they are. One sender at a
  // time (sending_) and the reader are the session's only two users, as
  // GnuTLS allows.
  bool SendBatchTls(const std::vector<Out>& batch) {
    constexpr size_t kGather = 64 * 1024;
    auto send_all = [this](const uint8_t* p, size_t n) {
      for (size_t off = 0; off < n;) {
        const ssize_t r = tls_->Send(p + off, n - off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        off += size_t(r);
      }
      return true;
    };
    auto flush = [&] {
      const bool ok = tls_gather_.empty() || send_all(tls_gather_.data(), tls_gather_.size());
      tls_gather_.clear();
      return ok;
    };
    tls_gather_.clear();
    for (const auto& o : batch) {
      if (o.buf.len > kGather) {
        if (!flush() || !send_all(o.buf.p.get(), o.buf.len)) return false;
        continue;
      }
      tls_gather_.insert(tls_gather_.end(), o.buf.p.get(), o.buf.p.get() + o.buf.len);
      if (tls_gather_.size() >= 4 * kGather && !flush()) return false;
    }
    return flush();
  }
  // An answer without data, from the reader (a rejected request).
  void Reply(uint64_t cookie, uint32_t error) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      outstanding_++;
    }
    Out o;
    o.buf = GetBuf(kSimpleReplySize);
    PutReplyHeader(o.buf.p.get(), error, cookie);
    Send(std::move(o));
  }

  Out Execute(Job& j) {
    const Request& r = j.r;
    const bool fua = r.flags & kCmdFlagFua;
    uint32_t e = 0;
    Out o;
    o.cost = j.cost;
    switch (r.type) {
      case kCmdRead:
        o.buf = GetBuf(kSimpleReplySize + r.length);
        e = vol_->Read(r.offset, r.length, o.buf.p.get() + kSimpleReplySize);
        if (e) o.buf.len = kSimpleReplySize;  // an error reply carries no data
        break;
      case kCmdWrite:
        o.buf = std::move(j.buf);
        e = vol_->Write(r.offset, r.length, o.buf.p.get() + kSimpleReplySize, fua);
        o.buf.len = kSimpleReplySize;
        break;
      case kCmdFlush:
        o.buf = GetBuf(kSimpleReplySize);
        e = vol_->Flush();
        break;
      case kCmdTrim:
        o.buf = GetBuf(kSimpleReplySize);
        e = vol_->Trim(r.offset, r.length, fua);
        break;
      case kCmdWriteZeroes:
        o.buf = GetBuf(kSimpleReplySize);
        e = vol_->Zero(r.offset, r.length, fua, r.flags & kCmdFlagNoHole);
        break;
    }
    PutReplyHeader(o.buf.p.get(), e, r.cookie);
    return o;
  }

  // With mu_ held: the first job that is not running and waits for nothing.
  std::list<std::unique_ptr<Job>>::iterator NextRunnableLocked() {
    for (auto it = jobs_.begin(); it != jobs_.end(); ++it) {
      if ((*it)->running) continue;
      bool blocked = false;
      for (auto e = jobs_.begin(); e != it && !blocked; ++e) blocked = MustWait((*e)->r, (*it)->r);
      if (!blocked) return it;
    }
    return jobs_.end();
  }
  // With mu_ held: wake one sleeping worker that nobody has woken yet.
  bool SignalLocked() {
    if (idle_ <= signaled_) return false;
    signaled_++;
    work_cv_.notify_one();
    return true;
  }

  void Worker() {
    pthread_setname_np(pthread_self(), "tm-nbd-work");  // for top -H and perf (benchmarks/tap-overhead.ts)
    std::unique_lock<std::mutex> lk(mu_);
    for (;;) {
      auto it = NextRunnableLocked();
      if (it == jobs_.end()) {
        if (closing_) return;
        idle_++;
        work_cv_.wait(lk);
        idle_--;
        if (signaled_ > 0) signaled_--;
        continue;
      }
      Job& j = **it;
      j.running = true;
      // More waiting: another worker may find one it can run.
      for (auto& other : jobs_)
        if (!other->running) {
          SignalLocked();
          break;
        }
      lk.unlock();
      Out o = Execute(j);
      lk.lock();
      jobs_.erase(it);
      lk.unlock();
      Send(std::move(o));
      lk.lock();
    }
  }

  void Transmission() {
    const uint64_t size = vol_->size();
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(mu_);
        if (!(outstanding_ < kMaxInFlight && outstanding_bytes_ < kMaxInFlightBytes)) {
          lk.unlock();
          SendDeferred();  // what this thread holds back counts against the bound too
          lk.lock();
        }
        room_cv_.wait(lk, [this] {
          return broken_.load() || (outstanding_ < kMaxInFlight && outstanding_bytes_ < kMaxInFlightBytes);
        });
        if (broken_) break;
      }
      uint8_t h[kRequestSize];
      bool partial = false;
      if (!ReadExact(h, kRequestSize, &partial)) {
        if (partial) Warn("client disconnected in the middle of a request header");
        break;
      }
      const Request r = ParseRequest(h);
      const Verdict v = ValidateRequest(r, size, vol_->read_only());
      if (v.disconnect || v.error) {
        rejected_++;
        vol_->CountRejected();
        Warn(std::string(v.why) + " (" + CommandName(r.type) + " type " + std::to_string(r.type) + ", flags " +
             Hex(r.flags) + ", offset " + std::to_string(r.offset) + ", length " + std::to_string(r.length) +
             ", export size " + std::to_string(size) + ")" + (v.disconnect ? "; disconnecting" : ""));
        if (v.disconnect) break;
        if (v.discard && !Discard(v.discard)) {
          Warn("client disconnected in the middle of a WRITE payload");
          break;
        }
        Reply(r.cookie, v.error);
        continue;
      }
      if (r.type == kCmdDisc) break;
      auto job = std::make_unique<Job>();
      job->r = r;
      if (r.type == kCmdRead || r.type == kCmdWrite) job->cost = r.length;
      if (r.type == kCmdWrite) {
        job->buf = GetBuf(kSimpleReplySize + r.length);
        if (!ReadExact(job->buf.p.get() + kSimpleReplySize, r.length)) {
          // Never queued: a write whose payload did not arrive is not applied.
          Warn("client disconnected in the middle of a WRITE payload; the write was not applied");
          PutBuf(std::move(job->buf));
          break;
        }
      }
      bool spawn = false, run_here = false;
      auto to_workers = [&] {  // mu_ held
        jobs_.push_back(std::move(job));
        spawn = !SignalLocked() && idle_ == 0 && workers_.size() < kMaxWorkers;
      };
      {
        std::lock_guard<std::mutex> lk(mu_);
        outstanding_++;
        outstanding_bytes_ += job->cost;
        run_here = RunsInline(r);
        for (auto e = jobs_.begin(); run_here && e != jobs_.end(); ++e) run_here = !MustWait((*e)->r, r);
        if (!run_here) to_workers();
      }
      if (run_here && r.type == kCmdRead && vol_->can_read_now()) {
        Out o;
        o.cost = job->cost;
        o.buf = GetBuf(kSimpleReplySize + r.length);
        const uint32_t e = vol_->ReadNow(r.offset, r.length, o.buf.p.get() + kSimpleReplySize);
        if (e == Export::kWouldWait) {
          PutBuf(std::move(o.buf));
          std::lock_guard<std::mutex> lk(mu_);
          to_workers();
        } else {
          if (e) o.buf.len = kSimpleReplySize;
          PutReplyHeader(o.buf.p.get(), e, r.cookie);
          Send(std::move(o), /*defer=*/true);
        }
      } else if (run_here && r.type == kCmdRead) {
        const auto t0 = std::chrono::steady_clock::now();
        Out o = Execute(*job);
        if (std::chrono::steady_clock::now() - t0 > std::chrono::microseconds(kSlowReadUs)) reads_to_workers_ = kReadsToWorkers;
        Send(std::move(o), /*defer=*/true);
      } else if (run_here) {
        Send(Execute(*job), /*defer=*/true);
      } else if (r.type == kCmdRead && reads_to_workers_ > 0) {
        reads_to_workers_--;
      }
      if (spawn) workers_.emplace_back([this] { Worker(); });
    }
    // DISC, end of file, or a broken stream: every request read so far is
    // still run and answered (if the client is there to read it), then the
    // workers go.
    SendDeferred();
    {
      std::unique_lock<std::mutex> lk(mu_);
      room_cv_.wait(lk, [this] { return outstanding_ == 0; });
      closing_ = true;
    }
    work_cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  int fd_;
  bool handshaking_ = true;
  int passed_fd_ = -1;                   // a descriptor the client passed (RecvWithFds)
  std::shared_ptr<Export> copy_export_;  // what TIDEMARK_COPY options copy from (copy_name_)
  std::string copy_name_;
  uint64_t id_;
  ExportSet& exports_;
  const std::shared_ptr<TlsCredentials>& tls_creds_;
  std::unique_ptr<TlsSession> tls_;  // after STARTTLS
  std::string identity_;             // the client certificate's with TLS, else uid:N on a unix socket
  const LogFn& log_;
  std::atomic<uint64_t>& rejected_handshakes_;
  std::atomic<const Export*>* serving_;  // the server's note of the export chosen (Disconnect)
  HandshakeClock* clock_;                // the handshake's deadline, which the acceptor enforces
  int64_t budget_ms_ = 0;                // of waiting for the client, left when the clock was paused
  bool paused_ = false;
  // Held for the connection's life: for an appliance export, what keeps its files open.
  std::shared_ptr<Export> vol_;
  bool no_zeroes_ = false;
  uint32_t warnings_ = 0;
  uint64_t rejected_ = 0;
  std::vector<uint8_t> in_;
  size_t in_pos_ = 0, in_len_ = 0;
  std::vector<uint8_t> out_;  // the handshake's replies

  // Transmission: jobs, bound, workers.
  std::mutex mu_;
  std::condition_variable work_cv_;  // workers: a job may be runnable, or closing_
  std::condition_variable room_cv_;  // this thread: an answer went out
  std::list<std::unique_ptr<Job>> jobs_;  // in arrival order, waiting and running
  size_t outstanding_ = 0;        // requests read and not yet answered
  size_t outstanding_bytes_ = 0;  // their READ and WRITE bytes
  uint32_t idle_ = 0, signaled_ = 0;
  uint32_t reads_to_workers_ = 0;  // this thread's (RunsInline)
  bool closing_ = false;
  std::vector<std::thread> workers_;  // this thread's only
  // Replies on their way out.
  std::mutex send_mu_;
  std::vector<Out> outq_;
  std::vector<uint8_t> tls_gather_;  // the sender's (SendBatchTls)
  bool sending_ = false;
  std::atomic<bool> broken_{false};
  std::mutex pool_mu_;
  std::vector<Buf> pool_;
  size_t pooled_bytes_ = 0;
};

}  // namespace

NbdServer::NbdServer(std::shared_ptr<ExportSet> exports, LogFn log) : exports_(std::move(exports)), log_(std::move(log)) {}

NbdServer::~NbdServer() { Stop(); }

bool NbdServer::ListenUnix(const std::string& path, std::string* error) {
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path) {
    *error = "unix socket path is too long (" + std::to_string(path.size()) + " bytes, at most " +
             std::to_string(sizeof addr.sun_path - 1) + "): " + path;
    return false;
  }
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = std::string("socket: ") + std::strerror(errno);
    return false;
  }
  // Whoever can connect can read and write the disk: the socket file is
  // 0600 from the moment it exists. Linux gives a bound socket file the
  // socket inode's mode less the umask, so setting the mode before bind
  // leaves no window (a chmod after bind would), whatever the umask.
  fchmod(fd, 0600);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    if (errno != EADDRINUSE) {
      *error = "cannot bind " + path + ": " + std::strerror(errno);
      ::close(fd);
      return false;
    }
    // Something is at the path. Only a socket nobody answers on (left over
    // from a process that died) is replaced; a live one, a regular file or a
    // symbolic link (perhaps planted to make us delete what it names) is
    // refused and left as it is.
    struct stat st{};
    if (lstat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) {
      const char* what = S_ISLNK(st.st_mode) ? "a symbolic link" : S_ISREG(st.st_mode) ? "a regular file" : "not a socket";
      *error = "the NBD socket path " + path + " exists and is " + what + ": refusing to replace it (remove it if it is stale)";
      ::close(fd);
      return false;
    }
    const int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const bool live = connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    const int probe_errno = errno;
    ::close(probe);
    if (live || probe_errno != ECONNREFUSED) {
      ::close(fd);
      *error = live ? "unix socket " + path + " is in use by another server"
                    : "unix socket " + path + " exists and cannot be probed (" + std::strerror(probe_errno) +
                          "): refusing to replace it";
      return false;
    }
    unlink(path.c_str());
    if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      *error = "cannot bind " + path + ": " + std::strerror(errno);
      ::close(fd);
      return false;
    }
  }
  if (listen(fd, 64) != 0) {
    *error = "cannot listen on " + path + ": " + std::strerror(errno);
    ::close(fd);
    return false;
  }
  struct stat st{};
  if (lstat(path.c_str(), &st) == 0) unix_ino_ = st.st_ino;
  unix_path_ = path;
  listeners_.push_back(fd);
  return true;
}

bool NbdServer::ListenTcp(const std::string& host, int port, int* bound, std::string* error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | AI_PASSIVE;
  addrinfo* res = nullptr;
  const std::string ps = std::to_string(port);
  if (int rc = getaddrinfo(host.c_str(), ps.c_str(), &hints, &res); rc != 0) {
    *error = "cannot resolve " + host + ": " + gai_strerror(rc);
    return false;
  }
  const int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 64) != 0) {
    *error = "cannot listen on " + host + ":" + ps + ": " + std::strerror(errno);
    freeaddrinfo(res);
    if (fd >= 0) ::close(fd);
    return false;
  }
  freeaddrinfo(res);
  sockaddr_storage ss{};
  socklen_t sl = sizeof ss;
  getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &sl);
  *bound = ss.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                                    : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  listeners_.push_back(fd);
  return true;
}

void NbdServer::Start() {
  if (pipe2(wake_, O_CLOEXEC) != 0) wake_[0] = wake_[1] = -1;
  acceptor_ = std::thread([this] { AcceptLoop(); });
}

void NbdServer::AcceptLoop() {
  std::vector<pollfd> fds;
  for (int l : listeners_) fds.push_back({l, POLLIN, 0});
  if (wake_[0] >= 0) fds.push_back({wake_[0], POLLIN, 0});
  int wait_ms = 1000;
  while (!stopping_) {
    const int n = poll(fds.data(), fds.size(), wait_ms);
    if (stopping_) break;
    Reap(false);
    wait_ms = CutStalledHandshakes(1000);
    if (n <= 0) continue;
    for (size_t i = 0; i < listeners_.size(); i++) {
      if (!(fds[i].revents & POLLIN)) continue;
      const int c = accept4(listeners_[i], nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      std::lock_guard<std::mutex> lk(conns_mu_);
      if (max_connections_ > 0) {
        // Reap(false) just ran: what is left is open (or about to close).
        size_t open = 0;
        for (auto& k : conns_) open += !k->done;
        if (open >= size_t(max_connections_)) {
          // Closed before a byte is sent: no thread, no buffer. Logged once
          // while the server stays at its cap; every one is counted.
          refused_connections_++;  // before the close, which the client sees
          ::close(c);
          if (!cap_logged_) {
            cap_logged_ = true;
            log_(kLogWarn, "nbd: " + std::to_string(max_connections_) +
                               " connections are open (the cap, --nbd-max-connections): refusing new ones until some close");
          }
          continue;
        }
        if (open + 1 < size_t(max_connections_)) cap_logged_ = false;
      }
      const int one = 1;
      setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // fails harmlessly on unix sockets
      auto conn = std::make_unique<Conn>();
      conn->fd = c;
      if (handshake_timeout_ms_ > 0) conn->clock.deadline_ms = HandshakeClock::NowMs() + handshake_timeout_ms_;
      Conn* raw = conn.get();
      const uint64_t id = next_conn_id_++;
      conn->thread = std::thread([this, raw, id] {
        pthread_setname_np(pthread_self(), "tm-nbd-conn");
        Connection(raw->fd, id, *exports_, tls_, log_, rejected_handshakes_, &raw->serving, &raw->clock).Run();
        // The client waits for end-of-file after NBD_CMD_DISC: send it now,
        // not when the acceptor next reaps (up to a second later).
        shutdown(raw->fd, SHUT_RDWR);
        raw->done = true;
      });
      conns_.push_back(std::move(conn));
    }
    wait_ms = CutStalledHandshakes(wait_ms);
  }
}

int NbdServer::CutStalledHandshakes(int max_ms) {
  if (handshake_timeout_ms_ <= 0) return max_ms;
  const int64_t now = HandshakeClock::NowMs();
  int wait = max_ms;
  std::lock_guard<std::mutex> lk(conns_mu_);
  for (auto& c : conns_) {
    const int64_t deadline = c->clock.deadline_ms;
    if (c->done || c->clock.done || c->timed_out || deadline == INT64_MAX) continue;
    if (now >= deadline) {
      // The connection's thread is blocked reading the handshake: shutting
      // the socket down wakes it with end-of-file, and it ends.
      c->timed_out = true;
      const uint64_t n = handshake_timeouts_++;  // before the shutdown, which the client sees
      shutdown(c->fd, SHUT_RDWR);
      if (n < kMaxWarnings) {
        log_(kLogWarn, "nbd: a client did not finish the NBD handshake within " + std::to_string(handshake_timeout_ms_) +
                           " ms; closing the connection");
      }
      continue;
    }
    wait = int(std::min<int64_t>(wait, deadline - now + 1));
  }
  return wait;
}

void NbdServer::Reap(bool all) {
  std::list<std::unique_ptr<Conn>> finished;
  {
    std::lock_guard<std::mutex> lk(conns_mu_);
    for (auto it = conns_.begin(); it != conns_.end();) {
      if (all || (*it)->done) {
        finished.push_back(std::move(*it));
        it = conns_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& c : finished) {
    c->thread.join();
    ::close(c->fd);
  }
}

void NbdServer::ServeConnection(int fd) { Connection(fd, next_conn_id_++, *exports_, tls_, log_, rejected_handshakes_).Run(); }

int NbdServer::Disconnect(const Export* exp) {
  int n = 0;
  std::lock_guard<std::mutex> lk(conns_mu_);
  for (auto& c : conns_) {
    if (!c->done && c->serving == exp) {
      shutdown(c->fd, SHUT_RDWR);
      n++;
    }
  }
  return n;
}

void NbdServer::Stop() {
  if (stopping_.exchange(true)) return;
  if (wake_[1] >= 0) {
    const char b = 1;
    (void)!write(wake_[1], &b, 1);
  }
  if (acceptor_.joinable()) acceptor_.join();
  for (int l : listeners_) ::close(l);
  listeners_.clear();
  if (!unix_path_.empty()) {
    // Only the socket we bound: not whatever another process put there since.
    struct stat st{};
    if (lstat(unix_path_.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) && st.st_ino == unix_ino_) unlink(unix_path_.c_str());
  }
  for (int i = 0; i < 2; i++)
    if (wake_[i] >= 0) ::close(wake_[i]);
  // Stop reading: each connection finishes the requests it has read, sends
  // their replies and sees end-of-file. One that cannot (a client that does not
  // read its replies) is cut after a grace period.
  {
    std::lock_guard<std::mutex> lk(conns_mu_);
    for (auto& c : conns_) shutdown(c->fd, SHUT_RD);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (;;) {
    bool all_done = true;
    {
      std::lock_guard<std::mutex> lk(conns_mu_);
      for (auto& c : conns_) all_done &= c->done.load();
    }
    if (all_done || std::chrono::steady_clock::now() > deadline) break;
    usleep(10000);
  }
  {
    std::lock_guard<std::mutex> lk(conns_mu_);
    for (auto& c : conns_)
      if (!c->done) shutdown(c->fd, SHUT_RDWR);
  }
  Reap(true);
}

}  // namespace tidemark
