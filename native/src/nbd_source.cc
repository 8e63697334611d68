#include "nbd_source.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

namespace tidemark {

using nbdcopy::Connection;
using tidemark::CopyError;

NbdSource::NbdSource(NbdEndpoint endpoint, std::shared_ptr<TlsCredentials> creds, int connections)
    : endpoint_(std::move(endpoint)), creds_(std::move(creds)), max_(std::max(1, connections)) {}

NbdSource::~NbdSource() { Close(); }

std::unique_ptr<Connection> NbdSource::Connect(std::string* error) {
  auto c = std::make_unique<Connection>();
  std::string msg;
  if (c->Open(endpoint_, creds_, [](int) {}, &msg) != CopyError::kNone) {
    *error = msg;
    return nullptr;
  }
  return c;
}

bool NbdSource::Open(uint64_t* size, std::string* error) {
  std::unique_ptr<Connection> c = Connect(error);
  if (!c) return false;
  *size = c->size;
  std::lock_guard<std::mutex> lk(mu_);
  open_++;
  idle_.push_back(std::move(c));
  return true;
}

std::unique_ptr<Connection> NbdSource::Take(std::string* error) {
  std::unique_lock<std::mutex> lk(mu_);
  cv_.wait(lk, [&] { return closed_ || !idle_.empty() || open_ < max_; });
  if (closed_) {
    *error = "the TimeView is closing";
    return nullptr;
  }
  if (!idle_.empty()) {
    auto c = std::move(idle_.back());
    idle_.pop_back();
    busy_fds_.push_back(c->fd);
    return c;
  }
  open_++;  // a new one, made outside the lock
  lk.unlock();
  std::unique_ptr<Connection> c = Connect(error);
  lk.lock();
  if (!c) {
    open_--;
    cv_.notify_one();
    return nullptr;
  }
  busy_fds_.push_back(c->fd);
  return c;
}

void NbdSource::Give(std::unique_ptr<Connection> c) {
  std::lock_guard<std::mutex> lk(mu_);
  busy_fds_.erase(std::remove(busy_fds_.begin(), busy_fds_.end(), c->fd), busy_fds_.end());
  if (closed_ || !c) {
    open_--;
  } else {
    idle_.push_back(std::move(c));
  }
  cv_.notify_one();
}

bool NbdSource::ReadOn(Connection& c, uint64_t offset, uint32_t length, uint8_t* out, std::string* error) {
  uint64_t handle;
  {
    std::lock_guard<std::mutex> lk(mu_);
    handle = next_handle_++;
  }
  for (uint32_t done = 0; done < length;) {
    const uint32_t n = std::min<uint32_t>(length - done, c.max_block);
    if (!c.Request(nbd::kCmdRead, handle, offset + done, n)) {
      *error = "cannot send a READ to the NBD server for " + c.what + ": " + c.RecvFailure(-1, errno);
      return false;
    }
    uint32_t nbd_error = 0;
    uint64_t got_handle = 0;
    if (!c.ReadReply(&nbd_error, &got_handle, error)) return false;
    if (got_handle != handle) {
      *error = "the NBD server for " + c.what + " answered handle " + std::to_string(got_handle) + ", not " +
               std::to_string(handle);
      return false;
    }
    if (nbd_error) {
      *error = "the NBD server for " + c.what + " failed a READ of " + std::to_string(n) + " bytes at " +
               std::to_string(offset + done) + ": " + nbdcopy::NbdErrno(nbd_error);
      return false;
    }
    size_t got = 0;
    const int rc = c.Recv(out + done, n, &got);
    if (rc != 1) {
      *error = "short read from the NBD server for " + c.what + ": " + c.RecvFailure(rc, errno);
      return false;
    }
    done += n;
  }
  return true;
}

bool NbdSource::Read(uint64_t offset, uint32_t length, uint8_t* out, std::string* error) {
  // A connection that failed (the appliance restarted, a cut link) is
  // dropped; one fresh connection gets a second try.
  for (int attempt = 0; attempt < 2; attempt++) {
    std::unique_ptr<Connection> c = Take(error);
    if (!c) return false;
    if (ReadOn(*c, offset, length, out, error)) {
      Give(std::move(c));
      return true;
    }
    c->Disconnect();
    std::lock_guard<std::mutex> lk(mu_);
    busy_fds_.erase(std::remove(busy_fds_.begin(), busy_fds_.end(), c->fd), busy_fds_.end());
    open_--;
    cv_.notify_one();
    if (closed_) return false;
    // Drop idle connections too: they share whatever broke this one.
    open_ -= int(idle_.size());
    idle_.clear();
  }
  return false;
}

void NbdSource::Close() {
  std::lock_guard<std::mutex> lk(mu_);
  if (closed_) return;
  closed_ = true;
  for (int fd : busy_fds_) shutdown(fd, SHUT_RDWR);
  open_ -= int(idle_.size());
  idle_.clear();
  cv_.notify_all();
}

}  // namespace tidemark
