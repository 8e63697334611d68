// The NBD copier: the target (file, block device or NBD export) and the
// per-connection worker; the connections are nbd_copy_client.h's. Design
// notes are in nbd_copy.h.
#include "nbd_copy.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <thread>

#include "nbd_copy_client.h"
#include "nbd_proto.h"

namespace tidemark {

using nbdcopy::Connection;
using nbdcopy::ErrnoText;
using nbdcopy::NbdErrno;

namespace {

// Zero detection and hole granularity: a file system's block.
constexpr uint32_t kGranule = 4096;
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
  std::vector<std::unique_ptr<Connection>> src, dst;
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
  Connection& src = *s->src[size_t(index)];
  Connection* dst = s->c->target_is_nbd ? s->dst[size_t(index)].get() : nullptr;
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

bool NbdCopy::ServerCopy(int conns, Shared* s, bool* unsupported) {
  const CopyConfig& c = *s->c;
  auto track = [this](int fd) { Track(fd); };
  std::vector<std::unique_ptr<Connection>> cs;
  std::string msg;
  for (int i = 0; i < conns; i++) {
    cs.push_back(std::make_unique<Connection>());
    const CopyError e = cs.back()->OpenForCopy(c.source, track, &msg);
    if (e != CopyError::kNone) {
      Fail(e, msg);
      return false;
    }
  }
  // A new file is sparse already; a device may hold anything.
  const bool write_zeroes = s->device && !c.target_zeroed;
  std::atomic<bool> refused{false};
  auto work = [&](Connection* cn) {
    for (;;) {
      if (stop_ || refused) return;
      const uint64_t at = s->next.fetch_add(kServerCopyRange);
      if (at >= s->size) return;
      const uint64_t len = std::min<uint64_t>(kServerCopyRange, s->size - at);
      CopyTally t;
      bool unsup = false;
      std::string why;
      const CopyError e = cn->ServerCopy(c.source.export_name, s->fd, at, len, write_zeroes, &t, &unsup, &why);
      if (e != CopyError::kNone) {
        // Any refusal (not tidemark's server, an export it does not copy, a
        // descriptor it would not take): reading still works, and says why
        // if it does not.
        if (e == CopyError::kRefused) {
          std::lock_guard<std::mutex> lk(mu_);
          server_copy_refusal_ = why;
          refused = true;
        } else {
          Fail(e, why);
        }
        return;
      }
      s->data_bytes += t.data_bytes;
      s->data_runs += t.data_runs;
      s->zero_bytes += t.zero_bytes;
      done_ += len;
    }
  };
  std::vector<std::thread> threads;
  for (size_t i = 1; i < cs.size(); i++) threads.emplace_back(work, cs[i].get());
  work(cs[0].get());
  for (auto& t : threads) t.join();
  s->next = 0;
  *unsupported = refused && !stop_;
  return !stop_ && !refused;
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
  std::shared_ptr<TlsCredentials> creds;
  if (!c.tls_cert.empty()) {
    creds = TlsCredentials::Load(c.tls_cert, c.tls_key, c.tls_ca, &msg);
    if (!creds) {
      Fail(CopyError::kTlsFiles, msg);
      return result(false);
    }
  }

  // The source: the first connection says whether more are allowed.
  s.src.push_back(std::make_unique<Connection>());
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
    s.src.push_back(std::make_unique<Connection>());
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
      s.dst.push_back(std::make_unique<Connection>());
      e = s.dst.back()->Open(c.target_nbd, creds, track, &msg);
      if (e != CopyError::kNone) {
        // Whatever failed, it is the target's: not a reason to read the source another way.
        Fail(CopyError::kTarget, "the NBD target: " + msg);
        return result(false);
      }
      const Connection& d = *s.dst.back();
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
                    // A file target is never reached through a symbolic link (a
                    // restore's FILE.partial could be one planted by another user).
                    : open(c.target_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
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

  // On the server's host, the server copies the point into the target file
  // itself, file to file in the kernel (NBD_OPT_TIDEMARK_COPY): no byte
  // crosses the socket. A server that does not answers NBD_REP_ERR_UNSUP,
  // and the point is read as below.
  if (s.size > 0 && c.server_copy && !c.target_is_nbd && !c.source.unix_path.empty() && !creds) {
    bool unsupported = false;
    const bool ok = ServerCopy(std::min(conns, std::max(1, c.server_copy_connections)), &s, &unsupported);
    if (ok) {
      r->server_copy = true;
      r->connections = std::min(conns, std::max(1, c.server_copy_connections));
    } else if (!unsupported) {
      return result(false);
    } else {
      r->server_copy_skipped = server_copy_refusal_;
      done_ = 0;
      s.data_bytes = 0;
      s.data_runs = 0;
      s.zero_bytes = 0;
    }
  }
  if (s.size > 0 && !r->server_copy) {
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
