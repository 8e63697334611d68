// The appliance's ingest at the Node boundary: one call per ChangeBatch
// (batch_ingest.h does the work), so JavaScript never touches the batch's
// bytes. The call costs about what a memcpy and two xxh64 passes over the
// batch cost, so the replication path runs it on libuv's pool
// (frameBatchAsync): the main thread keeps receiving, acknowledging and
// indexing while batches are checked on other cores, and different volumes
// are checked in parallel. The caller (appliance/batch-writer.ts) places the
// checked batches in the journal in call order.
//
//   frameBatch(payload: Buffer, nums: Float64Array, checksum: Buffer | null, where: string, into?: Buffer)
//     nums: compression, raw length, first seq, last seq, record count, last
//           accepted seq, volume size in sectors, app bytes, changed bytes,
//           wire bytes, wall ms (FrameArg in appliance/record-check.ts)
//     -> [code | null, message, framed: Buffer | null, recs: Float64Array | null,
//         records, marks, pendingMark: Buffer | null, pendingMarkAt]
//   into: where to write the framed batch, when it is exactly the framed
//   size (a reused buffer: appliance/frame-pool.ts); otherwise one is made.
//   The framed batch and the records list are returned even when the batch
//   failed part way (the records before the problem), so that the caller can
//   check MARK metadata in record order first (batch_ingest.h).
//
//   frameBatchAsync(payload, nums, checksum, where, into?) -> Promise of the same array,
//     checked on a pool thread. payload, checksum and into must not change until
//     it settles (they are held, not copied).
//
//   journalFrameLayout: the frame constants as compiled, which
//   test/record-check.test.ts compares with appliance/journal-format.ts.
#include <napi.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "batch_ingest.h"

namespace {

using tidemark::BatchDecl;
using tidemark::BatchEncoding;
using tidemark::FrameResult;
using tidemark::IngestError;

enum Arg { kCompression, kRawLength, kFirstSeq, kLastSeq, kRecordCount, kLastAccepted, kSizeSectors, kAppBytes, kChangedBytes,
           kWireBytes, kWallMs, kArgs };

// The LZ4 scratch buffer of the thread calling frameBatch (a JavaScript
// thread: the main one, or a worker's), grown to its largest batch and kept.
thread_local std::vector<uint8_t> g_scratch;

// A JavaScript number as a u64: negative and NaN are 0, and anything from
// 2^64 up is the largest u64 (converting it would be undefined behaviour).
uint64_t U(double v) {
  if (!(v > 0)) return 0;
  if (v >= 18446744073709551616.0) return UINT64_MAX;
  return uint64_t(v);
}

Napi::Value Result(Napi::Env env, const IngestError& e, Napi::Value framed, Napi::Value recs, const FrameResult* r) {
  Napi::Array a = Napi::Array::New(env, 8);
  a.Set(0u, e.failed() ? Napi::Value(Napi::String::New(env, e.code)) : env.Null());
  a.Set(1u, Napi::String::New(env, e.message));
  a.Set(2u, framed);
  a.Set(3u, recs);
  a.Set(4u, Napi::Number::New(env, r ? double(r->records) : 0));
  a.Set(5u, Napi::Number::New(env, r ? double(r->marks) : 0));
  if (r && r->pending_mark) {
    a.Set(6u, Napi::Buffer<uint8_t>::Copy(env, r->pending_mark, r->pending_mark_length));
    a.Set(7u, Napi::String::New(env, r->pending_mark_at));
  } else {
    a.Set(6u, env.Null());
    a.Set(7u, Napi::String::New(env, ""));
  }
  return a;
}

// The call's arguments, checked; false (with a JavaScript exception pending) when they are wrong.
bool ParseArgs(const Napi::CallbackInfo& info, BatchEncoding* enc, BatchDecl* d) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsBuffer() || !info[1].IsTypedArray() || !info[3].IsString() ||
      !(info[2].IsBuffer() || info[2].IsNull())) {
    Napi::TypeError::New(env, "frameBatch(payload, nums, checksum, where) expects a Buffer, a Float64Array, a Buffer or null, a string")
        .ThrowAsJavaScriptException();
    return false;
  }
  auto arr = info[1].As<Napi::TypedArray>();
  if (arr.TypedArrayType() != napi_float64_array || arr.ElementLength() < kArgs) {
    Napi::TypeError::New(env, "frameBatch: nums must be a Float64Array of " + std::to_string(int(kArgs)) + " numbers")
        .ThrowAsJavaScriptException();
    return false;
  }
  auto nums = arr.As<Napi::Float64Array>();
  enc->compression = int(nums[kCompression]);
  enc->raw_length = U(nums[kRawLength]);
  if (info[2].IsBuffer()) {
    auto sum = info[2].As<Napi::Buffer<uint8_t>>();
    if (sum.Length() != 8) {
      Napi::TypeError::New(env, "frameBatch: the checksum is 8 bytes").ThrowAsJavaScriptException();
      return false;
    }
    enc->checksum = sum.Data();
  }
  d->first_seq = U(nums[kFirstSeq]);
  d->last_seq = U(nums[kLastSeq]);
  d->record_count = U(nums[kRecordCount]);
  d->last_accepted_seq = U(nums[kLastAccepted]);
  d->size_sectors = U(nums[kSizeSectors]);
  d->app_bytes = U(nums[kAppBytes]);
  d->changed_bytes = U(nums[kChangedBytes]);
  d->wire_bytes = U(nums[kWireBytes]);
  d->wall_ms = U(nums[kWallMs]);
  d->where = info[3].As<Napi::String>();
  return true;
}

// The reused buffer `into` when it is exactly the framed size.
bool IntoFits(const Napi::CallbackInfo& info, size_t size) {
  return info.Length() > 4 && info[4].IsBuffer() && info[4].As<Napi::Buffer<uint8_t>>().Length() == size;
}

Napi::Value FrameBatchJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  BatchEncoding enc;
  BatchDecl d;
  if (!ParseArgs(info, &enc, &d)) return env.Undefined();
  auto payload = info[0].As<Napi::Buffer<uint8_t>>();
  IngestError err;
  const uint8_t* raw = nullptr;
  if (!tidemark::DecodeBatchPayload(payload.Data(), payload.Length(), enc, d, &g_scratch, &raw, &err) ||
      !tidemark::CheckBatchDecl(size_t(enc.raw_length), d, &err)) {
    return Result(env, err, env.Null(), env.Null(), nullptr);
  }
  const size_t size = tidemark::FramedSize(size_t(enc.raw_length), d.record_count);
  Napi::Buffer<uint8_t> framed;
  if (IntoFits(info, size)) {
    framed = info[4].As<Napi::Buffer<uint8_t>>();
  } else {
    framed = Napi::Buffer<uint8_t>::New(env, size);
  }
  auto recs = Napi::Float64Array::New(env, size_t(d.record_count) * tidemark::kCheckedStride);
  FrameResult r;
  tidemark::FrameBatch(raw, size_t(enc.raw_length), d, framed.Data(), recs.Data(), &r);
  return Result(env, r.error, framed, recs, &r);
}

// frameBatchAsync: the same work on a pool thread. The JavaScript buffers
// are held by references (not copied) until the result is delivered; a
// framed buffer is made on the pool only when no `into` fits, and copied
// into a Buffer on the main thread then.
class FrameWorker : public Napi::AsyncWorker {
 public:
  FrameWorker(const Napi::CallbackInfo& info, const BatchEncoding& enc, const BatchDecl& d)
      : Napi::AsyncWorker(info.Env()), deferred_(Napi::Promise::Deferred::New(info.Env())), enc_(enc), d_(d) {
    auto payload = info[0].As<Napi::Buffer<uint8_t>>();
    payload_ = payload.Data();
    payload_length_ = payload.Length();
    payload_ref_ = Napi::Persistent(info[0].As<Napi::Object>());
    if (enc.checksum) {
      std::memcpy(checksum_, enc.checksum, 8);
      enc_.checksum = checksum_;
    }
    if (info.Length() > 4 && info[4].IsBuffer()) {
      auto into = info[4].As<Napi::Buffer<uint8_t>>();
      into_ = into.Data();
      into_length_ = into.Length();
      into_ref_ = Napi::Persistent(info[4].As<Napi::Object>());
    }
  }

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    const uint8_t* raw = nullptr;
    if (!tidemark::DecodeBatchPayload(payload_, payload_length_, enc_, d_, &g_scratch, &raw, &err_) ||
        !tidemark::CheckBatchDecl(size_t(enc_.raw_length), d_, &err_)) {
      return;
    }
    checked_ = true;
    const size_t size = tidemark::FramedSize(size_t(enc_.raw_length), d_.record_count);
    uint8_t* out = into_;
    if (!out || into_length_ != size) {
      own_.resize(size);
      out = own_.data();
      into_ = nullptr;
    }
    recs_.resize(size_t(d_.record_count) * tidemark::kCheckedStride);
    tidemark::FrameBatch(raw, size_t(enc_.raw_length), d_, out, recs_.data(), &r_);
    // The pending mark points into raw, which may be this thread's scratch buffer.
    if (r_.pending_mark) {
      mark_.assign(r_.pending_mark, r_.pending_mark + r_.pending_mark_length);
      r_.pending_mark = mark_.data();
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (!checked_) {
      deferred_.Resolve(Result(env, err_, env.Null(), env.Null(), nullptr));
      return;
    }
    Napi::Value framed = into_ ? into_ref_.Value() : Napi::Value(Napi::Buffer<uint8_t>::Copy(env, own_.data(), own_.size()));
    auto recs = Napi::Float64Array::New(env, recs_.size());
    if (!recs_.empty()) std::memcpy(recs.Data(), recs_.data(), recs_.size() * sizeof(double));
    deferred_.Resolve(Result(env, r_.error, framed, recs, &r_));
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  BatchEncoding enc_;
  BatchDecl d_;
  uint8_t checksum_[8] = {};
  const uint8_t* payload_ = nullptr;
  size_t payload_length_ = 0;
  Napi::ObjectReference payload_ref_;
  uint8_t* into_ = nullptr;
  size_t into_length_ = 0;
  Napi::ObjectReference into_ref_;
  IngestError err_;
  bool checked_ = false;
  std::vector<uint8_t> own_;
  std::vector<double> recs_;
  std::vector<uint8_t> mark_;
  FrameResult r_;
};

Napi::Value FrameBatchAsyncJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  BatchEncoding enc;
  BatchDecl d;
  if (!ParseArgs(info, &enc, &d)) return env.Undefined();
  auto* w = new FrameWorker(info, enc, d);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

Napi::Object FrameLayout(Napi::Env env) {
  auto num = [&](double v) { return Napi::Number::New(env, v); };
  Napi::Object o = Napi::Object::New(env);
  o.Set("frameHeaderSize", num(tidemark::kFrameHeaderSize));
  o.Set("commitBodySize", num(tidemark::kCommitBodySize));
  o.Set("frameChange", num(tidemark::kFrameChange));
  o.Set("frameCommit", num(tidemark::kFrameCommit));
  o.Set("checkedStride", num(tidemark::kCheckedStride));
  Napi::Object f = Napi::Object::New(env);
  f.Set("seq", num(tidemark::kCheckedSeq));
  f.Set("sector", num(tidemark::kCheckedSector));
  f.Set("count", num(tidemark::kCheckedCount));
  f.Set("kind", num(tidemark::kCheckedKind));
  f.Set("offset", num(tidemark::kCheckedOffset));
  o.Set("checkedFields", f);
  o.Set("args", num(kArgs));
  return o;
}

}  // namespace

void InitIngest(Napi::Env env, Napi::Object exports) {
  exports.Set("frameBatch", Napi::Function::New(env, FrameBatchJs, "frameBatch"));
  exports.Set("frameBatchAsync", Napi::Function::New(env, FrameBatchAsyncJs, "frameBatchAsync"));
  exports.Set("journalFrameLayout", FrameLayout(env));
}
