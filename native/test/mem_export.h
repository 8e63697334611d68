// An NBD export held in memory, for the native tests that run a client
// against tidemark's own NBD front (copy_test.cc, nbd_source_test.cc): reads,
// writes, zeroes; failures at an offset; a delay for every read, or reads
// at one offset held until the test lets them go; optionally ReadNow (the
// front's reading thread answers, a held or failing read goes to a worker);
// and what a test waits on or checks (reads in progress, the order reads
// finished in).
#ifndef TIDEMARK_NATIVE_TEST_MEM_EXPORT_H_
#define TIDEMARK_NATIVE_TEST_MEM_EXPORT_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "export.h"
#include "nbd_proto.h"

namespace tidemark::test {

class MemExport : public Export {
 public:
  MemExport(std::string name, std::vector<uint8_t> bytes, bool read_only)
      : name_(std::move(name)), bytes_(std::move(bytes)), read_only_(read_only) {}
  const std::string& name() const override { return name_; }
  uint64_t size() const override { return bytes_.size(); }
  bool read_only() const override { return read_only_; }
  uint32_t Read(uint64_t offset, uint32_t length, uint8_t* out) override {
    {
      std::lock_guard<std::mutex> lk(mu_);
      in_progress_++;
    }
    cv_.notify_all();
    if (const int ms = delay_ms_) std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [&] { return offset != held_at_; });
    in_progress_--;
    finished_.push_back(offset);
    if (offset <= fail_at_ && fail_at_ < offset + length) return nbd::kEio;
    std::memcpy(out, bytes_.data() + offset, length);
    return 0;
  }
  bool can_read_now() const override { return read_now_; }
  uint32_t ReadNow(uint64_t offset, uint32_t length, uint8_t* out) override {
    std::lock_guard<std::mutex> lk(mu_);
    if (offset == held_at_ || (offset <= fail_at_ && fail_at_ < offset + length)) return kWouldWait;
    std::memcpy(out, bytes_.data() + offset, length);
    finished_.push_back(offset);
    return 0;
  }
  uint32_t Write(uint64_t offset, uint32_t length, const uint8_t* data, bool) override {
    std::lock_guard<std::mutex> lk(mu_);
    std::memcpy(bytes_.data() + offset, data, length);
    writes_++;
    return 0;
  }
  uint32_t Trim(uint64_t offset, uint64_t length, bool) override { return Zero(offset, length, false, false); }
  uint32_t Zero(uint64_t offset, uint64_t length, bool, bool) override {
    std::lock_guard<std::mutex> lk(mu_);
    std::memset(bytes_.data() + offset, 0, length);
    zeroes_++;
    return 0;
  }
  uint32_t Flush() override {
    flushes_++;
    return 0;
  }
  void CountRejected() override {}
  void CountConnection(int) override {}

  std::vector<uint8_t> bytes() {
    std::lock_guard<std::mutex> lk(mu_);
    return bytes_;
  }
  void FailAt(uint64_t off) {
    std::lock_guard<std::mutex> lk(mu_);
    fail_at_ = off;
  }
  void Delay(int ms) { delay_ms_ = ms; }
  // Reads that start at `off` wait in the export until Release().
  void HoldAt(uint64_t off) {
    std::lock_guard<std::mutex> lk(mu_);
    held_at_ = off;
  }
  void Release() {
    HoldAt(UINT64_MAX);
    cv_.notify_all();
  }
  // Before the server starts: the front may answer reads with ReadNow.
  void AnswerNow() { read_now_ = true; }
  // Waits (up to 10 s) until at least n reads are in progress at once.
  bool WaitInProgress(int n) {
    std::unique_lock<std::mutex> lk(mu_);
    return cv_.wait_for(lk, std::chrono::seconds(10), [&] { return in_progress_ >= n; });
  }
  // Offsets of the reads finished so far, in the order they finished.
  std::vector<uint64_t> finished() {
    std::lock_guard<std::mutex> lk(mu_);
    return finished_;
  }
  int writes() const { return writes_; }
  int zeroes() const { return zeroes_; }
  int flushes() const { return flushes_; }

 private:
  std::string name_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<uint8_t> bytes_;
  bool read_only_;
  uint64_t fail_at_ = UINT64_MAX;
  uint64_t held_at_ = UINT64_MAX;
  bool read_now_ = false;
  int in_progress_ = 0;
  std::vector<uint64_t> finished_;
  std::atomic<int> delay_ms_{0};
  std::atomic<int> writes_{0}, zeroes_{0}, flushes_{0};
};

}  // namespace tidemark::test

#endif  // TIDEMARK_NATIVE_TEST_MEM_EXPORT_H_
