#include "view.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "nbd_proto.h"

namespace tidemark {

namespace {
constexpr uint64_t kSector = Overlay::kSector;
}  // namespace

View::View(ViewConfig config, FetchFn fetch, LogFn log, FetchNowFn fetch_now)
    : config_(std::move(config)),
      fetch_(std::move(fetch)),
      log_(std::move(log)),
      fetch_now_(std::move(fetch_now)),
      cache_(config_.cache_bytes) {}

View::~View() { Close(); }

bool View::Open(std::string* error) {
  if (config_.size == 0 || config_.size % kSector != 0) {
    *error = "volume " + config_.name + " has size " + std::to_string(config_.size) +
             ", not a positive multiple of 512 bytes";
    return false;
  }
  if (config_.durable) {
    if (!config_.writable || config_.overlay_path.empty() || config_.overlay_map_path.empty()) {
      *error = "view " + config_.name + ": a durable overlay needs a writable view, a data path and a map path";
      return false;
    }
    if (!overlay_.OpenDurable(config_.overlay_path, config_.overlay_map_path, config_.size, error)) return false;
  } else if (config_.writable && !overlay_.Open(config_.overlay_dir, config_.size, error)) {
    return false;
  }
  open_ = true;
  return true;
}

void View::Close() {
  {
    std::lock_guard<std::mutex> lk(ra_mu_);
    ra_stop_ = true;
    ra_queue_.clear();
  }
  ra_cv_.notify_all();
  for (auto& t : ra_threads_) t.join();  // no thread is started once ra_stop_ is set
  ra_threads_.clear();
  if (!open_) return;
  open_ = false;
  // A durable overlay keeps what was written since the last FLUSH too, when
  // the view is closed rather than killed.
  if (const int err = overlay_.Sync()) OverlayError("sync at close", err);
  overlay_.Close();
}

void View::FetchFailed(uint64_t offset, uint32_t length, const std::string& why) {
  fetch_errors_++;
  io_errors_++;
  // A dead appliance fails every read: one line every few seconds, with a count.
  std::lock_guard<std::mutex> lk(warn_mu_);
  const auto now = std::chrono::steady_clock::now();
  if (now - last_warn_ < std::chrono::seconds(5)) {
    unlogged_failures_++;
    return;
  }
  std::string msg = "TimeView " + config_.name + ": reading " + std::to_string(length) + " bytes at " +
                    std::to_string(offset) + " from the appliance failed: " + why + "; the client gets EIO";
  if (unlogged_failures_) msg += " (" + std::to_string(unlogged_failures_) + " more failures since the last line)";
  unlogged_failures_ = 0;
  last_warn_ = now;
  log_(kLogWarn, msg);
}

uint32_t View::ReadBase(uint64_t offset, uint32_t length, uint8_t* out) {
  if (config_.direct) {
    std::string why;
    fetches_++;
    if (!fetch_(offset, length, out, &why)) {
      FetchFailed(offset, length, why);
      return nbd::kEio;
    }
    fetch_bytes_ += length;
    return 0;
  }
  if (length == 0) return 0;
  const uint64_t end = offset + length;
  const uint64_t c0 = offset / kViewChunk;
  const uint64_t c1 = (end - 1) / kViewChunk;  // last chunk, inclusive
  // The read's part of chunk c, from that chunk's bytes.
  auto copy_out = [&](uint64_t c, const uint8_t* chunk) {
    const uint64_t cstart = c * kViewChunk;
    const uint64_t from = std::max(offset, cstart);
    const uint64_t to = std::min(end, cstart + kViewChunk);
    std::memcpy(out + (from - offset), chunk + (from - cstart), to - from);
  };
  auto copy_fetch = [&](const Fetch& f) {
    const uint64_t lo = std::max(c0, f.first);
    const uint64_t hi = std::min(c1 + 1, f.first + f.n);
    for (uint64_t c = lo; c < hi; c++) copy_out(c, f.data.data() + (c - f.first) * kViewChunk);
  };

  // Whatever the cache holds, without touching the table of fetches.
  std::vector<uint64_t> missing;
  for (uint64_t c = c0; c <= c1; c++) {
    const uint64_t cstart = c * kViewChunk;
    const uint64_t from = std::max(offset, cstart);
    const uint64_t to = std::min(end, cstart + kViewChunk);
    if (cache_.Get(c, uint32_t(from - cstart), uint32_t(to - from), out + (from - offset)))
      chunk_hits_++;
    else
      missing.push_back(c);
  }
  if (config_.read_ahead_bytes) NoteRead(offset, length);
  if (missing.empty()) return 0;
  chunk_misses_ += missing.size();

  // The misses: each chunk is either being fetched (wait for it), cached
  // since (a fetch finished: it caches before it leaves the table), or ours
  // to fetch, in runs of consecutive chunks nobody holds.
  std::vector<std::shared_ptr<Fetch>> mine, theirs;
  {
    std::lock_guard<std::mutex> lk(fetch_mu_);
    for (size_t i = 0; i < missing.size();) {
      const uint64_t c = missing[i];
      auto it = inflight_.find(c);
      if (it != inflight_.end()) {
        if (theirs.empty() || theirs.back() != it->second) theirs.push_back(it->second);
        fetch_waits_++;
        i++;
        continue;
      }
      const uint64_t cstart = c * kViewChunk;
      const uint64_t from = std::max(offset, cstart);
      const uint64_t to = std::min(end, cstart + kViewChunk);
      if (cache_.Get(c, uint32_t(from - cstart), uint32_t(to - from), out + (from - offset))) {
        i++;
        continue;
      }
      auto f = ClaimRun(c, c1 + 1, kViewMaxFetch / kViewChunk);
      mine.push_back(f);
      while (i < missing.size() && missing[i] < f->first + f->n) i++;
    }
  }

  // Our own fetches first, then the waits: a thread never waits while it
  // holds a fetch others may be waiting for.
  uint32_t err = 0;
  for (const auto& f : mine) {
    std::string why;
    if (RunFetch(f, false, &why)) {
      copy_fetch(*f);
    } else {
      const uint64_t start = f->first * kViewChunk;
      FetchFailed(start, uint32_t(std::min(config_.size, (f->first + f->n) * kViewChunk) - start), why);
      err = nbd::kEio;
    }
  }
  if (err) return err;
  for (const auto& f : theirs) {
    {
      std::unique_lock<std::mutex> lk(fetch_mu_);
      fetch_cv_.wait(lk, [&] { return f->done; });
    }
    if (f->ok) {
      copy_fetch(*f);
      continue;
    }
    // Theirs failed (a read-ahead, or another reader's, which that reader
    // was told about): ask again for the part this read needs, and answer
    // with what the appliance says now.
    const uint64_t lo = std::max(c0, f->first);
    const uint64_t hi = std::min(c1 + 1, f->first + f->n);
    auto again = std::make_shared<Fetch>();  // not in the table: a retry is not shared
    again->first = lo;
    again->n = hi - lo;
    std::string why;
    if (!RunFetch(again, false, &why)) {
      const uint64_t start = lo * kViewChunk;
      FetchFailed(start, uint32_t(std::min(config_.size, hi * kViewChunk) - start), why);
      return nbd::kEio;
    }
    copy_fetch(*again);
  }
  return 0;
}

std::shared_ptr<View::Fetch> View::ClaimRun(uint64_t first, uint64_t limit, uint64_t max_chunks) {
  auto free = [&](uint64_t c) { return !inflight_.count(c) && !cache_.Has(c); };
  if (!free(first)) return nullptr;
  auto f = std::make_shared<Fetch>();
  f->first = first;
  f->n = 1;
  while (first + f->n < limit && f->n < max_chunks && free(first + f->n)) f->n++;
  for (uint64_t k = 0; k < f->n; k++) inflight_[first + k] = f;
  return f;
}

bool View::RunFetch(const std::shared_ptr<Fetch>& f, bool read_ahead, std::string* why) {
  const uint64_t start = f->first * kViewChunk;
  const uint64_t stop = std::min(config_.size, (f->first + f->n) * kViewChunk);
  const uint32_t len = uint32_t(stop - start);
  f->data.resize(len);
  {
    std::lock_guard<std::mutex> lk(fetch_mu_);
    if (++fetches_now_ > fetches_in_flight_max_) fetches_in_flight_max_ = fetches_now_;
  }
  fetches_++;
  if (read_ahead) read_ahead_fetches_++;
  const bool ok = fetch_(start, len, f->data.data(), why);
  if (ok) {
    for (uint64_t k = 0; k < f->n; k++) {
      const uint64_t ks = (f->first + k) * kViewChunk;
      cache_.Put(f->first + k, f->data.data() + (ks - start), uint32_t(std::min<uint64_t>(kViewChunk, stop - ks)));
    }
    // Counted once cached: whoever sees the count sees the chunks.
    fetch_bytes_ += len;
    if (read_ahead) read_ahead_bytes_ += len;
  }
  {
    std::lock_guard<std::mutex> lk(fetch_mu_);
    fetches_now_--;
    for (uint64_t k = 0; k < f->n; k++) {
      auto it = inflight_.find(f->first + k);
      if (it != inflight_.end() && it->second == f) inflight_.erase(it);
    }
    f->ok = ok;
    f->done = true;
  }
  fetch_cv_.notify_all();
  return ok;
}

void View::NoteRead(uint64_t offset, uint32_t length) {
  const uint64_t end = offset + length;
  if (std::min<uint64_t>(config_.read_ahead_bytes, config_.cache_bytes / 4) < kViewChunk) return;
  std::lock_guard<std::mutex> lk(ra_mu_);
  if (ra_stop_) return;
  Stream* s = nullptr;
  Stream* oldest = &streams_[0];
  uint64_t active = 0;  // streams read ahead lately, which share the cache
  for (Stream& x : streams_) {
    if (x.reads && x.next == offset) s = &x;
    if (x.used < oldest->used) oldest = &x;
    if (x.reads >= 2 && stream_clock_ - x.used < kStreams * 16) active++;
  }
  if (!s) {  // a new stream, maybe: replaces the least recently continued one
    *oldest = Stream{end, end, 1, ++stream_clock_};
    return;
  }
  if (s->reads < 2 || stream_clock_ - s->used >= kStreams * 16) active++;  // this one, from now on
  // Together, the streams' windows stay within a quarter of the cache, so
  // what one stream read ahead is not evicted by another's before it is read.
  const uint64_t most = std::min<uint64_t>(config_.read_ahead_bytes, config_.cache_bytes / 4 / active);
  if (most < kViewChunk) return;
  s->reads++;
  s->next = end;
  s->used = ++stream_clock_;
  s->ahead = std::max(s->ahead, end);
  // The window doubles with every read that continues the stream: 1 MiB at
  // the second read, up to `most`.
  const uint64_t window = std::min<uint64_t>(most, uint64_t(256 * 1024) << std::min<uint64_t>(s->reads, 12));
  const uint64_t target = std::min(config_.size, end + window);
  // Ask in whole read-ahead runs (a round trip each), except at the end.
  if (target <= s->ahead || (target - s->ahead < kReadAheadRun && target < config_.size)) return;
  const uint64_t first = s->ahead / kViewChunk;
  const uint64_t last = (target + kViewChunk - 1) / kViewChunk;  // exclusive
  const uint64_t per = kReadAheadRun / kViewChunk;
  for (uint64_t c = first; c < last; c += per) ra_queue_.emplace_back(c, std::min(per, last - c));
  s->ahead = std::min(config_.size, last * kViewChunk);
  // Runs of streams since abandoned must not pile up.
  while (ra_queue_.size() > size_t(kStreams) * (kViewMaxFetch * 4 / kReadAheadRun)) ra_queue_.pop_front();
  if (ra_threads_.empty()) {
    for (int i = 0; i < kReadAheadThreads; i++) ra_threads_.emplace_back([this] { ReadAheadLoop(); });
  }
  ra_cv_.notify_all();
}

void View::ReadAheadLoop() {
  for (;;) {
    std::pair<uint64_t, uint64_t> run;
    {
      std::unique_lock<std::mutex> lk(ra_mu_);
      ra_cv_.wait(lk, [&] { return ra_stop_ || !ra_queue_.empty(); });
      if (ra_stop_) return;
      run = ra_queue_.front();
      ra_queue_.pop_front();
    }
    const uint64_t limit = run.first + run.second;
    for (uint64_t c = run.first; c < limit;) {
      std::shared_ptr<Fetch> f;
      {
        std::lock_guard<std::mutex> lk(fetch_mu_);
        f = ClaimRun(c, limit, run.second);
      }
      if (!f) {  // cached, or a reader (or another thread) is fetching it
        c++;
        continue;
      }
      std::string why;
      RunFetch(f, true, &why);  // a failure is the reader's to meet and report
      c = f->first + f->n;
    }
  }
}

uint32_t View::ReadMerged(uint64_t offset, uint32_t length, uint8_t* out) {
  if (!config_.writable || overlay_.empty()) return ReadBase(offset, length, out);
  std::vector<std::pair<uint64_t, uint64_t>> runs;
  overlay_.Runs(offset, length, &runs);
  const bool all = runs.size() == 1 && runs[0].first == offset && runs[0].second == length;
  if (!all) {
    if (const uint32_t e = ReadBase(offset, length, out)) return e;
  }
  for (const auto& r : runs) {
    if (const int err = overlay_.Read(r.first, r.second, out + (r.first - offset))) return OverlayError("read", err);
  }
  return 0;
}

uint32_t View::Read(uint64_t offset, uint32_t length, uint8_t* out) {
  reads_++;
  const uint32_t e = ReadMerged(offset, length, out);
  if (!e) bytes_read_ += length;
  return e;
}

bool View::CopyTo(int fd, uint64_t offset, uint64_t length, bool write_zeroes, CopyTally* t, CopySide* side,
                  std::string* error) {
  if (!can_copy()) return Export::CopyTo(fd, offset, length, write_zeroes, t, side, error);
  reads_++;
  const uint64_t before = t->data_bytes;
  const bool ok = copy_(fd, offset, length, write_zeroes, t, side, error);
  bytes_read_ += t->data_bytes - before;
  if (!ok && *side == CopySide::kSource) io_errors_++;
  return ok;
}

uint32_t View::ReadNow(uint64_t offset, uint32_t length, uint8_t* out) {
  // The overlay's sectors are a pread of its file, which may wait.
  if (config_.writable && !overlay_.empty()) {
    std::vector<std::pair<uint64_t, uint64_t>> runs;
    overlay_.Runs(offset, length, &runs);
    if (!runs.empty()) return kWouldWait;
  }
  if (config_.direct) {
    bool would_wait = false;
    std::string why;
    // A failure is the worker's to meet again and report.
    if (!fetch_now_(offset, length, out, &would_wait, &why)) return kWouldWait;
    fetches_++;
    fetch_bytes_ += length;
  } else if (length) {
    const uint64_t end = offset + length;
    const uint64_t c0 = offset / kViewChunk, c1 = (end - 1) / kViewChunk;
    for (uint64_t c = c0; c <= c1; c++) {
      const uint64_t cstart = c * kViewChunk;
      const uint64_t from = std::max(offset, cstart);
      const uint64_t to = std::min(end, cstart + kViewChunk);
      if (!cache_.Get(c, uint32_t(from - cstart), uint32_t(to - from), out + (from - offset))) return kWouldWait;
    }
    chunk_hits_ += c1 - c0 + 1;
    if (config_.read_ahead_bytes) NoteRead(offset, length);
  }
  reads_++;
  bytes_read_ += length;
  return 0;
}

uint32_t View::OverlayError(const char* op, int err) {
  io_errors_++;
  log_(kLogError, "TimeView " + config_.name + ": overlay " + op + " failed: " + std::strerror(err));
  return err == ENOSPC ? nbd::kEnospc : nbd::kEio;
}

uint32_t View::PatchSector(uint64_t sector_offset, uint32_t from, uint32_t len, const uint8_t* data) {
  uint8_t sector[kSector];
  if (const uint32_t e = ReadMerged(sector_offset, kSector, sector)) return e;
  if (data)
    std::memcpy(sector + from, data, len);
  else
    std::memset(sector + from, 0, len);
  if (const int err = overlay_.Write(sector_offset, kSector, sector)) return OverlayError("write", err);
  return 0;
}

uint32_t View::Write(uint64_t offset, uint32_t length, const uint8_t* data, bool fua) {
  if (!config_.writable) return nbd::kEperm;  // the front refuses first; this is the layer's own guard
  std::lock_guard<std::mutex> lk(write_mu_);
  writes_++;
  const uint64_t end = offset + length;
  const uint64_t a = (offset + kSector - 1) / kSector * kSector;  // first whole sector
  const uint64_t b = end / kSector * kSector;                     // end of the last whole sector
  if (a > b) {  // inside one sector
    const uint64_t s = offset / kSector * kSector;
    if (const uint32_t e = PatchSector(s, uint32_t(offset - s), length, data)) return e;
  } else {
    if (offset < a) {
      if (const uint32_t e = PatchSector(a - kSector, uint32_t(offset - (a - kSector)), uint32_t(a - offset), data))
        return e;
    }
    if (b > a) {
      if (const int err = overlay_.Write(a, b - a, data + (a - offset))) return OverlayError("write", err);
    }
    if (end > b) {
      if (const uint32_t e = PatchSector(b, 0, uint32_t(end - b), data + (b - offset))) return e;
    }
  }
  bytes_written_ += length;
  return SyncIfFua(fua);
}

uint32_t View::SyncIfFua(bool fua) {
  if (!fua || !overlay_.durable()) return 0;
  if (const int err = overlay_.Sync()) return OverlayError("sync (FUA)", err);
  return 0;
}

uint32_t View::ZeroLocked(uint64_t offset, uint64_t length) {
  const uint64_t end = offset + length;
  const uint64_t a = (offset + kSector - 1) / kSector * kSector;
  const uint64_t b = end / kSector * kSector;
  if (a > b) {
    const uint64_t s = offset / kSector * kSector;
    return PatchSector(s, uint32_t(offset - s), uint32_t(length), nullptr);
  }
  if (offset < a) {
    if (const uint32_t e = PatchSector(a - kSector, uint32_t(offset - (a - kSector)), uint32_t(a - offset), nullptr))
      return e;
  }
  if (b > a) {
    if (const int err = overlay_.Zero(a, b - a)) return OverlayError("zero", err);
  }
  if (end > b) return PatchSector(b, 0, uint32_t(end - b), nullptr);
  return 0;
}

uint32_t View::Trim(uint64_t offset, uint64_t length, bool fua) {
  if (!config_.writable) return nbd::kEperm;
  std::lock_guard<std::mutex> lk(write_mu_);
  trims_++;
  if (const uint32_t e = ZeroLocked(offset, length)) return e;
  return SyncIfFua(fua);
}

uint32_t View::Zero(uint64_t offset, uint64_t length, bool fua, bool no_hole) {
  if (!config_.writable) return nbd::kEperm;
  std::lock_guard<std::mutex> lk(write_mu_);
  zeroes_++;
  if (const uint32_t e = ZeroLocked(offset, length)) return e;
  return SyncIfFua(fua);
}

uint32_t View::Flush() {
  flushes_++;
  // Throw-away overlays (and read-only views) have nothing to keep: Sync() is 0 at once.
  if (const int err = overlay_.Sync()) return OverlayError("sync (FLUSH)", err);
  return 0;
}

ViewStats View::Stats() {
  ViewStats s{};
  s.reads = reads_;
  s.bytes_read = bytes_read_;
  s.writes = writes_;
  s.bytes_written = bytes_written_;
  s.trims = trims_;
  s.zeroes = zeroes_;
  s.flushes = flushes_;
  s.chunk_hits = chunk_hits_;
  s.chunk_misses = chunk_misses_;
  s.fetches = fetches_;
  s.fetch_bytes = fetch_bytes_;
  s.fetch_errors = fetch_errors_;
  s.cache_bytes = cache_.bytes();
  s.cache_evictions = cache_.evictions();
  s.fetch_waits = fetch_waits_;
  s.read_ahead_fetches = read_ahead_fetches_;
  s.read_ahead_bytes = read_ahead_bytes_;
  s.fetches_in_flight_max = fetches_in_flight_max_;
  s.overlay_bytes = config_.writable ? overlay_.held_sectors() * kSector : 0;
  s.rejected = rejected_;
  s.io_errors = io_errors_;
  s.connections = connections_;
  s.connections_total = connections_total_;
  return s;
}

}  // namespace tidemark
