// The NBD server's bottom layer: what one export name serves.
//
// The NBD front (nbd_server.h) validates every request once, at the
// boundary (range, flags, read-only), and then calls one of these; an
// implementation never re-checks ranges. The tap's protected Volume is one
// implementation (backing file + recorder), a TimeView (view.h) another
// (a point in time fetched from the appliance + a copy-on-write overlay).
// Like an nbdkit plugin: the same small set of callbacks, one job each.
#pragma once

#include <cstdint>
#include <string>

#include "file_copy.h"

namespace tidemark {

class Export {
 public:
  virtual ~Export() = default;

  virtual const std::string& name() const = 0;
  virtual uint64_t size() const = 0;
  virtual bool read_only() const = 0;
  // NBD_INFO_DESCRIPTION, for clients that ask (nbdinfo shows it).
  virtual std::string description() const { return "tidemark protected volume " + name(); }

  // NBD operations, already validated. Return an NBD error (nbd_proto.h:
  // kEio, kEperm, kEnospc, ...) or 0.
  virtual uint32_t Read(uint64_t offset, uint32_t length, uint8_t* out) = 0;
  virtual uint32_t Write(uint64_t offset, uint32_t length, const uint8_t* data, bool fua) = 0;
  virtual uint32_t Trim(uint64_t offset, uint64_t length, bool fua) = 0;
  virtual uint32_t Zero(uint64_t offset, uint64_t length, bool fua, bool no_hole) = 0;
  virtual uint32_t Flush() = 0;

  // A READ answered only if that takes no waiting: the bytes are in a cache
  // (a TimeView's chunk cache, the page cache under an appliance export).
  // kWouldWait otherwise, and the front hands the request to a worker,
  // which calls Read. The front's reading thread runs ReadNow itself, so a
  // hit costs no wake-up of another thread. An export that cannot tell
  // (can_read_now false) has its small reads timed by the front instead
  // (nbd_server.cc).
  static constexpr uint32_t kWouldWait = UINT32_MAX;
  virtual bool can_read_now() const { return false; }
  virtual uint32_t ReadNow(uint64_t offset, uint32_t length, uint8_t* out) { return kWouldWait; }

  // A restore on the export's own host (NBD_OPT_TIDEMARK_COPY, nbd_proto.h):
  // [offset, offset+length) copied into the client's file descriptor at the
  // same offsets, file to file inside the kernel (file_copy.h), with no byte
  // crossing the socket. Only an export that reads local files can
  // (can_copy); the others answer NBD_REP_ERR_UNSUP and the client reads.
  virtual bool can_copy() const { return false; }
  virtual bool CopyTo(int fd, uint64_t offset, uint64_t length, bool write_zeroes, CopyTally* t, CopySide* side,
                      std::string* error) {
    *error = "this export cannot be copied by the server";
    return false;
  }

  // Counters the front keeps on the export's behalf.
  virtual void CountRejected() = 0;
  virtual void CountConnection(int delta) = 0;
};

}  // namespace tidemark
