// NBD wire protocol: constants, big-endian helpers, and request validation.
//
// Everything the server needs to know about the NBD protocol (doc/proto.md of
// NetworkBlockDevice/nbd) that is not about sockets lives here, so the same
// code serves the tap, the fuzz target and the native tests. Requests are
// validated once, at the boundary (nbdkit's server/backend.c does the same):
// the layers below never re-check ranges or flags.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tidemark::nbd {

constexpr uint64_t kNbdMagic = 0x4e42444d41474943ULL;    // "NBDMAGIC"
constexpr uint64_t kOptMagic = 0x49484156454F5054ULL;    // "IHAVEOPT"
constexpr uint64_t kOptReplyMagic = 0x0003e889045565a9ULL;
constexpr uint32_t kRequestMagic = 0x25609513;
constexpr uint32_t kSimpleReplyMagic = 0x67446698;

// Handshake flags (server) and client flags.
constexpr uint16_t kFlagFixedNewstyle = 1 << 0;
constexpr uint16_t kFlagNoZeroes = 1 << 1;
constexpr uint32_t kClientFlagFixedNewstyle = 1 << 0;
constexpr uint32_t kClientFlagNoZeroes = 1 << 1;

// Options.
constexpr uint32_t kOptExportName = 1;
constexpr uint32_t kOptAbort = 2;
constexpr uint32_t kOptList = 3;
constexpr uint32_t kOptStartTls = 5;
constexpr uint32_t kOptInfo = 6;
constexpr uint32_t kOptGo = 7;
// tidemark's own option (servers that do not know it answer
// NBD_REP_ERR_UNSUP, and the client reads the export instead): a restore on
// the server's host hands its open target file over the unix socket
// (SCM_RIGHTS, with the option's bytes) and the server copies a range of the
// export into it, file to file (Export::CopyTo). Data: u32 name length,
// name, u64 offset, u64 length, u32 flags (kCopyWriteZeroes). Answer: one
// kRepTidemarkCopied, then NBD_REP_ACK; a refusal before any copy (the
// export, the range, no descriptor, an export that cannot copy) is an
// NBD_REP_ERR_* with its reason, as for NBD_OPT_GO. May be repeated, one
// range after another, before NBD_OPT_GO or instead of it.
constexpr uint32_t kOptTidemarkCopy = 0x544d4301;  // "TMC" 1
constexpr uint32_t kCopyWriteZeroes = 1 << 0;      // zero runs zeroed (a device), else skipped (a new sparse file)

// Option replies.
constexpr uint32_t kRepAck = 1;
constexpr uint32_t kRepServer = 2;
constexpr uint32_t kRepInfo = 3;
// The outcome of kOptTidemarkCopy: u8 status (kCopied, kCopySourceFailed,
// kCopyTargetFailed), u64 data bytes, u64 data runs, u64 zero bytes, then
// the failure's one line.
constexpr uint32_t kRepTidemarkCopied = 0x544d4301;
constexpr uint8_t kCopied = 0, kCopySourceFailed = 1, kCopyTargetFailed = 2;
constexpr uint32_t kRepErrBit = 1u << 31;
constexpr uint32_t kRepErrUnsup = kRepErrBit | 1;
constexpr uint32_t kRepErrPolicy = kRepErrBit | 2;
constexpr uint32_t kRepErrInvalid = kRepErrBit | 3;
constexpr uint32_t kRepErrTlsReqd = kRepErrBit | 5;
constexpr uint32_t kRepErrUnknown = kRepErrBit | 6;
constexpr uint32_t kRepErrShutdown = kRepErrBit | 7;
constexpr uint32_t kRepErrTooBig = kRepErrBit | 9;

// NBD_INFO types.
constexpr uint16_t kInfoExport = 0;
constexpr uint16_t kInfoName = 1;
constexpr uint16_t kInfoDescription = 2;
constexpr uint16_t kInfoBlockSize = 3;

// Transmission flags.
constexpr uint16_t kTxHasFlags = 1 << 0;
constexpr uint16_t kTxReadOnly = 1 << 1;
constexpr uint16_t kTxSendFlush = 1 << 2;
constexpr uint16_t kTxSendFua = 1 << 3;
constexpr uint16_t kTxSendTrim = 1 << 5;
constexpr uint16_t kTxSendWriteZeroes = 1 << 6;
constexpr uint16_t kTxCanMultiConn = 1 << 8;

// Commands and command flags.
constexpr uint16_t kCmdRead = 0;
constexpr uint16_t kCmdWrite = 1;
constexpr uint16_t kCmdDisc = 2;
constexpr uint16_t kCmdFlush = 3;
constexpr uint16_t kCmdTrim = 4;
constexpr uint16_t kCmdWriteZeroes = 6;
constexpr uint16_t kCmdFlagFua = 1 << 0;
constexpr uint16_t kCmdFlagNoHole = 1 << 1;

// Error values on the wire.
constexpr uint32_t kEperm = 1;
constexpr uint32_t kEio = 5;
constexpr uint32_t kEnomem = 12;
constexpr uint32_t kEinval = 22;
constexpr uint32_t kEnospc = 28;
constexpr uint32_t kEshutdown = 108;

// Limits. Options longer than this are not something any client sends; the
// server closes the connection rather than read an attacker-sized buffer.
constexpr uint32_t kMaxOptionLength = 64 * 1024;
// Largest READ/WRITE payload, advertised as the maximum block size.
constexpr uint32_t kMaxPayload = 32 * 1024 * 1024;
constexpr uint32_t kPreferredBlock = 4096;

constexpr size_t kRequestSize = 28;
constexpr size_t kSimpleReplySize = 16;

inline uint16_t Get16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
inline uint32_t Get32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}
inline uint64_t Get64(const uint8_t* p) { return uint64_t(Get32(p)) << 32 | Get32(p + 4); }
inline void Put16(uint8_t* p, uint16_t v) { p[0] = uint8_t(v >> 8); p[1] = uint8_t(v); }
inline void Put32(uint8_t* p, uint32_t v) {
  p[0] = uint8_t(v >> 24); p[1] = uint8_t(v >> 16); p[2] = uint8_t(v >> 8); p[3] = uint8_t(v);
}
inline void Put64(uint8_t* p, uint64_t v) { Put32(p, uint32_t(v >> 32)); Put32(p + 4, uint32_t(v)); }

struct Request {
  uint32_t magic;
  uint16_t flags;
  uint16_t type;
  uint64_t cookie;
  uint64_t offset;
  uint32_t length;
};

inline Request ParseRequest(const uint8_t* p) {
  Request r;
  r.magic = Get32(p);
  r.flags = Get16(p + 4);
  r.type = Get16(p + 6);
  r.cookie = Get64(p + 8);
  r.offset = Get64(p + 16);
  r.length = Get32(p + 24);
  return r;
}

// What the connection must do with a request after validation.
struct Verdict {
  uint32_t error = 0;         // NBD error to reply with, 0 if the request is valid
  bool disconnect = false;    // the stream cannot be trusted any more: close it
  uint32_t discard = 0;       // payload bytes to read and drop before replying
  const char* why = nullptr;  // for the log line, when error or disconnect is set
};

// Validates a request against an export of `size` bytes. Pure: no I/O.
inline Verdict ValidateRequest(const Request& r, uint64_t size, bool read_only) {
  Verdict v;
  if (r.magic != kRequestMagic) {
    v.disconnect = true;
    v.why = "bad request magic";
    return v;
  }
  const uint64_t end = r.offset + r.length;
  const bool overflow = end < r.offset;
  switch (r.type) {
    case kCmdRead:
      if (r.flags & ~kCmdFlagFua) { v.error = kEinval; v.why = "unknown flag on READ"; }
      else if (r.length == 0) { v.error = kEinval; v.why = "zero-length READ"; }
      else if (r.length > kMaxPayload) { v.error = kEinval; v.why = "READ larger than the maximum block size"; }
      else if (overflow || end > size) { v.error = kEinval; v.why = "READ past the end of the export"; }
      return v;
    case kCmdWrite:
      // The payload is on the wire whatever we think of the request. One too
      // large to buffer means the client is broken: disconnect, as the spec allows.
      if (r.length > kMaxPayload) {
        v.disconnect = true;
        v.why = "WRITE larger than the maximum block size";
        return v;
      }
      if (r.flags & ~kCmdFlagFua) { v.error = kEinval; v.why = "unknown flag on WRITE"; }
      else if (read_only) { v.error = kEperm; v.why = "WRITE to a read-only export"; }
      else if (r.length == 0) { v.error = kEinval; v.why = "zero-length WRITE"; }
      else if (overflow || end > size) { v.error = kEnospc; v.why = "WRITE past the end of the export"; }
      if (v.error) v.discard = r.length;
      return v;
    case kCmdDisc:
      return v;
    case kCmdFlush:
      if (r.flags) { v.error = kEinval; v.why = "unknown flag on FLUSH"; }
      return v;
    case kCmdTrim:
      if (r.flags & ~kCmdFlagFua) { v.error = kEinval; v.why = "unknown flag on TRIM"; }
      else if (read_only) { v.error = kEperm; v.why = "TRIM on a read-only export"; }
      else if (r.length == 0) { v.error = kEinval; v.why = "zero-length TRIM"; }
      else if (overflow || end > size) { v.error = kEinval; v.why = "TRIM past the end of the export"; }
      return v;
    case kCmdWriteZeroes:
      if (r.flags & ~(kCmdFlagFua | kCmdFlagNoHole)) { v.error = kEinval; v.why = "unknown flag on WRITE_ZEROES"; }
      else if (read_only) { v.error = kEperm; v.why = "WRITE_ZEROES on a read-only export"; }
      else if (r.length == 0) { v.error = kEinval; v.why = "zero-length WRITE_ZEROES"; }
      else if (overflow || end > size) { v.error = kEnospc; v.why = "WRITE_ZEROES past the end of the export"; }
      return v;
    default:
      v.error = kEinval;
      v.why = "unknown command";
      return v;
  }
}

}  // namespace tidemark::nbd
