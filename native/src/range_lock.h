// Range locks over sectors: what lets the tap apply non-overlapping changes
// to one volume at once while overlapping ones stay strictly ordered.
//
// A holder of [first, last) excludes every other holder of an overlapping
// range. Grants are first-come first-served among overlapping requests: a
// request waits for every overlapping request made before it, granted or
// still waiting, so a large range is never starved by a stream of small ones,
// and two overlapping changes are applied (and sequenced) in the order they
// asked. One thread holds at most one range of a lock at a time (FIFO grants
// would otherwise let two threads wait on each other).
//
// The list is scanned whole: it holds the changes in flight on one volume
// (a few dozen per connection at most), where a scan costs less than a tree.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <iterator>
#include <list>
#include <mutex>

namespace tidemark {

class RangeLock {
 public:
  struct Range {
    uint64_t first, last;
  };

  class Hold {
   public:
    Hold() = default;
    Hold(RangeLock* lock, std::list<Range>::iterator it) : lock_(lock), it_(it) {}
    Hold(Hold&& o) noexcept : lock_(o.lock_), it_(o.it_) { o.lock_ = nullptr; }
    Hold& operator=(Hold&& o) noexcept {
      if (this != &o) {
        Release();
        lock_ = o.lock_;
        it_ = o.it_;
        o.lock_ = nullptr;
      }
      return *this;
    }
    Hold(const Hold&) = delete;
    Hold& operator=(const Hold&) = delete;
    ~Hold() { Release(); }
    void Release() {
      if (lock_) lock_->Unlock(it_);
      lock_ = nullptr;
    }

   private:
    RangeLock* lock_ = nullptr;
    std::list<Range>::iterator it_;
  };

  // Blocks until [first, last) can be held (last > first).
  Hold Lock(uint64_t first, uint64_t last) {
    std::unique_lock<std::mutex> lk(mu_);
    // List nodes are recycled through free_ (splice moves a node, it does not
    // allocate): no allocation per change once the volume has warmed up.
    if (free_.empty()) free_.emplace_back();
    entries_.splice(entries_.end(), free_, free_.begin());
    auto it = std::prev(entries_.end());
    *it = Range{first, last};
    if (BlockedLocked(it)) {
      waiting_++;
      cv_.wait(lk, [&] { return !BlockedLocked(it); });
      waiting_--;
    }
    return Hold(this, it);
  }

  // Ranges held or asked for (tests).
  size_t size() {
    std::lock_guard<std::mutex> lk(mu_);
    return entries_.size();
  }

 private:
  bool BlockedLocked(std::list<Range>::iterator it) const {
    for (auto e = entries_.begin(); e != it; ++e)
      if (e->first < it->last && it->first < e->last) return true;
    return false;
  }
  void Unlock(std::list<Range>::iterator it) {
    bool wake;
    {
      std::lock_guard<std::mutex> lk(mu_);
      free_.splice(free_.begin(), entries_, it);
      wake = waiting_ > 0;
    }
    if (wake) cv_.notify_all();
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::list<Range> entries_;  // in request order: granted ones and waiting ones
  std::list<Range> free_;
  int waiting_ = 0;
};

}  // namespace tidemark
