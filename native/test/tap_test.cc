// Native tests of the tap core, run under AddressSanitizer and UBSan
// (`npm run test:native`).
//
// The harness is check.h: "ok - ..." lines and a final "N passed, N failed"
// that .ci/run reads; the exit status is non-zero if anything failed. Sections follow the layers bottom-up:
// request validation, the record ring, the dirty map, the seq space, the
// volume (recording, behind mode, resync, restart), the NBD server over a
// socketpair and a unix socket, and the Tap that ties them together. Every
// test works on real files in its own temporary directory.

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "dirty_map.h"
#include "nbd_proto.h"
#include "nbd_server.h"
#include "range_lock.h"
#include "record.h"
#include "seq.h"
#include "tap.h"
#include "volume.h"

#include "check.h"

using namespace tidemark;
using namespace tidemark::test;

namespace {

// A change record as the consumer sees it.
struct Rec {
  RecordHeader h;
  std::vector<uint8_t> data;
};

std::vector<Rec> ParseRecords(const uint8_t* p, size_t n) {
  std::vector<Rec> out;
  for (size_t at = 0; at + kRecordHeaderSize <= n;) {
    Rec r;
    std::memcpy(&r.h, p + at, kRecordHeaderSize);
    r.data.assign(p + at + kRecordHeaderSize, p + at + kRecordHeaderSize + r.h.data_length);
    at += kRecordHeaderSize + r.h.data_length;
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<Rec> PullAll(Volume& v, size_t max = 1 << 20) {
  std::vector<Rec> out;
  for (;;) {
    std::vector<uint8_t> buf;
    const size_t n = v.Pull(max, [&](size_t k) {
      buf.resize(k);
      return buf.data();
    });
    if (n == 0) return out;
    for (auto& r : ParseRecords(buf.data(), n)) out.push_back(std::move(r));
  }
}

// What the appliance does: apply records in seq order to an image.
void Replay(std::vector<uint8_t>& img, const std::vector<Rec>& recs) {
  for (const auto& r : recs) {
    const size_t off = size_t(r.h.sector) << kSectorShift, len = size_t(r.h.count) << kSectorShift;
    if (r.h.kind == kRecordWrite || r.h.kind == kRecordResync) std::memcpy(&img[off], r.data.data(), r.data.size());
    if (r.h.kind == kRecordTrim || r.h.kind == kRecordZero) std::memset(&img[off], 0, len);
  }
}

bool SeqsIncrease(const std::vector<Rec>& recs, uint64_t after = 0) {
  for (const auto& r : recs) {
    if (r.h.seq <= after) return false;
    after = r.h.seq;
  }
  return true;
}

bool RegionDirty(const std::vector<uint8_t>& bitmap, uint64_t r) { return bitmap[r >> 3] & (1u << (r & 7)); }

// A volume over a patterned file in its own state directory.
struct VolumeFixture {
  TempDir dir;
  Log log;
  std::vector<uint8_t> initial;
  std::shared_ptr<SeqSpace> seq;
  std::shared_ptr<Volume> vol;
  std::string error;

  uint32_t congestion_wait_ms = kDefaultCongestionWaitMs;

  bool Create(size_t size, size_t buffer_bytes) {
    initial = Pattern(size, 1);
    WriteFile(disk(), initial);
    return Reopen(buffer_bytes);
  }
  // A new SeqSpace and Volume over the same files, as after a restart.
  bool Reopen(size_t buffer_bytes, bool read_only = false, const std::string& name = "vol") {
    vol.reset();
    seq = std::make_shared<SeqSpace>();
    if (!seq->Open(dir / (name + ".seq"), &error)) return false;
    VolumeConfig c;
    c.name = name;
    c.path = disk();
    c.state_dir = dir.path();
    c.buffer_bytes = buffer_bytes;
    c.read_only = read_only;
    c.congestion_wait_ms = congestion_wait_ms;
    vol = std::make_shared<Volume>(c, seq, log.Fn());
    return vol->Open(&error);
  }
  std::string disk() const { return dir / "disk.img"; }
  std::vector<uint8_t> Backing() const { return ReadFile(disk()); }
};

// ---------------------------------------------------------------- nbd::ValidateRequest

void TestValidateRequest() {
  using namespace nbd;
  const uint64_t size = 1 << 20, big = uint64_t(1) << 40, near_max = UINT64_MAX - 100;
  auto V = [](uint16_t type, uint16_t flags, uint64_t off, uint32_t len, bool ro = false, uint64_t sz = 1 << 20,
              uint32_t magic = kRequestMagic) { return ValidateRequest(Request{magic, flags, type, 7, off, len}, sz, ro); };
  auto Ok = [](const Verdict& v) { return v.error == 0 && !v.disconnect && v.discard == 0 && v.why == nullptr; };
  auto Err = [](const Verdict& v, uint32_t e, uint32_t discard = 0) {
    return v.error == e && !v.disconnect && v.discard == discard && v.why != nullptr;
  };
  auto Disc = [](const Verdict& v) { return v.disconnect && v.error == 0 && v.why != nullptr; };

  uint8_t wire[kRequestSize];
  Put32(wire, kRequestMagic);
  Put16(wire + 4, kCmdFlagFua);
  Put16(wire + 6, kCmdWrite);
  Put64(wire + 8, 0x0102030405060708ULL);
  Put64(wire + 16, 0x1122334455667788ULL);
  Put32(wire + 24, 0xa0b0c0d0);
  const Request p = ParseRequest(wire);
  CHECK(p.magic == kRequestMagic && p.flags == kCmdFlagFua && p.type == kCmdWrite && p.cookie == 0x0102030405060708ULL &&
            p.offset == 0x1122334455667788ULL && p.length == 0xa0b0c0d0,
        "ParseRequest reads the 28-byte big-endian request header");

  CHECK(Disc(V(kCmdRead, 0, 0, 512, false, size, 0x25609514)), "bad request magic -> disconnect");
  CHECK(Disc(V(kCmdFlush, 0, 0, 0, false, size, 0)), "bad magic disconnects whatever the command");

  CHECK(Ok(V(kCmdRead, kCmdFlagFua, 0, 4096)), "READ inside the export is valid");
  CHECK(Ok(V(kCmdRead, 0, size - 512, 512)), "READ ending exactly at the end is valid");
  CHECK(Ok(V(kCmdRead, 0, 0, 512, true)), "READ on a read-only export is valid");
  CHECK(Err(V(kCmdRead, 0, size - 512, 1024), kEinval), "READ past the end -> EINVAL");
  CHECK(Err(V(kCmdRead, 0, size, 1), kEinval), "READ starting at the end -> EINVAL");
  CHECK(Err(V(kCmdRead, 0, near_max, 512, false, UINT64_MAX), kEinval), "READ whose offset+length overflows -> EINVAL");
  CHECK(Err(V(kCmdRead, 0, 0, 0), kEinval), "zero-length READ -> EINVAL");
  CHECK(Err(V(kCmdRead, 0, 0, kMaxPayload + 1, false, big), kEinval), "oversize READ -> EINVAL, connection kept");
  CHECK(Ok(V(kCmdRead, 0, 0, kMaxPayload, false, big)), "READ of exactly the maximum block size is valid");
  CHECK(Err(V(kCmdRead, kCmdFlagNoHole, 0, 512), kEinval), "READ with an unknown flag -> EINVAL");

  CHECK(Ok(V(kCmdWrite, kCmdFlagFua, 0, 4096)), "WRITE (FUA) inside the export is valid");
  CHECK(Err(V(kCmdWrite, 0, size - 512, 1024), kEnospc, 1024), "WRITE past the end -> ENOSPC, payload discarded");
  CHECK(Err(V(kCmdWrite, 0, near_max, 512, false, UINT64_MAX), kEnospc, 512),
        "WRITE whose offset+length overflows -> ENOSPC, payload discarded");
  CHECK(Err(V(kCmdWrite, 0, 0, 0), kEinval, 0), "zero-length WRITE -> EINVAL, nothing to discard");
  CHECK(Disc(V(kCmdWrite, 0, 0, kMaxPayload + 1, false, big)), "oversize WRITE -> disconnect");
  CHECK(Disc(V(kCmdWrite, 0, 0, 0xffffffff, true, big)), "oversize WRITE disconnects even on a read-only export");
  CHECK(Err(V(kCmdWrite, 1 << 5, 0, 4096), kEinval, 4096), "WRITE with an unknown flag -> EINVAL, payload discarded");
  CHECK(Err(V(kCmdWrite, 0, 0, 4096, true), kEperm, 4096), "WRITE to a read-only export -> EPERM, payload discarded");

  CHECK(Ok(V(kCmdTrim, kCmdFlagFua, 0, size)), "TRIM of the whole export is valid");
  CHECK(Ok(V(kCmdTrim, 0, 0, kMaxPayload * 2u, false, big)), "TRIM larger than the maximum block size is valid");
  CHECK(Err(V(kCmdTrim, 0, size - 512, 1024), kEinval), "TRIM past the end -> EINVAL");
  CHECK(Err(V(kCmdTrim, 0, near_max, 512, false, UINT64_MAX), kEinval), "TRIM whose offset+length overflows -> EINVAL");
  CHECK(Err(V(kCmdTrim, 0, 0, 0), kEinval), "zero-length TRIM -> EINVAL");
  CHECK(Err(V(kCmdTrim, kCmdFlagNoHole, 0, 512), kEinval), "TRIM with an unknown flag -> EINVAL");
  CHECK(Err(V(kCmdTrim, 0, 0, 512, true), kEperm), "TRIM on a read-only export -> EPERM");

  CHECK(Ok(V(kCmdWriteZeroes, kCmdFlagFua | kCmdFlagNoHole, 0, 8192)), "WRITE_ZEROES with FUA|NO_HOLE is valid");
  CHECK(Err(V(kCmdWriteZeroes, 0, size - 512, 1024), kEnospc), "WRITE_ZEROES past the end -> ENOSPC, no payload");
  CHECK(Err(V(kCmdWriteZeroes, 0, near_max, 512, false, UINT64_MAX), kEnospc),
        "WRITE_ZEROES whose offset+length overflows -> ENOSPC");
  CHECK(Err(V(kCmdWriteZeroes, 0, 0, 0), kEinval), "zero-length WRITE_ZEROES -> EINVAL");
  CHECK(Err(V(kCmdWriteZeroes, 1 << 2, 0, 512), kEinval), "WRITE_ZEROES with an unknown flag -> EINVAL");
  CHECK(Err(V(kCmdWriteZeroes, 0, 0, 512, true), kEperm), "WRITE_ZEROES on a read-only export -> EPERM");

  CHECK(Ok(V(kCmdFlush, 0, 0, 0)) && Ok(V(kCmdFlush, 0, 0, 0, true)), "FLUSH is valid, also read-only");
  CHECK(Err(V(kCmdFlush, kCmdFlagFua, 0, 0), kEinval), "FLUSH with a flag -> EINVAL");
  CHECK(Ok(V(kCmdDisc, 0, 0, 0)), "DISC is valid");
  CHECK(Err(V(5, 0, 0, 512), kEinval) && Err(V(7, 0, 0, 512), kEinval) && Err(V(0xffff, 0, 0, 0), kEinval),
        "unknown commands -> EINVAL, connection kept");
}

// ---------------------------------------------------------------- RecordRing

RecordHeader Header(uint64_t seq, uint32_t data_len) {
  RecordHeader h{};
  h.seq = seq;
  h.kind = kRecordWrite;
  h.data_length = data_len;
  return h;
}

// Records with a recognisable body: every data byte is the seq's low byte.
// Committed at once unless the test holds them as being filled.
uint8_t* PutRecord(RecordRing& ring, uint64_t seq, uint32_t data_len, bool commit = true) {
  uint8_t* p = ring.Reserve(Header(seq, data_len));
  if (!p) return nullptr;
  std::memset(p + kRecordHeaderSize, uint8_t(seq), data_len);
  if (commit) ring.Commit(p);
  return p;
}

std::vector<Rec> TakeRecords(RecordRing& ring, size_t max) {
  const size_t n = ring.BeginTake(max);
  std::vector<uint8_t> buf(n);
  if (n) {
    ring.CopyTaken(buf.data());
    ring.EndTake();
  }
  return ParseRecords(buf.data(), n);
}

// What a take of max bytes would be, leaving the records where they are.
size_t Peek(RecordRing& ring, size_t max) {
  const size_t n = ring.BeginTake(max);
  ring.CancelTake();
  return n;
}

bool Intact(const Rec& r, uint64_t seq) {
  return r.h.seq == seq && r.h.reserved0 == 0 &&
         std::all_of(r.data.begin(), r.data.end(), [&](uint8_t b) { return b == uint8_t(seq); });
}

void TestRecordRing() {
  RecordRing ring(1024);
  CHECK(ring.empty() && Peek(ring, 4096) == 0, "an empty ring has nothing to take");
  uint8_t* base = PutRecord(ring, 1, 200);  // 232 bytes each
  PutRecord(ring, 2, 200);
  PutRecord(ring, 3, 200);
  CHECK(base && ring.used() == 696 && ring.records() == 3, "three records are held");
  CHECK(Peek(ring, 1) == 232 && Peek(ring, 500) == 464 && Peek(ring, 10000) == 696,
        "a take counts whole records, at least one");
  auto got = TakeRecords(ring, 1);
  CHECK(got.size() == 1 && Intact(got[0], 1) && ring.used() == 464, "a take moves the oldest record out");
  uint8_t* p4 = PutRecord(ring, 4, 200);
  CHECK(p4 == base + 696, "a record that fits before the end goes at the tail");
  uint8_t* p5 = PutRecord(ring, 5, 200);
  CHECK(p5 == base, "a record that does not fit before the end wraps to the start");
  CHECK(p5 && p5 + 232 <= base + 232, "the wrapped record ends before the oldest unread record");
  CHECK(ring.Reserve(Header(9, 8)) == nullptr, "a full ring returns nullptr instead of unread space");
  got = TakeRecords(ring, 1 << 20);
  CHECK(got.size() == 4 && Intact(got[0], 2) && Intact(got[1], 3) && Intact(got[2], 4) && Intact(got[3], 5),
        "records come out across the wrap in order, intact");
  CHECK(ring.empty() && ring.records() == 0, "the ring is empty after taking everything");

  PutRecord(ring, 6, 600);
  CHECK(ring.Reserve(Header(9, 400)) == nullptr && ring.records() == 1,
        "a record larger than the free space returns nullptr");
  TakeRecords(ring, 1 << 20);
  CHECK(ring.Reserve(Header(9, 1025 - kRecordHeaderSize)) == nullptr, "a record larger than the ring returns nullptr");
  CHECK(ring.Reserve(Header(9, 1024 - kRecordHeaderSize)) == base, "an empty ring takes a record of its whole capacity");

  // Producers copy without the lock and may finish out of order: a record
  // becomes takeable only when every older one is filled.
  {
    RecordRing r(4096);
    uint8_t* a = PutRecord(r, 1, 100, false);
    uint8_t* b = PutRecord(r, 2, 100, false);
    const bool b_first = r.Commit(b);
    CHECK(!b_first && Peek(r, 1 << 20) == 0 && r.filling() == 1 && r.records() == 2,
          "a record committed before an older one waits for it");
    CHECK(r.Commit(a) && r.filling() == 0, "committing the older one makes both takeable");
    auto both = TakeRecords(r, 1 << 20);
    CHECK(both.size() == 2 && Intact(both[0], 1) && Intact(both[1], 2),
          "they come out in reservation order, their reserved field 0 again");
  }
  // The consumer copies without the lock too: taken bytes are not handed to
  // producers until EndTake, and falling behind (Clear) keeps them.
  {
    RecordRing r(1024);
    uint8_t* b0 = PutRecord(r, 1, 200);
    PutRecord(r, 2, 200);
    CHECK(r.BeginTake(300) == 232, "a take of the oldest record begins");
    CHECK(PutRecord(r, 3, 200) == b0 + 464 && PutRecord(r, 4, 200) == b0 + 696,
          "producers reserve after the held records while the take copies");
    CHECK(PutRecord(r, 5, 200) == nullptr, "the taken record's space is not reused before EndTake");
    PutRecord(r, 6, 40, false);  // 72 bytes, at 928: a producer still copying
    const RecordRing::Dropped d = r.Clear();
    CHECK(d.records == 4 && d.bytes == 3 * 232 + 72 && r.used() == 232 && r.records() == 1 && r.filling() == 0,
          "Clear drops every record but the taken one (" + std::to_string(d.records) + " records, " +
              std::to_string(d.bytes) + " bytes)");
    uint8_t* p7 = PutRecord(r, 7, 200);
    CHECK(p7 == b0 + 232, "after Clear, reservations go after the taken record");
    std::vector<uint8_t> buf(232);
    r.CopyTaken(buf.data());
    r.EndTake();
    auto taken = ParseRecords(buf.data(), buf.size());
    auto rest = TakeRecords(r, 1 << 20);
    CHECK(taken.size() == 1 && Intact(taken[0], 1) && rest.size() == 1 && Intact(rest[0], 7) && r.empty(),
          "the taken record arrives intact, then the one reserved after Clear");
  }

  // Random traffic against a model, with several records being filled at
  // once, commits out of order, takes that stay open while producers reserve
  // and commit, and an occasional Clear: every reservation lies inside the
  // ring and clear of every record held (filling, ready or being taken), and
  // records come out FIFO, intact, only when every older one is filled.
  RecordRing r2(4096);
  struct Held { uint64_t seq; uint8_t* at; size_t n; bool filled; };
  std::deque<Held> model;
  size_t taking = 0;  // model's first `taking` records are being taken
  std::vector<uint8_t> take_buf;
  uint8_t* b2 = nullptr;
  uint64_t seq = 0, puts = 0, wraps = 0, early_commits = 0, takes_open = 0, clears = 0;
  bool in_bounds = true, no_overlap = true, fifo = true, accounting = true, ready_when = true, take_sizes = true;
  uint32_t x = 12345;
  auto rnd = [&] { return x ^= x << 13, x ^= x >> 17, x ^= x << 5; };
  for (int step = 0; step < 40000; step++) {
    const uint32_t op = rnd() % 16;
    size_t filling = 0;
    for (const auto& h : model) filling += !h.filled;
    if (op < 7 && filling < 4) {
      const uint32_t len = (rnd() % 129) * 8;  // the volume's records are 8-byte multiples too
      uint8_t* p = PutRecord(r2, seq + 1, len, false);
      if (!p) continue;
      seq++;
      puts++;
      if (!b2) b2 = p;
      const size_t n = kRecordHeaderSize + len;
      if (p < b2 || p + n > b2 + 4096) in_bounds = false;
      for (const auto& h : model)
        if (p < h.at + h.n && h.at < p + n) no_overlap = false;
      if (!model.empty() && p < model.back().at) wraps++;
      model.push_back({seq, p, n, false});
    } else if (op < 12 && filling > 0) {
      size_t k = rnd() % filling, i = 0;
      for (; i < model.size(); i++)
        if (!model[i].filled && k-- == 0) break;
      bool oldest = true;
      for (size_t j = 0; j < i; j++) oldest &= model[j].filled;
      early_commits += !oldest;
      model[i].filled = true;
      if (r2.Commit(model[i].at) != oldest) ready_when = false;
    } else if (op < 14 && taking == 0) {
      const size_t max = rnd() % 3000;
      size_t want = 0;
      for (const auto& h : model) {
        if (!h.filled || (want > 0 && want + h.n > max)) break;
        want += h.n;
        taking++;
      }
      if (r2.BeginTake(max) != want) take_sizes = false;
      takes_open += taking > 0;
    } else if (op < 15 && taking > 0) {
      size_t n = 0;
      for (size_t i = 0; i < taking; i++) n += model[i].n;
      take_buf.resize(n);
      r2.CopyTaken(take_buf.data());
      r2.EndTake();
      for (const auto& r : ParseRecords(take_buf.data(), n)) {
        if (model.empty() || !Intact(r, model.front().seq)) fifo = false;
        if (!model.empty()) model.pop_front();
      }
      taking = 0;
    } else if (op == 15 && rnd() % 64 == 0) {
      r2.Clear();
      model.erase(model.begin() + std::ptrdiff_t(taking), model.end());
      clears++;
    }
    size_t used = 0, fill = 0;
    for (const auto& h : model) used += h.n, fill += !h.filled;
    if (used != r2.used() || model.size() != r2.records() || fill != r2.filling()) accounting = false;
  }
  CHECK(puts > 5000 && wraps > 100 && early_commits > 1000 && takes_open > 1000 && clears > 5,
        "random traffic exercised the wrap, early commits, open takes and Clear (" + std::to_string(puts) +
            " records, " + std::to_string(wraps) + " wraps, " + std::to_string(early_commits) + " early commits, " +
            std::to_string(clears) + " clears)");
  CHECK(in_bounds, "every reservation lies inside the ring");
  CHECK(no_overlap, "no reservation overlaps a record being filled, ready or being taken");
  CHECK(ready_when, "a commit makes records takeable exactly when it completes the oldest ones");
  CHECK(take_sizes, "a take is the filled prefix that fits, at least one record");
  CHECK(fifo, "records come out in order with their bytes intact");
  CHECK(accounting, "used(), records() and filling() match the records held");
}

void TestDirtyMap() {
  TempDir dir;
  const std::string path = dir / "vol.dirty";
  const uint64_t size = 10 * kRegionSize + 512;  // 11 regions, the last one partial
  std::string error;
  bool reset = true;
  {
    DirtyMap m;
    CHECK(m.Open(path, size, &reset, &error) && !reset, "a new dirty map opens clean");
    CHECK(m.regions() == 11 && m.count() == 0, "one region per 64 KiB, rounded up");
    const bool first = m.Set(3), again = m.Set(3);
    m.Set(10);
    CHECK(first && !again && m.count() == 2, "Set reports whether the bit was clear, count() follows");
    CHECK(m.Test(3) && m.Test(10) && !m.Test(4), "Test reads the bits back");
    m.Set(7);
    m.Clear(7);
    m.Clear(7);
    m.Clear(5);
    CHECK(m.count() == 2 && !m.Test(7), "Clear clears once and ignores clear bits");
    CHECK(m.Sync(), "Sync succeeds");
    m.Close();
  }
  {
    DirtyMap m;
    CHECK(m.Open(path, size, &reset, &error) && !reset, "the map reopens for the same volume size");
    CHECK(m.count() == 2 && m.Test(3) && m.Test(10) && !m.Test(7), "set bits survive close and reopen");
    const auto copy = m.Copy();
    CHECK(copy.size() == 2 && copy[0] == 0x08 && copy[1] == 0x04, "Copy returns the bitmap bytes");
  }
  {
    DirtyMap m;
    CHECK(m.Open(path, size + kRegionSize, &reset, &error) && reset, "a size mismatch sets *reset");
    CHECK(m.regions() == 12 && m.count() == 12, "after a size mismatch every region is dirty, and only those");
  }
  {
    DirtyMap m;
    CHECK(m.Open(path, size + kRegionSize, &reset, &error) && !reset && m.count() == 12,
          "the reset map persists for the new size");
  }
  {
    int fd = ::open(path.c_str(), O_WRONLY);
    const bool wrote = fd >= 0 && pwrite(fd, "XXXXXXXX", 8, 0) == 8;
    if (fd >= 0) ::close(fd);
    DirtyMap m;
    CHECK(wrote && m.Open(path, size, &reset, &error) && reset && m.count() == 11,
          "a map with a corrupt header resets to all dirty");
  }
  DirtyMap m;
  CHECK(!m.Open(dir / "no/such/dir/x.dirty", size, &reset, &error) && error.find("cannot open") != std::string::npos,
        "an unopenable map path fails with a message" + Said(error));
}

// ---------------------------------------------------------------- SeqSpace

void TestSeqSpace() {
  TempDir dir;
  std::string error;
  uint64_t last = 0;
  {
    SeqSpace s;
    CHECK(s.Open(dir / "a.seq", &error) && s.Current() == 0, "a new seq space opens at 0");
    bool increasing = true;
    for (int i = 0; i < 1000; i++) {
      const uint64_t n = s.Next();
      increasing &= n > last;
      last = n;
    }
    CHECK(increasing && last == 1000 && s.Current() == 1000, "Next is strictly increasing");
    // A crash: the file is whatever the running process left; no clean close.
    SeqSpace after;
    CHECK(after.Open(dir / "a.seq", &error) && after.Next() > last, "after a crash the next seq is above all given");
  }
  {
    SeqSpace s;
    s.Open(dir / "b.seq", &error);
    for (uint64_t i = 0; i < SeqSpace::kLease; i++) last = s.Next();
    SeqSpace at_limit;
    CHECK(at_limit.Open(dir / "b.seq", &error) && at_limit.Next() > last,
          "a crash with the whole lease handed out restarts above it");
    for (int i = 0; i < 10; i++) last = s.Next();
    SeqSpace after;
    CHECK(after.Open(dir / "b.seq", &error) && after.Next() > last, "seqs stay above a lease renewal across a crash");
  }
  {
    SeqSpace s;
    s.Open(dir / "c.seq", &error);
    s.Next();
    s.Raise(5000000);
    const uint64_t n = s.Next();
    CHECK(n > 5000000, "Raise moves the next seq above the floor");
    SeqSpace after;
    CHECK(after.Open(dir / "c.seq", &error) && after.Next() > n, "a raised floor survives a crash");
  }
  {
    SeqSpace s;
    s.Open(dir / "d.seq", &error);
    std::vector<std::vector<uint64_t>> got(4);
    std::vector<std::thread> ts;
    for (auto& g : got)
      ts.emplace_back([&s, &g] {
        for (int i = 0; i < 20000; i++) g.push_back(s.Next());
      });
    for (auto& t : ts) t.join();
    std::set<uint64_t> all;
    bool ordered = true;
    for (auto& g : got) {
      ordered &= std::is_sorted(g.begin(), g.end());
      all.insert(g.begin(), g.end());
    }
    CHECK(ordered && all.size() == 80000 && *all.begin() == 1 && *all.rbegin() == 80000,
          "concurrent Next hands out every seq once");
  }
  WriteFile(dir / "bad.seq", std::vector<uint8_t>(16, 0x55));
  SeqSpace bad;
  CHECK(!bad.Open(dir / "bad.seq", &error) && error.find("not a tidemark seq file") != std::string::npos,
        "a foreign seq file is refused" + Said(error));
  WriteFile(dir / "short.seq", std::vector<uint8_t>(5, 0));
  SeqSpace short_file;
  CHECK(!short_file.Open(dir / "short.seq", &error) && error.find("truncated") != std::string::npos,
        "a truncated seq file is refused" + Said(error));
}

// ---------------------------------------------------------------- Volume

void TestVolumeRecording() {
  VolumeFixture f;
  CHECK(f.Create(1 << 20, 4 << 20), "a volume opens over a 1 MiB file " + Said(f.error));
  Volume& v = *f.vol;
  CHECK(v.size() == 1 << 20 && v.Stats().mode == int(Mode::kNormal), "the volume reports its size, mode normal");
  std::vector<uint8_t> model = f.initial;
  std::vector<Rec> all;

  const auto data = Pattern(65536, 7);
  const uint64_t before = v.Mark();
  CHECK(v.Write(4096, 1024, data.data(), false) == 0, "an aligned write succeeds");
  auto recs = PullAll(v);
  CHECK(recs.size() == 1 && recs[0].h.kind == kRecordWrite && recs[0].h.seq == before + 1 && recs[0].h.seq == v.Mark() &&
            recs[0].h.sector == 8 && recs[0].h.count == 2 && recs[0].h.flags == 0 && recs[0].h.data_length == 1024 &&
            std::equal(recs[0].data.begin(), recs[0].data.end(), data.begin()),
        "an aligned write is one WRITE record with its seq, sector, count and data");
  Replay(model, recs);
  all.insert(all.end(), recs.begin(), recs.end());
  CHECK(f.Backing() == model, "the backing file holds the write");

  v.Write(8192, 512, data.data(), true);
  recs = PullAll(v);
  CHECK(recs.size() == 1 && recs[0].h.flags == kRecordFlagFua, "a FUA write's record carries the FUA flag");
  Replay(model, recs);
  all.insert(all.end(), recs.begin(), recs.end());

  // Unaligned writes: the record covers whole sectors, edges from the file.
  std::memcpy(&model[20 * 512 + 100], data.data(), 300);
  CHECK(v.Write(20 * 512 + 100, 300, data.data(), false) == 0, "an unaligned write inside one sector succeeds");
  recs = PullAll(v);
  CHECK(recs.size() == 1 && recs[0].h.sector == 20 && recs[0].h.count == 1 && recs[0].data.size() == 512 &&
            std::equal(recs[0].data.begin(), recs[0].data.end(), model.begin() + 20 * 512),
        "an unaligned write is widened to its sector with the current edge bytes");
  all.insert(all.end(), recs.begin(), recs.end());
  std::memcpy(&model[30 * 512 + 500], data.data() + 1000, 600);
  v.Write(30 * 512 + 500, 600, data.data() + 1000, false);
  recs = PullAll(v);
  CHECK(recs.size() == 1 && recs[0].h.sector == 30 && recs[0].h.count == 3 && recs[0].data.size() == 1536 &&
            std::equal(recs[0].data.begin(), recs[0].data.end(), model.begin() + 30 * 512),
        "an unaligned write across sectors is widened to all three");
  all.insert(all.end(), recs.begin(), recs.end());

  // TRIM and WRITE_ZEROES: records without data; the range reads as zeroes.
  CHECK(v.Trim(2 * kRegionSize, kRegionSize, false) == 0, "an aligned trim succeeds");
  recs = PullAll(v);
  std::vector<uint8_t> buf(kRegionSize, 0xee);
  CHECK(recs.size() == 1 && recs[0].h.kind == kRecordTrim && recs[0].h.sector == 256 && recs[0].h.count == 128 &&
            recs[0].h.data_length == 0,
        "a trim is one TRIM record with no data");
  CHECK(v.Read(2 * kRegionSize, kRegionSize, buf.data()) == 0 && AllZero(buf.data(), buf.size()),
        "trimmed sectors read back as zeroes");
  Replay(model, recs);
  all.insert(all.end(), recs.begin(), recs.end());
  v.Trim(100, 1000, false);
  recs = PullAll(v);
  CHECK(recs.size() == 1 && recs[0].h.kind == kRecordTrim && recs[0].h.sector == 1 && recs[0].h.count == 1,
        "an unaligned trim discards only the whole sectors inside it");
  Replay(model, recs);
  all.insert(all.end(), recs.begin(), recs.end());

  CHECK(v.Zero(50 * 512 + 10, 2000, false, false) == 0, "an unaligned WRITE_ZEROES succeeds");
  recs = PullAll(v);
  CHECK(recs.size() == 3 && recs[0].h.kind == kRecordWrite && recs[0].h.sector == 50 && recs[1].h.kind == kRecordWrite &&
            recs[1].h.sector == 53 && recs[2].h.kind == kRecordZero && recs[2].h.sector == 51 && recs[2].h.count == 2 &&
            recs[2].h.data_length == 0,
        "its partial edge sectors are WRITE records, the middle one ZERO record without data");
  Replay(model, recs);
  all.insert(all.end(), recs.begin(), recs.end());
  CHECK(v.Read(50 * 512, 2048, buf.data()) == 0 && std::equal(buf.begin(), buf.begin() + 2048, model.begin() + 50 * 512) &&
            AllZero(buf.data() + 10, 2000) && buf[9] != 0,
        "the zeroed range reads back as zeroes, the bytes around it unchanged");
  v.Zero(4 * kRegionSize, 8192, true, true);
  recs = PullAll(v);
  CHECK(recs.size() == 1 && recs[0].h.kind == kRecordZero && recs[0].h.flags == kRecordFlagFua && recs[0].h.count == 16,
        "an aligned NO_HOLE|FUA WRITE_ZEROES is one ZERO record with FUA");
  Replay(model, recs);
  all.insert(all.end(), recs.begin(), recs.end());

  CHECK(v.Flush() == 0, "flush succeeds");
  recs = PullAll(v);
  CHECK(recs.size() == 1 && recs[0].h.kind == kRecordFlush && recs[0].h.count == 0 && recs[0].h.data_length == 0 &&
            recs[0].h.seq == v.Mark(),
        "a flush is a FLUSH record at the newest seq");
  all.insert(all.end(), recs.begin(), recs.end());

  CHECK(SeqsIncrease(all), "record seqs are strictly increasing");
  CHECK(f.Backing() == model, "replaying the records reproduces the backing file");
  VolumeStats s = v.Stats();
  CHECK(s.writes == 6 && s.trims == 2 && s.zeroes == 2 && s.flushes == 1 && s.records == all.size() &&
            s.dropped_records == 0,
        "stats count the operations and records");

  // Acknowledgement clears the dirty map, region by region.
  CHECK(s.dirty_regions == 3, "written regions are dirty until acked (" + std::to_string(s.dirty_regions) + ")");
  v.Ack(v.Mark());
  auto bm = v.DirtyBitmap();
  CHECK(v.Stats().dirty_regions == 0 && AllZero(bm.data(), bm.size()) && v.Stats().acked_seq == v.Mark(),
        "acking the newest seq clears every dirty region");
  v.Write(5 * kRegionSize, 4096, data.data(), false);
  const uint64_t s5 = v.Mark();
  v.Write(6 * kRegionSize, 4096, data.data(), false);
  const uint64_t s6 = v.Mark();
  v.Ack(s5);
  bm = v.DirtyBitmap();
  CHECK(!RegionDirty(bm, 5) && RegionDirty(bm, 6), "an ack clears only the regions whose changes it covers");
  v.Write(6 * kRegionSize + 8192, 4096, data.data(), false);
  v.Ack(s6);
  CHECK(RegionDirty(v.DirtyBitmap(), 6), "a region with a newer unacked change stays dirty");
  v.Ack(v.Mark());
  CHECK(v.Stats().dirty_regions == 0, "acking the newer change clears it");
  PullAll(v);
}

void TestVolumeBehindAndResync() {
  VolumeFixture f;
  // Room for two 64 KiB records; the resync needs half the ring for one.
  CHECK(f.Create(1 << 20, 160 << 10), "a volume opens with a 160 KiB record buffer " + Said(f.error));
  Volume& v = *f.vol;
  const auto data = Pattern(kRegionSize, 9);
  std::vector<Rec> all;

  v.Write(0, kRegionSize, data.data(), false);
  all = PullAll(v);
  CHECK(all.size() == 1, "the consumer pulls the first write");
  v.Write(1 * kRegionSize, kRegionSize, data.data(), false);
  v.Write(2 * kRegionSize, kRegionSize, data.data(), false);
  CHECK(v.Stats().ring_records == 2 && v.Stats().mode == int(Mode::kNormal), "two records fit the ring");
  CHECK(v.Write(3 * kRegionSize, kRegionSize, data.data(), false) == 0, "a write that does not fit still succeeds");
  VolumeStats s = v.Stats();
  CHECK(s.mode == int(Mode::kBehind) && s.dropped_records == 2 && s.behind_events == 1 && s.ring_records == 0,
        "the volume goes behind and drops the held records (" + std::to_string(s.dropped_records) + ")");
  CHECK(f.log.Has("is behind"), "going behind is logged");
  v.Write(7 * kRegionSize + 512, 4096, data.data(), false);
  v.Trim(9 * kRegionSize, kRegionSize, false);
  s = v.Stats();
  CHECK(s.ring_records == 0 && s.stale_regions == 6, "while behind, changes are only stale regions (" +
                                                         std::to_string(s.stale_regions) + ")");

  const uint64_t before_gap = v.Mark();
  auto gap = PullAll(v);
  CHECK(gap.size() == 1 && gap[0].h.kind == kRecordGap && gap[0].h.count == 0 && gap[0].h.seq > before_gap &&
            v.Stats().mode == int(Mode::kResyncing) && v.wants_resync() && v.Stats().gaps == 1,
        "a pull ends the behind period: resyncing, with a GAP marker first");
  all.insert(all.end(), gap.begin(), gap.end());
  int resync_steps = 0;
  bool wrote = false;
  for (int i = 0; i < 100 && v.wants_resync(); i++) {
    while (v.ResyncStep()) resync_steps++;
    if (!wrote && resync_steps >= 2) {  // the application keeps writing during the resync
      v.Write(1 * kRegionSize + 1000, 3000, data.data() + 5, false);
      v.Write(12 * kRegionSize, 512, data.data() + 7, false);
      wrote = true;
    }
    auto got = PullAll(v);
    all.insert(all.end(), got.begin(), got.end());
  }
  auto rest = PullAll(v);
  all.insert(all.end(), rest.begin(), rest.end());
  s = v.Stats();
  CHECK(s.mode == int(Mode::kNormal) && s.stale_regions == 0, "the resync completes and the volume is normal again");
  std::set<uint64_t> resynced;
  bool whole_regions = true;
  for (const auto& r : all) {
    // Region 9 was trimmed (its blocks punched out of the file): a hole, sent as a flagged ZERO record.
    const bool hole = r.h.kind == kRecordZero && (r.h.flags & kRecordFlagResync);
    if (r.h.kind == kRecordResync || hole) {
      resynced.insert(r.h.sector / 128);
      whole_regions &= r.h.sector % 128 == 0 && r.h.count == 128 && r.data.size() == (hole ? 0 : kRegionSize);
    }
  }
  CHECK(resynced == std::set<uint64_t>({0, 1, 2, 3, 7, 9}) && s.resync_records == 6 && whole_regions,
        "each stale region is emitted once as a whole-region RESYNC record (a hole as a flagged ZERO record)");
  CHECK(SeqsIncrease(all), "pulled seqs are strictly increasing across behind and resync");
  uint64_t last_resync = 0, exact_seq = 0, exacts = 0;
  for (const auto& r : all) {
    if (r.h.kind == kRecordResync || (r.h.kind == kRecordZero && (r.h.flags & kRecordFlagResync))) last_resync = r.h.seq;
    if (r.h.kind == kRecordExact) exact_seq = r.h.seq, exacts++;
  }
  CHECK(exacts == 1 && exact_seq > last_resync, "one EXACT marker follows the last RESYNC record");
  bool stamped = true;
  const uint32_t now32 = uint32_t(uint64_t(time(nullptr)) * 1000);
  for (const auto& r : all) stamped &= uint32_t(now32 - r.h.time_ms) < 600000 || uint32_t(r.h.time_ms - now32) < 600000;
  CHECK(stamped, "every record carries the wall clock of its capture (ms, low 32 bits)");
  std::vector<uint8_t> image = f.initial;
  Replay(image, all);
  CHECK(image == f.Backing(), "replaying every pulled record onto the initial image gives the backing file");
  CHECK(v.Stats().dirty_regions == 7, "resynced and rewritten regions stay dirty until acked (" +
                                          std::to_string(v.Stats().dirty_regions) + ")");
  v.Ack(v.Mark());
  CHECK(v.Stats().dirty_regions == 0, "acking after the resync clears the dirty map");
}

// A full record buffer while the consumer drains: the write waits for room
// (counted), nothing is dropped, and the records replay to the backing file.
// With no consumer draining, past the wait, or with the wait off, the volume
// falls behind as before.
void TestVolumeCongestionWait() {
  constexpr uint32_t kMiB = 1 << 20;
  const auto data = Pattern(kMiB, 4), other = Pattern(kMiB, 5);
  // A 4 MiB ring admits two 1 MiB writes without a wait (room for a wrap's
  // gap is kept): the third waits, though it would fit; a fourth does not fit.
  auto fill = [&](Volume& v) {
    v.Write(0, kMiB, data.data(), false);
    v.Write(kMiB, kMiB, data.data(), false);
  };
  // The consumer is there: it took a record just now. Returns what it took.
  auto drained = [&](Volume& v) {
    std::vector<Rec> got = PullAll(v);
    v.Write(5 * kMiB, 4096, data.data(), false);
    for (auto& r : PullAll(v)) got.push_back(std::move(r));
    return got;
  };
  {
    VolumeFixture f;
    f.congestion_wait_ms = 60000;  // longer than any machine takes to pull below
    CHECK(f.Create(8 * kMiB, 4 * kMiB), "a volume opens with a 4 MiB record buffer" + Said(f.error));
    Volume& v = *f.vol;
    std::vector<Rec> all = drained(v);
    fill(v);
    std::atomic<bool> done{false};
    std::thread writer([&] {
      v.Write(2 * kMiB, kMiB, other.data(), false);
      done = true;
    });
    // The writer is waiting for room once it is counted as such in the ring's waiters;
    // without a pull it can only go on after the minute.
    for (int i = 0; i < 20000 && !done && v.Stats().congestion_waiting == 0; i++) usleep(1000);
    CHECK(!done, "a write that finds the buffer full waits while the consumer drains");
    for (auto& r : PullAll(v)) all.push_back(std::move(r));
    writer.join();
    for (auto& r : PullAll(v)) all.push_back(std::move(r));
    VolumeStats s = v.Stats();
    CHECK(s.behind_events == 0 && s.dropped_records == 0 && s.mode == int(Mode::kNormal),
          "a pull made room: the volume did not fall behind");
    CHECK(s.congestion_waits == 1, "the wait is counted (" + std::to_string(s.congestion_waits) + ")");
    std::vector<uint8_t> image = f.initial;
    Replay(image, all);
    CHECK(all.size() == 4 && SeqsIncrease(all) && image == f.Backing(), "every write is a record, in order, replaying to the backing file");
  }
  {
    VolumeFixture f;
    f.congestion_wait_ms = 60000;
    CHECK(f.Create(8 * kMiB, 4 * kMiB), "a second volume opens" + Said(f.error));
    Volume& v = *f.vol;
    fill(v);
    v.Write(2 * kMiB, kMiB, data.data(), false);
    v.Write(3 * kMiB, kMiB, data.data(), false);
    VolumeStats s = v.Stats();
    CHECK(s.behind_events == 1 && s.congestion_waits == 0, "with no consumer ever draining, a full buffer falls behind at once");
  }
  // Nobody pulls after the consumer's last take: with a wait, each write waits
  // it out, the third then fits and the fourth falls behind; with none, the
  // fourth falls behind at once.
  for (const uint32_t wait_ms : {50u, 0u}) {
    VolumeFixture f;
    f.congestion_wait_ms = wait_ms;
    CHECK(f.Create(8 * kMiB, 4 * kMiB), "a volume opens with a " + std::to_string(wait_ms) + " ms wait" + Said(f.error));
    Volume& v = *f.vol;
    drained(v);
    fill(v);
    v.Write(2 * kMiB, kMiB, data.data(), false);
    CHECK(v.Stats().behind_events == 0, "a write that fits the ring is kept");
    v.Write(3 * kMiB, kMiB, data.data(), false);
    VolumeStats s = v.Stats();
    if (wait_ms) {
      CHECK(s.behind_events == 1 && s.congestion_waits == 2 && s.congestion_wait_ms >= 90,
            "a buffer still full after the wait falls behind (" + std::to_string(s.congestion_wait_ms) + " ms waited)");
      CHECK(f.log.Has("is behind"), "and says so");
    } else {
      CHECK(s.behind_events == 1 && s.congestion_waits == 0, "with the wait off, a full buffer falls behind at once");
    }
  }
}

void TestVolumeLargeWrite() {
  VolumeFixture f;
  CHECK(f.Create(4 << 20, 8 << 20), "a 4 MiB volume opens" + Said(f.error));
  Volume& v = *f.vol;
  const uint32_t length = (5 << 19) + 300;  // 2.5 MiB and change, unaligned at both ends
  const uint64_t offset = 3 * 512 + 100;
  const auto data = Pattern(length, 21);
  const uint64_t before = v.Mark();
  CHECK(v.Write(offset, length, data.data(), false) == 0, "a 2.5 MiB unaligned write succeeds");
  auto recs = PullAll(v, 16 << 20);
  bool pieces = !recs.empty() && recs.front().h.sector == 3, consecutive = true;
  for (size_t i = 0; i < recs.size(); i++) {
    const auto& h = recs[i].h;
    pieces &= h.kind == kRecordWrite && h.count >= 1 && h.count <= kMaxRecordSectors &&
              recs[i].data.size() == size_t(h.count) << kSectorShift;
    if (i > 0) {
      pieces &= h.sector == recs[i - 1].h.sector + recs[i - 1].h.count;
      consecutive &= h.seq == recs[i - 1].h.seq + 1;
    }
  }
  const uint64_t last_sector = (offset + length + 511) / 512;
  CHECK(recs.size() == 3 && pieces && recs.back().h.sector + recs.back().h.count == last_sector,
        "a write over 1 MiB becomes contiguous records of at most 1 MiB each (" + std::to_string(recs.size()) + ")");
  CHECK(consecutive && recs.front().h.seq == before + 1 && v.Stats().volume_seq == v.Mark(),
        "the pieces have consecutive seqs, the last one the volume's newest");
  std::vector<uint8_t> image = f.initial;
  Replay(image, recs);
  CHECK(image == f.Backing(), "replaying the pieces reproduces the write, edges included");
}

// A sector of a concurrent writer's data: its write's id and its index in
// the write, then bytes that follow from both, so a record's every byte can
// be checked where it arrives.
void FillSector(uint8_t* s, uint32_t id, uint32_t k) {
  std::memcpy(s, &id, 4);
  std::memcpy(s + 4, &k, 4);
  for (uint32_t j = 8; j < kSectorSize; j++) s[j] = uint8_t(id * 131 + k * 7 + j);
}
bool SectorIs(const uint8_t* s, uint32_t id, uint32_t k) {
  uint8_t want[kSectorSize];
  FillSector(want, id, k);
  return std::memcmp(s, want, kSectorSize) == 0;
}

// Several writers and one consumer at once through the Volume API, with a
// ring small enough to wrap every few writes: the consumer copies records
// out while writers reserve slots and copy theirs in, some of them split
// into pieces, between flushes and TimeMarks. Writers stay within a byte
// budget the consumer gives back as it pulls, so the ring never overflows:
// every record must arrive once, in seq order, byte-exact.
void TestVolumePullWhileWriting() {
  VolumeFixture f;
  constexpr size_t kSize = 16 << 20, kRing = 8 << 20;
  CHECK(f.Create(kSize, kRing), "a 16 MiB volume opens with an 8 MiB ring" + Said(f.error));
  Volume& v = *f.vol;
  // Free space of three largest records always holds one, wrapped or not.
  constexpr size_t kLargest = kRecordHeaderSize + (size_t(kMaxRecordSectors) << kSectorShift);
  std::mutex budget_mu;
  std::condition_variable budget_cv;
  size_t budget = kRing - 3 * kLargest;
  auto spend = [&](size_t n) {
    std::unique_lock<std::mutex> l(budget_mu);
    budget_cv.wait(l, [&] { return budget >= n; });
    budget -= n;
  };
  auto refund = [&](size_t n) {
    std::lock_guard<std::mutex> l(budget_mu);
    budget += n;
    budget_cv.notify_all();
  };
  std::mutex wake_mu;
  std::condition_variable wake_cv;
  bool readable = false;
  std::atomic<bool> done{false};
  v.SetReadable([&] {
    std::lock_guard<std::mutex> l(wake_mu);
    readable = true;
    wake_cv.notify_one();
  });

  // The consumer checks each record as it arrives and replays it.
  std::vector<uint8_t> image = f.initial;
  std::map<uint32_t, uint32_t> sectors_seen;  // write id -> sectors received, in order
  uint64_t last_seq = 0, pulls = 0, empty_pulls = 0, received = 0, flushes = 0, marks = 0;
  bool ordered = true, exact = true, kinds = true;
  std::thread consumer([&] {
    std::vector<uint8_t> buf;
    for (;;) {
      const bool finished = done.load();  // every write was committed before this pull
      const size_t n = v.Pull(256 << 10, [&](size_t k) {
        buf.resize(k);
        return buf.data();
      });
      if (n == 0) {
        if (finished) return;
        // Every other empty pull waits to be told, the rest look again at
        // once: a consumer that is there when a record becomes takeable
        // reads it while its writer may still be busy.
        if (++empty_pulls % 2) {
          std::this_thread::yield();
          continue;
        }
        std::unique_lock<std::mutex> l(wake_mu);
        wake_cv.wait(l, [&] { return readable || done.load(); });
        readable = false;
        continue;
      }
      pulls++;
      for (size_t at = 0; at < n;) {
        RecordHeader h;
        std::memcpy(&h, &buf[at], kRecordHeaderSize);
        const uint8_t* d = &buf[at + kRecordHeaderSize];
        ordered &= h.seq > last_seq && h.reserved0 == 0;
        last_seq = h.seq;
        received++;
        if (h.kind == kRecordWrite) {
          uint32_t id;
          std::memcpy(&id, d, 4);
          uint32_t& seen = sectors_seen[id];
          for (uint32_t k = 0; k < h.count; k++) exact &= SectorIs(d + (size_t(k) << kSectorShift), id, seen + k);
          seen += h.count;
          std::memcpy(&image[size_t(h.sector) << kSectorShift], d, h.data_length);
        } else {
          flushes += h.kind == kRecordFlush;
          marks += h.kind == kRecordMark;
          kinds &= h.kind == kRecordFlush || h.kind == kRecordMark;
        }
        at += kRecordHeaderSize + h.data_length;
      }
      v.Ack(last_seq);
      refund(n);
    }
  });

  constexpr int kThreads = 4, kPerThread = 150;
  std::vector<uint32_t> sectors_sent(kThreads * kPerThread + 1, 0);
  std::atomic<uint64_t> flushes_sent{0}, marks_sent{0};
  std::atomic<int> failures{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; t++) {
    writers.emplace_back([&, t] {
      uint32_t x = uint32_t(t) * 104729u + 17;
      auto rnd = [&x] { return x ^= x << 13, x ^= x >> 17, x ^= x << 5, x; };
      std::vector<uint8_t> d;
      for (int i = 0; i < kPerThread; i++) {
        const uint32_t id = uint32_t(t * kPerThread + i + 1);
        const uint32_t sectors = rnd() % 40 == 0 ? kMaxRecordSectors + 1 + rnd() % kMaxRecordSectors : 1 + rnd() % 1024;
        const uint64_t off = uint64_t(rnd() % (kSize / kSectorSize - sectors)) << kSectorShift;
        d.resize(size_t(sectors) << kSectorShift);
        for (uint32_t k = 0; k < sectors; k++) FillSector(&d[size_t(k) << kSectorShift], id, k);
        const size_t pieces = (sectors + kMaxRecordSectors - 1) / kMaxRecordSectors;
        spend(pieces * kRecordHeaderSize + d.size());
        failures += v.Write(off, uint32_t(d.size()), d.data(), false) != 0;
        sectors_sent[id] = sectors;
        if (rnd() % 16 == 0) {
          spend(kRecordHeaderSize);
          failures += v.Flush() != 0;
          flushes_sent++;
        }
        if (rnd() % 32 == 0) {  // a TimeMark, as Tap::Mark takes one
          const char meta[] = "{\"label\":\"m\"}";
          spend(kRecordHeaderSize + sizeof meta);
          auto lock = v.MarkLock();
          std::string why;
          if (v.CanMarkLocked(sizeof meta, &why)) {
            v.MarkLocked(v.seq_space()->Next(), reinterpret_cast<const uint8_t*>(meta), sizeof meta);
            marks_sent++;
          } else {
            failures++;
          }
        }
      }
    });
  }
  for (auto& w : writers) w.join();
  {
    std::lock_guard<std::mutex> l(wake_mu);
    done = true;
    wake_cv.notify_one();
  }
  consumer.join();

  const VolumeStats s = v.Stats();
  CHECK(failures == 0 && s.behind_events == 0 && s.dropped_records == 0,
        "the writes succeed and the ring never overflows (" + std::to_string(s.behind_events) + " behind events)");
  bool once = sectors_seen.size() == size_t(kThreads * kPerThread);
  for (uint32_t id = 1; id <= uint32_t(kThreads * kPerThread); id++) once &= sectors_seen[id] == sectors_sent[id];
  CHECK(once && received == s.records && s.ring_used == 0 && s.ring_records == 0,
        "every record arrives once (" + std::to_string(received) + " of " + std::to_string(s.records) + ")");
  CHECK(flushes == flushes_sent && marks == marks_sent && marks > 0 && kinds, "every FLUSH and MARK arrives once");
  CHECK(ordered, "records arrive in seq order, with the ring's reserved field 0");
  CHECK(exact, "every record's bytes are its write's bytes, piece by piece");
  CHECK(pulls > 100, "the consumer pulled while the writers wrote (" + std::to_string(pulls) + " pulls)");
  CHECK(image == f.Backing(), "replaying the records in seq order gives the backing file");
  CHECK(v.Stats().dirty_regions == 0, "acking every pulled seq leaves the dirty map clean");
}

// Writers falling behind while others are still copying into their slots:
// the volume waits for those copies before it drops the ring, and the resync
// makes the stream exact again.
void TestVolumeBehindWhileCopying() {
  VolumeFixture f;
  constexpr size_t kSize = 16 << 20;
  CHECK(f.Create(kSize, 4 << 20), "a 16 MiB volume opens with a 4 MiB ring" + Said(f.error));
  Volume& v = *f.vol;
  std::atomic<int> failures{0};
  std::atomic<bool> pulling{false};
  std::atomic<int> finished{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < 4; t++) {
    writers.emplace_back([&, t] {
      uint32_t x = uint32_t(t) * 7717u + 3;
      auto rnd = [&x] { return x ^= x << 13, x ^= x >> 17, x ^= x << 5, x; };
      std::vector<uint8_t> d;
      for (int i = 0; i < 60; i++) {
        const uint32_t sectors = 1 + rnd() % (3 * kMaxRecordSectors);
        const uint64_t off = uint64_t(rnd() % (kSize / kSectorSize - sectors)) << kSectorShift;
        d.resize(size_t(sectors) << kSectorShift);
        for (uint32_t k = 0; k < sectors; k++) FillSector(&d[size_t(k) << kSectorShift], uint32_t(t * 100 + i), k);
        failures += v.Write(off, uint32_t(d.size()), d.data(), false) != 0;
        if (i == 20 && t == 0) pulling = true;  // the consumer starts once the ring has overflowed
      }
      finished++;
    });
  }
  std::vector<Rec> all;
  while (!pulling) std::this_thread::yield();
  for (;;) {
    const bool writing = finished < 4;
    auto got = PullAll(v, 1 << 20);
    all.insert(all.end(), got.begin(), got.end());
    while (v.ResyncStep()) {
    }
    if (!writing && got.empty() && !v.wants_resync()) break;
  }
  for (auto& w : writers) w.join();
  const VolumeStats s = v.Stats();
  CHECK(failures == 0 && s.behind_events >= 1 && s.dropped_records > 0,
        "concurrent writes overflow the ring and the volume falls behind (" + std::to_string(s.behind_events) +
            " times)");
  CHECK(s.mode == int(Mode::kNormal) && s.stale_regions == 0, "the resync ends and the volume is normal again");
  std::vector<uint8_t> image = f.initial;
  Replay(image, all);
  CHECK(SeqsIncrease(all) && image == f.Backing(), "replaying the pulled records in seq order gives the backing file");
}

void TestVolumeResyncFrom() {
  VolumeFixture f;
  CHECK(f.Create(1 << 20, 4 << 20), "a volume opens" + Said(f.error));
  Volume& v = *f.vol;
  const auto data = Pattern(8192, 23);
  v.Write(11 * kRegionSize, 4096, data.data(), false);
  std::vector<Rec> all = PullAll(v);
  CHECK(v.ResyncFrom(16) == 0 && v.Stats().mode == int(Mode::kNormal), "ResyncFrom past the end marks nothing");
  CHECK(v.ResyncFrom(10) == 6 && v.Stats().stale_regions == 6 && v.Stats().resync_cursor == 10 && v.wants_resync(),
        "ResyncFrom marks every region from there to the end stale and starts resyncing");
  CHECK(v.Stats().dirty_regions == 1, "the copy's stale regions are not written to the dirty map");
  bool wrote = false;
  for (int i = 0; i < 100 && v.wants_resync(); i++) {
    if (!v.ResyncStep()) {
      auto got = PullAll(v);
      all.insert(all.end(), got.begin(), got.end());
    }
    if (!wrote && v.Stats().stale_regions == 3) {  // the application writes during the copy
      v.Write(12 * kRegionSize + 100, 5000, data.data(), false);
      v.Write(15 * kRegionSize, 8192, data.data(), false);
      wrote = true;
    }
  }
  auto rest = PullAll(v);
  all.insert(all.end(), rest.begin(), rest.end());
  auto bm = v.DirtyBitmap();
  bool copied_dirty = true;
  for (uint64_t r = 10; r < 16; r++) copied_dirty &= RegionDirty(bm, r);
  CHECK(copied_dirty && v.Stats().dirty_regions == 6, "copied regions are dirty until their RESYNC records are acked");
  std::set<uint64_t> copied;
  for (const auto& r : all)
    if (r.h.kind == kRecordResync) copied.insert(r.h.sector / 128);
  CHECK(wrote && copied == std::set<uint64_t>({10, 11, 12, 13, 14, 15}) && v.Stats().mode == int(Mode::kNormal),
        "the copy emits regions 10..15 as RESYNC records and ends normal");
  std::vector<uint8_t> image = f.initial;
  Replay(image, all);
  CHECK(SeqsIncrease(all) && image == f.Backing(), "replaying in seq order is exact while the application writes");
  v.Ack(v.Mark());
  CHECK(v.Stats().dirty_regions == 0, "acking the copy leaves the dirty map clean");
}

// The copy of a thin disk: regions that are holes in the file are not read
// and come as ZERO records flagged as resyncs; regions with data (on disk or
// only in the page cache, and one written during the copy) as RESYNC records.
void TestVolumeResyncHoles() {
  VolumeFixture f;
  const size_t size = 16 * kRegionSize;
  f.initial.assign(size, 0);
  {
    const int fd = ::open(f.disk().c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
    const auto data = Pattern(kRegionSize, 31);
    const bool ok = fd >= 0 && ftruncate(fd, off_t(size)) == 0 &&
                    pwrite(fd, data.data(), 4096, off_t(3 * kRegionSize + 8192)) == 4096 && fsync(fd) == 0 &&
                    pwrite(fd, data.data(), kRegionSize, off_t(7 * kRegionSize)) == ssize_t(kRegionSize);  // page cache only
    if (fd >= 0) ::close(fd);
    CHECK(ok, "a sparse disk with data in regions 3 and 7");
    std::memcpy(&f.initial[3 * kRegionSize + 8192], data.data(), 4096);
    std::memcpy(&f.initial[7 * kRegionSize], data.data(), kRegionSize);
  }
  CHECK(f.Reopen(4 << 20), "a volume opens" + Said(f.error));
  Volume& v = *f.vol;
  const int pfd = ::open(f.disk().c_str(), O_RDONLY | O_CLOEXEC);
  const off_t probe = pfd >= 0 ? lseek(pfd, 0, SEEK_DATA) : -1;
  if (pfd >= 0) ::close(pfd);
  if (probe < off_t(3 * kRegionSize) || probe > off_t(3 * kRegionSize + 8192)) {
    CHECK(true, "this file system does not report holes (SEEK_DATA): the hole path is not exercised here");
    return;
  }
  std::vector<Rec> all = PullAll(v);
  CHECK(v.ResyncFrom(0) == 16, "the whole volume is to be copied");
  const auto data = Pattern(8192, 37);
  bool wrote = false;
  for (int i = 0; i < 200 && v.wants_resync(); i++) {
    if (!v.ResyncStep()) {
      auto got = PullAll(v);
      all.insert(all.end(), got.begin(), got.end());
    }
    if (!wrote && v.Stats().stale_regions == 6) {  // the application writes into a hole during the copy
      v.Write(12 * kRegionSize + 512, 8192, data.data(), false);
      wrote = true;
    }
  }
  auto rest = PullAll(v);
  all.insert(all.end(), rest.begin(), rest.end());
  std::set<uint64_t> resynced, holes;
  for (const auto& r : all) {
    if (r.h.kind == kRecordResync) resynced.insert(r.h.sector / 128);
    if (r.h.kind == kRecordZero && (r.h.flags & kRecordFlagResync) && r.data.empty() && r.h.count == 128) holes.insert(r.h.sector / 128);
  }
  std::set<uint64_t> expect_holes;
  for (uint64_t g = 0; g < 16; g++)
    if (g != 3 && g != 7 && !(wrote && g == 12)) expect_holes.insert(g);
  const bool twelve = resynced.count(12) == 1 || holes.count(12) == 1;  // copied before or after the write
  holes.erase(12);
  expect_holes.erase(12);
  CHECK(resynced.count(3) && resynced.count(7) && twelve && holes == expect_holes,
        "regions with data (on disk or only cached) come as RESYNC records, holes as flagged ZERO records");
  CHECK(v.Stats().resync_holes >= expect_holes.size() && v.Stats().resync_records == 16, "every region counted as a resync record, the holes among them");
  std::vector<uint8_t> image(size, 0xEE);  // a replica holding junk: the ZERO records must clear it
  Replay(image, all);
  CHECK(SeqsIncrease(all) && image == f.Backing(), "replaying in seq order is exact, holes included");
}

void TestVolumeRestart() {
  VolumeFixture f;
  CHECK(f.Create(1 << 20, 4 << 20), "a volume opens " + Said(f.error));
  const auto data = Pattern(8192, 3);
  f.vol->Write(2 * kRegionSize + 512, 8192, data.data(), false);
  f.vol->Write(5 * kRegionSize, 512, data.data(), false);
  const uint64_t last = f.vol->Mark();
  // Stop without acks (the agent was killed): unacked regions must be resynced.
  CHECK(f.Reopen(4 << 20), "the volume reopens over the same state " + Said(f.error));
  Volume& v = *f.vol;
  VolumeStats s = v.Stats();
  CHECK(s.mode == int(Mode::kBehind) && s.stale_regions == 2 && s.dirty_regions == 2,
        "regions not acked before the stop are stale after a restart");
  CHECK(f.log.Has("were not acknowledged"), "the restart resync is logged");
  auto first = PullAll(v);
  CHECK(first.size() == 1 && first[0].h.kind == kRecordGap && first[0].h.seq > last,
        "the first pull after a restart with stale regions yields a GAP marker");
  while (v.ResyncStep()) {
  }
  auto recs = PullAll(v);
  CHECK(recs.size() == 3 && recs[0].h.kind == kRecordResync && recs[1].h.kind == kRecordResync && recs[0].h.seq > last &&
            recs[2].h.kind == kRecordExact && recs[2].h.seq > recs[1].h.seq,
        "they are resynced with seqs above those given before the stop, then an EXACT marker");
  std::vector<uint8_t> image = f.initial;
  Replay(image, recs);
  CHECK(image == f.Backing() && v.Stats().mode == int(Mode::kNormal), "the resync carries exactly the changed data");

  // A backing file that changed size cannot trust the old map.
  const auto bigger = Pattern((1 << 20) + kRegionSize, 4);
  WriteFile(f.disk(), bigger);
  CHECK(f.Reopen(4 << 20) && f.vol->Stats().stale_regions == 17 && f.log.Has("another size"),
        "a volume whose size changed resyncs every region");

  WriteFile(f.disk(), std::vector<uint8_t>(1000, 1));
  CHECK(!f.Reopen(4 << 20) && f.error.find("multiple of 512") != std::string::npos,
        "a backing file that is not whole sectors is refused: " + Said(f.error));
  std::filesystem::remove(f.disk());
  CHECK(!f.Reopen(4 << 20) && f.error.find("cannot open") != std::string::npos,
        "a missing backing file is refused: " + Said(f.error));
}

// ---------------------------------------------------------------- NbdServer

// A blocking NBD client on one end of a socket (check.h), speaking the
// handshake and simple replies.
struct Client : SocketEnd {
  using SocketEnd::SocketEnd;

  struct OptReply {
    uint64_t magic = 0;
    uint32_t opt = 0, type = 0;
    std::vector<uint8_t> data;
  };
  bool ReadOptReply(OptReply* r) {
    uint8_t h[20];
    if (!Recv(h, 20)) return false;
    r->magic = nbd::Get64(h);
    r->opt = nbd::Get32(h + 8);
    r->type = nbd::Get32(h + 12);
    r->data.resize(nbd::Get32(h + 16));
    return r->data.empty() || Recv(r->data.data(), r->data.size());
  }
  struct Reply {
    uint32_t magic = 0, error = 0xffffffff;
    uint64_t cookie = 0;
  };
  bool ReadReply(Reply* r) {
    uint8_t h[nbd::kSimpleReplySize];
    if (!Recv(h, sizeof h)) return false;
    r->magic = nbd::Get32(h);
    r->error = nbd::Get32(h + 4);
    r->cookie = nbd::Get64(h + 8);
    return true;
  }
  // The server's greeting; then the client's flags.
  bool Greet(uint32_t client_flags) {
    uint8_t g[18];
    if (!Recv(g, 18) || nbd::Get64(g) != nbd::kNbdMagic || nbd::Get64(g + 8) != nbd::kOptMagic) return false;
    std::vector<uint8_t> cf(4);
    nbd::Put32(cf.data(), client_flags);
    return nbd::Get16(g + 16) == (nbd::kFlagFixedNewstyle | nbd::kFlagNoZeroes) && Send(cf);
  }
};

std::vector<uint8_t> Option(uint32_t opt, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> b(16);
  nbd::Put64(b.data(), nbd::kOptMagic);
  nbd::Put32(b.data() + 8, opt);
  nbd::Put32(b.data() + 12, uint32_t(data.size()));
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

std::vector<uint8_t> GoData(const std::string& name, const std::vector<uint16_t>& infos) {
  std::vector<uint8_t> d(4 + name.size() + 2 + 2 * infos.size());
  nbd::Put32(d.data(), uint32_t(name.size()));
  std::memcpy(d.data() + 4, name.data(), name.size());
  nbd::Put16(d.data() + 4 + name.size(), uint16_t(infos.size()));
  for (size_t i = 0; i < infos.size(); i++) nbd::Put16(d.data() + 6 + name.size() + 2 * i, infos[i]);
  return d;
}

std::vector<uint8_t> Request(uint16_t type, uint16_t flags, uint64_t cookie, uint64_t offset, uint32_t length,
                             const std::vector<uint8_t>& payload = {}, uint32_t magic = nbd::kRequestMagic) {
  std::vector<uint8_t> b(nbd::kRequestSize);
  nbd::Put32(b.data(), magic);
  nbd::Put16(b.data() + 4, flags);
  nbd::Put16(b.data() + 6, type);
  nbd::Put64(b.data() + 8, cookie);
  nbd::Put64(b.data() + 16, offset);
  nbd::Put32(b.data() + 24, length);
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}

std::vector<uint8_t> Cat(std::initializer_list<std::vector<uint8_t>> parts) {
  std::vector<uint8_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

using Served = ServedOver<NbdServer, Client>;

void TestNbdServer() {
  using namespace nbd;
  VolumeFixture f;
  CHECK(f.Create(1 << 20, 4 << 20), "a volume for the server " + Said(f.error));
  const uint64_t size = f.vol->size();
  Log log;
  NbdServer server({f.vol}, log.Fn());
  {
    Served sv(server);
    Client& c = *sv.client;
    CHECK(c.Greet(kClientFlagFixedNewstyle | kClientFlagNoZeroes), "fixed newstyle greeting, client flags accepted");
    Client::OptReply r;
    c.Send(Option(kOptList, {}));
    bool listed = c.ReadOptReply(&r) && r.magic == kOptReplyMagic && r.type == kRepServer && r.data.size() == 7 &&
                  Get32(r.data.data()) == 3 && std::string(r.data.begin() + 4, r.data.end()) == "vol";
    CHECK(listed && c.ReadOptReply(&r) && r.type == kRepAck && r.opt == kOptList, "LIST names the export, then ACK");
    c.Send(Option(8, {}));  // STRUCTURED_REPLY, which this server does not do
    CHECK(c.ReadOptReply(&r) && r.type == kRepErrUnsup && r.opt == 8, "an unsupported option gets ERR_UNSUP");
    c.Send(Option(kOptGo, GoData("nope", {})));
    CHECK(c.ReadOptReply(&r) && r.type == kRepErrUnknown && r.opt == kOptGo, "GO for an unknown export gets ERR_UNKNOWN");
    c.Send(Option(kOptGo, {0, 0, 0, 9, 'v'}));
    CHECK(c.ReadOptReply(&r) && r.type == kRepErrInvalid, "GO with a truncated name gets ERR_INVALID");

    c.Send(Option(kOptGo, GoData("vol", {kInfoName})));
    bool export_ok = false, block_ok = false, name_ok = false, acked = false;
    for (int i = 0; i < 10 && c.ReadOptReply(&r) && r.opt == kOptGo; i++) {
      if (r.type == kRepAck) {
        acked = true;
        break;
      }
      const uint16_t info = r.data.size() >= 2 ? Get16(r.data.data()) : 0xffff;
      if (info == kInfoExport && r.data.size() == 12) {
        const uint16_t fl = Get16(r.data.data() + 10);
        export_ok = Get64(r.data.data() + 2) == size && (fl & kTxHasFlags) && (fl & kTxSendFlush) &&
                    (fl & kTxSendFua) && (fl & kTxSendTrim) && (fl & kTxSendWriteZeroes) && !(fl & kTxReadOnly);
      }
      if (info == kInfoBlockSize && r.data.size() == 14)
        block_ok = Get32(r.data.data() + 2) == 1 && Get32(r.data.data() + 6) == kPreferredBlock &&
                   Get32(r.data.data() + 10) == kMaxPayload;
      if (info == kInfoName) name_ok = std::string(r.data.begin() + 2, r.data.end()) == "vol";
    }
    CHECK(export_ok && block_ok && name_ok && acked, "GO answers size, flags, block sizes and name, then ACK");

    const auto data = Pattern(8192, 11);
    Client::Reply rep;
    c.Send(Request(kCmdWrite, 0, 1, 4096, 8192, data));
    CHECK(c.ReadReply(&rep) && rep.magic == kSimpleReplyMagic && rep.error == 0 && rep.cookie == 1, "WRITE succeeds");
    c.Send(Request(kCmdRead, 0, 2, 4096, 8192));
    std::vector<uint8_t> got(8192);
    CHECK(c.ReadReply(&rep) && rep.error == 0 && rep.cookie == 2 && c.Recv(got.data(), got.size()) && got == data,
          "READ returns what was written");
    c.Send(Request(kCmdFlush, 0, 3, 0, 0));
    CHECK(c.ReadReply(&rep) && rep.error == 0 && rep.cookie == 3, "FLUSH succeeds");
    c.Send(Request(kCmdRead, 0, 4, size - 512, 1024));
    CHECK(c.ReadReply(&rep) && rep.error == kEinval && rep.cookie == 4, "an out-of-range READ gets EINVAL");
    c.Send(Request(kCmdRead, 0, 5, 0, 512));
    got.resize(512);
    CHECK(c.ReadReply(&rep) && rep.error == 0 && rep.cookie == 5 && c.Recv(got.data(), 512) &&
              std::equal(got.begin(), got.end(), f.initial.begin()),
          "the connection keeps working after the rejected READ");
    c.Send(Request(kCmdWrite, 0, 6, size - 512, 1024, Pattern(1024, 12)));
    c.Send(Request(kCmdRead, 0, 7, 4096, 512));
    CHECK(c.ReadReply(&rep) && rep.error == kEnospc && rep.cookie == 6, "a WRITE past the end gets ENOSPC");
    CHECK(c.ReadReply(&rep) && rep.error == 0 && rep.cookie == 7 && c.Recv(got.data(), 512) &&
              std::equal(got.begin(), got.end(), data.begin()),
          "its payload is discarded and the next request is read in step");
    // Pipelined: three requests in one send. Replies come as they complete
    // (by cookie); the READ overlaps the TRIM sent before it, so it sees it.
    c.Send(Cat({Request(kCmdTrim, 0, 8, kRegionSize, kRegionSize), Request(kCmdWriteZeroes, 0, 9, 0, 4096),
                Request(kCmdRead, 0, 10, kRegionSize - 2048, 4096)}));
    std::map<uint64_t, uint32_t> errors;
    got.resize(4096);
    bool all_ok = true;
    for (int i = 0; i < 3 && all_ok; i++) {
      Client::Reply x;
      all_ok = c.ReadReply(&x) && x.magic == kSimpleReplyMagic;
      errors[x.cookie] = x.error;
      if (all_ok && x.cookie == 10 && x.error == 0) all_ok = c.Recv(got.data(), 4096);
    }
    CHECK(all_ok && errors.size() == 3 && errors[8] == 0 && errors[9] == 0 && errors[10] == 0 &&
              std::equal(got.begin(), got.begin() + 2048, f.initial.begin() + kRegionSize - 2048) &&
              AllZero(got.data() + 2048, 2048),
          "pipelined TRIM, WRITE_ZEROES, READ are all answered; the READ sees the TRIM before it");
    c.Send(Request(5, 0, 11, 0, 512));
    CHECK(c.ReadReply(&rep) && rep.error == kEinval && rep.cookie == 11, "an unknown command gets EINVAL");

    c.Send(Request(kCmdRead, 0, 12, 0, 512, {}, 0x12345678));
    CHECK(sv.WaitDone() && c.AtEof(), "a bad request magic disconnects");
  }
  auto recs = PullAll(*f.vol);
  std::vector<int> kinds;
  for (const auto& r : recs) kinds.push_back(r.h.kind);
  // (the TRIM and the WRITE_ZEROES do not overlap: they ran at once, in either order)
  if (kinds.size() == 4 && kinds[2] > kinds[3]) std::swap(kinds[2], kinds[3]);
  CHECK(kinds == std::vector<int>({kRecordWrite, kRecordFlush, kRecordTrim, kRecordZero}),
        "only the accepted changes were recorded");
  std::vector<uint8_t> image = f.initial;
  Replay(image, recs);
  CHECK(image == f.Backing(), "the records reproduce what the client wrote");
  CHECK(f.vol->Stats().rejected == 4, "rejected requests are counted (" + std::to_string(f.vol->Stats().rejected) + ")");

  // Oldstyle EXPORT_NAME, zero padding, a read-only export, DISC.
  VolumeConfig ro_cfg;
  ro_cfg.name = "ro";
  ro_cfg.path = f.disk();
  ro_cfg.state_dir = f.dir.path();
  ro_cfg.read_only = true;
  auto ro = std::make_shared<Volume>(ro_cfg, f.seq, log.Fn());
  std::string error;
  CHECK(ro->Open(&error), "a read-only volume opens" + Said(error));
  NbdServer two({f.vol, ro}, log.Fn());
  {
    Served sv(two);
    Client& c = *sv.client;
    c.Greet(kClientFlagFixedNewstyle);
    c.Send(Option(kOptExportName, {'r', 'o'}));
    uint8_t ex[134];
    CHECK(c.Recv(ex, sizeof ex) && Get64(ex) == size && (Get16(ex + 8) & kTxReadOnly) && AllZero(ex + 10, 124),
          "EXPORT_NAME answers size and read-only flag, padded without NO_ZEROES");
    Client::Reply rep;
    c.Send(Request(kCmdWrite, 0, 1, 0, 512, Pattern(512, 5)));
    c.Send(Request(kCmdRead, 0, 2, 4096, 512));
    std::vector<uint8_t> got(512);
    CHECK(c.ReadReply(&rep) && rep.error == kEperm && c.ReadReply(&rep) && rep.error == 0 && rep.cookie == 2 &&
              c.Recv(got.data(), 512) && std::equal(got.begin(), got.end(), f.Backing().begin() + 4096),
          "a WRITE to the read-only export gets EPERM and the stream stays in step");
    c.Send(Request(kCmdDisc, 0, 3, 0, 0));
    CHECK(sv.WaitDone() && c.AtEof(), "DISC ends the connection");
  }
  {
    Served sv(two);
    Client& c = *sv.client;
    c.Greet(kClientFlagFixedNewstyle | kClientFlagNoZeroes);
    std::vector<uint8_t> bad = Option(kOptGo, GoData("vol", {}));
    bad[0] ^= 0xff;
    c.Send(bad);
    CHECK(sv.WaitDone() && c.AtEof() && two.rejected_handshakes() >= 1, "a bad option magic closes the connection");
  }
  {
    Served sv(two);
    Client& c = *sv.client;
    c.Greet(0x80);
    CHECK(sv.WaitDone() && c.AtEof(), "unknown client flags close the connection");
  }
  {
    Served sv(two);
    Client& c = *sv.client;
    c.Greet(kClientFlagFixedNewstyle | kClientFlagNoZeroes);
    std::vector<uint8_t> huge = Option(kOptGo, {});
    Put32(huge.data() + 12, kMaxOptionLength + 1);
    c.Send(huge);
    CHECK(sv.WaitDone() && c.AtEof(), "an option longer than the limit closes the connection");
  }
}

int ConnectUnix(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool HandshakeGo(Client& c, const std::string& name) {
  if (!c.Greet(nbd::kClientFlagFixedNewstyle | nbd::kClientFlagNoZeroes)) return false;
  c.Send(Option(nbd::kOptGo, GoData(name, {})));
  Client::OptReply r;
  while (c.ReadOptReply(&r))
    if (r.type != nbd::kRepInfo) return r.type == nbd::kRepAck;
  return false;
}

void TestUnixListenerAndStop() {
  VolumeFixture f;
  f.Create(1 << 20, 4 << 20);
  const std::string sock = f.dir / "nbd.sock";
  // A socket file left by a dead server is replaced.
  {
    const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", sock.c_str());
    bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::close(fd);
  }
  Log log;
  NbdServer server({f.vol}, log.Fn());
  std::string error;
  CHECK(server.ListenUnix(sock, &error), "a stale socket file is replaced" + Said(error));
  server.Start();
  NbdServer other({f.vol}, log.Fn());
  CHECK(!other.ListenUnix(sock, &error) && error.find("in use") != std::string::npos,
        "a socket in use by a live server is refused" + Said(error));
  Client c(ConnectUnix(sock));
  CHECK(c.fd >= 0 && HandshakeGo(c, "vol"), "a client connects over the unix socket and GOes");
  Client::Reply rep;
  c.Send(Request(nbd::kCmdWrite, nbd::kCmdFlagFua, 1, 0, 4096, Pattern(4096, 2)));
  CHECK(c.ReadReply(&rep) && rep.error == 0, "a FUA WRITE over the unix socket succeeds");
  const auto t0 = std::chrono::steady_clock::now();
  server.Stop();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(secs < 3 && c.AtEof(), "Stop ends an idle connection at once (" + std::to_string(secs) + " s)");
  struct stat st;
  CHECK(stat(sock.c_str(), &st) != 0, "Stop removes the socket file");
}

// ---------------------------------------------------------------- Tap

void TestTap() {
  TempDir dir;
  WriteFile(dir / "a.img", Pattern(1 << 20, 5));
  std::string error;
  TapConfig c;
  c.state_dir = dir.path();
  c.unix_path = dir / "tap.sock";
  Log log;
  {
    Tap t(log.Fn());
    CHECK(!t.Open(c, &error) && error.find("no volumes") != std::string::npos, "a tap needs volumes" + Said(error));
  }
  c.volumes.push_back({"../a", dir / "a.img", "", false});
  {
    Tap t(log.Fn());
    CHECK(!t.Open(c, &error) && error.find("not valid") != std::string::npos, "a bad volume name is refused" + Said(error));
  }
  c.volumes[0].name = "a";
  c.buffer_bytes = 4096;
  {
    Tap t(log.Fn());
    CHECK(!t.Open(c, &error) && error.find("at least 1 MiB") != std::string::npos,
          "a tiny record buffer is refused" + Said(error));
  }
  c.buffer_bytes = 1 << 20;
  Tap tap(log.Fn());
  CHECK(tap.Open(c, &error) && tap.volume_count() == 1, "a tap opens with one volume" + Said(error));
  if (tap.volume_count() != 1) return;
  Volume& v = *tap.volume(0);
  Client cl(ConnectUnix(c.unix_path));
  CHECK(HandshakeGo(cl, "a"), "a client GOes to the tap's volume");
  // 24 writes of 64 KiB overflow the 1 MiB ring: the tap goes behind, and
  // the resync thread catches up once the consumer pulls again.
  const auto data = Pattern(kRegionSize, 6);
  bool ok = true;
  for (uint32_t i = 0; i < 24; i++) {
    cl.Send(Request(nbd::kCmdWrite, 0, i, uint64_t(i % 16) * kRegionSize, kRegionSize, data));
    Client::Reply rep;
    ok &= cl.ReadReply(&rep) && rep.error == 0;
  }
  CHECK(ok && v.Stats().mode == int(Mode::kBehind), "writes never wait for the consumer; the volume is behind");
  std::vector<Rec> all;
  for (int i = 0; i < 500 && (v.Stats().mode != int(Mode::kNormal) || v.Stats().ring_records > 0); i++) {
    auto got = PullAll(v);
    all.insert(all.end(), got.begin(), got.end());
    usleep(10000);
  }
  auto got = PullAll(v);
  all.insert(all.end(), got.begin(), got.end());
  CHECK(v.Stats().mode == int(Mode::kNormal) && v.Stats().resync_records == 16,
        "the resync thread brings the volume back to normal (" + std::to_string(v.Stats().resync_records) +
            " regions)");
  std::vector<uint8_t> image = Pattern(1 << 20, 5);
  Replay(image, all);
  CHECK(image == ReadFile(dir / "a.img"), "the pulled records reproduce the tap's volume");
  tap.Close();
  CHECK(cl.AtEof(), "closing the tap ends its connections");
}

// Write-behind: every kWriteBehindBytes written, the tap's writeback thread
// sends the volume file's dirty pages to the disk (so they never pile up
// into the kernel's bursts); fewer bytes start nothing; the bytes are the
// application's either way.
void TestTapWriteBehind() {
  TempDir dir;
  const uint64_t size = 4 * kWriteBehindBytes;
  WriteFile(dir / "w.img", std::vector<uint8_t>(size, 0));
  std::string error;
  TapConfig c;
  c.state_dir = dir.path();
  c.unix_path = dir / "tap.sock";
  c.buffer_bytes = 64 << 20;
  c.volumes.push_back({"w", dir / "w.img", "", false});
  Log log;
  Tap tap(log.Fn());
  CHECK(tap.Open(c, &error), "a tap opens" + Said(error));
  if (tap.volume_count() != 1) return;
  Volume& v = *tap.volume(0);
  const auto data = Pattern(1 << 20, 9);
  auto write = [&](uint64_t from, uint64_t to) {
    for (uint64_t off = from; off < to; off += 1 << 20) v.Write(off, 1 << 20, data.data(), false);
  };
  auto rounds = [&](uint64_t n) {
    for (int i = 0; i < 1000 && v.Stats().writebacks < n; i++) usleep(5000);
    return v.Stats().writebacks;
  };
  write(0, kWriteBehindBytes - (1 << 20));
  CHECK(v.Stats().writebacks == 0, "less than the write-behind size written: no round");
  write(kWriteBehindBytes - (1 << 20), kWriteBehindBytes + (4 << 20));
  CHECK(rounds(1) == 1, "past the write-behind size: one round");
  write(kWriteBehindBytes + (4 << 20), 3 * kWriteBehindBytes);
  CHECK(rounds(2) >= 2, "what was written during and after a round counts toward the next");
  std::vector<uint8_t> expect(size, 0);
  for (uint64_t off = 0; off < 3 * kWriteBehindBytes; off += 1 << 20) std::memcpy(expect.data() + off, data.data(), 1 << 20);
  CHECK(ReadFile(dir / "w.img") == expect, "the file holds what was written");
  PullAll(v);
  tap.Close();
}

// TimeMarks over a consistency group: one seq, a MARK in each volume's
// stream, every change before it below it and every later one above it.
void TestTapMark() {
  TempDir dir;
  WriteFile(dir / "data.img", Pattern(1 << 20, 1));
  WriteFile(dir / "log.img", Pattern(1 << 20, 2));
  WriteFile(dir / "solo.img", Pattern(1 << 20, 3));
  std::string error;
  TapConfig c;
  c.state_dir = dir.path();
  c.unix_path = dir / "tap.sock";
  c.buffer_bytes = 1 << 20;
  c.volumes.push_back({"data", dir / "data.img", "db", false});
  c.volumes.push_back({"log", dir / "log.img", "db", false});
  c.volumes.push_back({"solo", dir / "solo.img", "", false});
  Log log;
  Tap tap(log.Fn());
  CHECK(tap.Open(c, &error) && tap.volume_count() == 3, "a tap opens with a group of two and one lone volume" + Said(error));
  if (tap.volume_count() != 3) return;
  Volume& d = *tap.volume(0);
  Volume& l = *tap.volume(1);
  const auto data = Pattern(8192, 4);
  d.Write(0, 4096, data.data(), false);
  l.Write(4096, 4096, data.data(), false);
  d.Write(8192, 512, data.data(), false);
  const std::string meta = "{\"label\":\"nightly\"}";
  uint64_t s1 = 0;
  CHECK(tap.Mark({0, 1}, reinterpret_cast<const uint8_t*>(meta.data()), meta.size(), &s1, &error) && s1 == l.Mark(),
        "a group TimeMark takes a fresh seq of the group" + Said(error));
  l.Write(0, 512, data.data(), false);
  d.Write(0, 512, data.data(), false);
  auto rd = PullAll(d), rl = PullAll(l);
  auto find_mark = [&](const std::vector<Rec>& rs, size_t* at) {
    for (size_t i = 0; i < rs.size(); i++)
      if (rs[i].h.kind == kRecordMark) return *at = i, true;
    return false;
  };
  size_t md = 0, ml = 0;
  bool ok = find_mark(rd, &md) && find_mark(rl, &ml);
  CHECK(ok && rd[md].h.seq == s1 && rl[ml].h.seq == s1 && rd[md].h.count == 0 &&
            std::string(rd[md].data.begin(), rd[md].data.end()) == meta && rl[ml].data == rd[md].data,
        "both volumes' streams carry the MARK at the same seq with its metadata");
  bool split = ok;
  for (size_t i = 0; ok && i < rd.size(); i++) split &= (i < md) == (rd[i].h.seq < s1);
  for (size_t i = 0; ok && i < rl.size(); i++) split &= (i < ml) == (rl[i].h.seq < s1);
  CHECK(split && md == 2 && ml == 1, "changes before the mark are below its seq and come before it; later ones after");
  CHECK(SeqsIncrease(rd) && SeqsIncrease(rl), "each stream's seqs still increase");
  CHECK(d.Stats().marks == 1 && l.Stats().marks == 1, "marks are counted per volume");
  uint64_t s2 = 0;
  CHECK(!tap.Mark({0, 2}, nullptr, 0, &s2, &error) && error.find("seq space") != std::string::npos,
        "volumes of different seq spaces cannot share a mark" + Said(error));
  CHECK(tap.Mark({2}, nullptr, 0, &s2, &error) && PullAll(*tap.volume(2)).size() == 1, "a lone volume takes its own marks");
  std::string big(kMaxMarkData + 1, 'x');
  CHECK(!tap.Mark({0}, reinterpret_cast<const uint8_t*>(big.data()), big.size(), &s2, &error) &&
            error.find("limit") != std::string::npos,
        "oversized metadata is refused" + Said(error));
  // Fill the data volume's ring until it falls behind: marks are refused until it has caught up.
  const auto region = Pattern(kRegionSize, 8);
  for (int i = 0; i < 20; i++) d.Write(uint64_t(i % 16) * kRegionSize, kRegionSize, region.data(), false);
  CHECK(d.Stats().mode == int(Mode::kBehind), "the data volume falls behind");
  const uint64_t before = l.Mark();
  CHECK(!tap.Mark({0, 1}, nullptr, 0, &s2, &error) && error.find("behind") != std::string::npos && l.Mark() == before &&
            l.Stats().marks == 1,
        "a group mark is refused while a member is behind, and nothing is recorded" + Said(error));
  for (int i = 0; i < 500 && d.Stats().mode != int(Mode::kNormal); i++) {
    PullAll(d);
    usleep(10000);
  }
  PullAll(d);
  CHECK(d.Stats().mode == int(Mode::kNormal) && tap.Mark({0, 1}, nullptr, 0, &s2, &error) && s2 > before,
        "after the resync, marks are taken again" + Said(error));
  tap.Close();
}


// ---------------------------------------------------------------- range locks and concurrency

// Waits (up to 10 s) for a condition another thread makes true.
template <typename F>
bool WaitFor(F cond) {
  for (int i = 0; i < 10000 && !cond(); i++) usleep(1000);
  return cond();
}

void TestRangeLock() {
  RangeLock lock;
  {
    RangeLock::Hold a = lock.Lock(0, 10);
    RangeLock::Hold b = lock.Lock(10, 20);  // adjacent: does not overlap
    CHECK(lock.size() == 2, "non-overlapping ranges are held at once");
  }
  CHECK(lock.size() == 0, "holds release when they go");
  // A holds [0,10); B asks [5,15) and waits; C asks [12,20): no granted range
  // overlaps it, but B (asked first, waiting) does, so C waits behind B.
  std::atomic<int> b_got{0}, c_got{0};
  RangeLock::Hold a = lock.Lock(0, 10);
  std::atomic<bool> release_b{false};
  std::thread tb([&] {
    RangeLock::Hold h = lock.Lock(5, 15);
    b_got = 1;
    while (!release_b) usleep(1000);
  });
  CHECK(WaitFor([&] { return lock.size() == 2; }) && b_got == 0, "an overlapping range waits for the holder");
  std::thread tc([&] {
    RangeLock::Hold h = lock.Lock(12, 20);
    c_got = 1;
  });
  CHECK(WaitFor([&] { return lock.size() == 3; }) && c_got == 0,
        "a range overlapping only an earlier waiter waits too (first come, first served)");
  a.Release();
  CHECK(WaitFor([&] { return b_got == 1; }) && c_got == 0, "the first waiter is granted; the one behind it still waits");
  release_b = true;
  tb.join();
  tc.join();
  CHECK(c_got == 1 && lock.size() == 0, "then the last one");
}

// Many threads write overlapping ranges of one volume at once (aligned and
// unaligned writes, trims, zeroes) while a consumer drains and TimeMarks are
// taken: the records replayed in seq order give the backing file, and each
// mark separates the writes answered before it from those begun after it.
void TestVolumeConcurrentChanges() {
  TempDir dir;
  constexpr size_t kSize = 4 << 20, kHalf = kSize / 2, kHot = 64 * 1024;
  const auto initial = Pattern(kSize, 21);
  WriteFile(dir / "v.img", initial);
  TapConfig c;
  c.state_dir = dir.path();
  c.unix_path = dir / "tap.sock";
  c.buffer_bytes = 192 << 20;  // more than the test writes: it never falls behind
  c.volumes.push_back({"v", dir / "v.img", "", false});
  Log log;
  Tap tap(log.Fn());
  std::string error;
  CHECK(tap.Open(c, &error), "a tap for concurrent changes" + Said(error));
  if (tap.volume_count() != 1) return;
  Volume& v = *tap.volume(0);

  std::atomic<bool> stop{false};
  std::mutex recs_mu;
  std::vector<Rec> recs;
  std::thread consumer([&] {
    while (!stop) {
      auto got = PullAll(v);
      std::lock_guard<std::mutex> lk(recs_mu);
      recs.insert(recs.end(), got.begin(), got.end());
      if (got.empty()) usleep(500);
    }
  });
  // Writes with an id are sector-aligned, in the first half: most small ones
  // in its first kHot bytes, some of up to 1 MiB anywhere in it (two of those
  // overlapping would interleave their pages in the file if they ran at
  // once). Each of their sectors starts with 0x1d, then the id. The kHot
  // bytes from the middle take unaligned writes, trims and zeroes. Small
  // areas, so that concurrent changes overlap often.
  constexpr int kThreads = 6, kPerThread = 300;
  std::atomic<int> marks_done{0};
  std::mutex done_mu;
  std::vector<uint32_t> done_ids;                      // in the order they were answered
  std::vector<int> marks_at_start(kThreads * kPerThread + 1, 0);  // by id: marks finished before it began
  std::atomic<int> failures{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; t++) {
    writers.emplace_back([&, t] {
      uint32_t x = uint32_t(t) * 7919u + 1;
      auto rnd = [&x] { return x ^= x << 13, x ^= x >> 17, x ^= x << 5, x; };
      for (int i = 0; i < kPerThread; i++) {
        const uint32_t id = uint32_t(t * kPerThread + i + 1);
        const uint32_t kind = rnd() % 8;
        if (kind < 5) {
          const bool large = rnd() % 4 == 0;
          const uint32_t sectors = large ? 128 + rnd() % (kMaxRecordSectors - 127) : 1 + rnd() % 32;
          const uint64_t off = uint64_t(rnd() % ((large ? kHalf : kHot) / 512 - sectors)) * 512;
          std::vector<uint8_t> d = Pattern(sectors * 512, id);
          for (uint32_t k = 0; k < sectors; k++) {
            d[k * 512] = 0x1d;
            std::memcpy(&d[k * 512 + 1], &id, 4);
          }
          marks_at_start[id] = marks_done.load();
          failures += v.Write(off, uint32_t(d.size()), d.data(), rnd() % 16 == 0) != 0;
          std::lock_guard<std::mutex> lk(done_mu);
          done_ids.push_back(id);
        } else if (kind < 7) {
          const uint32_t len = 1 + rnd() % 20000;
          const uint64_t off = kHalf + rnd() % (kHot - len);
          const auto d = Pattern(len, id);
          failures += v.Write(off, len, d.data(), false) != 0;
        } else {
          const uint32_t len = 1 + rnd() % 40000;
          const uint64_t off = kHalf + rnd() % (kHot - len);
          failures += (rnd() & 1 ? v.Trim(off, len, false) : v.Zero(off, len, false, rnd() & 2)) != 0;
        }
      }
    });
  }
  struct MarkTaken {
    uint64_t seq;
    std::vector<uint32_t> answered_before;
  };
  std::vector<MarkTaken> marks;
  std::thread marker([&] {
    for (int m = 0; m < 40; m++) {
      MarkTaken mk;
      {
        std::lock_guard<std::mutex> lk(done_mu);
        mk.answered_before = done_ids;
      }
      if (tap.Mark({0}, nullptr, 0, &mk.seq, &error)) {
        marks.push_back(std::move(mk));
        marks_done++;
      }
      usleep(2000);
    }
  });
  for (auto& w : writers) w.join();
  marker.join();
  CHECK(failures == 0, "every concurrent change succeeds");
  CHECK(WaitFor([&] { return v.Stats().mode == int(Mode::kNormal) && v.Stats().ring_records == 0; }),
        "the consumer drains everything");
  stop = true;
  consumer.join();
  const auto rest = PullAll(v);
  recs.insert(recs.end(), rest.begin(), rest.end());
  CHECK(SeqsIncrease(recs), "the stream's seqs increase in ring order (" + std::to_string(recs.size()) + " records)");
  std::vector<uint8_t> image = initial;
  Replay(image, recs);
  CHECK(image == ReadFile(dir / "v.img"), "replaying the records in seq order gives the backing file");
  CHECK(v.Stats().behind_events == 0, "the volume never fell behind (this test is about recording, not resync)");

  // Each id'd write's seq: the record whose sectors carry its id.
  std::map<uint32_t, uint64_t> seq_of;
  bool ids_ok = true;
  for (const auto& r : recs) {
    if (r.h.kind != kRecordWrite || (uint64_t(r.h.sector) << kSectorShift) >= kHalf) continue;
    uint32_t id;
    std::memcpy(&id, &r.data[1], 4);
    ids_ok &= r.data[0] == 0x1d && !seq_of.count(id);
    seq_of[id] = r.h.seq;
  }
  CHECK(ids_ok && marks.size() >= 10, "each aligned write is one record (" + std::to_string(seq_of.size()) + " of them, " +
                                          std::to_string(marks.size()) + " marks)");
  bool before_ok = true, after_ok = true;
  for (size_t m = 0; m < marks.size(); m++) {
    for (uint32_t id : marks[m].answered_before) before_ok &= seq_of.count(id) && seq_of[id] < marks[m].seq;
    for (const auto& [id, seq] : seq_of)
      if (marks_at_start[id] > int(m)) after_ok &= seq > marks[m].seq;
  }
  CHECK(before_ok, "every write answered before a mark was taken is below the mark's seq");
  CHECK(after_ok, "every write begun after a mark returned is above its seq");
  v.Ack(v.Mark());
  CHECK(v.Stats().dirty_regions == 0, "acking everything leaves no dirty region");
  tap.Close();
}

// One client pipelines overlapping requests over one connection: replies
// come back by cookie, a read sees the writes sent before it, a FLUSH is
// recorded after every write sent before it, DISC answers everything first.
void TestNbdOverlapping() {
  using namespace nbd;
  VolumeFixture f;
  CHECK(f.Create(1 << 20, 16 << 20), "a volume for pipelined requests " + Said(f.error));
  Log log;
  NbdServer server({f.vol}, log.Fn());
  std::vector<uint8_t> model = f.initial;
  {
    Served sv(server);
    Client& c = *sv.client;
    CHECK(HandshakeGo(c, "vol"), "a pipelining client GOes");
    // 200 writes over 64 KiB with many overlaps, a READ of the area after
    // every 20th, a FLUSH in the middle: all sent before any reply is read
    // (a reader thread drains the replies, so the server never blocks).
    std::vector<uint8_t> wire;
    std::map<uint64_t, std::vector<uint8_t>> expect_read;  // cookie -> what the READ must return
    uint32_t x = 99;
    auto rnd = [&x] { return x ^= x << 13, x ^= x >> 17, x ^= x << 5, x; };
    uint64_t cookie = 1;
    for (int i = 0; i < 200; i++) {
      const uint32_t len = 1 + rnd() % 8192;
      const uint64_t off = rnd() % (65536 - len);
      const auto d = Pattern(len, uint32_t(i) + 1000);
      std::memcpy(&model[off], d.data(), len);
      const auto w = Request(kCmdWrite, i % 50 == 0 ? kCmdFlagFua : 0, cookie++, off, len, d);
      wire.insert(wire.end(), w.begin(), w.end());
      if (i % 20 == 19) {
        expect_read[cookie] = std::vector<uint8_t>(model.begin(), model.begin() + 65536);
        const auto r = Request(kCmdRead, 0, cookie++, 0, 65536);
        wire.insert(wire.end(), r.begin(), r.end());
      }
      if (i == 99) {
        const auto fl = Request(kCmdFlush, 0, cookie++, 0, 0);
        wire.insert(wire.end(), fl.begin(), fl.end());
      }
    }
    const uint64_t requests = cookie - 1;
    const auto disc = Request(kCmdDisc, 0, cookie++, 0, 0);
    wire.insert(wire.end(), disc.begin(), disc.end());
    std::map<uint64_t, uint32_t> errors;
    std::map<uint64_t, bool> read_ok;
    std::atomic<bool> replies_ok{true};
    std::thread reader([&] {
      for (uint64_t i = 0; i < requests && replies_ok; i++) {
        Client::Reply rep;
        if (!c.ReadReply(&rep) || rep.magic != kSimpleReplyMagic || errors.count(rep.cookie)) {
          replies_ok = false;
          break;
        }
        errors[rep.cookie] = rep.error;
        auto it = expect_read.find(rep.cookie);
        if (it != expect_read.end() && rep.error == 0) {
          std::vector<uint8_t> got(65536);
          read_ok[rep.cookie] = c.Recv(got.data(), got.size()) && got == it->second;
        }
      }
    });
    CHECK(c.Send(wire), "the whole pipeline is sent (" + std::to_string(wire.size()) + " bytes)");
    reader.join();
    bool all_zero = replies_ok && errors.size() == requests;
    for (const auto& e : errors) all_zero &= e.second == 0;
    CHECK(all_zero, "every request is answered once, by cookie, without error (" + std::to_string(errors.size()) + ")");
    bool reads = read_ok.size() == expect_read.size();
    for (const auto& e : read_ok) reads &= e.second;
    CHECK(reads, "each READ returns every write sent before it on the connection");
    CHECK(sv.WaitDone() && c.AtEof(), "DISC closes after answering everything read before it");
    auto recs = PullAll(*f.vol);
    size_t flushes = 0, writes = 0;
    uint64_t flush_seq = 0;
    for (const auto& r : recs) {
      if (r.h.kind == kRecordFlush) flushes++, flush_seq = r.h.seq;
      writes += r.h.kind == kRecordWrite;
    }
    CHECK(flushes == 1 && writes == 200 && SeqsIncrease(recs),
          "200 WRITE records and one FLUSH, seqs increasing");
    // Writes are numbered in the order sent; a write's record is the first
    // (in seq order) holding its bytes at its offset.
    size_t sent_before_and_below = 0;
    {
      uint32_t y = 99;
      auto rnd2 = [&y] { return y ^= y << 13, y ^= y >> 17, y ^= y << 5, y; };
      for (int i = 0; i < 200; i++) {
        const uint32_t len = 1 + rnd2() % 8192;
        const uint64_t off = rnd2() % (65536 - len);
        const auto d = Pattern(len, uint32_t(i) + 1000);
        for (const auto& r : recs) {
          if (r.h.kind != kRecordWrite) continue;
          const uint64_t rb = uint64_t(r.h.sector) << kSectorShift;
          if (rb > off || rb + r.data.size() < off + len) continue;
          if (!std::equal(d.begin(), d.end(), r.data.begin() + (off - rb))) continue;
          if (i < 100) sent_before_and_below += r.h.seq < flush_seq;
          break;
        }
      }
    }
    CHECK(sent_before_and_below == 100, "every write sent before the FLUSH is recorded below it (" +
                                             std::to_string(sent_before_and_below) + " of 100)");
    std::vector<uint8_t> image = f.initial;
    Replay(image, recs);
    CHECK(image == f.Backing() && image == model, "the records replayed give the file, and the file is what was sent");
  }
  // A client that hangs up in the middle of a WRITE's payload: the writes
  // read before it are applied, the torn one is not.
  {
    Served sv(server);
    Client& c = *sv.client;
    CHECK(HandshakeGo(c, "vol"), "a second client GOes");
    const auto a = Pattern(4096, 77), b = Pattern(4096, 78);
    auto wire = Cat({Request(kCmdWrite, 0, 1, 512 * 1024, 4096, a), Request(kCmdWrite, 0, 2, 600 * 1024, 4096, b)});
    wire.resize(wire.size() - 100);
    c.Send(wire);
    shutdown(c.fd, SHUT_WR);
    Client::Reply rep;
    CHECK(c.ReadReply(&rep) && rep.cookie == 1 && rep.error == 0 && sv.WaitDone() && c.AtEof(),
          "the complete WRITE is answered, then the connection ends");
    const auto file = f.Backing();
    CHECK(std::equal(a.begin(), a.end(), file.begin() + 512 * 1024) &&
              std::equal(file.begin() + 600 * 1024, file.begin() + 604 * 1024, model.begin() + 600 * 1024),
          "the torn WRITE was not applied");
    CHECK(log.Has("middle of a WRITE payload"), "the torn WRITE is logged");
  }
}

}  // namespace

// What a listener admits: a planted file or link at the socket path is
// refused and left; the socket is 0600 whatever the umask; past the cap a
// connection is closed before a byte; a silent client is closed at the
// handshake deadline, one that finished its handshake is not.
void TestListenerAdmission() {
  VolumeFixture f;
  f.Create(1 << 20, 4 << 20);
  Log log;
  std::string error;
  const std::string sock = f.dir / "nbd.sock";
  const std::string victim = f.dir / "victim";
  {
    FILE* v = std::fopen(victim.c_str(), "w");
    std::fputs("keep", v);
    std::fclose(v);
  }
  CHECK(symlink(victim.c_str(), sock.c_str()) == 0, "a symbolic link is planted at the socket path");
  {
    NbdServer s({f.vol}, log.Fn());
    CHECK(!s.ListenUnix(sock, &error) && error.find("is a symbolic link") != std::string::npos,
          "a symbolic link at the socket path is refused" + Said(error));
  }
  struct stat st{};
  CHECK(lstat(sock.c_str(), &st) == 0 && S_ISLNK(st.st_mode) && stat(victim.c_str(), &st) == 0 && st.st_size == 4,
        "the link and what it names survive");
  unlink(sock.c_str());
  CHECK(link(victim.c_str(), sock.c_str()) == 0, "a regular file is planted at the socket path");
  {
    NbdServer s({f.vol}, log.Fn());
    CHECK(!s.ListenUnix(sock, &error) && error.find("is a regular file") != std::string::npos,
          "a regular file at the socket path is refused" + Said(error));
  }
  CHECK(stat(victim.c_str(), &st) == 0 && st.st_nlink == 2, "the file survives");
  unlink(sock.c_str());

  const mode_t old = umask(022);
  NbdServer server({f.vol}, log.Fn());
  NbdServerOptions o;
  o.max_connections = 2;
  o.handshake_timeout_ms = 300;
  server.Configure(o);
  CHECK(server.ListenUnix(sock, &error), "listens" + Said(error));
  umask(old);
  CHECK(lstat(sock.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) && (st.st_mode & 0777) == 0600,
        "the socket is 0600 under umask 022 (mode " + std::to_string(st.st_mode & 0777) + ")");
  server.Start();
  Client served(ConnectUnix(sock));
  CHECK(served.fd >= 0 && HandshakeGo(served, "vol"), "a client under the cap GOes");
  const auto t0 = std::chrono::steady_clock::now();
  Client silent(ConnectUnix(sock));
  uint8_t g[18];
  CHECK(silent.Recv(g, sizeof g), "a second client under the cap gets the greeting");
  Client over(ConnectUnix(sock));
  CHECK(over.AtEof(), "a third, over the cap, is closed before a byte is sent");
  CHECK(server.refused_connections() == 1, "and counted");
  CHECK(silent.AtEof(), "the silent client is closed");
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(secs >= 0.25 && secs < 3, "at the handshake deadline (" + std::to_string(secs) + " s)");
  CHECK(server.handshake_timeouts() == 1, "and counted");
  Client::Reply rep;
  served.Send(Request(nbd::kCmdRead, 0, 7, 0, 4096, {}));
  std::vector<uint8_t> data(4096);
  CHECK(served.ReadReply(&rep) && rep.error == 0 && served.Recv(data.data(), data.size()),
        "the client that finished its handshake is still served past the deadline");
  server.Stop();
}

int main() {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  TestValidateRequest();
  TestRecordRing();
  TestDirtyMap();
  TestSeqSpace();
  TestVolumeRecording();
  TestVolumeBehindAndResync();
  TestVolumeCongestionWait();
  TestVolumeLargeWrite();
  TestVolumePullWhileWriting();
  TestVolumeBehindWhileCopying();
  TestVolumeResyncFrom();
  TestVolumeResyncHoles();
  TestVolumeRestart();
  TestNbdServer();
  TestUnixListenerAndStop();
  TestListenerAdmission();
  TestTap();
  TestTapWriteBehind();
  TestTapMark();
  TestRangeLock();
  TestVolumeConcurrentChanges();
  TestNbdOverlapping();
  return Finish();
}
