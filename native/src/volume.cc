#include "volume.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "nbd_proto.h"

namespace tidemark {

namespace {

constexpr uint64_t kSectorsPerRegion = kRegionSize >> kSectorShift;
constexpr size_t kZeroChunk = 1 << 20;

const uint8_t* ZeroBuffer() {
  static const std::vector<uint8_t>* zeroes = new std::vector<uint8_t>(kZeroChunk, 0);
  return zeroes->data();
}

bool PreadFull(int fd, uint8_t* buf, size_t len, uint64_t off) {
  while (len > 0) {
    const ssize_t n = pread(fd, buf, len, off_t(off));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;  // short file: the backing store shrank under us
      return false;
    }
    buf += n;
    len -= size_t(n);
    off += uint64_t(n);
  }
  return true;
}

bool PwriteFull(int fd, const uint8_t* buf, size_t len, uint64_t off) {
  while (len > 0) {
    const ssize_t n = pwrite(fd, buf, len, off_t(off));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    buf += n;
    len -= size_t(n);
    off += uint64_t(n);
  }
  return true;
}

std::string Num(uint64_t v) { return std::to_string(v); }

uint32_t NowMs32() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return uint32_t(uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1000000);
}

}  // namespace

Volume::Volume(VolumeConfig config, std::shared_ptr<SeqSpace> seq, LogFn log)
    : config_(std::move(config)), seq_(std::move(seq)), log_(std::move(log)), ring_(config_.buffer_bytes) {}

Volume::~Volume() { Close(); }

bool Volume::Open(std::string* error) {
  const std::string& p = config_.path;
  fd_ = ::open(p.c_str(), (config_.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
  if (fd_ < 0) {
    *error = "volume " + config_.name + ": cannot open " + p + ": " + std::strerror(errno);
    return false;
  }
  struct stat st;
  if (fstat(fd_, &st) != 0) {
    *error = "volume " + config_.name + ": cannot stat " + p + ": " + std::strerror(errno);
    return false;
  }
  if (S_ISBLK(st.st_mode)) {
    is_block_ = true;
    if (ioctl(fd_, BLKGETSIZE64, &size_) != 0) {
      *error = "volume " + config_.name + ": cannot get the size of " + p + ": " + std::strerror(errno);
      return false;
    }
  } else if (S_ISREG(st.st_mode)) {
    size_ = uint64_t(st.st_size);
  } else {
    *error = "volume " + config_.name + ": " + p + " is neither a regular file nor a block device";
    return false;
  }
  if (size_ == 0 || size_ % kSectorSize != 0) {
    *error = "volume " + config_.name + ": " + p + " is " + Num(size_) +
             " bytes; a volume must be a non-zero multiple of 512 bytes";
    return false;
  }
  bool reset = false;
  if (!dirty_.Open(config_.state_dir + "/" + config_.name + ".dirty", size_, &reset, error)) {
    *error = "volume " + config_.name + ": " + *error;
    return false;
  }
  stale_.assign((dirty_.regions() + 63) / 64, 0);
  for (uint64_t r = 0; r < dirty_.regions(); r++)
    if (dirty_.Test(r)) SetStale(r);
  resync_buf_.resize(kRegionSize);
  if (reset) {
    log_(kLogWarn, "volume " + config_.name + ": the dirty map was made for another size of volume; " +
                       "every region will be resynced");
  }
  if (stale_count_ > 0) {
    mode_ = Mode::kBehind;
    log_(kLogInfo, "volume " + config_.name + ": " + Num(stale_count_) +
                       " regions were not acknowledged before the last stop; they will be resynced");
  }
  return true;
}

void Volume::Close() {
  dirty_.Close();
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

bool Volume::SetStale(uint64_t r) {
  uint64_t& w = stale_[r >> 6];
  const uint64_t m = uint64_t(1) << (r & 63);
  if (w & m) return false;
  w |= m;
  stale_count_++;
  return true;
}

uint32_t Volume::IoError(const char* op, int err) {
  io_errors_++;
  log_(kLogError, "volume " + config_.name + ": " + op + " failed on " + config_.path + ": " + std::strerror(err));
  if (err == ENOSPC || err == EDQUOT || err == EFBIG) return nbd::kEnospc;
  return nbd::kEio;
}

void Volume::MarkDirty(uint64_t first, uint64_t count, uint64_t seq) {
  const uint64_t r0 = first / kSectorsPerRegion;
  const uint64_t r1 = (first + count - 1) / kSectorsPerRegion;
  const bool behind = mode_.load(std::memory_order_relaxed) == Mode::kBehind;
  for (uint64_t r = r0; r <= r1; r++) {
    if (behind) {
      SetStale(r);
    } else {
      last_seq_[r] = seq;
      pending_.emplace_back(seq, r);
    }
  }
}

uint8_t* Volume::BeginRecord(uint64_t seq, uint64_t first, uint32_t count, uint8_t kind, uint8_t flags,
                             uint32_t data_length, size_t own_filling) {
  if (mode_.load(std::memory_order_relaxed) == Mode::kBehind) return nullptr;
  RecordHeader h{};
  h.seq = seq;
  h.sector = first;
  h.count = count;
  h.kind = kind;
  h.flags = flags;
  h.data_length = data_length;
  h.time_ms = NowMs32();
  const size_t n = kRecordHeaderSize + data_length;
  std::unique_lock<std::mutex> rl(ring_mu_);
  uint8_t* slot = ring_.Reserve(h);
  if (!slot) {
    FallBehind(rl,
               n > ring_.capacity() ? "a single write is larger than the record buffer"
                                    : "the record buffer is full (the consumer is not draining)",
               own_filling);
    return nullptr;
  }
  records_.fetch_add(1, std::memory_order_relaxed);
  record_bytes_.fetch_add(n, std::memory_order_relaxed);
  return slot + kRecordHeaderSize;
}

void Volume::EndRecord(uint8_t* data, bool* notify_later) {
  bool notify = false;
  {
    std::lock_guard<std::mutex> rl(ring_mu_);
    if (ring_.Commit(data - kRecordHeaderSize)) {
      notify = want_notify_;
      want_notify_ = false;
    }
    if (behind_waiting_) ring_filled_.notify_all();
  }
  if (notify_later) *notify_later |= notify;
  else if (notify && readable_) readable_();
}

void Volume::Marker(uint8_t kind) {
  const uint64_t seq = seq_->Next();
  if (uint8_t* d = BeginRecord(seq, 0, 0, kind, 0, 0)) {
    EndRecord(d);
    if (kind == kRecordGap) gaps_++;
  }
}

bool Volume::CanMarkLocked(size_t data_length, std::string* why) {
  const Mode m = mode_.load();
  if (m != Mode::kNormal) {
    *why = "volume " + config_.name +
           (m == Mode::kBehind ? " is behind (its held records were dropped)"
                               : " is resyncing (" + Num(stale_count_) + " regions left)") +
           "; a TimeMark now could not be restored exactly, so none is taken until it catches up";
    return false;
  }
  if (data_length > kMaxMarkData) {
    *why = "TimeMark metadata of " + Num(data_length) + " bytes is over the " + Num(kMaxMarkData) + "-byte limit";
    return false;
  }
  std::lock_guard<std::mutex> rl(ring_mu_);
  const size_t n = kRecordHeaderSize + data_length;
  if (ring_.used() + n > ring_.capacity()) {
    *why = "volume " + config_.name + ": the record buffer is full (the stream is not draining)";
    return false;
  }
  return true;
}

void Volume::MarkLocked(uint64_t seq, const uint8_t* data, uint32_t data_length) {
  uint8_t* d = BeginRecord(seq, 0, 0, kRecordMark, 0, data_length);
  if (!d) return;  // CanMarkLocked said it fits; only a wrapped ring can refuse, and then it fell behind
  if (data_length) std::memcpy(d, data, data_length);  // at most kMaxMarkData: under mu_, the barrier
  EndRecord(d);
  marks_++;
}

void Volume::FallBehind(std::unique_lock<std::mutex>& ring_lock, const char* why, size_t own_filling) {
  // Other producers may be copying into their slots: the slots must stay
  // theirs until they commit. They hold no lock this thread holds (only
  // their range locks), and a copy is at most a few MiB, so the wait is short.
  if (ring_.filling() > own_filling) {
    behind_waiting_ = true;
    ring_filled_.wait(ring_lock, [&] { return ring_.filling() <= own_filling; });
    behind_waiting_ = false;
  }
  // Records being taken stay with the consumer: they left before this.
  const RecordRing::Dropped dropped = ring_.Clear();
  dropped_records_ += dropped.records;
  dropped_bytes_ += dropped.bytes;
  for (const auto& e : last_seq_) SetStale(e.first);
  last_seq_.clear();
  pending_.clear();
  mode_ = Mode::kBehind;
  behind_events_++;
  if (room_waiters_) ring_room_.notify_all();  // their records would not be kept now
  // A consumer waiting for records would wait forever: none come while
  // behind, and only its next pull starts the resync. Wake it (non-blocking).
  if (want_notify_) {
    want_notify_ = false;
    if (readable_) readable_();
  }
  log_(kLogWarn, "volume " + config_.name + " is behind: " + why + "; dropped " + Num(dropped.records) +
                     " held records (" + Num(dropped.bytes) + " bytes), tracking " + Num(stale_count_) +
                     " stale regions in the dirty map until the consumer drains");
}

uint32_t Volume::SyncForFua() {
  if (!dirty_.Sync()) return IoError("dirty map sync", errno);
  if (fdatasync(fd_) != 0) return IoError("fdatasync", errno);
  return 0;
}

uint32_t Volume::Read(uint64_t offset, uint32_t length, uint8_t* out) {
  if (!PreadFull(fd_, out, length, offset)) return IoError("read", errno);
  reads_.fetch_add(1, std::memory_order_relaxed);
  bytes_read_.fetch_add(length, std::memory_order_relaxed);
  return 0;
}

void Volume::BeginChange(uint64_t first, uint64_t count) {
  const uint64_t r1 = (first + count - 1) / kSectorsPerRegion;
  for (uint64_t r = first / kSectorsPerRegion; r <= r1; r++) {
    // Before the backing store changes: a kill -9 between the two must not
    // leave a changed region the map does not name.
    dirty_.Set(r);
    inflight_[r]++;
  }
}

void Volume::EndChange(uint64_t first, uint64_t count) {
  const uint64_t r1 = (first + count - 1) / kSectorsPerRegion;
  for (uint64_t r = first / kSectorsPerRegion; r <= r1; r++) {
    auto it = inflight_.find(r);
    if (--it->second == 0) inflight_.erase(it);
  }
}

uint32_t Volume::Write(uint64_t offset, uint32_t length, const uint8_t* data, bool fua) {
  const uint64_t end = offset + length;
  const uint64_t first = offset >> kSectorShift;
  const uint64_t last = (end + kSectorSize - 1) >> kSectorShift;
  bool notify = false;  // the consumer is told after mu_ is free (it is a syscall)
  const uint64_t npieces = (last - first + kMaxRecordSectors - 1) / kMaxRecordSectors;
  const size_t promised = AdmitWrite(size_t(npieces * kRecordHeaderSize + ((last - first) << kSectorShift)));
  {
    // The range lock orders this change against overlapping ones from its
    // pwrite to its seq, so the one that lands last has the higher seq.
    RangeLock::Hold hold = ranges_.Lock(first, last);
    {
      std::lock_guard<std::mutex> lk(mu_);
      BeginChange(first, last - first);
    }
    if (!PwriteFull(fd_, data, length, offset)) {
      const int err = errno;
      if (promised) Unpromise(promised);
      std::lock_guard<std::mutex> lk(mu_);
      EndChange(first, last - first);
      return IoError("write", err);
    }
    // An unaligned write is widened to whole sectors with the current bytes
    // of its edge sectors, read after the write (the range lock keeps them).
    uint8_t head[kSectorSize], tail[kSectorSize];
    const uint64_t lo_b = first << kSectorShift, hi_b = last << kSectorShift;
    bool ok = true;
    if (offset > lo_b) ok = PreadFull(fd_, head, offset - lo_b, lo_b);
    if (ok && end < hi_b) ok = PreadFull(fd_, tail, hi_b - end, end);
    const int err = errno;
    std::unique_lock<std::mutex> lk(mu_);
    EndChange(first, last - first);
    if (!ok) {
      if (promised) Unpromise(promised);
      // A record would lie about its edges: keep the regions for resync instead.
      if (mode_.load() != Mode::kBehind) {
        std::unique_lock<std::mutex> rl(ring_mu_);
        FallBehind(rl, "reading the edge sectors of an unaligned write failed");
      }
      MarkDirty(first, last - first, 0);
      return IoError("read of edge sectors", err);
    }
    // A piece's record: the client's bytes, widened with the edge sectors.
    auto fill = [&](uint8_t* d, uint64_t ps, uint64_t pe) {
      const uint64_t pb = ps << kSectorShift, pend = pe << kSectorShift;
      const uint64_t lo = std::max(pb, offset), hi = std::min(pend, end);
      if (lo > pb) std::memcpy(d, head, lo - pb);
      std::memcpy(d + (lo - pb), data + (lo - offset), hi - lo);
      if (hi < pend) std::memcpy(d + (hi - pb), tail, pend - hi);
    };
    // One record per kMaxRecordSectors piece, each with its own seq, all
    // reserved under one hold of mu_ so no TimeMark falls between them; the
    // bytes are copied in after mu_ is released, so other writers and marks
    // do not wait for up to 32 MiB of memcpy.
    struct Piece { uint8_t* d; uint64_t ps, pe; };
    Piece pieces[nbd::kMaxPayload / (kMaxRecordSectors << kSectorShift)];
    size_t held = 0;
    for (uint64_t ps = first; ps < last; ps += kMaxRecordSectors) {
      const uint64_t pe = std::min<uint64_t>(last, ps + kMaxRecordSectors);
      const uint32_t count = uint32_t(pe - ps);
      const uint64_t seq = seq_->Next();
      volume_seq_.store(seq, std::memory_order_relaxed);
      MarkDirty(ps, count, seq);
      uint8_t* d = BeginRecord(seq, ps, count, kRecordWrite, fua ? kRecordFlagFua : 0, count << kSectorShift, held);
      if (!d) {
        held = 0;  // behind: the ring dropped this write's earlier pieces too
        continue;
      }
      if (held < std::size(pieces)) {
        pieces[held++] = {d, ps, pe};
      } else {  // longer than an NBD request may be (a direct caller): copied here
        fill(d, ps, pe);
        EndRecord(d, &notify);
      }
    }
    if (promised) Unpromise(promised);  // reserved (or dropped behind): no longer owed
    lk.unlock();
    for (size_t i = 0; i < held; i++) {
      fill(pieces[i].d, pieces[i].ps, pieces[i].pe);
      EndRecord(pieces[i].d, &notify);
    }
  }
  if (notify && readable_) readable_();
  writes_.fetch_add(1, std::memory_order_relaxed);
  bytes_written_.fetch_add(length, std::memory_order_relaxed);
  const uint64_t before = unwritten_back_.fetch_add(length, std::memory_order_relaxed);
  if (before < kWriteBehindBytes && before + length >= kWriteBehindBytes && wake_writeback_) wake_writeback_();
  return fua ? SyncForFua() : 0;
}

bool Volume::WriteBehind() {
  const uint64_t waiting = unwritten_back_.load(std::memory_order_relaxed);
  if (waiting < kWriteBehindBytes) return false;
  // What writers add meanwhile stays counted for the next round.
  unwritten_back_.fetch_sub(waiting, std::memory_order_relaxed);
  // Write the pages back and wait, so at most about kWriteBehindBytes of this
  // volume sit in the disk's queue at once. Errors are not this thread's to
  // report: a failed page is the next fdatasync's (a FLUSH's) error, as it
  // would be without write-behind; a file system without sync_file_range is
  // left to the kernel's own writeback.
  const unsigned flags = SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER;
  while (sync_file_range(fd_, 0, 0, flags) != 0 && errno == EINTR) {
  }
  writebacks_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

uint32_t Volume::ZeroAligned(uint64_t first, uint64_t count, bool fua, uint8_t kind, bool punch) {
  const uint64_t off = first << kSectorShift;
  const uint64_t len = count << kSectorShift;
  bool notify = false;
  {
    RangeLock::Hold hold = ranges_.Lock(first, first + count);
    {
      std::lock_guard<std::mutex> lk(mu_);
      BeginChange(first, count);
    }
    int rc = -1;
    if (is_block_) {
      uint64_t range[2] = {off, len};
      rc = ioctl(fd_, BLKZEROOUT, range);
    } else {
      rc = fallocate(fd_, punch ? (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) : FALLOC_FL_ZERO_RANGE, off_t(off),
                     off_t(len));
    }
    if (rc != 0) {
      // Not supported by this file system or device: write the zeroes.
      for (uint64_t done = 0; done < len;) {
        const size_t n = size_t(std::min<uint64_t>(kZeroChunk, len - done));
        if (!PwriteFull(fd_, ZeroBuffer(), n, off + done)) {
          const int err = errno;
          std::lock_guard<std::mutex> lk(mu_);
          EndChange(first, count);
          return IoError("write of zeroes", err);
        }
        done += n;
      }
    }
    std::lock_guard<std::mutex> lk(mu_);
    EndChange(first, count);
    const uint64_t seq = seq_->Next();
    volume_seq_.store(seq, std::memory_order_relaxed);
    MarkDirty(first, count, seq);
    if (uint8_t* d = BeginRecord(seq, first, uint32_t(count), kind, fua ? kRecordFlagFua : 0, 0)) EndRecord(d, &notify);
  }
  if (notify && readable_) readable_();
  (kind == kRecordTrim ? trims_ : zeroes_).fetch_add(1, std::memory_order_relaxed);
  return fua ? SyncForFua() : 0;
}

uint32_t Volume::Trim(uint64_t offset, uint64_t length, bool fua) {
  // TRIM is advisory: only the whole sectors inside the range are discarded,
  // and they read back as zeroes afterwards (a hole, or zeroes written).
  const uint64_t first = (offset + kSectorSize - 1) >> kSectorShift;
  const uint64_t last = (offset + length) >> kSectorShift;
  if (first >= last) {
    trims_.fetch_add(1, std::memory_order_relaxed);
    return fua ? SyncForFua() : 0;
  }
  return ZeroAligned(first, last - first, fua, kRecordTrim, true);
}

uint32_t Volume::Zero(uint64_t offset, uint64_t length, bool fua, bool no_hole) {
  uint64_t end = offset + length;
  // Partial edge sectors are ordinary writes of zeroes.
  if (offset & (kSectorSize - 1)) {
    const uint64_t edge = std::min(end, (offset | (kSectorSize - 1)) + 1);
    if (uint32_t e = Write(offset, uint32_t(edge - offset), ZeroBuffer(), false)) return e;
    offset = edge;
  }
  if (offset < end && (end & (kSectorSize - 1))) {
    const uint64_t edge = std::max(offset, end & ~uint64_t(kSectorSize - 1));
    if (uint32_t e = Write(edge, uint32_t(end - edge), ZeroBuffer(), false)) return e;
    end = edge;
  }
  if (offset < end) return ZeroAligned(offset >> kSectorShift, (end - offset) >> kSectorShift, fua, kRecordZero, !no_hole);
  zeroes_.fetch_add(1, std::memory_order_relaxed);
  return fua ? SyncForFua() : 0;
}

uint32_t Volume::Flush() {
  bool notify = false;
  {
    std::lock_guard<std::mutex> lk(mu_);
    const uint64_t seq = seq_->Next();
    volume_seq_.store(seq, std::memory_order_relaxed);
    if (uint8_t* d = BeginRecord(seq, 0, 0, kRecordFlush, 0, 0)) EndRecord(d, &notify);
  }
  if (notify && readable_) readable_();
  flushes_.fetch_add(1, std::memory_order_relaxed);
  return SyncForFua();
}

size_t Volume::Pull(size_t max, const std::function<uint8_t*(size_t)>& alloc) {
  if (mode_.load() == Mode::kBehind) {
    bool started = false;
    {
      // Under the change lock: the GAP marker goes into the ring before any
      // change recorded after the switch (ring order is seq order).
      std::lock_guard<std::mutex> lk(mu_);
      Mode m = Mode::kBehind;
      if (mode_.compare_exchange_strong(m, Mode::kResyncing)) {
        started = true;
        Marker(kRecordGap);
      }
    }
    if (started) {
      log_(kLogInfo, "volume " + config_.name + ": the consumer is draining again; resyncing " + Num(stale_count_) +
                         " stale regions");
      if (wake_resync_) wake_resync_();
    }
  }
  size_t n = 0;
  {
    std::lock_guard<std::mutex> rl(ring_mu_);
    n = ring_.BeginTake(max);
    if (n == 0) {
      want_notify_ = true;
      return 0;
    }
  }
  // The taken bytes are the consumer's until EndTake: producers reserve and
  // commit around them meanwhile, and falling behind keeps them.
  uint8_t* dst = alloc(n);
  if (dst) ring_.CopyTaken(dst);
  std::lock_guard<std::mutex> rl(ring_mu_);
  if (!dst) {  // the allocation failed (its error is the caller's): the records stay
    ring_.CancelTake();
    want_notify_ = true;
    return 0;
  }
  ring_.EndTake();
  last_take_ = std::chrono::steady_clock::now();
  if (room_waiters_) ring_room_.notify_all();
  return n;
}

size_t Volume::AdmitWrite(size_t n) {
  // Room for a wrap's gap too: a record that does not fit before the ring's
  // end goes to its start, leaving the end unused.
  constexpr size_t kWrapGap = kRecordHeaderSize + (size_t(kMaxRecordSectors) << kSectorShift);
  const uint32_t limit_ms = config_.congestion_wait_ms;
  if (limit_ms == 0 || mode_.load() == Mode::kBehind) return 0;
  std::unique_lock<std::mutex> rl(ring_mu_);
  if (n + kWrapGap > ring_.capacity()) return 0;  // a ring this small cannot be gated: as before
  auto room = [&] { return ring_.used() + promised_ + n + kWrapGap <= ring_.capacity(); };
  if (!room()) {
    const auto t0 = std::chrono::steady_clock::now();
    if (t0 - last_take_ > std::chrono::milliseconds(kConsumerIdleMs)) return 0;  // not draining: fall behind
    room_waiters_++;
    const bool got = ring_room_.wait_until(rl, t0 + std::chrono::milliseconds(limit_ms), [&] {
      return room() || mode_.load() == Mode::kBehind;
    });
    room_waiters_--;
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
    congestion_waits_.fetch_add(1, std::memory_order_relaxed);
    congestion_wait_us_.fetch_add(uint64_t(us.count()), std::memory_order_relaxed);
    if (!got || mode_.load() == Mode::kBehind) return 0;  // the write's reservation falls behind (or already is)
  }
  promised_ += n;
  return n;
}

void Volume::Unpromise(size_t n) {
  std::lock_guard<std::mutex> rl(ring_mu_);
  promised_ -= n;
  if (room_waiters_) ring_room_.notify_all();
}

namespace {

// No data in [off, off+len) of a regular file: SEEK_DATA from off finds none
// before its end. Data written but not yet on disk counts as data (the file
// systems answer from the page cache too). A file system without SEEK_DATA
// says the whole file is data, or refuses (EINVAL): then it is read.
bool RangeIsHole(int fd, uint64_t off, uint64_t len) {
  const off_t d = lseek(fd, off_t(off), SEEK_DATA);
  if (d < 0) return errno == ENXIO;  // no data from off to the end of the file
  return uint64_t(d) >= off + len;
}

}  // namespace

bool Volume::ResyncStep() {
  if (mode_.load() != Mode::kResyncing) return false;
  const uint64_t regions = dirty_.regions();
  uint64_t r = 0;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (mode_.load() != Mode::kResyncing || FinishResyncLocked() || !ResyncRoomLocked()) return false;
    r = resync_cursor_ % regions;
    for (;;) {
      const uint64_t w = stale_[r >> 6] >> (r & 63);
      if (w) {
        r += uint64_t(__builtin_ctzll(w));
        break;
      }
      r = ((r >> 6) + 1) << 6;
      if (r >= regions) r = 0;
    }
    resync_cursor_ = r + 1;
  }
  const uint64_t first = r * kSectorsPerRegion;
  const uint64_t total = size_ >> kSectorShift;
  const uint32_t count = uint32_t(std::min(kSectorsPerRegion, total - first));
  const size_t bytes = size_t(count) << kSectorShift;
  // The region's range lock: no change to it is between its pwrite and its
  // seq while it is read, so the RESYNC record is exact at its seq.
  RangeLock::Hold hold = ranges_.Lock(first, first + count);
  // A region that is a hole in the file is not read: a ZERO record says the
  // same in 32 bytes (the initial copy of a thin disk reads only its data).
  const bool hole = !is_block_ && RangeIsHole(fd_, first << kSectorShift, bytes);
  if (!hole && !PreadFull(fd_, resync_buf_.data(), bytes, first << kSectorShift)) {
    IoError("resync read", errno);
    return false;
  }
  std::unique_lock<std::mutex> lk(mu_);
  // While mu_ was free: the volume may have fallen behind (the region stays
  // stale for the next resync) or the ring filled up.
  if (mode_.load() != Mode::kResyncing || !ResyncRoomLocked()) return false;
  if (!(stale_[r >> 6] & (uint64_t(1) << (r & 63)))) return true;
  stale_[r >> 6] &= ~(uint64_t(1) << (r & 63));
  stale_count_--;
  const uint64_t seq = seq_->Next();
  volume_seq_.store(seq, std::memory_order_relaxed);
  dirty_.Set(r);
  last_seq_[r] = seq;
  pending_.emplace_back(seq, r);
  if (hole) {
    if (uint8_t* d = BeginRecord(seq, first, count, kRecordZero, kRecordFlagResync, 0)) {
      EndRecord(d);
      resync_records_.fetch_add(1, std::memory_order_relaxed);
      resync_holes_.fetch_add(1, std::memory_order_relaxed);
    }
  } else if (uint8_t* d = BeginRecord(seq, first, count, kRecordResync, 0, uint32_t(bytes))) {
    // The copy without mu_ (writers go on); the EXACT marker, if this was
    // the last stale region, only after it is committed (the marker must
    // not be the reservation that makes this slot's copy wait on itself).
    lk.unlock();
    std::memcpy(d, resync_buf_.data(), bytes);
    EndRecord(d);
    resync_records_.fetch_add(1, std::memory_order_relaxed);
    lk.lock();
  }
  FinishResyncLocked();
  return true;
}

bool Volume::FinishResyncLocked() {
  if (stale_count_ != 0 || mode_.load() != Mode::kResyncing) return false;
  mode_ = Mode::kNormal;
  Marker(kRecordExact);
  log_(kLogInfo, "volume " + config_.name + ": resync complete; recording normally");
  return true;
}

bool Volume::ResyncRoomLocked() {
  // Leave half of the ring to the application's writes, so a resync never
  // pushes the volume behind by itself.
  std::lock_guard<std::mutex> rl(ring_mu_);
  return ring_.used() + kRecordHeaderSize + kRegionSize <= ring_.capacity() / 2;
}

uint64_t Volume::ResyncFrom(uint64_t region) {
  uint64_t marked = 0;
  bool wake = false;
  {
    std::lock_guard<std::mutex> lk(mu_);
    const uint64_t regions = dirty_.regions();
    if (region >= regions) return 0;
    // Word at a time: a 1 TiB volume has 16 M regions, and writers wait on mu_.
    uint64_t r = region;
    const uint64_t before = stale_count_;
    for (; r < regions && (r & 63); r++) SetStale(r);
    for (; r + 64 <= regions; r += 64) {
      uint64_t& w = stale_[r >> 6];
      stale_count_ += uint64_t(64 - __builtin_popcountll(w));
      w = ~uint64_t(0);
    }
    for (; r < regions; r++) SetStale(r);
    marked = stale_count_ - before;
    resync_cursor_ = region;
    // Behind: the next pull starts the resync. Resyncing: it goes on from the
    // new cursor. Normal: start now; the ring keeps what it holds.
    Mode m = Mode::kNormal;
    wake = mode_.compare_exchange_strong(m, Mode::kResyncing);
    if (wake) Marker(kRecordGap);
  }
  log_(kLogInfo, "volume " + config_.name + ": copying regions " + Num(region) + ".." + Num(dirty_.regions() - 1) +
                     " (" + Num(marked) + " newly stale) as RESYNC records");
  if (wake && wake_resync_) wake_resync_();
  return marked;
}

void Volume::Ack(uint64_t seq) {
  std::lock_guard<std::mutex> lk(mu_);
  while (!pending_.empty() && pending_.front().first <= seq) {
    const uint64_t r = pending_.front().second;
    pending_.pop_front();
    auto it = last_seq_.find(r);
    if (it == last_seq_.end() || it->second > seq) continue;
    last_seq_.erase(it);
    // A change still on its way to the backing store keeps its region dirty:
    // it has no seq yet, so no ack can cover it.
    if (!(stale_[r >> 6] & (uint64_t(1) << (r & 63))) && !inflight_.count(r)) dirty_.Clear(r);
  }
  uint64_t cur = acked_seq_.load();
  while (cur < seq && !acked_seq_.compare_exchange_weak(cur, seq)) {
  }
}

std::vector<uint8_t> Volume::DirtyBitmap() {
  std::lock_guard<std::mutex> lk(mu_);
  return dirty_.Copy();
}

VolumeStats Volume::Stats() {
  VolumeStats s{};
  s.reads = reads_;
  s.writes = writes_;
  s.trims = trims_;
  s.zeroes = zeroes_;
  s.flushes = flushes_;
  s.bytes_read = bytes_read_;
  s.bytes_written = bytes_written_;
  s.records = records_;
  s.record_bytes = record_bytes_;
  s.dropped_records = dropped_records_;
  s.dropped_bytes = dropped_bytes_;
  s.resync_records = resync_records_;
  s.resync_holes = resync_holes_;
  s.writebacks = writebacks_;
  s.congestion_waits = congestion_waits_;
  s.congestion_wait_ms = congestion_wait_us_ / 1000;
  s.behind_events = behind_events_;
  s.marks = marks_;
  s.gaps = gaps_;
  s.rejected = rejected_;
  s.io_errors = io_errors_;
  s.connections = connections_;
  s.connections_total = connections_total_;
  s.last_seq = seq_->Current();
  s.acked_seq = acked_seq_;
  s.mode = int(mode_.load());
  {
    std::lock_guard<std::mutex> lk(mu_);
    s.dirty_regions = dirty_.count();
    s.stale_regions = stale_count_;
    s.regions = dirty_.regions();
    s.resync_cursor = resync_cursor_;
  }
  s.volume_seq = volume_seq_;
  {
    std::lock_guard<std::mutex> lk(ring_mu_);
    s.ring_used = ring_.used();
    s.ring_capacity = ring_.capacity();
    s.ring_records = ring_.records();
    s.congestion_waiting = room_waiters_;
  }
  return s;
}

}  // namespace tidemark
