// The Node boundary: one class, few and cheap crossings (classic-level's
// binding.cc is the model). Records cross a batch at a time as one Buffer;
// events (log lines, "records are available") come back through one
// thread-safe function that never blocks the thread calling it.
#include <napi.h>

#include <atomic>
#include <memory>

#include "addon_util.h"
#include "dirty_map.h"
#include "record.h"
#include "tap.h"

void InitView(Napi::Env env, Napi::Object exports);  // view_addon.cc: class NativeView
void InitIo(Napi::Env env, Napi::Object exports);    // io_addon.cc: readBatch
void InitApplianceNbd(Napi::Env env, Napi::Object exports);  // appliance_nbd_addon.cc: PointMap, ApplianceExport, ApplianceNbd
void InitCopy(Napi::Env env, Napi::Object exports);  // copy_addon.cc: class NativeNbdCopy
void InitIngest(Napi::Env env, Napi::Object exports);  // ingest_addon.cc: frameBatch, journalFrameLayout
void InitScan(Napi::Env env, Napi::Object exports);    // scan_addon.cc: NativeMicroScan, scanEncodeLayout
void InitJournalAppend(Napi::Env env, Napi::Object exports);  // journal_append_addon.cc: JournalAppender

namespace {

using tidemark::Tap;
using tidemark::TapConfig;
using tidemark::Volume;

enum EventType { kEventLog = 0, kEventReadable = 1 };

struct Event {
  int type;
  int volume;
  int level;
  std::string message;
};

void CallEvent(Napi::Env env, Napi::Function fn, std::nullptr_t*, Event* e) {
  if (env != nullptr && fn != nullptr) {
    fn.Call({Napi::Number::New(env, e->type), Napi::Number::New(env, e->volume), Napi::Number::New(env, e->level),
             Napi::String::New(env, e->message)});
  }
  delete e;
}

using EventFn = Napi::TypedThreadSafeFunction<std::nullptr_t, Event, CallEvent>;

using tidemark_addon::Fail;

class NativeTap : public Napi::ObjectWrap<NativeTap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "NativeTap",
                       {InstanceMethod("pull", &NativeTap::Pull), InstanceMethod("ack", &NativeTap::Ack),
                        InstanceMethod("mark", &NativeTap::Mark), InstanceMethod("dirty", &NativeTap::Dirty),
                        InstanceMethod("read", &NativeTap::Read), InstanceMethod("stats", &NativeTap::Stats),
                        InstanceMethod("close", &NativeTap::Close),
                        InstanceMethod("stopServing", &NativeTap::StopServing), InstanceMethod("tcpPort", &NativeTap::TcpPort),
                        InstanceMethod("droppedEvents", &NativeTap::DroppedEvents),
                        InstanceMethod("listenerStats", &NativeTap::ListenerStats),
                        InstanceMethod("resyncFrom", &NativeTap::ResyncFrom),
                        InstanceMethod("raiseSeq", &NativeTap::RaiseSeq),
                        InstanceMethod("timemark", &NativeTap::TimeMark)});
  }

  // new NativeTap(config, onEvent(type, volume, level, message))
  explicit NativeTap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeTap>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsFunction()) {
      Fail(env, "TAP_INVALID_ARGUMENT", "NativeTap(config, onEvent) expects an object and a function")
          .ThrowAsJavaScriptException();
      return;
    }
    Napi::Object o = info[0].As<Napi::Object>();
    TapConfig c;
    c.state_dir = o.Get("stateDir").As<Napi::String>();
    c.buffer_bytes = size_t(o.Get("bufferBytes").As<Napi::Number>().Int64Value());
    if (o.Get("congestionWaitMs").IsNumber()) c.congestion_wait_ms = o.Get("congestionWaitMs").As<Napi::Number>().Uint32Value();
    if (o.Get("unix").IsString()) c.unix_path = o.Get("unix").As<Napi::String>();
    if (o.Get("tcpHost").IsString()) {
      c.tcp_host = o.Get("tcpHost").As<Napi::String>();
      c.tcp_port = o.Get("tcpPort").As<Napi::Number>().Int32Value();
    }
    {
      std::string tls_error;
      if (!tidemark_addon::NbdServerOptionsFrom(o, &c.nbd, &tls_error)) {
        Fail(env, "TLS_FILE", tls_error).ThrowAsJavaScriptException();
        return;
      }
    }
    Napi::Array vols = o.Get("volumes").As<Napi::Array>();
    for (uint32_t i = 0; i < vols.Length(); i++) {
      Napi::Object v = vols.Get(i).As<Napi::Object>();
      tidemark::TapVolumeConfig vc;
      vc.name = v.Get("name").As<Napi::String>();
      vc.path = v.Get("path").As<Napi::String>();
      if (v.Get("group").IsString()) vc.group = v.Get("group").As<Napi::String>();
      vc.read_only = v.Get("readOnly").ToBoolean();
      if (v.Get("seqFloor").IsNumber()) vc.seq_floor = uint64_t(v.Get("seqFloor").As<Napi::Number>().Int64Value());
      c.volumes.push_back(vc);
    }
    events_ = EventFn::New(env, info[1].As<Napi::Function>(), "tidemark-tap-events", 4096, 1);
    auto* self = this;
    tap_ = std::make_unique<Tap>([self](int level, const std::string& msg) { self->Emit(kEventLog, -1, level, msg); });
    std::string error;
    if (!tap_->Open(c, &error)) {
      tap_.reset();
      events_.Release();
      closed_ = true;
      Fail(env, "TAP_OPEN_FAILED", error).ThrowAsJavaScriptException();
      return;
    }
    for (size_t i = 0; i < tap_->volume_count(); i++) {
      tap_->volume(i)->SetReadable([self, i] { self->Emit(kEventReadable, int(i), 0, std::string()); });
    }
  }

  ~NativeTap() override {
    if (tap_) tap_->Close();
  }

  void Emit(int type, int volume, int level, const std::string& message) {
    if (events_released_.load()) return;
    auto* e = new Event{type, volume, level, message};
    if (events_.NonBlockingCall(e) != napi_ok) {
      delete e;
      dropped_events_++;
    }
  }

 private:
  Volume* Vol(const Napi::CallbackInfo& info) {
    if (closed_ || !tap_) {
      Fail(info.Env(), "TAP_CLOSED", "the tap is closed").ThrowAsJavaScriptException();
      return nullptr;
    }
    if (info.Length() < 1 || !info[0].IsNumber()) {
      Fail(info.Env(), "TAP_INVALID_ARGUMENT", "volume index must be a number").ThrowAsJavaScriptException();
      return nullptr;
    }
    const int64_t i = info[0].As<Napi::Number>().Int64Value();
    if (i < 0 || size_t(i) >= tap_->volume_count()) {
      Fail(info.Env(), "TAP_INVALID_ARGUMENT", "no volume with index " + std::to_string(i))
          .ThrowAsJavaScriptException();
      return nullptr;
    }
    return tap_->volume(size_t(i));
  }

  // pull(volume, maxBytes[, into]) -> Buffer | number | undefined. With
  // `into`, records that fit go there and the byte count is returned: a
  // consumer that is done with a batch before its next pull allocates
  // nothing per batch (a new Buffer per 4 MiB batch kept V8's collector busy:
  // 75% of the agent's CPU samples under 1 MiB sequential writes at 1 GB/s,
  // benchmarks/tap-overhead.ts with TIDEMARK_BENCH_PROFILE=1).
  Napi::Value Pull(const Napi::CallbackInfo& info) {
    Volume* v = Vol(info);
    if (!v) return info.Env().Undefined();
    const size_t max = size_t(info[1].As<Napi::Number>().Int64Value());
    Napi::Env env = info.Env();
    Napi::Value result = env.Undefined();
    const bool have_into = info.Length() > 2 && info[2].IsBuffer();
    Napi::Buffer<uint8_t> into = have_into ? info[2].As<Napi::Buffer<uint8_t>>() : Napi::Buffer<uint8_t>();
    v->Pull(max, [&](size_t n) {
      if (have_into && n <= into.Length()) {
        result = Napi::Number::New(env, double(n));
        return into.Data();
      }
      auto b = Napi::Buffer<uint8_t>::New(env, n);
      result = b;
      return b.Data();
    });
    return result;
  }

  Napi::Value Ack(const Napi::CallbackInfo& info) {
    Volume* v = Vol(info);
    if (v) v->Ack(uint64_t(info[1].As<Napi::Number>().Int64Value()));
    return info.Env().Undefined();
  }

  // resyncFrom(volume, region) -> number of regions newly marked stale
  Napi::Value ResyncFrom(const Napi::CallbackInfo& info) {
    Volume* v = Vol(info);
    if (!v) return info.Env().Undefined();
    if (info.Length() < 2 || !info[1].IsNumber() || info[1].As<Napi::Number>().Int64Value() < 0) {
      Fail(info.Env(), "TAP_INVALID_ARGUMENT", "resyncFrom(volume, region) needs a region number")
          .ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    const uint64_t r = uint64_t(info[1].As<Napi::Number>().Int64Value());
    return Napi::Number::New(info.Env(), double(v->ResyncFrom(r)));
  }

  // raiseSeq(volume, floor): never hand out a seq at or below floor (shared by the volume's group)
  Napi::Value RaiseSeq(const Napi::CallbackInfo& info) {
    Volume* v = Vol(info);
    if (!v) return info.Env().Undefined();
    if (info.Length() < 2 || !info[1].IsNumber() || info[1].As<Napi::Number>().Int64Value() < 0) {
      Fail(info.Env(), "TAP_INVALID_ARGUMENT", "raiseSeq(volume, floor) needs a seq").ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    v->RaiseSeq(uint64_t(info[1].As<Napi::Number>().Int64Value()));
    return info.Env().Undefined();
  }

  Napi::Value Mark(const Napi::CallbackInfo& info) {
    Volume* v = Vol(info);
    if (!v) return info.Env().Undefined();
    return Napi::Number::New(info.Env(), double(v->Mark()));
  }

  // timemark(volumes: number[], metadata: Buffer) -> seq; throws TAP_MARK_REFUSED with the reason
  Napi::Value TimeMark(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (closed_ || !tap_) {
      Fail(env, "TAP_CLOSED", "the tap is closed").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (info.Length() < 2 || !info[0].IsArray() || !info[1].IsBuffer()) {
      Fail(env, "TAP_INVALID_ARGUMENT", "timemark(volumes, metadata) expects an array and a Buffer").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    Napi::Array a = info[0].As<Napi::Array>();
    std::vector<size_t> vols;
    for (uint32_t i = 0; i < a.Length(); i++) {
      Napi::Value x = a.Get(i);
      const int64_t k = x.IsNumber() ? x.As<Napi::Number>().Int64Value() : -1;
      if (k < 0 || size_t(k) >= tap_->volume_count()) {
        Fail(env, "TAP_INVALID_ARGUMENT", "no volume with index " + std::to_string(k)).ThrowAsJavaScriptException();
        return env.Undefined();
      }
      vols.push_back(size_t(k));
    }
    auto data = info[1].As<Napi::Buffer<uint8_t>>();
    uint64_t seq = 0;
    std::string error;
    if (!tap_->Mark(vols, data.Data(), data.Length(), &seq, &error)) {
      Fail(env, "TAP_MARK_REFUSED", error).ThrowAsJavaScriptException();
      return env.Undefined();
    }
    return Napi::Number::New(env, double(seq));
  }

  // dirty(volume) -> Buffer: the dirty bitmap, one bit per 64 KiB region (LSB first)
  Napi::Value Dirty(const Napi::CallbackInfo& info) {
    Volume* v = Vol(info);
    if (!v) return info.Env().Undefined();
    std::vector<uint8_t> bits = v->DirtyBitmap();
    return Napi::Buffer<uint8_t>::Copy(info.Env(), bits.data(), bits.size());
  }

  class ReadWorker : public Napi::AsyncWorker {
   public:
    ReadWorker(Napi::Env env, Volume* v, uint64_t off, uint32_t len, Napi::ObjectReference keep)
        : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), v_(v), off_(off), buf_(len),
          keep_(std::move(keep)) {}
    void Execute() override { err_ = v_->Read(off_, uint32_t(buf_.size()), buf_.data()); }
    void OnOK() override {
      Napi::Env env = Env();
      if (err_) {
        deferred_.Reject(Fail(env, "TAP_IO_ERROR", "read of volume " + v_->name() + " failed").Value());
      } else {
        deferred_.Resolve(Napi::Buffer<uint8_t>::Copy(env, buf_.data(), buf_.size()));
      }
    }
    Napi::Promise Promise() { return deferred_.Promise(); }

   private:
    Napi::Promise::Deferred deferred_;
    Volume* v_;
    uint64_t off_;
    std::vector<uint8_t> buf_;
    uint32_t err_ = 0;
    Napi::ObjectReference keep_;
  };

  // read(volume, offset, length) -> Promise<Buffer>
  Napi::Value Read(const Napi::CallbackInfo& info) {
    Volume* v = Vol(info);
    if (!v) return info.Env().Undefined();
    const int64_t off = info[1].As<Napi::Number>().Int64Value();
    const int64_t len = info[2].As<Napi::Number>().Int64Value();
    if (off < 0 || len <= 0 || len > (32 << 20) || uint64_t(off + len) > v->size()) {
      Fail(info.Env(), "TAP_INVALID_ARGUMENT", "read of volume " + v->name() + " at " + std::to_string(off) +
                                                   "+" + std::to_string(len) + " is outside the volume (" +
                                                   std::to_string(v->size()) + " bytes) or over 32 MiB")
          .ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    auto* w = new ReadWorker(info.Env(), v, uint64_t(off), uint32_t(len), Napi::Persistent(Value()));
    w->Queue();
    return w->Promise();
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Array out = Napi::Array::New(env);
    if (!tap_) return out;
    for (size_t i = 0; i < tap_->volume_count(); i++) {
      Volume* v = tap_->volume(i);
      const tidemark::VolumeStats s = v->Stats();
      Napi::Object o = Napi::Object::New(env);
      auto n = [&](const char* k, uint64_t x) { o.Set(k, Napi::Number::New(env, double(x))); };
      o.Set("name", v->name());
      n("size", v->size());
      n("reads", s.reads);
      n("writes", s.writes);
      n("trims", s.trims);
      n("zeroes", s.zeroes);
      n("flushes", s.flushes);
      n("bytesRead", s.bytes_read);
      n("bytesWritten", s.bytes_written);
      n("records", s.records);
      n("recordBytes", s.record_bytes);
      n("droppedRecords", s.dropped_records);
      n("droppedBytes", s.dropped_bytes);
      n("resyncRecords", s.resync_records);
      n("resyncHoles", s.resync_holes);
      n("writebacks", s.writebacks);
      n("congestionWaits", s.congestion_waits);
      n("congestionWaitMs", s.congestion_wait_ms);
      n("congestionWaiting", s.congestion_waiting);
      n("behindEvents", s.behind_events);
      n("marks", s.marks);
      n("gaps", s.gaps);
      n("rejected", s.rejected);
      n("ioErrors", s.io_errors);
      n("connections", s.connections);
      n("connectionsTotal", s.connections_total);
      n("lastSeq", s.last_seq);
      n("ackedSeq", s.acked_seq);
      n("ringUsed", s.ring_used);
      n("ringCapacity", s.ring_capacity);
      n("ringRecords", s.ring_records);
      n("dirtyRegions", s.dirty_regions);
      n("staleRegions", s.stale_regions);
      n("regions", s.regions);
      n("regionSize", tidemark::kRegionSize);
      n("resyncCursor", s.resync_cursor);
      n("volumeSeq", s.volume_seq);
      o.Set("mode", s.mode == 0 ? "normal" : s.mode == 1 ? "behind" : "resyncing");
      out.Set(uint32_t(i), o);
    }
    return out;
  }

  Napi::Value TcpPort(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), tap_ ? tap_->tcp_port() : 0);
  }
  Napi::Value DroppedEvents(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), double(dropped_events_.load()));
  }
  // The NBD listener's refusals: over the connection cap, past the handshake
  // deadline, bad handshakes.
  Napi::Value ListenerStats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    tidemark::NbdServer* s = tap_ ? tap_->server() : nullptr;
    o.Set("refusedConnections", Napi::Number::New(env, s ? double(s->refused_connections()) : 0));
    o.Set("handshakeTimeouts", Napi::Number::New(env, s ? double(s->handshake_timeouts()) : 0));
    o.Set("rejectedHandshakes", Napi::Number::New(env, s ? double(s->rejected_handshakes()) : 0));
    return o;
  }

  class StopWorker : public Napi::AsyncWorker {
   public:
    StopWorker(Napi::Env env, Tap* t, Napi::ObjectReference keep)
        : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), t_(t), keep_(std::move(keep)) {}
    void Execute() override { t_->StopServing(); }
    void OnOK() override { deferred_.Resolve(Env().Undefined()); }
    Napi::Promise Promise() { return deferred_.Promise(); }

   private:
    Napi::Promise::Deferred deferred_;
    Tap* t_;
    Napi::ObjectReference keep_;
  };

  // stopServing() -> Promise: no new NBD connections; in-flight requests finish.
  Napi::Value StopServing(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (closed_ || !tap_) {
      Fail(env, "TAP_CLOSED", "the tap is closed").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    auto* w = new StopWorker(env, tap_.get(), Napi::Persistent(Value()));
    w->Queue();
    return w->Promise();
  }

  // close() -> Promise: stops listening, waits for in-flight requests.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    return tidemark_addon::CloseOnWorker(
        info.Env(), &closed_, Value(),
        [this] {
          if (tap_) tap_->Close();
        },
        [this] {
          events_released_ = true;
          events_.Release();
        });
  }

  std::unique_ptr<Tap> tap_;
  EventFn events_;
  std::atomic<bool> events_released_{false};
  std::atomic<uint64_t> dropped_events_{0};
  bool closed_ = false;
};

// The change-record layout as this build compiled it (record.h), so that
// test/record-format.test.ts can hold proto/record.ts to it field by field:
// offsets come from offsetof on RecordHeader, never from a second table.
Napi::Object RecordLayout(Napi::Env env) {
  using tidemark::RecordHeader;
  auto num = [&](double v) { return Napi::Number::New(env, v); };
  Napi::Object fields = Napi::Object::New(env);
  fields.Set("seq", num(offsetof(RecordHeader, seq)));
  fields.Set("sector", num(offsetof(RecordHeader, sector)));
  fields.Set("count", num(offsetof(RecordHeader, count)));
  fields.Set("kind", num(offsetof(RecordHeader, kind)));
  fields.Set("flags", num(offsetof(RecordHeader, flags)));
  fields.Set("reserved", num(offsetof(RecordHeader, reserved0)));
  fields.Set("dataLength", num(offsetof(RecordHeader, data_length)));
  fields.Set("time", num(offsetof(RecordHeader, time_ms)));
  Napi::Object sizes = Napi::Object::New(env);
  sizes.Set("seq", num(sizeof(RecordHeader::seq)));
  sizes.Set("sector", num(sizeof(RecordHeader::sector)));
  sizes.Set("count", num(sizeof(RecordHeader::count)));
  sizes.Set("kind", num(sizeof(RecordHeader::kind)));
  sizes.Set("flags", num(sizeof(RecordHeader::flags)));
  sizes.Set("reserved", num(sizeof(RecordHeader::reserved0)));
  sizes.Set("dataLength", num(sizeof(RecordHeader::data_length)));
  sizes.Set("time", num(sizeof(RecordHeader::time_ms)));
  Napi::Object kinds = Napi::Object::New(env);
  kinds.Set("write", num(tidemark::kRecordWrite));
  kinds.Set("trim", num(tidemark::kRecordTrim));
  kinds.Set("zero", num(tidemark::kRecordZero));
  kinds.Set("flush", num(tidemark::kRecordFlush));
  kinds.Set("resync", num(tidemark::kRecordResync));
  kinds.Set("mark", num(tidemark::kRecordMark));
  kinds.Set("gap", num(tidemark::kRecordGap));
  kinds.Set("exact", num(tidemark::kRecordExact));
  Napi::Object flags = Napi::Object::New(env);
  flags.Set("fua", num(tidemark::kRecordFlagFua));
  flags.Set("resync", num(tidemark::kRecordFlagResync));
  Napi::Object o = Napi::Object::New(env);
  o.Set("headerSize", num(sizeof(RecordHeader)));
  o.Set("fields", fields);
  o.Set("fieldSizes", sizes);
  o.Set("kinds", kinds);
  o.Set("flags", flags);
  o.Set("maxMarkData", num(tidemark::kMaxMarkData));
  o.Set("sectorSize", num(tidemark::kSectorSize));
  o.Set("regionSize", num(double(tidemark::kRegionSize)));
  return o;
}

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeTap", NativeTap::Init(env));
  InitView(env, exports);
  InitIo(env, exports);
  InitApplianceNbd(env, exports);
  InitCopy(env, exports);
  InitIngest(env, exports);
  InitScan(env, exports);
  InitJournalAppend(env, exports);
  exports.Set("regionSize", Napi::Number::New(env, double(tidemark::kRegionSize)));
  exports.Set("recordHeaderSize", Napi::Number::New(env, double(tidemark::kRecordHeaderSize)));
  exports.Set("recordLayout", RecordLayout(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(tidemark_native, InitModule)
