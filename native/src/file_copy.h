// Copying byte ranges from one open file into another inside the kernel:
// copy_file_range where the two files allow it (one copy through the page
// cache, as `cp` does, or none where the file system shares blocks), pread
// and pwrite through a buffer where they do not (two file systems, a block
// device on an older kernel). Used by the replica image's rounds
// (replica_image.h) and by a point copied into a client's file
// (PointReader::CopyTo, NBD_OPT_TIDEMARK_COPY in nbd_proto.h).
//
// A failure names its side: the source (a journal segment, a base image) or
// the target (a full disk is the target's, not the point's), because the
// copier's caller reports them differently. copy_file_range cannot say
// which file failed (EIO is either), so a range it fails is copied again
// through the buffer, which can.
#pragma once

#include <cstdint>
#include <string>

namespace tidemark {

enum class CopySide { kNone, kSource, kTarget };

// What a copy did, added up over its ranges.
struct CopyTally {
  uint64_t data_bytes = 0;  // copied as data
  uint64_t data_runs = 0;   // in this many ranges
  uint64_t zero_bytes = 0;  // left as holes or zeroed
};

class RangeCopier {
 public:
  // Names for error lines: "segment 3", "the replica image", "the target".
  RangeCopier(std::string source_name, std::string target_name)
      : source_name_(std::move(source_name)), target_name_(std::move(target_name)) {}

  void set_source_name(std::string name) { source_name_ = std::move(name); }

  // [src_pos, src_pos+len) of src to dst at dst_pos. False with *side and
  // *error ("reading 4096 bytes of segment 3 at 8192: Input/output error").
  bool Copy(int src, uint64_t src_pos, int dst, uint64_t dst_pos, uint64_t len, CopySide* side, std::string* error);

  // [pos, pos+len) of dst reads as zeroes afterwards: BLKZEROOUT on a block
  // device, FALLOC_FL_ZERO_RANGE on a file, written zeroes where neither works.
  bool Zero(int dst, uint64_t pos, uint64_t len, std::string* error);

 private:
  bool CopyBuffered(int src, uint64_t src_pos, int dst, uint64_t dst_pos, uint64_t len, CopySide* side,
                    std::string* error);
  bool WriteAll(int dst, const uint8_t* p, size_t n, uint64_t pos, std::string* error);

  std::string source_name_, target_name_;
  bool no_copy_range_ = false;  // copy_file_range refused these files: the buffer from then on
  bool no_zero_range_ = false;
};

}  // namespace tidemark
