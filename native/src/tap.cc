#include "tap.h"

#include <sys/stat.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <algorithm>
#include <set>

namespace tidemark {

namespace {
bool ValidName(const std::string& n) {
  if (n.empty() || n.size() > 128 || n[0] == '.') return false;
  for (char c : n)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
  return true;
}
}  // namespace

bool Tap::Open(const TapConfig& config, std::string* error) {
  if (config.volumes.empty()) {
    *error = "no volumes to serve";
    return false;
  }
  if (config.buffer_bytes < (1 << 20)) {
    *error = "the record buffer must be at least 1 MiB";
    return false;
  }
  struct stat st;
  if (stat(config.state_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    *error = "state directory " + config.state_dir + " does not exist or is not a directory";
    return false;
  }
  std::set<std::string> names;
  for (const auto& vc : config.volumes) {
    if (!ValidName(vc.name)) {
      *error = "volume name '" + vc.name + "' is not valid (letters, digits, '-', '_', '.'; at most 128)";
      return false;
    }
    if (!names.insert(vc.name).second) {
      *error = "volume " + vc.name + " is named twice";
      return false;
    }
    if (!vc.group.empty() && !ValidName(vc.group)) {
      *error = "group name '" + vc.group + "' is not valid";
      return false;
    }
    const std::string key = vc.group.empty() ? "volume-" + vc.name : "group-" + vc.group;
    auto& seq = seqs_[key];
    if (!seq) {
      seq = std::make_shared<SeqSpace>();
      if (!seq->Open(config.state_dir + "/" + key + ".seq", error)) return false;
    }
    VolumeConfig c;
    c.name = vc.name;
    c.path = vc.path;
    c.state_dir = config.state_dir;
    c.buffer_bytes = config.buffer_bytes;
    c.congestion_wait_ms = config.congestion_wait_ms;
    c.read_only = vc.read_only;
    auto v = std::make_shared<Volume>(c, seq, log_);
    if (!v->Open(error)) return false;
    if (vc.seq_floor) v->RaiseSeq(vc.seq_floor);
    v->SetResyncWake([this] {
      std::lock_guard<std::mutex> lk(resync_mu_);
      resync_kick_ = true;
      resync_cv_.notify_one();
    });
    v->SetWriteBehindWake([this] {
      std::lock_guard<std::mutex> lk(writeback_mu_);
      writeback_kick_ = true;
      writeback_cv_.notify_one();
    });
    volumes_.push_back(std::move(v));
  }
  server_ = std::make_unique<NbdServer>(volumes_, log_);
  server_->Configure(config.nbd);
  if (!config.unix_path.empty() && !server_->ListenUnix(config.unix_path, error)) return false;
  if (!config.tcp_host.empty() && !server_->ListenTcp(config.tcp_host, config.tcp_port, &tcp_port_, error))
    return false;
  if (config.unix_path.empty() && config.tcp_host.empty()) {
    *error = "no listener: give a unix socket path or a TCP address";
    return false;
  }
  server_->Start();
  resync_ = std::thread([this] { ResyncLoop(); });
  writeback_ = std::thread([this] { WriteBehindLoop(); });
  open_ = true;
  return true;
}

bool Tap::Mark(const std::vector<size_t>& volumes, const uint8_t* data, size_t length, uint64_t* seq,
               std::string* error) {
  if (volumes.empty()) {
    *error = "a TimeMark needs at least one volume";
    return false;
  }
  SeqSpace* space = nullptr;
  for (size_t i : volumes) {
    if (i >= volumes_.size()) {
      *error = "no volume " + std::to_string(i) + " in this tap";
      return false;
    }
    if (space && volumes_[i]->seq_space() != space) {
      *error = "volumes " + volumes_[volumes[0]]->name() + " and " + volumes_[i]->name() +
               " do not share a seq space (they are not one consistency group)";
      return false;
    }
    space = volumes_[i]->seq_space();
  }
  // Always in tap order, so two marks never wait on each other's locks; a
  // write holds one volume lock only.
  std::vector<size_t> order(volumes);
  std::sort(order.begin(), order.end());
  order.erase(std::unique(order.begin(), order.end()), order.end());
  std::vector<std::unique_lock<std::mutex>> locks;
  locks.reserve(order.size());
  for (size_t i : order) locks.push_back(volumes_[i]->MarkLock());
  for (size_t i : order)
    if (!volumes_[i]->CanMarkLocked(length, error)) return false;
  const uint64_t s = space->Next();
  for (size_t i : order) volumes_[i]->MarkLocked(s, data, uint32_t(length));
  *seq = s;
  return true;
}

void Tap::ResyncLoop() {
  std::unique_lock<std::mutex> lk(resync_mu_);
  while (!resync_stop_) {
    bool any_wants = false;
    lk.unlock();
    for (auto& v : volumes_) {
      for (int i = 0; i < 256 && v->ResyncStep(); i++) {
      }
      any_wants |= v->wants_resync();
    }
    lk.lock();
    if (resync_stop_) break;
    // While a resync runs, look again soon (the consumer frees ring space);
    // otherwise sleep until a pull ends a behind period.
    resync_cv_.wait_for(lk, any_wants ? std::chrono::milliseconds(2) : std::chrono::seconds(1),
                        [this] { return resync_stop_ || resync_kick_; });
    resync_kick_ = false;
  }
}

void Tap::WriteBehindLoop() {
  std::unique_lock<std::mutex> lk(writeback_mu_);
  while (!writeback_stop_) {
    writeback_cv_.wait(lk, [this] { return writeback_stop_ || writeback_kick_; });
    writeback_kick_ = false;
    if (writeback_stop_) break;
    lk.unlock();
    // Round after round while writers keep up with it; the wake is edge
    // triggered (one per kWriteBehindBytes), so look again before sleeping.
    for (bool again = true; again;) {
      again = false;
      for (auto& v : volumes_) again |= v->WriteBehind();
    }
    lk.lock();
  }
}

void Tap::Close() {
  if (server_) server_->Stop();
  {
    std::lock_guard<std::mutex> lk(resync_mu_);
    resync_stop_ = true;
    resync_cv_.notify_one();
  }
  if (resync_.joinable()) resync_.join();
  {
    std::lock_guard<std::mutex> lk(writeback_mu_);
    writeback_stop_ = true;
    writeback_cv_.notify_one();
  }
  if (writeback_.joinable()) writeback_.join();
  for (auto& v : volumes_) v->Close();
  open_ = false;
}

}  // namespace tidemark
