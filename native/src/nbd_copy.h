// Copying an NBD export into a target at the speed of the disk and the link:
// what `tidemark restore` uses to read a point from the appliance's NBD
// server (export VOLUME@seq=N) and write it into a file, a block device or
// another NBD export.
//
// The shape is nbdcopy's (libnbd's copy/): N connections to the source
// (multi-conn, when the server advertises it), each on its own thread with
// several READs in flight, replies matched by handle, so the server always
// has the next request queued while this side writes the last one. Work is
// handed out in request-sized blocks from one shared cursor, so the source
// is read roughly in order whatever the number of connections.
//
// Zero blocks are never written as data: each block is split into runs of
// 4 KiB granules that are all zeroes or not; a zero run is a hole in a file
// (the file is created empty and sized with ftruncate), skipped on a target
// known to read as zeroes, BLKZEROOUT on a block device, NBD_CMD_WRITE_ZEROES
// on an NBD target. Writes to an NBD target are pipelined too: a block's
// buffer is reused only when the target has answered every request for it.
//
// The client side of the NBD protocol is written here (nbd_copy_client.h;
// libnbd is not a dependency): fixed newstyle handshake, NBD_OPT_STARTTLS (nbd_tls.h),
// NBD_OPT_GO with NBD_INFO_BLOCK_SIZE, simple replies only (structured
// replies are never asked for), the constants of nbd_proto.h. Every failure is one line that names its cause:
// the socket that refused the connection, the server's NBD_REP_ERR_* text,
// a reply cut short, the errno of the target's write.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace tidemark {

// Where an NBD export is: a unix socket, or a TCP host and port. URIs are
// parsed on the TypeScript side (client/nbd-client.ts parseNbdUri, the one
// reader of them).
struct NbdEndpoint {
  std::string unix_path;  // set: a unix socket; else host and port
  std::string host;
  int port = 10809;
  std::string export_name;
  // "export 'NAME' on PATH" / "export 'NAME' on HOST:PORT"
  std::string Describe() const;
};

struct CopyConfig {
  NbdEndpoint source;
  // The target: an NBD export when target_is_nbd, else a path: a block device
  // (written in place) or a regular file (created, or truncated to nothing).
  bool target_is_nbd = false;
  NbdEndpoint target_nbd;
  std::string target_path;
  int connections = 4;               // to the source (and to an NBD target); 1 if it has no multi-conn
  int requests = 8;                  // READs in flight per connection
  // Per READ; capped at the servers' maximum block size. 256 KiB, as nbdcopy:
  // 1 MiB requests ran 2-3x slower from `nbdkit file` here (1 GiB, page
  // cache, 4 connections: 3.0-4.1 s against 1.0-1.5 s), larger buffers than
  // the socket's and the server's allocator's sweet spot.
  uint32_t request_bytes = 256 << 10;
  // Over a unix socket without TLS, to a file or a block device: ask the
  // server to copy the point into the target itself (NBD_OPT_TIDEMARK_COPY,
  // nbd_proto.h), with this many connections copying 64 MiB ranges; a server
  // that does not is read as below.
  bool server_copy = true;
  int server_copy_connections = 2;
  bool target_zeroed = false;        // the device or NBD target reads as zeroes already: skip zero runs
  bool sync = true;                  // fdatasync the file or device, FLUSH the NBD target, before returning
  // PEM files for NBD TLS (nbd_tls.h), all three or none: STARTTLS over
  // TCP always, over a unix socket when the server requires it.
  std::string tls_cert, tls_key, tls_ca;
};

// Why a copy failed, for the caller's stable error code and its policy
// (restore falls back to gRPC when the NBD endpoint cannot be reached).
enum class CopyError {
  kNone,
  kConnect,      // the socket could not be connected
  kTlsRequired,  // TLS on one side only: the server requires it and no TLS files were given, or they were and it has none
  kRefused,      // the server refused the export (another NBD_REP_ERR_*)
  kProtocol,     // the server broke the protocol
  kSource,       // a READ failed or its reply was cut short
  kTarget,       // the target could not be opened or written (ENOSPC, EIO, too small, ...)
  kTlsFiles,     // the TLS files could not be loaded
  kCancelled,
};

struct CopyResult {
  uint64_t size = 0;
  uint64_t data_bytes = 0;  // written as data
  uint64_t data_runs = 0;   // in this many runs (maximal non-zero stretches of a block)
  uint64_t zero_bytes = 0;  // zero runs: holes, skipped, or zeroed on the target
  int connections = 0;
  uint32_t request_bytes = 0;
  std::string target_kind;  // "file", "device" or "nbd"
  bool server_copy = false;          // the server copied it (NBD_OPT_TIDEMARK_COPY)
  std::string server_copy_skipped;   // why it did not, when it was asked and refused
  CopyError error = CopyError::kNone;
  std::string message;  // the one line, when error is set
};

class NbdCopy {
 public:
  NbdCopy() = default;
  NbdCopy(const NbdCopy&) = delete;
  NbdCopy& operator=(const NbdCopy&) = delete;

  // Copies the whole source export into the target; blocks until done,
  // failed or cancelled. Returns false with r->error and r->message set.
  bool Run(const CopyConfig& c, CopyResult* r);
  // From any thread: stops the copy (sockets are shut down, so threads
  // blocked in recv return); Run fails with kCancelled.
  void Cancel();

  // Progress, from any thread: bytes of the source committed to the target.
  uint64_t done() const { return done_.load(std::memory_order_relaxed); }
  uint64_t size() const { return size_.load(std::memory_order_relaxed); }

 private:
  struct Shared;
  void Fail(CopyError e, const std::string& message);
  void Track(int fd);
  bool Worker(int index, Shared* s);
  // The server copies the point (CopyConfig::server_copy); false with
  // *unsupported when it refused to, false after Fail when it failed.
  bool ServerCopy(int conns, Shared* s, bool* unsupported);
  static constexpr uint64_t kServerCopyRange = 64 << 20;

  std::atomic<uint64_t> done_{0};
  std::atomic<uint64_t> size_{0};
  std::atomic<bool> stop_{false};
  std::mutex mu_;  // guards the fields below
  CopyError error_ = CopyError::kNone;
  std::string message_;
  std::vector<int> fds_;  // every socket, for Cancel's shutdown
  std::string server_copy_refusal_;
};

// True if every byte of p[0, n) is zero.
bool IsAllZero(const uint8_t* p, size_t n);

}  // namespace tidemark
