// A protected volume: the backing store and the recorder behind one export.
//
// Every successful WRITE, TRIM and WRITE_ZEROES is applied to the backing
// file and turned into a change record while it holds a range lock on its
// sectors (range_lock.h), so for any two changes that overlap, seq order is
// the order in which they reached the backing store: replaying records in seq
// order reproduces the file even when connections race on the same sectors.
// Changes to other sectors reach the backing store in parallel; only the seq,
// the record's slot in the ring and the dirty map are taken under the
// volume's lock (mu_), which is also the TimeMark barrier: a change has no
// seq until its pwrite is done, and gets every seq of a split write in one
// hold of mu_. The record's bytes are copied into its slot after mu_ is
// released; the ring hands records to the consumer in slot (= seq) order
// only once they are filled, and the consumer copies them out without
// holding the ring's lock either (RecordRing, record.h).
//
// Recording has three modes:
//   normal     records go to the ring; the dirty map holds their regions until
//              TypeScript acks their seq.
//   behind     a record did not fit: the ring's held data was dropped, and
//              changes are tracked only as stale regions in the dirty map. The
//              NBD client is never blocked on the consumer.
//   resyncing  the consumer pulls again: new changes are recorded, and the
//              resync thread emits each stale region's full contents as a
//              RESYNC record (read under the region's range lock, so it is
//              exact at its seq)
//              while the ring has headroom. When no stale region is left the
//              volume is normal again.
// After a restart every region the persistent map names is stale, so a crash
// costs a resync of those regions, never a full copy.
//
// The initial copy of a volume uses the same machinery: ResyncFrom(r) marks
// every region from r to the end stale, and the resync thread emits them as
// RESYNC records with seqs assigned under the lock, so replaying in seq order
// is exact while the application keeps writing. The stale bits of a copy are
// not written to the dirty map (it would name the whole volume); the agent
// keeps the copy's progress itself and calls ResyncFrom again after a restart.
//
// A write larger than kMaxRecordSectors becomes several records with
// consecutive seqs, so no record is larger than a ChangeBatch may be.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "dirty_map.h"
#include "export.h"
#include "range_lock.h"
#include "record.h"
#include "seq.h"

namespace tidemark {

// pino's numeric levels.
enum LogLevel { kLogDebug = 20, kLogInfo = 30, kLogWarn = 40, kLogError = 50 };
using LogFn = std::function<void(int level, const std::string& msg)>;

// A burst faster than the link is absorbed by the record buffer; past it,
// falling behind drops every held record and costs a resync and every exact
// point until it ends. While the consumer is draining, a write that finds the
// buffer full waits for room instead (DRBD's on-congestion block), so the
// application slows to the replication rate for the moment of the burst. A
// consumer that has taken nothing for kConsumerIdleMs is not draining: then,
// or once a write has waited congestion_wait_ms, the volume falls behind.
constexpr uint32_t kDefaultCongestionWaitMs = 1000;
constexpr uint32_t kConsumerIdleMs = 1000;

struct VolumeConfig {
  std::string name;
  std::string path;
  std::string state_dir;
  size_t buffer_bytes = 64 << 20;
  // How long a write may wait for room in a full record buffer while the
  // consumer is draining, before the volume falls behind (0: at once).
  uint32_t congestion_wait_ms = kDefaultCongestionWaitMs;
  bool read_only = false;
};

// The largest record's data: 1 MiB (2048 sectors). Larger writes are split.
constexpr uint32_t kMaxRecordSectors = 2048;

enum class Mode : int { kNormal = 0, kBehind = 1, kResyncing = 2 };

// The tap writes the application's data through the page cache, and Linux
// writes dirty pages back when they are 30 s old or past 10 % of memory: in
// bursts of hundreds of MB that the journal's appends and fdatasyncs on the
// same disk then wait behind (single RPO stalls of ~350 ms in bench:churn,
// gone with the volume on another device). Writing back every 8 MiB keeps
// the volume's share of the disk's queue small and steady.
constexpr uint64_t kWriteBehindBytes = uint64_t(8) << 20;

struct VolumeStats {
  uint64_t reads, writes, trims, zeroes, flushes;
  uint64_t bytes_read, bytes_written;
  uint64_t records, record_bytes, dropped_records, dropped_bytes, resync_records, behind_events;
  uint64_t resync_holes;
  uint64_t writebacks;  // write-behind rounds: the volume's dirty pages sent to its disk (WriteBehind)
  uint64_t congestion_waits, congestion_wait_ms;  // writes that waited for room in the record buffer, and how long in all
  uint64_t congestion_waiting;                    // writes waiting for room now
  uint64_t marks, gaps;
  uint64_t rejected, io_errors, connections, connections_total;
  uint64_t last_seq, acked_seq;
  uint64_t ring_used, ring_capacity, ring_records;
  uint64_t dirty_regions, stale_regions, regions;
  uint64_t resync_cursor;  // the next region the resync looks at
  uint64_t volume_seq;     // the newest seq of a change to this volume (not its group)
  int mode;
};

class Volume : public Export {
 public:
  Volume(VolumeConfig config, std::shared_ptr<SeqSpace> seq, LogFn log);
  ~Volume();

  bool Open(std::string* error);
  void Close();

  const std::string& name() const override { return config_.name; }
  uint64_t size() const override { return size_; }
  bool read_only() const override { return config_.read_only; }

  // NBD operations, already validated (range, flags). Return an NBD error or 0.
  uint32_t Read(uint64_t offset, uint32_t length, uint8_t* out) override;
  uint32_t Write(uint64_t offset, uint32_t length, const uint8_t* data, bool fua) override;
  uint32_t Trim(uint64_t offset, uint64_t length, bool fua) override;
  uint32_t Zero(uint64_t offset, uint64_t length, bool fua, bool no_hole) override;
  uint32_t Flush() override;

  // Consumer side (TypeScript). Moves whole records (up to max bytes, at
  // least one) out of the ring into memory from alloc(bytes); returns the
  // byte count, 0 if none is held. A pull is also the sign that the consumer
  // is draining again, which ends a behind period. alloc and the copy run
  // without the ring's lock, so writers are not held up by them. One
  // consumer per volume: Pull is never called from two threads at once.
  size_t Pull(size_t max, const std::function<uint8_t*(size_t)>& alloc);
  void SetResyncWake(std::function<void()> fn) { wake_resync_ = std::move(fn); }
  // Write-behind (the tap's writeback thread): once kWriteBehindBytes were
  // written since the last round, wake(); WriteBehind() then writes the
  // file's dirty pages to the disk and waits for them. Returns false when
  // fewer bytes than that are waiting.
  void SetWriteBehindWake(std::function<void()> fn) { wake_writeback_ = std::move(fn); }
  bool WriteBehind();
  void Ack(uint64_t seq);
  uint64_t Mark() const { return seq_->Current(); }

  // TimeMarks (Tap::Mark): with the change lock held (MarkLock), check that
  // a MARK record of data_length bytes can go into the stream now, then put
  // it there. A volume that is behind or resyncing refuses: a point inside a
  // resync cannot be restored exactly.
  std::unique_lock<std::mutex> MarkLock() { return std::unique_lock<std::mutex>(mu_); }
  bool CanMarkLocked(size_t data_length, std::string* why);
  void MarkLocked(uint64_t seq, const uint8_t* data, uint32_t data_length);
  SeqSpace* seq_space() const { return seq_.get(); }
  std::vector<uint8_t> DirtyBitmap();
  VolumeStats Stats();
  // Called (from any thread) when records become available after a pull
  // found none. Coalesced: once per drain.
  void SetReadable(std::function<void()> fn) { readable_ = std::move(fn); }

  // Resync thread: emit at most one stale region if there is headroom.
  // Returns true if it emitted one (call again), false if it has nothing to
  // do or no room.
  bool ResyncStep();
  bool wants_resync() const { return mode_.load() == Mode::kResyncing; }

  // Marks every region from `region` to the end stale and starts resyncing
  // there (the initial copy, or a copy resumed after a restart). Returns the
  // number of regions it marked. Wakes the resync thread if it was idle.
  uint64_t ResyncFrom(uint64_t region);
  // Never hand out a seq at or below floor (the appliance holds a higher one).
  void RaiseSeq(uint64_t floor) { seq_->Raise(floor); }

  void CountRejected() override { rejected_++; }
  void CountConnection(int delta) override {
    if (delta > 0) connections_total_++;
    connections_ += delta;
  }

 private:
  uint32_t ZeroAligned(uint64_t first, uint64_t count, bool fua, uint8_t kind, bool punch);
  // With mu_ held, around a change's trip to the backing store: set the
  // dirty bits of its regions first, and keep any ack from clearing them
  // until the change has its seq.
  void BeginChange(uint64_t first, uint64_t count);
  void EndChange(uint64_t first, uint64_t count);
  bool ResyncRoomLocked();
  // With mu_ held: mark the regions of [first, first+count) sectors dirty.
  void MarkDirty(uint64_t first, uint64_t count, uint64_t seq);
  // With mu_ held: reserve a record slot or fall behind. Returns the slot's
  // data pointer (after the header), or nullptr if the record is not kept.
  // Slots are reserved under mu_, so ring order is seq order; the data may be
  // copied in after mu_ is released. own_filling: slots the caller reserved
  // and has not committed yet (the earlier pieces of a split write); if this
  // one falls behind, they are dropped with the rest and must not be touched.
  uint8_t* BeginRecord(uint64_t seq, uint64_t first, uint32_t count, uint8_t kind, uint8_t flags,
                       uint32_t data_length, size_t own_filling = 0);
  // Commits the record whose data pointer BeginRecord returned (with or
  // without mu_). Tells the consumer records are there if it asked to be
  // told: at once, or, with notify_later, by setting it so the caller does
  // once mu_ is free.
  void EndRecord(uint8_t* data, bool* notify_later = nullptr);
  // With mu_ held: put a GAP (or EXACT) marker with a fresh seq in the ring.
  void Marker(uint8_t kind);
  // With mu_ held: the last stale region is in the ring; normal again.
  bool FinishResyncLocked();
  // With mu_ and ring_mu_ (held by ring_lock) held: drop the ring's records
  // and track changes as stale regions. Waits for other producers still
  // copying into their slots (they need only ring_mu_ to commit).
  void FallBehind(std::unique_lock<std::mutex>& ring_lock, const char* why, size_t own_filling = 0);
  // Before a write's change: while the consumer drains, wait (no lock held)
  // until the ring has room for the write's n record bytes, and promise them
  // to it so writers admitted together do not overfill it. Returns the bytes
  // promised, which the caller gives back (Unpromise) once its records are
  // reserved; 0 if none were (behind, a ring too small to gate, no consumer).
  size_t AdmitWrite(size_t n);
  void Unpromise(size_t n);
  bool SetStale(uint64_t r);
  uint32_t SyncForFua();
  uint32_t IoError(const char* op, int err);

  VolumeConfig config_;
  std::shared_ptr<SeqSpace> seq_;
  LogFn log_;
  int fd_ = -1;
  bool is_block_ = false;
  uint64_t size_ = 0;

  // Changes to overlapping sectors are ordered by ranges_, held from the
  // write to the backing store until the change has its seq and record;
  // mu_ is taken inside it, only around the bookkeeping (seq, record, dirty
  // map), so non-overlapping writes reach the backing store in parallel.
  RangeLock ranges_;
  std::mutex mu_;  // seq + record + dirty map + the maps below
  DirtyMap dirty_;
  std::vector<uint64_t> stale_;  // bitset, one bit per region
  uint64_t stale_count_ = 0;
  uint64_t resync_cursor_ = 0;
  std::unordered_map<uint64_t, uint64_t> last_seq_;  // region -> newest unacked seq
  std::unordered_map<uint64_t, uint32_t> inflight_;  // region -> changes between dirty bit and seq
  std::deque<std::pair<uint64_t, uint64_t>> pending_;  // (seq, region) in seq order
  std::atomic<Mode> mode_{Mode::kNormal};

  // The ring and the flags below; taken inside mu_ by producers, alone by the
  // consumer and by producers committing. No copy of record data is made
  // under it (RecordRing: reserve, copy, commit; take, copy, end).
  std::mutex ring_mu_;
  RecordRing ring_;
  std::condition_variable ring_filled_;  // a commit, while FallBehind waits for one
  bool behind_waiting_ = false;
  std::condition_variable ring_room_;  // a take freed space, or the volume fell behind (AdmitWrite waits)
  size_t room_waiters_ = 0;
  size_t promised_ = 0;  // record bytes of admitted writes not reserved yet
  std::chrono::steady_clock::time_point last_take_{};
  bool want_notify_ = true;
  std::function<void()> readable_;
  std::function<void()> wake_resync_;
  std::function<void()> wake_writeback_;
  std::atomic<uint64_t> unwritten_back_{0};  // bytes written since the last write-behind round
  std::vector<uint8_t> resync_buf_;

  std::atomic<uint64_t> reads_{0}, writes_{0}, trims_{0}, zeroes_{0}, flushes_{0};
  std::atomic<uint64_t> bytes_read_{0}, bytes_written_{0};
  std::atomic<uint64_t> records_{0}, record_bytes_{0}, dropped_records_{0}, dropped_bytes_{0};
  std::atomic<uint64_t> resync_records_{0}, behind_events_{0};
  std::atomic<uint64_t> resync_holes_{0};  // resync records that were holes (ZERO records, no read)
  std::atomic<uint64_t> writebacks_{0};
  std::atomic<uint64_t> congestion_waits_{0}, congestion_wait_us_{0};
  std::atomic<uint64_t> marks_{0}, gaps_{0};
  std::atomic<uint64_t> rejected_{0}, io_errors_{0}, connections_{0}, connections_total_{0};
  std::atomic<uint64_t> acked_seq_{0};
  std::atomic<uint64_t> volume_seq_{0};
};

}  // namespace tidemark
