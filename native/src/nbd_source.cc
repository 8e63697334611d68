#include "nbd_source.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace tidemark {

using nbdcopy::Connection;
using tidemark::CopyError;

namespace {
// What a reader takes from its socket in one recv: many small replies at
// once; a large payload past what arrived with its header goes straight
// into the reader's buffer instead.
constexpr size_t kInBuffer = 256 * 1024;
const char* const kClosing = "the TimeView is closing";
}  // namespace

// One Read's requests (several when it is larger than the server's largest
// request): how many are still out, and the first failure.
struct NbdSource::Wait {
  std::condition_variable cv;
  int outstanding = 0;
  bool failed = false;
  std::string error;
};

struct NbdSource::Upstream {
  struct Slot {
    Wait* w;
    uint8_t* out;
    uint64_t offset;
    uint32_t length;
  };
  std::unique_ptr<Connection> c;
  std::mutex send_mu;  // one request on the wire at a time
  std::unordered_map<uint64_t, Slot> pending;  // mu_; by handle, until answered or failed
  bool retired = false;                        // mu_; takes no new requests
  bool reading = false;                        // mu_; a Read holds the reading turn
  bool broken = false;                         // mu_
  // Received and not yet used, in[lo, hi): whoever holds the reading turn's.
  std::vector<uint8_t> in;
  size_t lo = 0, hi = 0;
};

NbdSource::NbdSource(NbdEndpoint endpoint, std::shared_ptr<TlsCredentials> creds, int connections, int depth,
                     int spread)
    : endpoint_(std::move(endpoint)),
      creds_(std::move(creds)),
      max_(std::max(1, connections)),
      depth_(size_t(std::max(1, depth))),
      spread_(size_t(std::max(1, spread))) {}

NbdSource::~NbdSource() {
  Close();
  std::unique_lock<std::mutex> lk(mu_);
  room_cv_.wait(lk, [&] { return opening_ == 0; });
}

bool NbdSource::Open(uint64_t* size, std::string* error) {
  std::unique_lock<std::mutex> lk(mu_);
  std::shared_ptr<Upstream> u = OpenUpstream(lk, error);
  if (!u) return false;
  *size = u->c->size;
  return true;
}

std::shared_ptr<NbdSource::Upstream> NbdSource::OpenUpstream(std::unique_lock<std::mutex>& lk, std::string* error) {
  opening_++;
  lk.unlock();
  auto c = std::make_unique<Connection>();
  std::vector<int> fds;  // this handshake's sockets, for Close to shut down
  std::string msg;
  const CopyError e = c->Open(
      endpoint_, creds_,
      [&](int fd) {
        std::lock_guard<std::mutex> g(mu_);
        fds.push_back(fd);
        connecting_fds_.push_back(fd);
        if (closed_) shutdown(fd, SHUT_RDWR);
      },
      &msg);
  lk.lock();
  opening_--;
  for (int fd : fds) connecting_fds_.erase(std::find(connecting_fds_.begin(), connecting_fds_.end(), fd));
  room_cv_.notify_all();  // the destructor waits for opening_ to reach 0; a waiter may now open one
  if (closed_) {
    *error = kClosing;
    return nullptr;
  }
  if (e != CopyError::kNone) {
    *error = msg;
    return nullptr;
  }
  auto u = std::make_shared<Upstream>();
  u->c = std::move(c);
  conns_.push_back(u);
  live_++;
  opened_++;
  return u;
}

std::shared_ptr<NbdSource::Upstream> NbdSource::Pick(Wait* w, uint64_t offset, uint32_t length, uint8_t* out,
                                                     std::vector<uint64_t>* handles, std::string* error) {
  std::unique_lock<std::mutex> lk(mu_);
  std::shared_ptr<Upstream> u;
  for (;;) {
    if (closed_) {
      *error = kClosing;
      return nullptr;
    }
    std::shared_ptr<Upstream> best;
    for (const auto& x : conns_)
      if (!x->retired && (!best || x->pending.size() < best->pending.size())) best = x;
    const bool room = live_ + opening_ < max_;
    if (best && best->pending.size() < depth_ && (best->pending.size() < spread_ || !room)) {
      u = std::move(best);
      break;
    }
    if (room) {
      u = OpenUpstream(lk, error);
      // A connection that cannot be opened now (a limit on the server, a
      // passing fault) fails the read only when no open one has room.
      if (!u && !closed_ && best && !best->retired && best->pending.size() < depth_) u = std::move(best);
      if (!u) return nullptr;
      break;
    }
    room_waiters_++;
    room_cv_.wait(lk);
    room_waiters_--;
  }
  for (uint32_t done = 0; done < length;) {
    const uint32_t n = std::min<uint32_t>(length - done, u->c->max_block);
    const uint64_t h = next_handle_++;
    u->pending.emplace(h, Upstream::Slot{w, out + done, offset + done, n});
    handles->push_back(h);
    w->outstanding++;
    done += n;
  }
  depth_max_ = std::max<uint64_t>(depth_max_, u->pending.size());
  return u;
}

bool NbdSource::Read(uint64_t offset, uint32_t length, uint8_t* out, std::string* error) {
  // A failure retires every connection open at the time (RetireAllLocked
  // runs before the failed requests are told), so the second try is on a
  // connection opened after it.
  std::string why;  // the first try's failure: *error only if the second fails too
  for (int attempt = 0; attempt < 2; attempt++) {
    Wait w;
    std::vector<uint64_t> handles;
    std::shared_ptr<Upstream> u = Pick(&w, offset, length, out, &handles, &why);
    if (!u) {
      *error = why;
      return false;
    }
    bool sent = true;
    {
      std::lock_guard<std::mutex> g(u->send_mu);
      uint32_t done = 0;
      for (uint64_t h : handles) {
        const uint32_t n = std::min<uint32_t>(length - done, u->c->max_block);
        if (!u->c->Request(nbd::kCmdRead, h, offset + done, n)) {
          sent = false;
          break;
        }
        done += n;
      }
    }
    // Only the holder of the reading turn fails requests (it may be copying
    // a payload into a waiting Read's buffer): a broken send shuts the
    // socket, and the turn's holder, maybe us, meets the end and says why.
    if (!sent) shutdown(u->c->fd, SHUT_RDWR);
    std::unique_lock<std::mutex> lk(mu_);
    // Our reply comes when someone reads it: us, when nobody else is.
    while (w.outstanding > 0) {
      if (u->reading || u->broken) {
        w.cv.wait(lk);
        continue;
      }
      u->reading = true;
      lk.unlock();
      std::string broke;
      const bool ok = ReceiveOne(u.get(), &broke);
      lk.lock();
      u->reading = false;
      if (!ok && !u->broken) BreakLocked(u, broke);
    }
    // Hand the reading turn to a Read still waiting on this connection.
    if (!u->reading && !u->broken && !u->pending.empty()) u->pending.begin()->second.w->cv.notify_one();
    // A retired connection closes once it has answered everything.
    if (u->retired && !u->broken && u->pending.empty()) DropLocked(u.get());
    if (!w.failed) return true;
    why = w.error;
    if (closed_) break;
  }
  *error = why;
  return false;
}

void NbdSource::FinishLocked(Wait* w, bool ok, const std::string& error) {
  if (!ok && !w->failed) {
    w->failed = true;
    w->error = error;
  }
  // Under mu_: the Read that owns w cannot return (and free it) before this wakes it.
  if (--w->outstanding == 0) w->cv.notify_one();
  if (room_waiters_) room_cv_.notify_all();
}

void NbdSource::RetireAllLocked() {
  std::vector<const Upstream*> idle;
  for (const auto& x : conns_) {
    if (x->retired) continue;
    x->retired = true;
    live_--;
    if (x->pending.empty()) idle.push_back(x.get());  // the others close after their last reply
  }
  for (const Upstream* x : idle) DropLocked(x);
  room_cv_.notify_all();
}

void NbdSource::DropLocked(const Upstream* u) {
  auto it = std::find_if(conns_.begin(), conns_.end(), [&](const auto& x) { return x.get() == u; });
  if (it == conns_.end()) return;
  // Shut, not closed: a Read still holding u may be in a send; the last
  // reference closes the socket.
  shutdown(u->c->fd, SHUT_RDWR);
  if (!u->retired) live_--;
  conns_.erase(it);
  room_cv_.notify_all();
}

void NbdSource::BreakLocked(const std::shared_ptr<Upstream>& u, const std::string& why) {
  u->broken = true;
  if (!u->retired) RetireAllLocked();
  const std::string said = closed_ ? std::string(kClosing) : why;
  for (auto& p : u->pending) FinishLocked(p.second.w, false, said);
  u->pending.clear();
  DropLocked(u.get());
}

bool NbdSource::ReceiveOne(Upstream* u, std::string* why) {
  Connection& c = *u->c;
  std::vector<uint8_t>& in = u->in;
  if (in.empty()) in.resize(kInBuffer);
  // At least n bytes in in[lo, hi).
  auto need = [&](size_t n) {
    if (u->hi - u->lo >= n) return true;
    std::memmove(in.data(), in.data() + u->lo, u->hi - u->lo);
    u->hi -= u->lo;
    u->lo = 0;
    while (u->hi < n) {
      const ssize_t r = c.RecvSome(in.data() + u->hi, in.size() - u->hi);
      if (r <= 0) {
        *why = "the NBD server for " + c.what + " failed while replying: " + c.RecvFailure(int(r), errno);
        return false;
      }
      u->hi += size_t(r);
    }
    return true;
  };
  if (!need(nbd::kSimpleReplySize)) return false;
  const uint8_t* r = in.data() + u->lo;
  const uint32_t magic = nbd::Get32(r);
  const uint32_t nbd_error = nbd::Get32(r + 4);
  const uint64_t handle = nbd::Get64(r + 8);
  u->lo += nbd::kSimpleReplySize;
  if (magic != nbd::kSimpleReplyMagic) {
    char hex[16];
    std::snprintf(hex, sizeof hex, "%x", magic);
    *why = "the NBD server for " + c.what + " sent a bad reply magic (0x" + hex + ")";
    return false;
  }
  Upstream::Slot s{};
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = u->pending.find(handle);
    if (it != u->pending.end()) s = it->second;  // stays there until done, so a failure below fails it too
  }
  if (!s.w) {
    *why = "the NBD server for " + c.what + " answered handle " + std::to_string(handle) + ", which it was not asked";
    return false;
  }
  if (nbd_error) {
    // The stream is whole, but the answer is the server's: the Read tries
    // again on a fresh connection, as after a broken one.
    std::lock_guard<std::mutex> lk(mu_);
    u->pending.erase(handle);
    if (!u->retired) RetireAllLocked();
    FinishLocked(s.w, false,
                 "the NBD server for " + c.what + " failed a READ of " + std::to_string(s.length) + " bytes at " +
                     std::to_string(s.offset) + ": " + nbdcopy::NbdErrno(nbd_error));
    return true;
  }
  // The payload: what came with the header, then the rest straight into place.
  const size_t have = std::min<size_t>(u->hi - u->lo, s.length);
  std::memcpy(s.out, in.data() + u->lo, have);
  u->lo += have;
  if (have < s.length) {
    size_t got = 0;
    const int rc = c.Recv(s.out + have, s.length - have, &got);
    if (rc != 1) {
      *why = "short read from the NBD server for " + c.what + ": " + c.RecvFailure(rc, errno);
      return false;
    }
  }
  std::lock_guard<std::mutex> lk(mu_);
  u->pending.erase(handle);
  FinishLocked(s.w, true, "");
  return true;
}

void NbdSource::Close() {
  std::lock_guard<std::mutex> lk(mu_);
  if (closed_) return;
  closed_ = true;
  // Whoever holds a reading turn sees the end and fails what its connection carries.
  for (const auto& x : conns_) shutdown(x->c->fd, SHUT_RDWR);
  for (int fd : connecting_fds_) shutdown(fd, SHUT_RDWR);
  room_cv_.notify_all();
}

uint64_t NbdSource::connections_opened() {
  std::lock_guard<std::mutex> lk(mu_);
  return opened_;
}

uint64_t NbdSource::depth_max() {
  std::lock_guard<std::mutex> lk(mu_);
  return depth_max_;
}

}  // namespace tidemark
