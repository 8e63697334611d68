// A write sequence space: strictly increasing across restarts.
//
// Persisting the seq on every write would cost a sync per write, so the space
// is leased: the file holds an upper bound L that no seq handed out exceeds.
// When the counter reaches L, L moves up by kLease and is synced before the
// seq is used; after a crash the counter restarts at L. Seqs may skip (at
// most kLease per restart) but never repeat or go back. One SeqSpace is shared
// by every volume of a consistency group.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>

namespace tidemark {

class SeqSpace {
 public:
  static constexpr uint64_t kLease = uint64_t(1) << 20;

  ~SeqSpace();
  bool Open(const std::string& path, std::string* error);
  // Assigns the next seq. Thread-safe.
  uint64_t Next();
  // The highest seq assigned so far.
  uint64_t Current() const { return last_.load(std::memory_order_acquire); }
  // Never hand out a seq at or below floor (the appliance may know of a higher one).
  void Raise(uint64_t floor);

 private:
  bool Persist(uint64_t limit);
  int fd_ = -1;
  std::atomic<uint64_t> last_{0};
  std::atomic<uint64_t> limit_{0};
  std::mutex lease_mu_;
};

}  // namespace tidemark
