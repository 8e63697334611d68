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

View::View(ViewConfig config, FetchFn fetch, LogFn log)
    : config_(std::move(config)), fetch_(std::move(fetch)), log_(std::move(log)), cache_(config_.cache_bytes) {}

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
  const uint64_t end = offset + length;
  std::vector<uint8_t> buf;
  for (uint64_t c = offset / kViewChunk; c * kViewChunk < end;) {
    const uint64_t cstart = c * kViewChunk;
    const uint64_t from = std::max(offset, cstart);
    const uint64_t to = std::min(end, cstart + kViewChunk);
    if (cache_.Get(c, uint32_t(from - cstart), uint32_t(to - from), out + (from - offset))) {
      chunk_hits_++;
      c++;
      continue;
    }
    // A run of missing chunks, fetched whole in one call: the chunks the read
    // needs, up to the fetch limit, stopping at one the cache already holds.
    uint64_t last = c;
    while ((last + 1) * kViewChunk < end && (last + 2 - c) * uint64_t(kViewChunk) <= kViewMaxFetch &&
           !cache_.Has(last + 1))
      last++;
    const uint64_t run_end = std::min(config_.size, (last + 1) * kViewChunk);
    const uint32_t run_len = uint32_t(run_end - cstart);
    buf.resize(run_len);
    std::string why;
    fetches_++;
    chunk_misses_ += last - c + 1;
    if (!fetch_(cstart, run_len, buf.data(), &why)) {
      FetchFailed(cstart, run_len, why);
      return nbd::kEio;
    }
    fetch_bytes_ += run_len;
    for (uint64_t k = c; k <= last; k++) {
      const uint64_t ks = k * kViewChunk;
      const uint32_t klen = uint32_t(std::min<uint64_t>(kViewChunk, run_end - ks));
      cache_.Put(k, buf.data() + (ks - cstart), klen);
    }
    const uint64_t cf = std::max(offset, cstart);
    const uint64_t ct = std::min(end, run_end);
    std::memcpy(out + (cf - offset), buf.data() + (cf - cstart), ct - cf);
    c = last + 1;
  }
  return 0;
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
  s.overlay_bytes = config_.writable ? overlay_.held_sectors() * kSector : 0;
  s.rejected = rejected_;
  s.io_errors = io_errors_;
  s.connections = connections_;
  s.connections_total = connections_total_;
  return s;
}

}  // namespace tidemark
