// Change records and the bounded ring that holds them until TypeScript pulls.
//
// A change record on the native side and in a pulled batch is a 32-byte
// little-endian header followed by its sector data (WRITE and RESYNC only):
//
//   0  u64 seq            8  u64 first sector     16 u32 sector count
//   20 u8  kind           21 u8  flags            22 u16 reserved (0)
//   24 u32 data length    28 u32 time             32 data[data length]
//
// time is the wall clock (CLOCK_REALTIME) in milliseconds when the change was
// recorded, before the client is answered, modulo 2^32. A reader restores the
// full value from any nearby full time t (the appliance uses the batch's
// commit time): full = t + int32(time - uint32(t)), exact while the two are
// less than 24 days apart. 0 means "not stamped".
//
// Besides changes, the ring carries markers with no sectors (count 0):
//   MARK   a TimeMark: every change below its seq is in the stream before it,
//          every later one after it. data = the mark's metadata as the agent
//          gave it (UTF-8 JSON, at most kMaxMarkData bytes).
//   GAP    the stream lost changes (the volume fell behind, or restarted with
//          stale regions, or a copy began): points after the last change the
//          reader holds before this marker cannot be restored exactly ...
//   EXACT  ... until this one, when every stale region has been resent.
//
// proto/record.ts is the TypeScript owner of exactly this layout; the addon
// exports it (recordLayout: offsetof on RecordHeader, the kinds, the limits)
// and test/record-format.test.ts checks that the two agree field by field.
//
// The ring never grows: when a record does not fit, the volume falls behind
// (see volume.h) instead of blocking the NBD client.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

namespace tidemark {

constexpr uint32_t kSectorSize = 512;
constexpr uint32_t kSectorShift = 9;
constexpr size_t kRecordHeaderSize = 32;

enum RecordKind : uint8_t {
  kRecordWrite = 1,   // data = the sectors' new contents
  kRecordTrim = 2,    // the sectors now read as zeroes (discarded)
  kRecordZero = 3,    // the sectors now read as zeroes (WRITE_ZEROES)
  kRecordFlush = 4,   // a flush point: every record below this seq was flushed
  kRecordResync = 5,  // data = the sectors' full contents at this seq (dirty-map resync)
  kRecordMark = 6,    // a TimeMark (see above); data = its metadata
  kRecordGap = 7,     // points from here on are inexact ...
  kRecordExact = 8,   // ... until here
};

constexpr uint32_t kMaxMarkData = 4096;

enum RecordFlags : uint8_t {
  kRecordFlagFua = 1,
};

struct RecordHeader {
  uint64_t seq;
  uint64_t sector;
  uint32_t count;
  uint8_t kind;
  uint8_t flags;
  uint16_t reserved0;
  uint32_t data_length;
  uint32_t time_ms;
};
static_assert(sizeof(RecordHeader) == kRecordHeaderSize, "record header is 32 bytes");

// Fields of records and batches read and written in place at any alignment
// (host order: the layout is little-endian, and so is every host that builds
// it; batch_ingest.cc asserts it).
inline uint32_t LoadU32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline uint64_t LoadU64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
inline void StoreU32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
inline void StoreU64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, 8); }

// A byte ring of whole records. Not thread-safe: the owner locks around it.
class RecordRing {
 public:
  explicit RecordRing(size_t capacity) : buf_(capacity), limit_(capacity) {}

  size_t capacity() const { return buf_.size(); }
  size_t used() const { return used_; }
  size_t records() const { return records_; }
  bool empty() const { return used_ == 0; }

  // Returns space for a record of n bytes, or nullptr if it does not fit now.
  // The caller fills it and calls Commit(n) before any other call.
  uint8_t* Reserve(size_t n) {
    if (used_ == 0) { head_ = tail_ = 0; limit_ = buf_.size(); }
    const bool wrapped = tail_ < head_ || (tail_ == head_ && used_ > 0);
    if (!wrapped) {
      if (buf_.size() - tail_ >= n) return &buf_[tail_];
      if (head_ >= n) {  // wrap: the bytes from tail_ to the end are a gap
        limit_ = tail_;
        tail_ = 0;
        return &buf_[0];
      }
      return nullptr;
    }
    if (head_ - tail_ >= n) return &buf_[tail_];
    return nullptr;
  }
  void Commit(size_t n) { tail_ += n; used_ += n; records_++; }

  // Bytes of whole records from the head that fit in max (at least one record
  // if any is held, even if it is larger than max).
  size_t PeekBytes(size_t max) const {
    size_t pos = head_, lim = limit_, total = 0, left = used_;
    while (left > 0) {
      if (pos == lim) { pos = 0; lim = buf_.size(); }
      const size_t n = kRecordHeaderSize + DataLength(&buf_[pos]);
      if (total > 0 && total + n > max) break;
      total += n;
      pos += n;
      left -= n;
    }
    return total;
  }

  // Moves exactly `bytes` (a value PeekBytes returned) of records into dst.
  void Take(uint8_t* dst, size_t bytes) {
    while (bytes > 0) {
      if (head_ == limit_) { head_ = 0; limit_ = buf_.size(); }
      const size_t n = kRecordHeaderSize + DataLength(&buf_[head_]);
      std::memcpy(dst, &buf_[head_], n);
      dst += n;
      head_ += n;
      used_ -= n;
      records_--;
      bytes -= n;
    }
    if (used_ == 0) { head_ = tail_ = 0; limit_ = buf_.size(); }
  }

  void Clear() { head_ = tail_ = used_ = records_ = 0; limit_ = buf_.size(); }

  // A record's data length. Records need not be 8-byte aligned in the ring
  // (a MARK's metadata has any length), so the header is never cast in place.
  static uint32_t DataLength(const uint8_t* record) {
    uint32_t n;
    std::memcpy(&n, record + offsetof(RecordHeader, data_length), sizeof n);
    return n;
  }

 private:
  std::vector<uint8_t> buf_;
  size_t head_ = 0, tail_ = 0, used_ = 0, records_ = 0;
  size_t limit_;  // end of valid bytes in the segment that head_ is in
};

}  // namespace tidemark
