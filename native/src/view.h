// A TimeView: one volume at one point in time as an NBD export, behind the
// same NBD front as the tap (nbd_server.h), without materializing the image.
//
// Reads come from a fetch function (the addon's posts them to JavaScript,
// which asks the appliance with Admin.Read; the native tests pass an image in
// memory). The point never changes, so fetched bytes are cached whole, 16 KiB
// chunks in an LRU with a byte budget (chunk_cache.h); a read that misses
// fetches its missing chunks in runs of up to 4 MiB (the Admin.Read limit),
// one call per run. The fetch blocks only the thread that asked: a slow
// appliance stalls that request, never the others or JavaScript.
//
// A read the cache holds whole is answered on the NBD front's reading thread
// (ReadNow), with no hand-over to a worker and its wake-ups; only misses go
// to the workers. A direct view does the same from the page cache
// (fetch_now: preadv2 RWF_NOWAIT under the appliance's exports).
//
// Misses are fetched in parallel: every reader that misses fetches on its own
// thread, so fetches overlap as far as the NBD front hands reads over at once
// (several connections, or overlapping requests on one). A table of fetches
// in flight, by chunk, makes two readers that miss the same chunk share one
// fetch: the second waits for the first instead of asking the appliance
// twice. A thread waits only after its own fetches are done, so no wait can
// close a cycle.
//
// Read-ahead: a read that starts exactly where an earlier one ended continues
// a sequential stream (a few streams per view, the least recently used
// replaced, so several connections copying different parts are each seen).
// From its second read on, a stream keeps the next bytes fetched ahead of it
// by a few background threads, a window that doubles per read up to
// read_ahead_bytes, so `nbdcopy` of a view waits on the link, not on a round
// trip per request. The window is bounded by the cache budget: read-ahead
// lands in the cache, and what it fetched must still be there when the
// stream arrives. A failed read-ahead costs nothing: the reader fetches
// again and gets the appliance's error itself.
//
// A writable view adds a copy-on-write overlay (overlay.h): WRITE, TRIM and
// WRITE_ZEROES go to the overlay, reads lay the overlay's sectors over the
// fetched bytes, unaligned writes read-modify-write their edge sectors. TRIM
// zeroes like WRITE_ZEROES (NBD lets a trimmed range read as anything; zeroes
// are what a test, or a file system, expects to see). With a throw-away
// overlay FLUSH and FUA succeed without syncing: it is discarded when the view
// closes, so there is no durability to promise. With a durable overlay (a view
// the appliance keeps, `timeview create --writable`) FLUSH, and a FUA request
// once it is written, sync the overlay (Overlay::Sync: data, then the map of
// held sectors), so a kill -9 keeps everything a client saw flushed. Nothing
// here has a seq, a change record or a dirty map: a TimeView never touches
// the journal or replication.
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
#include <thread>
#include <unordered_map>
#include <vector>

#include "chunk_cache.h"
#include "export.h"
#include "overlay.h"
#include "volume.h"  // LogFn, LogLevel

namespace tidemark {

// Fills out with [offset, offset+length) of the point; length <= kViewMaxFetch
// (direct views: any length the NBD front allows, kMaxPayload).
// Called on NBD connection threads and read-ahead threads, several at once.
// false + *error on failure.
using FetchFn = std::function<bool(uint64_t offset, uint32_t length, uint8_t* out, std::string* error)>;
// The same from what is at hand, without waiting (a direct view's page
// cache): false with *would_wait set when it would have to wait.
using FetchNowFn =
    std::function<bool(uint64_t offset, uint32_t length, uint8_t* out, bool* would_wait, std::string* error)>;

// Copies [offset, offset+length) of the point into fd, file to file
// (Export::CopyTo): a direct view's point read where its files are.
using CopyFn = std::function<bool(int fd, uint64_t offset, uint64_t length, bool write_zeroes, CopyTally* t,
                                  CopySide* side, std::string* error)>;

// The unit of fetching and caching. A random 4 KiB read that misses fetches
// one chunk, so the chunk is the read amplification of a cold random read:
// with 64 KiB chunks a remote TimeView's cold 4 KiB random reads made 16x
// the appliance's disk reads and ran at 0.22x nbdkit on this machine's disk;
// 16 KiB ran at 0.40x, 8 KiB at 0.36x (more fetches per read-ahead window,
// each a round trip). Sequential streams are fetched ahead in 2 MiB runs of
// chunks whatever the chunk size (kReadAheadRun).
constexpr uint32_t kViewChunk = 16 * 1024;
constexpr uint32_t kViewMaxFetch = 4 * 1024 * 1024;

struct ViewConfig {
  std::string name;         // the export name: the volume's name
  std::string description;  // NBD_INFO_DESCRIPTION: what point this is
  uint64_t size = 0;
  bool writable = false;
  std::string overlay_dir = "/tmp";  // where the throw-away overlay's unnamed file lives
  // A durable overlay instead (writable views the appliance keeps): the data
  // file and the map of held sectors (overlay.h), reopened as of their last
  // sync if they exist, created if the map does not. Both paths are needed.
  bool durable = false;
  std::string overlay_path;
  std::string overlay_map_path;
  size_t cache_bytes = 64 << 20;
  // The most a sequential stream is fetched ahead of its reads (0: no
  // read-ahead); all streams together use at most a quarter of cache_bytes.
  size_t read_ahead_bytes = 16 << 20;
  // The fetch function reads the point locally at the speed of a pread (the
  // appliance's own exports, point_map.h): each read asks for exactly its
  // bytes, with no chunk rounding and no cache (the page cache is the cache).
  bool direct = false;
};

struct ViewStats {
  uint64_t reads, bytes_read, writes, bytes_written, trims, zeroes, flushes;
  uint64_t chunk_hits, chunk_misses, fetches, fetch_bytes, fetch_errors;
  uint64_t cache_bytes, cache_evictions, overlay_bytes;
  // chunks a read found being fetched by another and waited for; bytes
  // fetched ahead of sequential streams; the most fetches in flight at once
  uint64_t fetch_waits, read_ahead_fetches, read_ahead_bytes, fetches_in_flight_max;
  uint64_t rejected, io_errors, connections, connections_total;
};

class View : public Export {
 public:
  // fetch_now: a direct view's reads from the page cache, for ReadNow.
  View(ViewConfig config, FetchFn fetch, LogFn log, FetchNowFn fetch_now = nullptr);
  ~View() override;

  bool Open(std::string* error);  // the overlay, when writable
  // Before the view is served: how it copies itself for a restore on its
  // host. A writable view never does (its overlay is not in the point's files).
  void SetCopy(CopyFn copy) { copy_ = std::move(copy); }
  void Close();

  const std::string& name() const override { return config_.name; }
  uint64_t size() const override { return config_.size; }
  bool read_only() const override { return !config_.writable; }
  std::string description() const override { return config_.description; }

  uint32_t Read(uint64_t offset, uint32_t length, uint8_t* out) override;
  // From the chunk cache (a direct view: fetch_now), never the overlay's
  // sectors; kWouldWait when a fetch or a disk would be needed.
  bool can_read_now() const override { return !config_.direct || bool(fetch_now_); }
  uint32_t ReadNow(uint64_t offset, uint32_t length, uint8_t* out) override;
  uint32_t Write(uint64_t offset, uint32_t length, const uint8_t* data, bool fua) override;
  bool can_copy() const override { return copy_ && !config_.writable; }
  bool CopyTo(int fd, uint64_t offset, uint64_t length, bool write_zeroes, CopyTally* t, CopySide* side,
              std::string* error) override;
  uint32_t Trim(uint64_t offset, uint64_t length, bool fua) override;
  uint32_t Zero(uint64_t offset, uint64_t length, bool fua, bool no_hole) override;
  uint32_t Flush() override;

  void CountRejected() override { rejected_++; }
  void CountConnection(int delta) override {
    if (delta > 0) connections_total_++;
    connections_ += delta;
  }

  ViewStats Stats();

 private:
  // A fetch of chunks [first, first + n), in flight or done; shared by the
  // thread that fetches it and the readers that wait for it.
  struct Fetch {
    uint64_t first = 0;
    uint64_t n = 0;
    std::vector<uint8_t> data;
    bool done = false, ok = false;
  };
  // A sequential stream: where its last read ended, how many reads in a row
  // continued it, how far read-ahead was asked for.
  struct Stream {
    uint64_t next = 0, ahead = 0, reads = 0, used = 0;
  };
  static constexpr int kStreams = 8;
  static constexpr int kReadAheadThreads = 8;
  static constexpr uint32_t kReadAheadRun = 2 << 20;  // one read-ahead fetch

  // The point's bytes: cache, then fetches for what is missing.
  uint32_t ReadBase(uint64_t offset, uint32_t length, uint8_t* out);
  // Fetches f's chunks (f registered in inflight_ by the caller), caches
  // them, marks f done and wakes its waiters. False when the fetch failed.
  bool RunFetch(const std::shared_ptr<Fetch>& f, bool read_ahead, std::string* why);
  // Registers in inflight_ a run of chunks from `first` that are neither
  // cached nor being fetched, at most max_chunks and not past `limit`
  // (a chunk index); fetch_mu_ held. Null if `first` itself is taken.
  std::shared_ptr<Fetch> ClaimRun(uint64_t first, uint64_t limit, uint64_t max_chunks);
  // Notes a read for stream detection and queues read-ahead when it continues a stream.
  void NoteRead(uint64_t offset, uint32_t length);
  void ReadAheadLoop();
  // Base with the overlay laid over it.
  uint32_t ReadMerged(uint64_t offset, uint32_t length, uint8_t* out);
  // Sector-aligned [offset, offset+length) to zeroes, unaligned edges by
  // read-modify-write; write_mu_ held.
  uint32_t ZeroLocked(uint64_t offset, uint64_t length);
  // One partial sector: merge bytes (or zeroes when data is null) into it; write_mu_ held.
  uint32_t PatchSector(uint64_t sector_offset, uint32_t from, uint32_t len, const uint8_t* data);
  uint32_t OverlayError(const char* op, int err);
  // FUA on a durable view: the request's bytes are written, now make them stay.
  uint32_t SyncIfFua(bool fua);
  void FetchFailed(uint64_t offset, uint32_t length, const std::string& why);

  ViewConfig config_;
  FetchFn fetch_;
  LogFn log_;
  FetchNowFn fetch_now_;
  CopyFn copy_;
  ChunkCache cache_;
  Overlay overlay_;
  bool open_ = false;
  // Serialises changes to the overlay, so the read-modify-write of an edge
  // sector cannot lose a concurrent write to the same sector.
  std::mutex write_mu_;

  // Fetches in flight, by chunk (each chunk of a run maps to the run's Fetch).
  std::mutex fetch_mu_;
  std::condition_variable fetch_cv_;
  std::unordered_map<uint64_t, std::shared_ptr<Fetch>> inflight_;
  uint64_t fetches_now_ = 0;  // fetch_mu_

  // Read-ahead: streams, the queue of runs (first chunk, chunks) the threads take.
  std::mutex ra_mu_;
  std::condition_variable ra_cv_;
  Stream streams_[kStreams];
  uint64_t stream_clock_ = 0;
  std::deque<std::pair<uint64_t, uint64_t>> ra_queue_;
  std::vector<std::thread> ra_threads_;
  bool ra_stop_ = false;

  std::mutex warn_mu_;  // fetch failures are logged at most every few seconds
  std::chrono::steady_clock::time_point last_warn_{};
  uint64_t unlogged_failures_ = 0;

  std::atomic<uint64_t> reads_{0}, bytes_read_{0}, writes_{0}, bytes_written_{0}, trims_{0}, zeroes_{0}, flushes_{0};
  std::atomic<uint64_t> chunk_hits_{0}, chunk_misses_{0}, fetches_{0}, fetch_bytes_{0}, fetch_errors_{0};
  std::atomic<uint64_t> fetch_waits_{0}, read_ahead_fetches_{0}, read_ahead_bytes_{0}, fetches_in_flight_max_{0};
  std::atomic<uint64_t> rejected_{0}, io_errors_{0}, connections_{0}, connections_total_{0};
};

}  // namespace tidemark
