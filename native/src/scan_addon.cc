// The agent's send path at the Node boundary: one synchronous call per pulled
// batch scans it (microscan.h) and encodes the result for a ChangeBatch
// (batch_ingest.h EncodeBatchPayload: xxh64, LZ4), so JavaScript never
// touches a sector and nothing is allocated per record. The scanner's cache
// must change exactly when a batch is produced, in pull order
// (agent/microscan.ts states the invariant): scan runs on the calling
// thread; scanAsync runs it on libuv's pool (another core: the agent's main
// thread goes on pulling and sending, and volumes scan in parallel), one at
// a time per scanner, which its caller awaits before the next.
//
//   new NativeMicroScan(volumeBytes, cacheBytes, enabled)
//   scan(batch: Buffer, regions: Float64Array | null, fps: BigUint64Array | null,
//        mode: 0 raw | 1 encode | 2 encode with LZ4, nums: Float64Array,
//        checksum: Buffer(8) | null, into?: Buffer) -> Buffer | number
//     regions/fps: the appliance's fingerprints for the batch's RESYNC
//     regions, regionSectors(g) u64s per region in the order of `regions`
//     (null: none fetched). Returns the payload, a Buffer over memory of its
//     own that the send window can keep (PayloadPool below): the raw records
//     for mode 0, else what the ChangeBatch carries; writes records, app bytes, changed bytes, raw length and
//     compression (0 none, 1 LZ4) into nums and, unless mode 0, the 8-byte
//     little-endian checksum into `checksum`. With `into` of outputBound(
//     batch.length) bytes or more, the payload is written there instead and
//     its length returned (the agent's reused payload buffers: a new Buffer
//     per batch is an ArrayBuffer V8 counts, and at 240 MB/s they forced a
//     major GC every 20 MB).
//   outputBound(batchBytes) -> number
//   scanAsync(the same arguments) -> Promise<Buffer | number>: nums and
//     checksum are written when it resolves; batch, fps and into must not
//     change until then.
//   clear(); stats() -> Float64Array [pages, maxPages, stateBytes,
//     sectorsSeen, sectorsDropped, misses, evictions]
//   scanEncodeLayout: the payload rule's constants as compiled, which
//   test/microscan.test.ts compares with proto/change-batch.ts.
#include <napi.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "batch_ingest.h"
#include "microscan.h"

namespace {

using tidemark::MicroScanner;

enum Num { kRecords, kAppBytes, kChangedBytes, kRawLength, kCompression, kNums };

// Scratch of the thread running a scan (the JavaScript thread, or a pool
// thread), grown to its largest batch and kept: shared by every volume's
// scanner on that thread.
thread_local std::vector<uint8_t> g_lz4;

// Payload memory, reused. A payload lives in the send window until an ack
// covers it, so it needs memory of its own; a fresh allocation per batch cost
// more than the scan itself (perf on a 4 MiB batch loop: page faults and
// heap trims in Buffer::Copy, ~40% of the call, the scan ~17%). Blocks come
// back when V8 collects their Buffer (the finalizer), never earlier: grpc-js
// may still hold a message it has not serialized yet. At most kPoolKeep
// bytes wait here. V8 is not told of the blocks (AdjustExternalMemory): each
// payload is serialized into an ArrayBuffer of about its size, which V8 does
// count, so collections already come at the pace of batches; counting the
// blocks as well doubled the major GCs (agent 9.2 -> 7.3 CPU-s/GB without it,
// one 512 MiB bench:replication stream; peak RSS equal to the old agent's).
constexpr size_t kPoolGranule = 256 * 1024;
constexpr size_t kPoolKeep = 64 * 1024 * 1024;

struct Block {
  uint8_t* data;
  size_t capacity;
};

class PayloadPool {
 public:
  Block Take(size_t n) {
    const size_t want = std::max<size_t>(1, (n + kPoolGranule - 1) / kPoolGranule) * kPoolGranule;
    std::lock_guard<std::mutex> g(mu_);
    // The smallest free block that fits (a few blocks at most: a linear walk).
    size_t best = free_.size();
    for (size_t i = 0; i < free_.size(); i++)
      if (free_[i].capacity >= want && (best == free_.size() || free_[i].capacity < free_[best].capacity)) best = i;
    if (best < free_.size()) {
      Block b = free_[best];
      free_[best] = free_.back();
      free_.pop_back();
      kept_ -= b.capacity;
      return b;
    }
    return Block{new uint8_t[want], want};
  }
  void Give(Block b) {
    std::lock_guard<std::mutex> g(mu_);
    if (kept_ + b.capacity > kPoolKeep) {
      delete[] b.data;
      return;
    }
    kept_ += b.capacity;
    free_.push_back(b);
  }

 private:
  std::mutex mu_;
  std::vector<Block> free_;
  size_t kept_ = 0;
};

// Never destroyed: finalizers may run while the process exits.
PayloadPool& Pool() {
  static PayloadPool* p = new PayloadPool();
  return *p;
}

// A Buffer of the block's first n bytes; the block returns to the pool when V8 collects it.
Napi::Value Wrap(Napi::Env env, Block b, size_t n) {
  return Napi::Buffer<uint8_t>::New(env, b.data, n, [capacity = b.capacity](Napi::Env e, uint8_t* p) {
    Pool().Give(Block{p, capacity});
  });
}

Napi::Error Fail(Napi::Env env, const char* code, const std::string& message) {
  Napi::Error e = Napi::Error::New(env, std::string(code) + ": " + message);
  e.Set("code", Napi::String::New(env, code));
  return e;
}

class NativeMicroScan : public Napi::ObjectWrap<NativeMicroScan> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "NativeMicroScan",
                       {InstanceMethod("scan", &NativeMicroScan::Scan), InstanceMethod("scanAsync", &NativeMicroScan::ScanAsync),
                        InstanceMethod("clear", &NativeMicroScan::Clear),
                        InstanceMethod("outputBound", &NativeMicroScan::OutputBound),
                        InstanceMethod("stats", &NativeMicroScan::Stats)});
  }

  explicit NativeMicroScan(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeMicroScan>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsBoolean()) {
      Fail(env, "MICROSCAN_INVALID_ARGUMENT", "NativeMicroScan(volumeBytes, cacheBytes, enabled)").ThrowAsJavaScriptException();
      return;
    }
    const double vol = info[0].As<Napi::Number>().DoubleValue();
    const double cache = info[1].As<Napi::Number>().DoubleValue();
    if (!(vol > 0) || !(cache >= 0) || vol > 9007199254740991.0 || cache > 9007199254740991.0) {
      Fail(env, "MICROSCAN_INVALID_ARGUMENT", "volume and cache sizes must be byte counts").ThrowAsJavaScriptException();
      return;
    }
    s_ = std::make_unique<MicroScanner>(uint64_t(vol), uint64_t(cache), info[2].As<Napi::Boolean>().Value());
  }

 private:
  // A scan's inputs, checked: the batch, the mode, the replica's regions
  // (pointing into fps), and where the numbers and checksum go.
  struct Args {
    const uint8_t* batch = nullptr;
    size_t batch_length = 0;
    int mode = 0;
    double* nums = nullptr;
    uint8_t* checksum = nullptr;
    std::vector<tidemark::ReplicaRegion> replica;
    // The caller's payload buffer (into), when it holds OutputBound: the payload goes there.
    uint8_t* into = nullptr;
    size_t into_length = 0;
  };

  // The outcome of one scan: the payload block (or an error) and its numbers.
  struct Outcome {
    Block block{nullptr, 0};
    bool in_into = false;  // the payload is in Args::into, not in block
    size_t length = 0;
    double nums[kNums] = {};
    uint8_t checksum[8] = {};
    std::string error;
  };

  bool ParseArgs(const Napi::CallbackInfo& info, Args* a) {
    Napi::Env env = info.Env();
    if (!s_) {
      Unusable(env);
      return false;
    }
    if (info.Length() < 6 || !info[0].IsBuffer() || !info[3].IsNumber() || !info[4].IsTypedArray()) {
      Fail(env, "MICROSCAN_INVALID_ARGUMENT", "scan(batch, regions, fps, mode, nums, checksum)").ThrowAsJavaScriptException();
      return false;
    }
    auto batch = info[0].As<Napi::Buffer<uint8_t>>();
    a->batch = batch.Data();
    a->batch_length = batch.Length();
    a->mode = info[3].As<Napi::Number>().Int32Value();
    auto nums = info[4].As<Napi::TypedArray>();
    if (nums.TypedArrayType() != napi_float64_array || nums.ElementLength() < kNums) {
      Fail(env, "MICROSCAN_INVALID_ARGUMENT", "scan: nums must be a Float64Array of " + std::to_string(int(kNums)) + " numbers")
          .ThrowAsJavaScriptException();
      return false;
    }
    a->nums = nums.As<Napi::Float64Array>().Data();
    if (a->mode != 0) {
      if (!info[5].IsBuffer() || info[5].As<Napi::Buffer<uint8_t>>().Length() < 8) {
        Fail(env, "MICROSCAN_INVALID_ARGUMENT", "scan: an encoding scan needs an 8-byte checksum buffer").ThrowAsJavaScriptException();
        return false;
      }
      a->checksum = info[5].As<Napi::Buffer<uint8_t>>().Data();
    }
    if (info.Length() > 6 && !info[6].IsUndefined()) {
      if (!info[6].IsBuffer()) {
        Fail(env, "MICROSCAN_INVALID_ARGUMENT", "scan: into must be a Buffer").ThrowAsJavaScriptException();
        return false;
      }
      auto into = info[6].As<Napi::Buffer<uint8_t>>();
      a->into = into.Data();
      a->into_length = into.Length();
    }
    // The replica's fingerprints: regions[i] owns the next RegionSectors(regions[i]) u64s of fps.
    if (info[1].IsTypedArray() && info[2].IsTypedArray()) {
      auto regions = info[1].As<Napi::TypedArray>();
      auto fps = info[2].As<Napi::TypedArray>();
      if (regions.TypedArrayType() != napi_float64_array || fps.TypedArrayType() != napi_biguint64_array) {
        Fail(env, "MICROSCAN_INVALID_ARGUMENT", "scan: regions must be a Float64Array and fps a BigUint64Array")
            .ThrowAsJavaScriptException();
        return false;
      }
      const double* g = regions.As<Napi::Float64Array>().Data();
      const uint64_t* f = reinterpret_cast<const uint64_t*>(static_cast<const uint8_t*>(fps.ArrayBuffer().Data()) + fps.ByteOffset());
      size_t at = 0;
      for (size_t i = 0; i < regions.ElementLength(); i++) {
        const uint32_t n = g[i] >= 0 && g[i] < 9007199254740992.0 ? s_->RegionSectors(uint64_t(g[i])) : 0;
        if (n == 0 || at + n > fps.ElementLength()) {
          Fail(env, "FINGERPRINTS_MALFORMED", "fingerprints for region " + std::to_string(g[i]) + " are missing or outside the volume")
              .ThrowAsJavaScriptException();
          return false;
        }
        a->replica.push_back(tidemark::ReplicaRegion{uint64_t(g[i]), f + at, n});
        at += n;
      }
    }
    return true;
  }

  // Scans and encodes on the calling thread, under the scanner's lock.
  void Run(const Args& a, Outcome* o) {
    std::lock_guard<std::mutex> g(mu_);
    // The records to send go straight into payload memory (the caller's
    // buffer when it is big enough); only a batch that LZ4 shrinks is copied
    // again (its compressed form, smaller).
    const bool into = a.into && a.into_length >= MicroScanner::OutputBound(a.batch_length);
    Block out = into ? Block{a.into, 0} : Pool().Take(MicroScanner::OutputBound(a.batch_length));
    tidemark::ScanResult r;
    s_->Scan(a.batch, a.batch_length, a.replica.empty() ? nullptr : a.replica.data(), a.replica.size(), out.data, &r);
    if (!r.error.empty()) {
      if (!into) Pool().Give(out);
      o->error = r.error;
      return;
    }
    o->nums[kRecords] = double(r.records);
    o->nums[kAppBytes] = double(r.app_bytes);
    o->nums[kChangedBytes] = double(r.changed_sectors) * tidemark::kSectorSize;
    o->nums[kRawLength] = double(r.bytes);
    o->nums[kCompression] = tidemark::kCompressionNone;
    o->in_into = into;
    if (!into) o->block = out;
    o->length = r.bytes;
    if (a.mode == 0) return;
    tidemark::EncodedPayload p;
    tidemark::EncodeBatchPayload(out.data, r.bytes, a.mode == 2, &g_lz4, &p);
    std::memcpy(o->checksum, &p.checksum, 8);
    o->nums[kCompression] = p.compression;
    o->length = p.length;
    if (p.data == out.data) return;
    if (into) {
      std::memcpy(a.into, p.data, p.length);  // p.data is the LZ4 scratch, never into
      return;
    }
    Pool().Give(out);
    o->block = Pool().Take(p.length);
    std::memcpy(o->block.data, p.data, p.length);
  }

  // Back on the JavaScript thread: the numbers and checksum written, the payload wrapped (or the error).
  static Napi::Value Deliver(Napi::Env env, const Args& a, const Outcome& o, Napi::Error* err) {
    if (!o.error.empty()) {
      *err = Fail(env, "MICROSCAN_BAD_BATCH", o.error);
      return env.Undefined();
    }
    std::memcpy(a.nums, o.nums, sizeof o.nums);
    if (a.checksum) std::memcpy(a.checksum, o.checksum, 8);
    if (o.in_into) return Napi::Number::New(env, double(o.length));
    return Wrap(env, o.block, o.length);
  }

  Napi::Value Scan(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Args a;
    if (!ParseArgs(info, &a)) return env.Undefined();
    Outcome o;
    Run(a, &o);
    Napi::Error err;
    Napi::Value v = Deliver(env, a, o, &err);
    if (!o.error.empty()) err.ThrowAsJavaScriptException();
    return v;
  }

  // scanAsync: Run on a pool thread. The batch, fps, nums and checksum (and
  // this scanner) are held by references until it settles.
  class ScanWorker : public Napi::AsyncWorker {
   public:
    ScanWorker(const Napi::CallbackInfo& info, NativeMicroScan* self, Args a)
        : Napi::AsyncWorker(info.Env()), deferred_(Napi::Promise::Deferred::New(info.Env())), self_(self), a_(std::move(a)) {
      for (size_t i = 0; i < 7 && i < info.Length(); i++) {
        if (info[i].IsObject()) refs_.push_back(Napi::Persistent(info[i].As<Napi::Object>()));
      }
      refs_.push_back(Napi::Persistent(info.This().As<Napi::Object>()));
    }
    Napi::Promise Promise() { return deferred_.Promise(); }

   protected:
    void Execute() override { self_->Run(a_, &o_); }
    void OnOK() override {
      Napi::Error err;
      Napi::Value v = Deliver(Env(), a_, o_, &err);
      if (!o_.error.empty()) deferred_.Reject(err.Value());
      else deferred_.Resolve(v);
    }
    void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

   private:
    Napi::Promise::Deferred deferred_;
    NativeMicroScan* self_;
    Args a_;
    Outcome o_;
    std::vector<Napi::ObjectReference> refs_;
  };

  Napi::Value ScanAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Args a;
    if (!ParseArgs(info, &a)) return env.Undefined();
    auto* w = new ScanWorker(info, this, std::move(a));
    Napi::Promise p = w->Promise();
    w->Queue();
    return p;
  }

  // A scanner whose constructor threw has no core.
  Napi::Value Unusable(Napi::Env env) {
    Fail(env, "MICROSCAN_INVALID_ARGUMENT", "this scanner was not constructed").ThrowAsJavaScriptException();
    return env.Undefined();
  }

  // outputBound(batchBytes): the payload buffer a scan of such a batch needs (into).
  Napi::Value OutputBound(const Napi::CallbackInfo& info) {
    if (info.Length() < 1 || !info[0].IsNumber() || !(info[0].As<Napi::Number>().DoubleValue() >= 0)) {
      Fail(info.Env(), "MICROSCAN_INVALID_ARGUMENT", "outputBound(batchBytes)").ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    return Napi::Number::New(info.Env(), double(MicroScanner::OutputBound(size_t(info[0].As<Napi::Number>().DoubleValue()))));
  }

  Napi::Value Clear(const Napi::CallbackInfo& info) {
    if (!s_) return Unusable(info.Env());
    std::lock_guard<std::mutex> g(mu_);
    s_->Clear();
    return info.Env().Undefined();
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    if (!s_) return Unusable(info.Env());
    auto a = Napi::Float64Array::New(info.Env(), 7);
    std::lock_guard<std::mutex> g(mu_);
    const auto& st = s_->stats();
    a[0] = double(s_->pages());
    a[1] = double(s_->max_pages());
    a[2] = double(s_->state_bytes());
    a[3] = double(st.sectors_seen);
    a[4] = double(st.sectors_dropped);
    a[5] = double(st.misses);
    a[6] = double(st.evictions);
    return a;
  }

  std::unique_ptr<MicroScanner> s_;
  // Held while a scan runs (on whichever thread), and by clear and stats.
  std::mutex mu_;
};

}  // namespace

void InitScan(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeMicroScan", NativeMicroScan::Init(env));
  Napi::Object layout = Napi::Object::New(env);
  layout.Set("minCompress", Napi::Number::New(env, double(tidemark::kEncodeMinCompress)));
  layout.Set("sample", Napi::Number::New(env, double(tidemark::kEncodeSample)));
  layout.Set("worth", Napi::Number::New(env, tidemark::kEncodeWorth));
  layout.Set("pageOverhead", Napi::Number::New(env, double(tidemark::kScanPageOverhead)));
  layout.Set("trimCreateLimit", Napi::Number::New(env, double(tidemark::kScanTrimCreateLimit)));
  exports.Set("scanEncodeLayout", layout);
}

