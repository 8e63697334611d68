// libFuzzer target for the NBD front (`bash native/fuzz/run.sh`).
//
// Each input is a client's whole conversation: the bytes after the server's
// greeting (client flags, options, requests, payloads), sent over a
// socketpair to the real connection code, which serves two exports over one
// 1 MiB file: "vol" (read-write, the default export) and "ro" (read-only).
// The server reads until end-of-file; a thread drains its replies so that
// a large READ can never block it. The connection runs requests at once on
// its workers, as it does for any client, so the replay check below also
// checks that overlapping requests in flight together are recorded in the
// order they reached the file.
//
// After each conversation the harness plays the consumer: it pulls every
// record, checks it (seq strictly increasing, kind, range, data length),
// applies it to a shadow image, runs any resync to completion and acks. The
// shadow must then equal the backing file byte for byte, and the dirty map
// must be clean: the tap's "byte-exact" contract, checked on every input.
// Some inputs also start a copy (ResyncFrom) that runs while the client
// writes.
// Each 28-byte chunk of the input is also checked as a request header
// against ValidateRequest's contract. Any violation aborts, which libFuzzer
// reports as a crash.

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "nbd_proto.h"
#include "nbd_server.h"
#include "record.h"
#include "seq.h"
#include "volume.h"

using namespace tidemark;

namespace {

constexpr uint64_t kVolumeSize = 1 << 20;
// The smallest ring a resync can work in (it keeps half free for a 64 KiB
// region), so the ring stays small without starving the resync.
constexpr size_t kRingBytes = 2 * (kRecordHeaderSize + kRegionSize) + 4096;

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "nbd_fuzz: invariant violated: %s\n", what);
  std::abort();
}

struct Harness {
  std::string dir;
  std::string disk;
  std::shared_ptr<SeqSpace> seq;
  std::shared_ptr<Volume> vol, ro;
  std::unique_ptr<NbdServer> server;
  std::vector<uint8_t> shadow;  // the volume as the records describe it
  std::vector<uint8_t> pulled;
  std::vector<uint8_t> file;
  uint64_t last_seq = 0;
};

std::string MakeTempDir() {
  // tmpfs when there is one: FLUSH and FUA sync, and syncs on a disk would
  // make every input cost milliseconds.
  struct stat st;
  const char* env = std::getenv("TMPDIR");
  std::string base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0
                         ? "/dev/shm"
                         : (env && *env ? env : "/tmp");
  std::string t = base + "/tidemark-fuzz-XXXXXX";
  if (!mkdtemp(&t[0])) {
    std::perror("mkdtemp");
    std::abort();
  }
  return t;
}

Harness* Setup() {
  auto* h = new Harness;
  h->dir = MakeTempDir();
  h->disk = h->dir + "/disk.img";
  h->shadow.resize(kVolumeSize);
  for (size_t i = 0; i < kVolumeSize; i++) h->shadow[i] = uint8_t(i * 131 + (i >> 9));
  FILE* f = std::fopen(h->disk.c_str(), "wb");
  if (!f || std::fwrite(h->shadow.data(), 1, kVolumeSize, f) != kVolumeSize || std::fclose(f) != 0) Fail("create disk");
  std::string error;
  h->seq = std::make_shared<SeqSpace>();
  if (!h->seq->Open(h->dir + "/group.seq", &error)) Fail(error.c_str());
  const LogFn quiet = [](int, const std::string&) {};
  VolumeConfig c;
  c.name = "vol";
  c.path = h->disk;
  c.state_dir = h->dir;
  c.buffer_bytes = kRingBytes;
  h->vol = std::make_shared<Volume>(c, h->seq, quiet);
  c.name = "ro";
  c.read_only = true;
  h->ro = std::make_shared<Volume>(c, h->seq, quiet);
  if (!h->vol->Open(&error) || !h->ro->Open(&error)) Fail(error.c_str());
  h->server = std::make_unique<NbdServer>(std::vector<std::shared_ptr<Volume>>{h->vol, h->ro}, quiet);
  h->file.resize(kVolumeSize);
  // Everything is open now (the volumes, maps and seq file keep their
  // descriptors), so the directory can go: nothing is left behind however
  // libFuzzer exits.
  std::error_code ec;
  std::filesystem::remove_all(h->dir, ec);
  return h;
}

// ValidateRequest's contract, for any header and any export size.
void CheckVerdict(const nbd::Request& r, uint64_t size, bool ro) {
  using namespace nbd;
  const Verdict v = ValidateRequest(r, size, ro);
  if ((v.error != 0 || v.disconnect) != (v.why != nullptr)) Fail("verdict: why is set exactly when rejecting");
  if (v.error && v.disconnect) Fail("verdict: both an error and a disconnect");
  if (r.magic != kRequestMagic && !v.disconnect) Fail("verdict: bad magic accepted");
  if (r.type == kCmdWrite && v.error && v.discard != r.length) Fail("verdict: rejected WRITE must discard its payload");
  if (v.discard && !(r.type == kCmdWrite && v.error)) Fail("verdict: discard without a rejected WRITE");
  if (v.error || v.disconnect) return;
  const bool in_range = r.length > 0 && r.offset + r.length >= r.offset && r.offset + r.length <= size;
  switch (r.type) {
    case kCmdRead:
    case kCmdWrite:
      if (!in_range || r.length > kMaxPayload || (r.flags & ~kCmdFlagFua)) Fail("verdict: bad READ/WRITE accepted");
      if (r.type == kCmdWrite && ro) Fail("verdict: WRITE accepted on a read-only export");
      break;
    case kCmdTrim:
    case kCmdWriteZeroes:
      if (!in_range || ro) Fail("verdict: bad TRIM/WRITE_ZEROES accepted");
      if (r.flags & ~(kCmdFlagFua | (r.type == kCmdWriteZeroes ? kCmdFlagNoHole : 0))) Fail("verdict: unknown flag");
      break;
    case kCmdFlush:
      if (r.flags) Fail("verdict: FLUSH with flags accepted");
      break;
    case kCmdDisc:
      break;
    default:
      Fail("verdict: unknown command accepted");
  }
}

void CheckVerdicts(const uint8_t* data, size_t size) {
  for (size_t off = 0; off + nbd::kRequestSize <= size && off < 64 * nbd::kRequestSize; off += nbd::kRequestSize) {
    nbd::Request r = nbd::ParseRequest(data + off);
    const uint64_t sizes[] = {kVolumeSize, 0, UINT64_MAX, r.cookie};
    for (uint64_t s : sizes) {
      CheckVerdict(r, s, false);
      CheckVerdict(r, s, true);
    }
    r.magic = nbd::kRequestMagic;  // the same header, past the magic check
    for (uint64_t s : sizes) CheckVerdict(r, s, false);
  }
}

// One conversation over a socketpair; returns when the server is done.
void Converse(Harness* h, const uint8_t* data, size_t size) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) Fail("socketpair");
  const int client = sv[0], server = sv[1];
  const int sndbuf = 1 << 20;
  setsockopt(client, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
  auto send_all = [client, data, size] {
    for (size_t off = 0; off < size;) {
      const ssize_t n = send(client, data + off, size - off, MSG_NOSIGNAL);
      if (n <= 0) break;  // the server hung up early: the rest is never read
      off += size_t(n);
    }
    shutdown(client, SHUT_WR);
  };
  // Small inputs fit the socket buffer at once; larger ones need a writer
  // that can block while the server works.
  std::thread writer;
  if (size <= 128 * 1024) {
    send_all();
  } else {
    writer = std::thread(send_all);
  }
  std::thread reader([client] {
    uint8_t sink[65536];
    while (recv(client, sink, sizeof sink, 0) > 0) {
    }
  });
  h->server->ServeConnection(server);
  ::close(server);  // the reader and a blocked writer see the end
  if (writer.joinable()) writer.join();
  reader.join();
  ::close(client);
}

void ApplyRecords(Harness* h, const uint8_t* p, size_t n) {
  const uint64_t sectors = kVolumeSize >> kSectorShift;
  for (size_t at = 0; at < n;) {
    if (n - at < kRecordHeaderSize) Fail("record: torn header");
    RecordHeader r;
    std::memcpy(&r, p + at, sizeof r);
    at += kRecordHeaderSize;
    if (r.seq <= h->last_seq) Fail("record: seq not strictly increasing");
    h->last_seq = r.seq;
    if (r.data_length > n - at) Fail("record: data runs past the batch");
    if (r.reserved0) Fail("record: reserved fields not zero");
    const uint64_t off = r.sector << kSectorShift, len = uint64_t(r.count) << kSectorShift;
    switch (r.kind) {
      case kRecordWrite:
      case kRecordResync:
      case kRecordTrim:
      case kRecordZero:
        if (r.count == 0 || r.sector >= sectors || r.count > sectors - r.sector) Fail("record: range outside volume");
        if ((r.kind == kRecordWrite || r.kind == kRecordResync) != (r.data_length == len))
          Fail("record: data length does not match its kind and count");
        if (r.data_length) std::memcpy(&h->shadow[off], p + at, r.data_length);
        else std::memset(&h->shadow[off], 0, len);
        break;
      case kRecordFlush:
        if (r.count || r.sector || r.data_length) Fail("record: FLUSH with a range or data");
        break;
      case kRecordGap:
      case kRecordExact:
        // Markers around a resync (the harness stops draining now and then, so the volume falls behind).
        if (r.count || r.sector || r.data_length) Fail("record: GAP/EXACT marker with a range or data");
        break;
      default:
        Fail("record: unknown kind");
    }
    at += r.data_length;
  }
}

// The consumer: pull, resync until normal, check the shadow, ack.
void Drain(Harness* h) {
  Volume& v = *h->vol;
  bool any = false;
  for (int i = 0;; i++) {
    if (i > 10000) Fail("drain: the resync does not finish");
    const size_t n = v.Pull(1 << 20, [h](size_t k) {
      h->pulled.resize(k);
      return h->pulled.data();
    });
    if (n) {
      ApplyRecords(h, h->pulled.data(), n);
      any = true;
      continue;
    }
    if (!v.wants_resync()) break;
    // The ring is empty, so a resync step always has room.
    if (!v.ResyncStep() && v.wants_resync()) Fail("drain: resync made no progress with an empty ring");
  }
  const VolumeStats s = v.Stats();
  if (s.mode != int(Mode::kNormal) || s.stale_regions != 0) Fail("drain: not normal after the resync");
  if (any) {
    if (v.Read(0, uint32_t(kVolumeSize), h->file.data()) != 0) Fail("drain: read of the backing file");
    if (std::memcmp(h->file.data(), h->shadow.data(), kVolumeSize) != 0)
      Fail("the replayed records differ from the backing file");
  }
  v.Ack(v.Mark());
  if (v.Stats().dirty_regions != 0) Fail("dirty regions left after acking everything");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Harness* h = Setup();
  if (size >= nbd::kRequestSize) CheckVerdicts(data, size);
  // An input whose last byte is 0xf0..0xff starts a copy (ResyncFrom) of
  // the regions from its low nibble on, which runs while the client writes.
  if (size > 0 && (data[size - 1] & 0xf0) == 0xf0) h->vol->ResyncFrom(data[size - 1] & 0x0f);
  Converse(h, data, size);
  Drain(h);
  return 0;
}
