// Point maps (native/src/point_map.h) against a model: a per-sector array
// saying which file and offset each sector reads from. Random extents are
// painted into a LiveMap (as committed batches are) and written into map
// files (as a forward pass writes them); every read must equal the model's
// bytes, through both layers, at any alignment, and a snapshot must keep
// reading its own point while later extents are painted.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <random>
#include <thread>

#include "check.h"
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "point_map.h"
#include "record.h"
#include "replica_image.h"

using namespace tidemark;
using namespace tidemark::test;

namespace {

constexpr uint64_t kSectors = 4096;  // a 2 MiB volume
constexpr int kFiles = 3;
constexpr uint64_t kFileBytes = 4 << 20;

struct Model {
  std::vector<int32_t> file = std::vector<int32_t>(kSectors, kZeroFile);
  std::vector<uint64_t> pos = std::vector<uint64_t>(kSectors, 0);
  void Paint(const MapExtent& e) {
    for (uint64_t i = 0; i < e.count; i++) {
      file[e.sector + i] = e.file;
      pos[e.sector + i] = e.pos + i * kMapSector;
    }
  }
  std::vector<uint8_t> Read(const std::vector<std::vector<uint8_t>>& data, uint64_t off, uint64_t len) const {
    std::vector<uint8_t> out(len);
    for (uint64_t b = 0; b < len; b++) {
      const uint64_t s = (off + b) / kMapSector;
      const uint64_t in = (off + b) % kMapSector;
      out[b] = file[s] == kZeroFile ? 0 : data[size_t(file[s])][pos[s] + in];
    }
    return out;
  }
  // The extents a forward pass would write: runs of one file at contiguous offsets.
  std::vector<MapExtent> Runs() const {
    std::vector<MapExtent> v;
    for (uint64_t s = 0; s < kSectors; s++) {
      if (file[s] == kZeroFile) continue;
      if (!v.empty() && v.back().file == file[s] && v.back().sector + v.back().count == s &&
          v.back().pos + v.back().count * kMapSector == pos[s]) {
        v.back().count++;
      } else {
        v.push_back({s, pos[s], 1, file[s]});
      }
    }
    return v;
  }
};

MapExtent RandomExtent(std::mt19937_64& rng) {
  const uint64_t sector = rng() % kSectors;
  const uint32_t count = uint32_t(1 + rng() % std::min<uint64_t>(kSectors - sector, rng() % 4 == 0 ? 700 : 24));
  const int32_t file = rng() % 6 == 0 ? kZeroFile : int32_t(rng() % kFiles);
  const uint64_t pos = file == kZeroFile ? 0 : (rng() % (kFileBytes / kMapSector - count)) * kMapSector;
  return {sector, pos, count, file};
}

bool SameAsModel(const PointReader& r, const Model& m, const std::vector<std::vector<uint8_t>>& data, std::mt19937_64& rng,
                 int reads, std::string* why) {
  for (int i = 0; i < reads; i++) {
    uint64_t off = rng() % (kSectors * kMapSector);
    if (rng() % 2) off -= off % kMapSector;
    uint64_t len = 1 + rng() % (rng() % 3 == 0 ? 256 * 1024 : 9000);
    len = std::min(len, kSectors * kMapSector - off);
    std::vector<uint8_t> got(len);
    std::string error;
    if (!r.Read(off, len, got.data(), &error)) {
      *why = "read failed: " + error;
      return false;
    }
    if (got != m.Read(data, off, len)) {
      *why = "bytes differ at offset " + std::to_string(off) + ", length " + std::to_string(len);
      return false;
    }
  }
  return true;
}

// n segment files of patterned bytes (the pattern seeded from seed + number), open in files.
void MakeSegments(const TempDir& dir, int n, uint32_t seed, std::vector<std::vector<uint8_t>>* data, FileTable* files) {
  for (int f = 0; f < n; f++) {
    data->push_back(Pattern(kFileBytes, seed + uint32_t(f)));
    const std::string p = dir.path() + "/seg" + std::to_string(f);
    WriteFile(p, data->back());
    (*files)[f] = std::make_shared<MapFile>(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
  }
}

void TestAgainstModel() {
  TempDir dir;
  std::vector<std::vector<uint8_t>> data;
  FileTable files;
  MakeSegments(dir, kFiles, 100, &data, &files);
  std::mt19937_64 rng(7);
  Model m;
  for (int i = 0; i < 300; i++) m.Paint(RandomExtent(rng));

  // A built map file, mmap'd.
  const std::vector<MapExtent> runs = m.Runs();
  const std::string map_path = dir.path() + "/point.map";
  WriteFile(map_path, std::vector<uint8_t>(reinterpret_cast<const uint8_t*>(runs.data()),
                                           reinterpret_cast<const uint8_t*>(runs.data() + runs.size())));
  std::string error;
  auto base = MappedExtents::Open(map_path, &error);
  CHECK(base && base->size() == runs.size(), "a map file of " + std::to_string(runs.size()) + " extents maps" + Said(error));
  std::string why;
  LiveMap live(base, files, kSectors * kMapSector);
  auto snap0 = live.Snapshot();
  CHECK(SameAsModel(*snap0, m, data, rng, 400, &why), "reads through the map file equal the model" + Said(why));

  // Extents painted as batches commit, over the base; snapshots along the way.
  Model m0 = m;
  bool ok = true;
  for (int round = 0; round < 20 && ok; round++) {
    std::vector<MapExtent> batch;
    for (int i = 0; i < 40; i++) batch.push_back(RandomExtent(rng));
    live.Apply(batch.data(), batch.size());
    for (auto& e : batch) m.Paint(e);
    ok = SameAsModel(*live.Snapshot(), m, data, rng, 60, &why);
  }
  CHECK(ok, "after every painted batch, a snapshot reads the model's bytes (delta over base)" + Said(why));
  CHECK(SameAsModel(*snap0, m0, data, rng, 200, &why), "a snapshot taken before keeps reading its own point" + Said(why));
  CHECK(live.delta_extents() > 0, "the delta holds the painted extents");

  // The same point as one built map equals the live map's view of it.
  const std::vector<MapExtent> runs2 = m.Runs();
  LiveMap rebuilt(std::make_shared<VectorExtents>(runs2), files, kSectors * kMapSector);
  CHECK(SameAsModel(*rebuilt.Snapshot(), m, data, rng, 200, &why), "a map rebuilt at the newest point reads the same" + Said(why));

  // Fingerprints: one xxh64 per sector of what Read returns, over more than one 1 MiB window.
  {
    auto snap = rebuilt.Snapshot();
    const uint64_t len = std::min<uint64_t>(kSectors * kMapSector, (2 << 20) + 8 * kMapSector);
    std::vector<uint8_t> bytes(len), fps(len / kMapSector * 8), scratch;
    CHECK(snap->Read(0, len, bytes.data(), &why) && snap->Fingerprints(0, len, fps.data(), &scratch, &why), "fingerprints of a range" + Said(why));
    bool same = true;
    for (uint64_t i = 0; i < len / kMapSector; i++) same = same && LoadU64(fps.data() + i * 8) == XXH64(bytes.data() + i * kMapSector, kMapSector, 0);
    CHECK(same, "each fingerprint is the xxh64 of the sector Read returns");
    CHECK(!snap->Fingerprints(512, 100, fps.data(), &scratch, &why) && why.find("whole sectors") != std::string::npos,
          "fingerprints of part of a sector fail with a message" + Said(why));
  }

  // Out of range and a file the map names that is not open.
  std::vector<uint8_t> buf(4096);
  CHECK(!snap0->Read(kSectors * kMapSector - 512, 1024, buf.data(), &error) && error.find("outside") != std::string::npos,
        "a read past the end fails with a message" + Said(error));
  MapExtent stray{0, 0, 8, 9};
  live.Apply(&stray, 1);
  error.clear();
  CHECK(!live.Snapshot()->Read(0, 4096, buf.data(), &error) && error.find("segment 9") != std::string::npos,
        "an extent naming a file that is not open fails the read, naming it" + Said(error));
  MapExtent zero{0, 0, 8, kZeroFile};
  live.Apply(&zero, 1);
  CHECK(live.Snapshot()->Read(0, 4096, buf.data(), &error) && AllZero(buf.data(), 4096), "a zero extent reads as zeroes");

  error.clear();
  CHECK(!MappedExtents::Open(dir.path() + "/none.map", &error) && !error.empty(), "a missing map file fails" + Said(error));
  WriteFile(dir.path() + "/bad.map", std::vector<uint8_t>(25, 1));
  error.clear();
  CHECK(!MappedExtents::Open(dir.path() + "/bad.map", &error) && error.find("whole number") != std::string::npos,
        "a map file that is not whole extents fails" + Said(error));
}

// Extents as a journal makes them: each new one further along the files.
struct Appender {
  int32_t file = 0;
  uint64_t pos = 0;
  MapExtent Next(std::mt19937_64& rng) {
    MapExtent e = RandomExtent(rng);
    e.count = std::min<uint32_t>(e.count, 48);  // records of up to 24 KiB: the files last
    if (e.file == kZeroFile) return e;
    if (pos + e.count * kMapSector > kFileBytes) {
      file++;
      pos = 0;
    }
    e.file = file;
    e.pos = pos;
    pos += e.count * kMapSector + 32;  // a record header between data
    return e;
  }
};

// Readers of many points through a replica image (replica_image.h): every
// read equals the model whether the image is behind, caught up, being
// written by a round on another thread, or holds garbage a torn round left.
// n segments, a live map over them and a replica image beside it.
struct WithReplica {
  TempDir dir;
  std::vector<std::vector<uint8_t>> data;
  FileTable files;
  std::shared_ptr<ReplicaImage> image;
  std::unique_ptr<LiveMap> live;
  WithReplica(int segments, uint32_t seed) {
    MakeSegments(dir, segments, seed, &data, &files);
    const std::string img_path = dir.path() + "/replica.img";
    const int img_fd = ::open(img_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    CHECK(img_fd >= 0 && ftruncate(img_fd, off_t(kSectors * kMapSector)) == 0, "the replica image file is made");
    image = std::make_shared<ReplicaImage>(img_fd);
    live = std::make_unique<LiveMap>(nullptr, files, kSectors * kMapSector);
    live->SetReplica(image);
  }
};

void TestReplica() {
  WithReplica w(12, 300);
  auto& data = w.data;
  auto& image = w.image;
  LiveMap& live = *w.live;
  std::mt19937_64 rng(11);
  Appender journal;
  Model m;
  std::vector<std::pair<std::shared_ptr<PointReader>, Model>> points;
  auto write = [&](int batches) {
    for (int b = 0; b < batches; b++) {
      std::vector<MapExtent> batch;
      for (int i = 0; i < 8; i++) batch.push_back(journal.Next(rng));
      live.Apply(batch.data(), batch.size());
      for (auto& e : batch) m.Paint(e);
      if (b % 10 == 9) points.push_back({live.Snapshot(), m});
    }
    points.push_back({live.Snapshot(), m});
  };
  auto all_same = [&](const char* what) {
    std::string why;
    bool ok = true;
    for (auto& p : points) ok = ok && SameAsModel(*p.first, p.second, data, rng, 40, &why);
    CHECK(ok, std::string(what) + ": every point reads the model's bytes" + Said(why));
  };

  write(40);
  all_same("before any round");
  std::string error;
  RoundResult r;
  CHECK(image->Round(live.Snapshot(), true, JournalLoc{}, false, &r, &error) && r.extents > 0, "a full round copies the newest point" + Said(error));
  const uint64_t read0 = image->bytes_read();
  all_same("caught up");
  CHECK(image->bytes_read() > read0, "reads took bytes from the image");

  write(40);
  all_same("image behind");
  JournalLoc from = r.newest;
  RoundResult r2;
  CHECK(image->Round(live.Snapshot(), false, from, false, &r2, &error) && from < r2.newest, "a delta round copies what came after" + Said(error));
  CHECK(r2.bytes < r.bytes + 40 * 8 * 700 * kMapSector, "a delta round copies less than everything");
  all_same("caught up again");

  // A yieldable round asked to stop: it copies nothing more, the image is
  // not read from, and the next round from the same place catches up.
  write(20);
  from = r2.newest;
  image->Yield();
  RoundResult ry;
  std::shared_lock<std::shared_mutex> held;
  CHECK(image->Round(live.Snapshot(), false, from, true, &ry, &error) && ry.interrupted && !image->Hold(&held),
        "a yieldable round asked to stop stops, and the image is not used" + Said(error));
  all_same("after a stopped round");
  image->Yield();
  CHECK(image->Round(live.Snapshot(), false, from, false, &ry, &error) && !ry.interrupted && from < ry.newest,
        "a round that may not yield ignores the ask, and catches up from the same place" + Said(error));
  CHECK(image->Hold(&held) != nullptr, "the image is used again");
  held = {};
  r2 = ry;
  all_same("caught up after a stopped round");

  // Rounds on one thread, readers of every point on two others.
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0};
  std::vector<std::pair<std::shared_ptr<PointReader>, Model>> fixed = points;
  auto reader = [&](uint64_t seed) {
    std::mt19937_64 rr(seed);
    std::string why;
    while (!stop.load()) {
      for (auto& p : fixed) {
        if (!SameAsModel(*p.first, p.second, data, rr, 4, &why)) bad++;
      }
    }
  };
  std::thread t1(reader, 1), t2(reader, 2);
  from = r2.newest;
  for (int i = 0; i < 6; i++) {
    write(10);
    RoundResult ri;
    if (!image->Round(live.Snapshot(), false, from, false, &ri, &error)) bad++;
    from = ri.newest;
  }
  stop = true;
  t1.join();
  t2.join();
  CHECK(bad.load() == 0, "reads during rounds equal the model (" + std::to_string(bad.load()) + " wrong)" + Said(error));

  // A torn round: garbage in the sectors written since the last finished
  // round (a crash mid-round), then a delta round from that round's location.
  write(20);
  image->Invalidate();
  const std::vector<uint8_t> junk(kSectors * kMapSector / 4, 0xEE);
  int torn = 0;
  for (uint64_t s = 0; s < kSectors; s++) {
    if (m.file[s] >= 0 && !(JournalLoc{m.file[s], m.pos[s]} < from)) {
      torn += pwrite(image->fd(), junk.data(), kMapSector, off_t(s * kMapSector)) == ssize_t(kMapSector);
    }
  }
  CHECK(torn > 0, "garbage in " + std::to_string(torn) + " newer sectors");
  all_same("image set aside");
  RoundResult rt;
  CHECK(image->Round(live.Snapshot(), false, from, false, &rt, &error), "a delta round after a torn one" + Said(error));
  all_same("after a delta round over a torn one");

  // Garbage anywhere (not what a crash leaves): a full round repairs it.
  image->Invalidate();
  CHECK(pwrite(image->fd(), junk.data(), junk.size(), 0) == ssize_t(junk.size()), "garbage written");
  CHECK(image->Round(live.Snapshot(), true, JournalLoc{}, false, &rt, &error), "a full round" + Said(error));
  all_same("after a full round over garbage");
}

// CopyTo (a restore on the appliance's host): points old and new, read
// partly through the replica image and partly from the journal, copied in
// ranges into a file that held junk (zeroes written) and into a new sparse
// file (zeroes skipped), equal the model; bad ranges and an unwritable
// target are refused, naming their side.
void TestCopyTo() {
  WithReplica w(kFiles, 500);
  const TempDir& dir = w.dir;
  auto& data = w.data;
  auto& image = w.image;
  LiveMap& live = *w.live;
  std::mt19937_64 rng(21);
  Model m;
  std::vector<std::pair<std::shared_ptr<PointReader>, Model>> points;
  for (int i = 0; i < 300; i++) {
    const MapExtent e = RandomExtent(rng);
    live.Apply(&e, 1);
    m.Paint(e);
    if (i == 150) points.push_back({live.Snapshot(), m});
  }
  std::string error;
  RoundResult r;
  CHECK(image->Round(live.Snapshot(), true, JournalLoc{}, false, &r, &error), "a full round" + Said(error));
  points.push_back({live.Snapshot(), m});  // all of it in the image
  for (int i = 0; i < 40; i++) {
    const MapExtent e = RandomExtent(rng);
    live.Apply(&e, 1);
    m.Paint(e);
  }
  points.push_back({live.Snapshot(), m});  // the image and the journal
  const uint64_t size = kSectors * kMapSector;
  const std::vector<uint8_t> junk(size, 0xEE);
  int n = 0;
  for (auto& p : points) {
    for (const bool zeroes : {true, false}) {
      const std::string out = dir.path() + "/out" + std::to_string(n++);
      if (zeroes) WriteFile(out, junk);
      const int fd = ::open(out.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
      CHECK(fd >= 0 && ftruncate(fd, off_t(size)) == 0, "the target is made");
      CopyTally t;
      bool ok = true;
      // Ranges of random whole sectors, as the copier's connections ask.
      for (uint64_t at = 0; at < size && ok;) {
        const uint64_t len = std::min(size - at, (1 + rng() % 600) * kMapSector);
        CopySide side = CopySide::kNone;
        ok = p.first->CopyTo(fd, at, len, zeroes, &t, &side, &error);
        at += len;
      }
      std::vector<uint8_t> got(size);
      CHECK(ok && pread(fd, got.data(), size, 0) == ssize_t(size), "a point is copied in ranges" + Said(error));
      CHECK(got == p.second.Read(data, 0, size), std::string("the copy equals the point (zeroes ") + (zeroes ? "written" : "skipped") + ")");
      CHECK(t.data_bytes + t.zero_bytes == size && t.data_runs > 0, "the tally covers the volume");
      ::close(fd);
    }
  }
  const uint64_t read0 = image->bytes_read();
  const int fd = ::open((dir.path() + "/last").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  CopyTally t;
  CopySide side = CopySide::kNone;
  CHECK(fd >= 0 && points[1].first->CopyTo(fd, 0, size, false, &t, &side, &error), "the caught-up point is copied" + Said(error));
  CHECK(image->bytes_read() - read0 == t.data_bytes, "all of it from the replica image");
  CHECK(!points[1].first->CopyTo(fd, 100, kMapSector, false, &t, &side, &error) && side == CopySide::kSource &&
            error.find("not whole sectors") != std::string::npos,
        "a range that is not whole sectors is refused" + Said(error));
  CHECK(!points[1].first->CopyTo(fd, size - kMapSector, 2 * kMapSector, false, &t, &side, &error) &&
            error.find("inside the volume") != std::string::npos,
        "a range past the end is refused" + Said(error));
  ::close(fd);
  const int ro = ::open((dir.path() + "/last").c_str(), O_RDONLY | O_CLOEXEC);
  side = CopySide::kNone;
  CHECK(!points[1].first->CopyTo(ro, 0, size, false, &t, &side, &error) && side == CopySide::kTarget &&
            error.find("writing the target at ") != std::string::npos && error.find("Bad file descriptor") != std::string::npos,
        "a target that cannot be written is the target's failure" + Said(error));
  ::close(ro);
}

}  // namespace

int main() {
  TestAgainstModel();
  TestReplica();
  TestCopyTo();
  return Finish();
}
