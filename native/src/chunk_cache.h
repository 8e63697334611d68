// A bounded LRU cache of whole chunks of a point-in-time image.
//
// A TimeView's point never changes, so whatever was fetched once stays true:
// the cache needs no invalidation, only a byte budget. Chunks are kept whole
// (kViewChunk, 16 KiB; the last one of a volume may be shorter) and copied out under the
// lock; a buffer evicted by Put is reused for the new chunk, so a warm cache
// allocates nothing. Two readers that miss the same chunk at once share one
// fetch through the view's table of fetches in flight (view.h); the cache
// itself only holds what has arrived.
#pragma once

#include <cstdint>
#include <cstring>
#include <list>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace tidemark {

class ChunkCache {
 public:
  explicit ChunkCache(size_t budget_bytes) : budget_(budget_bytes) {}

  // Copies [from, from+len) of chunk `index` to out if the chunk is cached.
  bool Get(uint64_t index, uint32_t from, uint32_t len, uint8_t* out) {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = map_.find(index);
    if (it == map_.end()) return false;
    lru_.splice(lru_.begin(), lru_, it->second);  // most recently used first
    std::memcpy(out, it->second->data.data() + from, len);
    return true;
  }

  bool Has(uint64_t index) {
    std::lock_guard<std::mutex> lk(mu_);
    return map_.count(index) != 0;
  }

  void Put(uint64_t index, const uint8_t* data, uint32_t len) {
    if (len > budget_) return;
    std::lock_guard<std::mutex> lk(mu_);
    auto it = map_.find(index);
    if (it != map_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      return;  // same bytes: the point does not change
    }
    std::vector<uint8_t> buf;
    while (bytes_ + len > budget_ && !lru_.empty()) {
      Entry& victim = lru_.back();
      bytes_ -= victim.data.size();
      map_.erase(victim.index);
      buf.swap(victim.data);
      lru_.pop_back();
      evictions_++;
    }
    buf.assign(data, data + len);
    lru_.push_front(Entry{index, std::move(buf)});
    map_[index] = lru_.begin();
    bytes_ += len;
  }

  size_t bytes() {
    std::lock_guard<std::mutex> lk(mu_);
    return bytes_;
  }
  uint64_t evictions() {
    std::lock_guard<std::mutex> lk(mu_);
    return evictions_;
  }
  size_t budget() const { return budget_; }

 private:
  struct Entry {
    uint64_t index;
    std::vector<uint8_t> data;
  };
  const size_t budget_;
  std::mutex mu_;
  std::list<Entry> lru_;
  std::unordered_map<uint64_t, std::list<Entry>::iterator> map_;
  size_t bytes_ = 0;
  uint64_t evictions_ = 0;
};

}  // namespace tidemark
