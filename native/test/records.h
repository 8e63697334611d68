// Change records built for the native tests: a header in the tap's layout
// (record.h) followed by its data, as a pulled batch holds them.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "record.h"

namespace tidemark::test {

using Bytes = std::vector<uint8_t>;

inline Bytes Rec(uint64_t seq, uint64_t sector, uint32_t count, uint8_t kind, const Bytes& data = {}, uint8_t flags = 0) {
  Bytes b(kRecordHeaderSize);
  RecordHeader h{};
  h.seq = seq;
  h.sector = sector;
  h.count = count;
  h.kind = kind;
  h.flags = flags;
  h.data_length = uint32_t(data.size());
  h.time_ms = 0x12345678;
  std::memcpy(b.data(), &h, sizeof h);
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

}  // namespace tidemark::test
