// Change records and the bounded ring that holds them until TypeScript pulls.
//
// A change record on the native side and in a pulled batch is a 32-byte
// little-endian header followed by its sector data (WRITE and RESYNC only):
//
//   0  u64 seq            8  u64 first sector     16 u32 sector count
//   20 u8  kind           21 u8  flags            22 u16 reserved (0)
//   24 u32 data length    28 u32 time             32 data[data length]
//
// (Inside the ring, reserved is nonzero while a producer is still copying the
// record's data in; RecordRing clears it before the record can leave.)
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

#include <cassert>
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
  // On a ZERO record: a resync of a region that is a hole in the volume's
  // file (SEEK_DATA found no data in it), sent as "these sectors read as
  // zeroes" instead of a RESYNC record of 64 KiB of zeroes. It stands for the
  // RESYNC record exactly (same seq, same region), so the initial copy counts
  // it as copied.
  kRecordFlagResync = 2,
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

// A byte ring of whole records, filled by several producers and drained by
// one consumer, each copying its bytes with no lock held. The ring itself is
// not thread-safe: its owner holds one lock around every call, and the copies
// happen between calls:
//   producer  Reserve (lock), write the data (no lock), Commit (lock)
//   consumer  BeginTake (lock), CopyTaken (no lock), EndTake (lock)
// Reserved bytes belong to their producer until Commit and taken bytes to the
// consumer until EndTake; Reserve hands out neither, so the copies never meet.
// The consumer only sees the committed prefix of the reservation order: a
// record committed early waits behind an older one still being filled (its
// header's reserved field is kFilling meanwhile, and 0 again at Commit, so no
// record leaves the ring with it set). The owner reserves in seq order, so the
// consumer sees seq order however the copies finish.
class RecordRing {
 public:
  explicit RecordRing(size_t capacity) : buf_(capacity), limit_(capacity) {}

  size_t capacity() const { return buf_.size(); }
  // Bytes and records held: being filled, ready, or being taken.
  size_t used() const { return used_; }
  size_t records() const { return records_; }
  size_t filling() const { return filling_; }
  bool empty() const { return used_ == 0; }

  // Reserves a record of h.data_length bytes of data and writes its header
  // (marked as being filled). Returns the record (header first), or nullptr
  // if it does not fit now. The caller writes the data after the header and
  // then calls Commit with the same pointer.
  uint8_t* Reserve(const RecordHeader& h) {
    const size_t n = kRecordHeaderSize + h.data_length;
    if (used_ == 0) Reset();
    uint8_t* p = nullptr;
    const bool wrapped = tail_ < head_ || (tail_ == head_ && used_ > 0);
    if (!wrapped) {
      if (buf_.size() - tail_ >= n) {
        p = &buf_[tail_];
      } else if (head_ >= n) {  // wrap: the bytes from tail_ to the end are a gap
        limit_ = tail_;
        tail_ = 0;
        p = &buf_[0];
      }
    } else if (head_ - tail_ >= n) {
      p = &buf_[tail_];
    }
    if (!p) return nullptr;
    std::memcpy(p, &h, kRecordHeaderSize);
    StoreU16(p + kFillingAt, kFilling);
    tail_ += n;
    used_ += n;
    records_++;
    filling_++;
    return p;
  }

  // The record Reserve returned is filled. Returns true if records became
  // ready for the consumer (false: an older one is still being filled).
  bool Commit(uint8_t* record) {
    StoreU16(record + kFillingAt, 0);
    filling_--;
    bool more = false;
    while (ready_ < used_) {
      if (ready_pos_ == limit_) ready_pos_ = 0;  // the wrap: records go on at the start
      const uint8_t* r = &buf_[ready_pos_];
      if (LoadU16(r + kFillingAt) == kFilling) break;
      const size_t n = kRecordHeaderSize + DataLength(r);
      ready_pos_ += n;
      ready_ += n;
      ready_records_++;
      more = true;
    }
    return more;
  }

  // Takes the ready records from the head that fit in max bytes (at least
  // one if any is ready, even if it is larger than max) and returns their
  // byte count, 0 if none is ready. They stay in the ring, unavailable to
  // producers, until EndTake. One take at a time: the ring has one consumer.
  size_t BeginTake(size_t max) {
    assert(take_first_ + take_second_ == 0 && "a RecordRing has one consumer");
    if (ready_ == 0) return 0;
    if (head_ == limit_) { head_ = 0; limit_ = buf_.size(); }  // the head reached the wrap
    size_t pos = head_, lim = limit_, left = ready_;
    bool second = false;
    while (left > 0) {
      if (pos == lim) { pos = 0; lim = buf_.size(); second = true; }
      const size_t n = kRecordHeaderSize + DataLength(&buf_[pos]);
      if (take_first_ + take_second_ > 0 && take_first_ + take_second_ + n > max) break;
      (second ? take_second_ : take_first_) += n;
      take_records_++;
      pos += n;
      left -= n;
    }
    return take_first_ + take_second_;
  }
  // Copies the taken records (whole records, in order) to dst.
  void CopyTaken(uint8_t* dst) const {
    std::memcpy(dst, &buf_[head_], take_first_);
    if (take_second_) std::memcpy(dst + take_first_, &buf_[0], take_second_);
  }
  // Frees the taken records' space.
  void EndTake() {
    const size_t n = take_first_ + take_second_;
    used_ -= n;
    ready_ -= n;
    records_ -= take_records_;
    ready_records_ -= take_records_;
    head_ = TakeEnd();
    if (take_second_) limit_ = buf_.size();
    take_first_ = take_second_ = take_records_ = 0;
    if (used_ == 0) Reset();
  }
  // Gives the taken records back (the consumer could not receive them).
  void CancelTake() { take_first_ = take_second_ = take_records_ = 0; }

  struct Dropped { size_t records, bytes; };
  // Drops every record except those being taken. Records being filled are
  // dropped too: their producers must not touch them again (the owner waits
  // for them to commit, or they are the caller's own).
  Dropped Clear() {
    const size_t taken = take_first_ + take_second_;
    const Dropped d{records_ - take_records_, used_ - taken};
    filling_ = 0;
    used_ = ready_ = taken;
    records_ = ready_records_ = take_records_;
    if (taken == 0) {
      Reset();
      return d;
    }
    tail_ = ready_pos_ = TakeEnd();
    if (!take_second_) limit_ = buf_.size();  // head_..tail_ no longer wraps
    return d;
  }

  // A record's data length. Records need not be 8-byte aligned in the ring
  // (a MARK's metadata has any length), so the header is never cast in place.
  static uint32_t DataLength(const uint8_t* record) { return LoadU32(record + offsetof(RecordHeader, data_length)); }

 private:
  static constexpr size_t kFillingAt = offsetof(RecordHeader, reserved0);
  static constexpr uint16_t kFilling = 0xf111;

  static uint16_t LoadU16(const uint8_t* p) {
    uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
  }
  static void StoreU16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }

  size_t TakeEnd() const { return take_second_ ? take_second_ : head_ + take_first_; }
  void Reset() { head_ = tail_ = ready_pos_ = ready_ = ready_records_ = 0; limit_ = buf_.size(); }

  std::vector<uint8_t> buf_;
  // head_: the oldest record (being taken, ready, or filling); tail_: where
  // the next reservation goes; used_/records_: everything from head_ to tail_.
  size_t head_ = 0, tail_ = 0, used_ = 0, records_ = 0;
  size_t limit_;  // end of valid bytes in the segment that head_ is in
  // The ready prefix from head_ (taken records included) and where it ends.
  size_t ready_ = 0, ready_records_ = 0, ready_pos_ = 0;
  size_t filling_ = 0;  // reservations not yet committed
  size_t take_first_ = 0, take_second_ = 0, take_records_ = 0;  // the take: bytes before and after the wrap
};

}  // namespace tidemark
