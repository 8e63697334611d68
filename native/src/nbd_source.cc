#include "nbd_source.h"

#include <pthread.h>
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
  std::thread reader;
  std::unordered_map<uint64_t, Slot> pending;  // mu_; by handle, until answered or failed
  bool retired = false;                        // mu_; takes no new requests
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
  // Every reader ends once its socket is shut down; it moves itself to ended_.
  room_cv_.wait(lk, [&] { return conns_.empty() && opening_ == 0; });
  std::vector<std::shared_ptr<Upstream>> ended;
  ended.swap(ended_);
  lk.unlock();
  for (auto& u : ended) u->reader.join();
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
  u->reader = std::thread([this, p = u.get()] { ReaderLoop(p); });
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
  std::vector<std::shared_ptr<Upstream>> ended;
  ended.swap(ended_);
  lk.unlock();
  for (auto& e : ended) e->reader.join();
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
    // The reader fails whatever this connection carries, ours included, and says why.
    if (!sent) shutdown(u->c->fd, SHUT_RDWR);
    std::unique_lock<std::mutex> lk(mu_);
    w.cv.wait(lk, [&] { return w.outstanding == 0; });
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
  for (const auto& x : conns_) {
    if (x->retired) continue;
    x->retired = true;
    live_--;
    // One with nothing in flight ends now: its reader sees the end of its
    // read side and says goodbye (NBD_CMD_DISC); the others end after their
    // last reply.
    if (x->pending.empty()) shutdown(x->c->fd, SHUT_RD);
  }
  room_cv_.notify_all();
}

void NbdSource::ReaderLoop(Upstream* u) {
  pthread_setname_np(pthread_self(), "tm-nbd-source");  // for top -H and perf
  Connection& c = *u->c;
  std::vector<uint8_t> in(kInBuffer);
  size_t lo = 0, hi = 0;  // in[lo, hi): received, not yet used
  std::string why;        // set when the stream broke
  bool quiet = false;     // retired and done: ends without failing anything
  // At least n bytes in in[lo, hi).
  auto need = [&](size_t n) {
    if (hi - lo >= n) return true;
    std::memmove(in.data(), in.data() + lo, hi - lo);
    hi -= lo;
    lo = 0;
    while (hi < n) {
      const ssize_t r = c.RecvSome(in.data() + hi, in.size() - hi);
      if (r <= 0) {
        why = "the NBD server for " + c.what + " failed while replying: " + c.RecvFailure(int(r), errno);
        return false;
      }
      hi += size_t(r);
    }
    return true;
  };
  for (;;) {
    if (!need(nbd::kSimpleReplySize)) break;
    const uint8_t* r = in.data() + lo;
    const uint32_t magic = nbd::Get32(r);
    const uint32_t nbd_error = nbd::Get32(r + 4);
    const uint64_t handle = nbd::Get64(r + 8);
    lo += nbd::kSimpleReplySize;
    if (magic != nbd::kSimpleReplyMagic) {
      char hex[16];
      std::snprintf(hex, sizeof hex, "%x", magic);
      why = "the NBD server for " + c.what + " sent a bad reply magic (0x" + hex + ")";
      break;
    }
    Upstream::Slot s{};
    {
      std::lock_guard<std::mutex> lk(mu_);
      auto it = u->pending.find(handle);
      if (it != u->pending.end()) s = it->second;  // stays there until done, so a failure below fails it too
    }
    if (!s.w) {
      why = "the NBD server for " + c.what + " answered handle " + std::to_string(handle) + ", which it was not asked";
      break;
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
      if (u->pending.empty()) {
        quiet = true;
        break;
      }
      continue;
    }
    // The payload: what came with the header, then the rest straight into place.
    const size_t have = std::min<size_t>(hi - lo, s.length);
    std::memcpy(s.out, in.data() + lo, have);
    lo += have;
    if (have < s.length) {
      size_t got = 0;
      const int rc = c.Recv(s.out + have, s.length - have, &got);
      if (rc != 1) {
        why = "short read from the NBD server for " + c.what + ": " + c.RecvFailure(rc, errno);
        break;
      }
    }
    std::lock_guard<std::mutex> lk(mu_);
    u->pending.erase(handle);
    FinishLocked(s.w, true, "");
    if (u->retired && u->pending.empty()) {
      quiet = true;
      break;
    }
  }
  // A retired connection that answered everything says goodbye; nobody
  // else sends on it any more.
  if (quiet) {
    std::lock_guard<std::mutex> g(u->send_mu);
    c.Disconnect();
  }
  std::lock_guard<std::mutex> lk(mu_);
  if (!quiet && !u->retired) RetireAllLocked();
  if (closed_) why = kClosing;
  for (auto& p : u->pending) FinishLocked(p.second.w, false, why);
  u->pending.clear();
  // Joined by the next Pick, or the destructor: in the same step as leaving
  // conns_, so the destructor cannot miss it.
  auto it = std::find_if(conns_.begin(), conns_.end(), [&](const auto& x) { return x.get() == u; });
  ended_.push_back(std::move(*it));
  conns_.erase(it);
  room_cv_.notify_all();
}

void NbdSource::Close() {
  std::lock_guard<std::mutex> lk(mu_);
  if (closed_) return;
  closed_ = true;
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
