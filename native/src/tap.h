// The data tap: volumes, their sequence spaces, the NBD server in front of
// them and the resync thread behind them. Independent of Node, so the native
// tests and the fuzz target drive the same object the addon does.
#pragma once

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "nbd_server.h"
#include "volume.h"

namespace tidemark {

struct TapVolumeConfig {
  std::string name;
  std::string path;
  std::string group;  // empty: the volume has its own sequence space
  bool read_only = false;
  // Never hand out a seq at or below this one (a volume the appliance already
  // holds a point of, at this seq: a seed). Applied before the listener
  // starts, so no write is ever captured below it.
  uint64_t seq_floor = 0;
};

struct TapConfig {
  std::vector<TapVolumeConfig> volumes;
  std::string state_dir;
  size_t buffer_bytes = 64 << 20;  // per volume
  uint32_t congestion_wait_ms = kDefaultCongestionWaitMs;  // VolumeConfig
  std::string unix_path;           // empty: no unix listener
  std::string tcp_host;            // empty: no TCP listener
  int tcp_port = 0;
  NbdServerOptions nbd;  // TLS, connection cap, handshake deadline
};

class Tap {
 public:
  explicit Tap(LogFn log) : log_(std::move(log)) {}
  ~Tap() { Close(); }

  bool Open(const TapConfig& config, std::string* error);
  // Stops accepting NBD connections and lets in-flight requests finish; the
  // volumes stay open so the consumer can drain what was captured.
  void StopServing() {
    if (server_) server_->Stop();
  }
  void Close();

  int tcp_port() const { return tcp_port_; }
  size_t volume_count() const { return volumes_.size(); }
  Volume* volume(size_t i) { return volumes_[i].get(); }
  NbdServer* server() { return server_.get(); }

  // A TimeMark: with the change locks of every named volume held (they must
  // share one seq space: one volume, or a whole consistency group), takes a
  // fresh seq S and puts a MARK record carrying `data` at S into each
  // volume's stream. Every write acknowledged before the call is below S,
  // every later one above it, and no write is half-recorded at S. Refuses
  // (false, *error) when a volume is behind or resyncing or its buffer is full.
  bool Mark(const std::vector<size_t>& volumes, const uint8_t* data, size_t length, uint64_t* seq,
            std::string* error);

 private:
  void ResyncLoop();
  void WriteBehindLoop();

  LogFn log_;
  std::map<std::string, std::shared_ptr<SeqSpace>> seqs_;
  std::vector<std::shared_ptr<Volume>> volumes_;
  std::unique_ptr<NbdServer> server_;
  int tcp_port_ = 0;
  std::thread resync_;
  std::mutex resync_mu_;
  std::condition_variable resync_cv_;
  bool resync_stop_ = false;
  bool resync_kick_ = false;
  // Write-behind of every volume's dirty pages (Volume::WriteBehind): off the
  // writers' path, so an application's write never waits for the disk here.
  std::thread writeback_;
  std::mutex writeback_mu_;
  std::condition_variable writeback_cv_;
  bool writeback_stop_ = false;
  bool writeback_kick_ = false;
  bool open_ = false;
};

}  // namespace tidemark
