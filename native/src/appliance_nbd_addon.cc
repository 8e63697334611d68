// The Node boundary of the appliance's own NBD server (appliance/nbd-exports.ts):
//
//   new ReplicaImage(fd)
//       a volume's replica image (replica_image.h); fd is dup'd.
//       round(pointMap, full, fromFile, fromPos, yieldable) -> Promise<{
//       file, pos, bytes, extents, interrupted }> makes it equal a snapshot
//       of the map taken now, on a worker thread; yieldRound() stops a
//       yieldable one; invalidate(); bytesRead().
//   new PointMap({ path?, size, files: [[file, fd], ...], replica? })
//       a point's map (point_map.h): the map file, if any, and the files it
//       names (segment numbers, -2 the base image), whose fds are dup'd here.
//       apply(extents: Buffer) paints committed extents (the newest point's
//       map), addFile(file, fd), deltaExtents(), read(offset, length) ->
//       Promise<Buffer> (Admin.Read: preads on a worker thread).
//   new ApplianceExport(config, pointMap[, applianceNbd])
//       one export: a View (view.h) in direct mode over a snapshot of the
//       map taken now. config: name, description, size, writable, overlayDir
//       (or overlayPath + overlayMapPath: a durable overlay).
//       stats(), close().
//   new ApplianceNbd({ unix?, tcpHost?, tcpPort?, tlsCert?, tlsKey?, tlsCa? },
//                    onOpen(id, name | null, identity), onLog(level, message))
//       listens (with TLS files: every client must STARTTLS with a
//       certificate the CA signed; identity is its CN, "" without TLS). When
//       a client names an export, its connection thread posts onOpen(id,
//       name, identity) and waits; JavaScript answers answer(id,
//       applianceExport) or refuse(id, reason, message), reason one of
//       unknown, invalid, policy, unavailable. A listing (NBD_OPT_LIST) posts
//       onOpen(id, null, identity), answered with listed(id, [{name,
//       description}]). tcpPort(), rejectedHandshakes(), close() -> Promise.
// Requests never cross into JavaScript: a read is a binary search in the map
// and a pread, on the connection's thread.
#include <napi.h>

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "addon_util.h"
#include "export_set.h"
#include "nbd_proto.h"
#include "nbd_server.h"
#include "point_map.h"
#include "replica_image.h"
#include "view.h"

namespace {

using tidemark_addon::Fail;

// How long a connection waits for JavaScript to resolve an export name.
constexpr auto kOpenTimeout = std::chrono::seconds(60);

class PointMap;

// ------------------------------------------------------------ ReplicaImage

class ReplicaImage : public Napi::ObjectWrap<ReplicaImage> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "ReplicaImage",
                       {InstanceMethod("round", &ReplicaImage::Round), InstanceMethod("yieldRound", &ReplicaImage::YieldRound),
                        InstanceMethod("invalidate", &ReplicaImage::Invalidate),
                        InstanceMethod("bytesRead", &ReplicaImage::BytesRead)});
  }
  static Napi::FunctionReference* ctor;

  explicit ReplicaImage(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ReplicaImage>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsNumber()) {
      Fail(env, "MAP_INVALID_ARGUMENT", "ReplicaImage(fd) expects a file descriptor").ThrowAsJavaScriptException();
      return;
    }
    const int fd = fcntl(info[0].As<Napi::Number>().Int32Value(), F_DUPFD_CLOEXEC, 0);
    if (fd < 0) {
      Fail(env, "MAP_OPEN_FAILED", std::string("cannot hold the replica image open: ") + std::strerror(errno))
          .ThrowAsJavaScriptException();
      return;
    }
    image_ = std::make_shared<tidemark::ReplicaImage>(fd);
  }

  std::shared_ptr<tidemark::ReplicaImage> image() const { return image_; }

 private:
  class RoundWorker : public Napi::AsyncWorker {
   public:
    RoundWorker(Napi::Env env, std::shared_ptr<tidemark::ReplicaImage> image, std::shared_ptr<const tidemark::PointReader> live,
                bool full, tidemark::JournalLoc from, bool yieldable)
        : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), image_(std::move(image)), live_(std::move(live)),
          full_(full), from_(from), yieldable_(yieldable) {}
    Napi::Promise Promise() { return deferred_.Promise(); }
    void Execute() override {
      std::string error;
      if (!image_->Round(live_, full_, from_, yieldable_, &r_, &error)) SetError(error);
    }
    void OnOK() override {
      Napi::Object o = Napi::Object::New(Env());
      o.Set("file", Napi::Number::New(Env(), r_.newest.file));
      o.Set("pos", Napi::Number::New(Env(), double(r_.newest.pos)));
      o.Set("bytes", Napi::Number::New(Env(), double(r_.bytes)));
      o.Set("extents", Napi::Number::New(Env(), double(r_.extents)));
      o.Set("interrupted", Napi::Boolean::New(Env(), r_.interrupted));
      deferred_.Resolve(o);
    }
    void OnError(const Napi::Error& e) override {
      e.Set("code", Napi::String::New(Env(), "REPLICA_IO"));
      deferred_.Reject(e.Value());
    }

   private:
    Napi::Promise::Deferred deferred_;
    std::shared_ptr<tidemark::ReplicaImage> image_;
    std::shared_ptr<const tidemark::PointReader> live_;
    bool full_;
    tidemark::JournalLoc from_;
    bool yieldable_;
    tidemark::RoundResult r_;
  };

  Napi::Value Round(const Napi::CallbackInfo& info);

  Napi::Value YieldRound(const Napi::CallbackInfo& info) {
    image_->Yield();
    return info.Env().Undefined();
  }

  Napi::Value Invalidate(const Napi::CallbackInfo& info) {
    image_->Invalidate();
    return info.Env().Undefined();
  }

  Napi::Value BytesRead(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), double(image_->bytes_read())); }

  std::shared_ptr<tidemark::ReplicaImage> image_;
};
Napi::FunctionReference* ReplicaImage::ctor = nullptr;

// ---------------------------------------------------------------- PointMap

class PointMap : public Napi::ObjectWrap<PointMap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "PointMap",
                       {InstanceMethod("apply", &PointMap::Apply), InstanceMethod("addFile", &PointMap::AddFile),
                        InstanceMethod("deltaExtents", &PointMap::DeltaExtents), InstanceMethod("read", &PointMap::Read),
                        InstanceMethod("fingerprints", &PointMap::Fingerprints)});
  }
  static Napi::FunctionReference* ctor;

  explicit PointMap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<PointMap>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) {
      Fail(env, "MAP_INVALID_ARGUMENT", "PointMap(config) expects an object").ThrowAsJavaScriptException();
      return;
    }
    Napi::Object o = info[0].As<Napi::Object>();
    if (!o.Get("size").IsNumber() || !o.Get("files").IsArray()) {
      Fail(env, "MAP_INVALID_ARGUMENT", "PointMap config needs size (number) and files (array)").ThrowAsJavaScriptException();
      return;
    }
    const uint64_t size = uint64_t(o.Get("size").As<Napi::Number>().Int64Value());
    std::shared_ptr<const tidemark::ExtentArray> base;
    if (o.Get("path").IsString()) {
      std::string error;
      base = tidemark::MappedExtents::Open(o.Get("path").As<Napi::String>(), &error);
      if (!base) {
        Fail(env, "MAP_OPEN_FAILED", error).ThrowAsJavaScriptException();
        return;
      }
    }
    tidemark::FileTable files;
    Napi::Array fa = o.Get("files").As<Napi::Array>();
    for (uint32_t i = 0; i < fa.Length(); i++) {
      Napi::Value e = fa.Get(i);
      int32_t file = 0;
      int fd = -1;
      if (!FileArg(e, &file, &fd)) {
        Fail(env, "MAP_INVALID_ARGUMENT", "PointMap files are [file, fd] pairs").ThrowAsJavaScriptException();
        return;
      }
      const int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
      if (dup_fd < 0) {
        Fail(env, "MAP_OPEN_FAILED", "cannot hold file " + std::to_string(file) + " open: " + std::strerror(errno))
            .ThrowAsJavaScriptException();
        return;
      }
      files[file] = std::make_shared<tidemark::MapFile>(dup_fd);
    }
    map_ = std::make_shared<tidemark::LiveMap>(base, std::move(files), size);
    Napi::Value replica = o.Get("replica");
    if (replica.IsObject() && replica.As<Napi::Object>().InstanceOf(ReplicaImage::ctor->Value())) {
      map_->SetReplica(ReplicaImage::Unwrap(replica.As<Napi::Object>())->image());
    }
  }

  std::shared_ptr<tidemark::LiveMap> map() const { return map_; }

 private:
  static bool FileArg(Napi::Value e, int32_t* file, int* fd) {
    if (!e.IsArray()) return false;
    Napi::Array p = e.As<Napi::Array>();
    if (p.Length() != 2 || !p.Get(uint32_t(0)).IsNumber() || !p.Get(uint32_t(1)).IsNumber()) return false;
    *file = p.Get(uint32_t(0)).As<Napi::Number>().Int32Value();
    *fd = p.Get(uint32_t(1)).As<Napi::Number>().Int32Value();
    return *fd >= 0;
  }

  Napi::Value Apply(const Napi::CallbackInfo& info) {
    if (info.Length() < 1 || !info[0].IsBuffer() ||
        info[0].As<Napi::Buffer<uint8_t>>().Length() % sizeof(tidemark::MapExtent) != 0) {
      Fail(info.Env(), "MAP_INVALID_ARGUMENT", "apply(extents) needs a Buffer of 24-byte extents").ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    auto b = info[0].As<Napi::Buffer<uint8_t>>();
    std::vector<tidemark::MapExtent> v(b.Length() / sizeof(tidemark::MapExtent));
    if (!v.empty()) std::memcpy(v.data(), b.Data(), b.Length());  // the Buffer may be unaligned
    map_->Apply(v.data(), v.size());
    return info.Env().Undefined();
  }

  Napi::Value AddFile(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int32_t file = 0;
    int fd = -1;
    if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) {
      Fail(env, "MAP_INVALID_ARGUMENT", "addFile(file, fd) needs two numbers").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    file = info[0].As<Napi::Number>().Int32Value();
    fd = info[1].As<Napi::Number>().Int32Value();
    const int dup_fd = fd < 0 ? -1 : fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup_fd < 0) {
      Fail(env, "MAP_OPEN_FAILED", "cannot hold file " + std::to_string(file) + " open: " + std::strerror(errno))
          .ThrowAsJavaScriptException();
      return env.Undefined();
    }
    map_->AddFile(file, dup_fd);
    return env.Undefined();
  }

  Napi::Value DeltaExtents(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), double(map_->delta_extents()));
  }

  // Bytes made from a point on a worker thread (a read, or its fingerprints),
  // handed to JavaScript as a Buffer without a copy: the Buffer frees them.
  class PointBytesWorker : public Napi::AsyncWorker {
   public:
    PointBytesWorker(Napi::Env env, std::shared_ptr<tidemark::PointReader> r, size_t bytes)
        : Napi::AsyncWorker(env), r_(std::move(r)), out_(new std::vector<uint8_t>(bytes)),
          deferred_(Napi::Promise::Deferred::New(env)) {}
    ~PointBytesWorker() override { delete out_; }
    Napi::Promise Promise() { return deferred_.Promise(); }
    void OnOK() override {
      std::vector<uint8_t>* v = out_;
      out_ = nullptr;
      deferred_.Resolve(Napi::Buffer<uint8_t>::New(Env(), v->data(), v->size(), [](Napi::Env, uint8_t*, std::vector<uint8_t>* p) { delete p; }, v));
    }
    void OnError(const Napi::Error& e) override {
      e.Set("code", Napi::String::New(Env(), "JOURNAL_IO"));
      deferred_.Reject(e.Value());
    }

   protected:
    std::shared_ptr<tidemark::PointReader> r_;
    std::vector<uint8_t>* out_;

   private:
    Napi::Promise::Deferred deferred_;
  };

  class ReadWorker : public PointBytesWorker {
   public:
    ReadWorker(Napi::Env env, std::shared_ptr<tidemark::PointReader> r, uint64_t offset, uint64_t length)
        : PointBytesWorker(env, std::move(r), length), offset_(offset) {}
    void Execute() override {
      std::string error;
      if (!r_->Read(offset_, out_->size(), out_->data(), &error)) SetError(error);
    }

   private:
    uint64_t offset_;
  };

  // read(offset, length) -> Promise<Buffer>; the caller checked the range.
  Napi::Value Read(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) {
      Fail(env, "MAP_INVALID_ARGUMENT", "read(offset, length) needs two numbers").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    auto* w = new ReadWorker(env, map_->Snapshot(), uint64_t(info[0].As<Napi::Number>().Int64Value()),
                             uint64_t(info[1].As<Napi::Number>().Int64Value()));
    w->Queue();
    return w->Promise();
  }

  // Per-sector fingerprints of byte ranges of the point, computed where the
  // bytes are read: a resync asks for hundreds of regions a second, and
  // reading and hashing them on a worker thread keeps both off the event loop.
  class FingerprintWorker : public PointBytesWorker {
   public:
    FingerprintWorker(Napi::Env env, std::shared_ptr<tidemark::PointReader> r, std::vector<uint64_t> ranges, size_t out_bytes)
        : PointBytesWorker(env, std::move(r), out_bytes), ranges_(std::move(ranges)) {}
    void Execute() override {
      std::string error;
      uint8_t* at = out_->data();
      std::vector<uint8_t> scratch;  // one read window for every range of the request
      for (size_t i = 0; i < ranges_.size(); i += 2) {
        if (!r_->Fingerprints(ranges_[i], ranges_[i + 1], at, &scratch, &error)) {
          SetError(error);
          return;
        }
        at += ranges_[i + 1] / tidemark::kMapSector * 8;
      }
    }

   private:
    std::vector<uint64_t> ranges_;
  };

  // fingerprints(ranges) -> Promise<Buffer>: ranges is a Float64Array of
  // (offset, length) pairs, whole sectors inside the volume (the caller
  // checked); the Buffer holds 8 little-endian bytes per sector, in order.
  Napi::Value Fingerprints(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array ||
        info[0].As<Napi::TypedArray>().ElementLength() % 2 != 0) {
      Fail(env, "MAP_INVALID_ARGUMENT", "fingerprints(ranges) needs a Float64Array of (offset, length) pairs").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    Napi::Float64Array a = info[0].As<Napi::Float64Array>();
    std::vector<uint64_t> ranges(a.ElementLength());
    size_t out_bytes = 0;
    for (size_t i = 0; i < ranges.size(); i++) {
      const double d = a[i];
      if (!(d >= 0) || d > 9007199254740991.0 || (i % 2 == 1 && uint64_t(d) % tidemark::kMapSector != 0)) {
        Fail(env, "MAP_INVALID_ARGUMENT", "fingerprints(ranges): a range is negative, too large or not whole sectors").ThrowAsJavaScriptException();
        return env.Undefined();
      }
      ranges[i] = uint64_t(d);
      if (i % 2 == 1) out_bytes += ranges[i] / tidemark::kMapSector * 8;
    }
    auto* w = new FingerprintWorker(env, map_->Snapshot(), std::move(ranges), out_bytes);
    w->Queue();
    return w->Promise();
  }

  std::shared_ptr<tidemark::LiveMap> map_;
};
Napi::FunctionReference* PointMap::ctor = nullptr;

// round(pointMap, full, fromFile, fromPos, yieldable): the snapshot is taken now, on the
// JavaScript thread, so it is the map as the caller sees it.
Napi::Value ReplicaImage::Round(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsObject() || !info[0].As<Napi::Object>().InstanceOf(PointMap::ctor->Value()) ||
      !info[1].IsBoolean() || !info[2].IsNumber() || !info[3].IsNumber() || (info.Length() > 4 && !info[4].IsBoolean())) {
    Fail(env, "MAP_INVALID_ARGUMENT",
         "round(pointMap, full, fromFile, fromPos, yieldable) expects a PointMap, a boolean, two numbers and a boolean")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const tidemark::JournalLoc from{info[2].As<Napi::Number>().Int32Value(), uint64_t(info[3].As<Napi::Number>().Int64Value())};
  auto* w = new RoundWorker(env, image_, PointMap::Unwrap(info[0].As<Napi::Object>())->map()->Snapshot(),
                            info[1].As<Napi::Boolean>().Value(), from,
                            info.Length() > 4 && info[4].As<Napi::Boolean>().Value());
  w->Queue();
  return w->Promise();
}

// ----------------------------------------------------------- ApplianceNbd

// A question for JavaScript: open `name` (list: false) or list the exports
// (list: true), for a client of `identity` ("" without TLS).
struct OpenEvent {
  uint64_t id;
  bool list;
  std::string name;
  std::string identity;
};
void CallOpen(Napi::Env env, Napi::Function fn, std::nullptr_t*, OpenEvent* e) {
  if (env != nullptr && fn != nullptr) {
    fn.Call({Napi::Number::New(env, double(e->id)), e->list ? env.Null() : Napi::String::New(env, e->name),
             Napi::String::New(env, e->identity)});
  }
  delete e;
}
using OpenTsfn = Napi::TypedThreadSafeFunction<std::nullptr_t, OpenEvent, CallOpen>;

// Export names resolved by JavaScript: a connection thread posts the name
// (or a listing request) and waits for answer(), refuse() or listed() (or a
// timeout, or close).
class JsExports : public tidemark::ExportSet {
 public:
  explicit JsExports(OpenTsfn* tsfn) : tsfn_(tsfn) {}

  std::shared_ptr<tidemark::Export> Open(const std::string& name, const std::string& identity, uint32_t* rep_err,
                                         std::string* why) override {
    Pending p;
    if (!Ask(false, name, identity, &p)) {
      *rep_err = p.rep_err;
      *why = p.why;
      return nullptr;
    }
    if (!p.exp) {
      *rep_err = p.rep_err;
      *why = p.why;
    }
    return p.exp;
  }

  std::vector<tidemark::ExportListing> List(const std::string& identity) override {
    Pending p;
    Ask(true, std::string(), identity, &p);
    return p.listing;
  }

  bool Answer(uint64_t id, std::shared_ptr<tidemark::Export> exp, uint32_t rep_err, const std::string& why) {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = pending_.find(id);
    if (it == pending_.end()) return false;
    Pending* p = it->second;
    pending_.erase(it);
    p->exp = std::move(exp);
    p->rep_err = rep_err;
    p->why = why;
    p->done = true;
    cv_.notify_all();
    return true;
  }

  bool Listed(uint64_t id, std::vector<tidemark::ExportListing> l) {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = pending_.find(id);
    if (it == pending_.end()) return false;
    Pending* p = it->second;
    pending_.erase(it);
    p->listing = std::move(l);
    p->done = true;
    cv_.notify_all();
    return true;
  }

  void Abort() {
    std::lock_guard<std::mutex> lk(mu_);
    aborted_ = true;
    cv_.notify_all();
  }

 private:
  struct Pending {
    bool done = false;
    std::shared_ptr<tidemark::Export> exp;
    std::vector<tidemark::ExportListing> listing;
    uint32_t rep_err = 0;
    std::string why;
  };

  // Posts the question and waits; false (with p->rep_err, p->why) if it got no answer.
  bool Ask(bool list, const std::string& name, const std::string& identity, Pending* p) {
    using tidemark::nbd::kRepErrShutdown;
    uint64_t id;
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (aborted_) {
        p->rep_err = kRepErrShutdown;
        p->why = "the appliance is shutting down";
        return false;
      }
      id = next_id_++;
      pending_[id] = p;
    }
    auto* e = new OpenEvent{id, list, name, identity};
    if (tsfn_->NonBlockingCall(e) != napi_ok) {
      delete e;
      std::lock_guard<std::mutex> lk(mu_);
      pending_.erase(id);
      p->rep_err = kRepErrShutdown;
      p->why = "the appliance is shutting down";
      return false;
    }
    std::unique_lock<std::mutex> lk(mu_);
    const bool answered = cv_.wait_for(lk, kOpenTimeout, [&] { return p->done || aborted_; });
    if (p->done) return true;
    pending_.erase(id);
    p->rep_err = answered ? kRepErrShutdown : tidemark::nbd::kRepErrUnsup;
    p->why = answered ? "the appliance is shutting down" : "the appliance did not resolve the export name in time";
    return false;
  }

  OpenTsfn* tsfn_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::unordered_map<uint64_t, Pending*> pending_;
  uint64_t next_id_ = 1;
  bool aborted_ = false;
};

class ApplianceNbd : public Napi::ObjectWrap<ApplianceNbd> {
 public:
  static Napi::FunctionReference* ctor;
  // Where exports made for this server log (they may outlive it: see LogSink).
  std::shared_ptr<tidemark_addon::LogSink> log() const { return log_; }

  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "ApplianceNbd",
                       {InstanceMethod("answer", &ApplianceNbd::AnswerOpen), InstanceMethod("refuse", &ApplianceNbd::Refuse),
                        InstanceMethod("listed", &ApplianceNbd::ListedExports),
                        InstanceMethod("tcpPort", &ApplianceNbd::TcpPort),
                        InstanceMethod("rejectedHandshakes", &ApplianceNbd::RejectedHandshakes),
                        InstanceMethod("disconnect", &ApplianceNbd::DisconnectExport),
                        InstanceMethod("close", &ApplianceNbd::Close)});
  }

  explicit ApplianceNbd(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ApplianceNbd>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsObject() || !info[1].IsFunction() || !info[2].IsFunction()) {
      Fail(env, "NBD_INVALID_ARGUMENT", "ApplianceNbd(config, onOpen, onLog) expects an object and two functions")
          .ThrowAsJavaScriptException();
      return;
    }
    Napi::Object o = info[0].As<Napi::Object>();
    std::string unix_path, tcp_host;
    int tcp_port = 0;
    if (o.Get("unix").IsString()) unix_path = o.Get("unix").As<Napi::String>();
    if (o.Get("tcpHost").IsString()) {
      tcp_host = o.Get("tcpHost").As<Napi::String>();
      tcp_port = o.Get("tcpPort").As<Napi::Number>().Int32Value();
    }
    if (unix_path.empty() && tcp_host.empty()) {
      Fail(env, "NBD_INVALID_ARGUMENT", "ApplianceNbd config needs unix or tcpHost").ThrowAsJavaScriptException();
      return;
    }
    tidemark::NbdServerOptions nbd_options;
    {
      std::string error;
      if (!tidemark_addon::NbdServerOptionsFrom(o, &nbd_options, &error)) {
        Fail(env, "TLS_FILE", error).ThrowAsJavaScriptException();
        return;
      }
    }
    open_tsfn_ = OpenTsfn::New(env, info[1].As<Napi::Function>(), "tidemark-appliance-nbd-open", 0, 1);
    log_ = std::make_shared<tidemark_addon::LogSink>(env, info[2].As<Napi::Function>(), "tidemark-appliance-nbd-log");
    exports_ = std::make_shared<JsExports>(&open_tsfn_);
    server_ = std::make_unique<tidemark::NbdServer>(
        std::static_pointer_cast<tidemark::ExportSet>(exports_),
        [sink = log_](int level, const std::string& msg) { sink->Emit(level, msg); });
    server_->Configure(nbd_options);
    std::string error;
    bool ok = true;
    if (!unix_path.empty()) ok = server_->ListenUnix(unix_path, &error);
    if (ok && !tcp_host.empty()) ok = server_->ListenTcp(tcp_host, tcp_port, &tcp_port_, &error);
    if (!ok) {
      server_.reset();
      ReleaseTsfns();
      closed_ = true;
      Fail(env, "LISTEN_FAILED", error).ThrowAsJavaScriptException();
      return;
    }
    server_->Start();
  }

  ~ApplianceNbd() override {
    if (exports_) exports_->Abort();
    if (server_) server_->Stop();
  }

 private:
  void ReleaseTsfns() {
    if (released_.exchange(true)) return;
    open_tsfn_.Release();
    log_->Close();
  }

  // answer(id, applianceExport) -> boolean (false: the connection gave up waiting)
  Napi::Value AnswerOpen(const Napi::CallbackInfo& info);
  // disconnect(applianceExport) -> number: cuts the connections serving it (a deleted view).
  Napi::Value DisconnectExport(const Napi::CallbackInfo& info);

  // refuse(id, reason, message) -> boolean
  Napi::Value Refuse(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsString() || !info[2].IsString()) {
      Fail(env, "NBD_INVALID_ARGUMENT", "refuse(id, reason, message) needs a number and two strings").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    const std::string reason = info[1].As<Napi::String>();
    using namespace tidemark::nbd;
    const uint32_t code = reason == "invalid"       ? kRepErrInvalid
                          : reason == "policy"      ? kRepErrPolicy
                          : reason == "unavailable" ? kRepErrShutdown
                                                    : kRepErrUnknown;
    return Napi::Boolean::New(
        env, exports_->Answer(uint64_t(info[0].As<Napi::Number>().Int64Value()), nullptr, code, info[2].As<Napi::String>()));
  }

  // listed(id, [{ name, description }]) -> boolean
  Napi::Value ListedExports(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsArray()) {
      Fail(env, "NBD_INVALID_ARGUMENT", "listed(id, entries) needs an id and an array").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    Napi::Array a = info[1].As<Napi::Array>();
    std::vector<tidemark::ExportListing> l;
    for (uint32_t i = 0; i < a.Length(); i++) {
      Napi::Value v = a.Get(i);
      if (!v.IsObject() || !v.As<Napi::Object>().Get("name").IsString()) continue;
      Napi::Object e = v.As<Napi::Object>();
      l.push_back({e.Get("name").As<Napi::String>(),
                   e.Get("description").IsString() ? std::string(e.Get("description").As<Napi::String>()) : std::string()});
    }
    return Napi::Boolean::New(env, exports_->Listed(uint64_t(info[0].As<Napi::Number>().Int64Value()), std::move(l)));
  }

  Napi::Value TcpPort(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), tcp_port_); }
  Napi::Value RejectedHandshakes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), server_ ? double(server_->rejected_handshakes()) : 0);
  }

  // close() -> Promise: names still being resolved get "shutting down";
  // connections finish the request they serve and close.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    return tidemark_addon::CloseOnWorker(
        info.Env(), &closed_, Value(),
        [this] {
          exports_->Abort();
          if (server_) server_->Stop();
        },
        [this] { ReleaseTsfns(); });
  }

  OpenTsfn open_tsfn_;
  std::shared_ptr<tidemark_addon::LogSink> log_;
  std::atomic<bool> released_{false};
  std::shared_ptr<JsExports> exports_;
  std::unique_ptr<tidemark::NbdServer> server_;
  int tcp_port_ = 0;
  bool closed_ = false;
};

Napi::FunctionReference* ApplianceNbd::ctor = nullptr;

// ------------------------------------------------------- ApplianceExport

class ApplianceExport : public Napi::ObjectWrap<ApplianceExport> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "ApplianceExport",
                       {InstanceMethod("stats", &ApplianceExport::Stats), InstanceMethod("close", &ApplianceExport::Close)});
  }
  static Napi::FunctionReference* ctor;

  explicit ApplianceExport(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ApplianceExport>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsObject() ||
        !info[1].As<Napi::Object>().InstanceOf(PointMap::ctor->Value())) {
      Fail(env, "EXPORT_INVALID_ARGUMENT", "ApplianceExport(config, pointMap[, server]) expects an object and a PointMap")
          .ThrowAsJavaScriptException();
      return;
    }
    Napi::Object o = info[0].As<Napi::Object>();
    tidemark::ViewConfig c;
    std::string bad;
    if (!tidemark_addon::ViewConfigFrom(o, &c, "ApplianceExport", &bad)) {
      Fail(env, "EXPORT_INVALID_ARGUMENT", bad).ThrowAsJavaScriptException();
      return;
    }
    // A named writable view's durable overlay (view-registry.ts, overlay.h): kept across restarts, synced on FLUSH.
    if (o.Get("overlayPath").IsString() && o.Get("overlayMapPath").IsString()) {
      c.durable = true;
      c.overlay_path = o.Get("overlayPath").As<Napi::String>();
      c.overlay_map_path = o.Get("overlayMapPath").As<Napi::String>();
    }
    c.direct = true;
    c.cache_bytes = 0;
    std::shared_ptr<tidemark::PointReader> reader = PointMap::Unwrap(info[1].As<Napi::Object>())->map()->Snapshot();
    // The server's log, when the export is made for one (overlay errors are the appliance's to log).
    std::shared_ptr<tidemark_addon::LogSink> sink;
    if (info.Length() > 2 && info[2].IsObject() && info[2].As<Napi::Object>().InstanceOf(ApplianceNbd::ctor->Value())) {
      sink = ApplianceNbd::Unwrap(info[2].As<Napi::Object>())->log();
    }
    view_ = std::make_shared<tidemark::View>(
        c,
        [reader](uint64_t offset, uint32_t length, uint8_t* out, std::string* error) {
          return reader->Read(offset, length, out, error);
        },
        [sink, name = c.name](int level, const std::string& msg) {
          if (sink) sink->Emit(level, "export " + name + ": " + msg);
        },
        [reader](uint64_t offset, uint32_t length, uint8_t* out, bool* would_wait, std::string* error) {
          return reader->Read(offset, length, out, error, would_wait);
        });
    view_->SetCopy([reader](int fd, uint64_t offset, uint64_t length, bool write_zeroes, tidemark::CopyTally* t,
                            tidemark::CopySide* side, std::string* error) {
      return reader->CopyTo(fd, offset, length, write_zeroes, t, side, error);
    });
    std::string error;
    if (!view_->Open(&error)) {
      view_.reset();
      Fail(env, "EXPORT_OPEN_FAILED", error).ThrowAsJavaScriptException();
    }
  }

  std::shared_ptr<tidemark::View> view() const { return view_; }

 private:
  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    if (!view_) return o;
    const tidemark::ViewStats s = view_->Stats();
    auto n = [&](const char* k, uint64_t x) { o.Set(k, Napi::Number::New(env, double(x))); };
    n("reads", s.reads);
    n("bytesRead", s.bytes_read);
    n("writes", s.writes);
    n("bytesWritten", s.bytes_written);
    n("overlayBytes", s.overlay_bytes);
    n("ioErrors", s.io_errors);
    n("rejected", s.rejected);
    n("connections", s.connections);
    n("connectionsTotal", s.connections_total);
    return o;
  }

  // Drops this object's hold; connections that opened the export keep it until they end.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    view_.reset();
    return info.Env().Undefined();
  }

  std::shared_ptr<tidemark::View> view_;
};
Napi::FunctionReference* ApplianceExport::ctor = nullptr;

Napi::Value ApplianceNbd::AnswerOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsObject() ||
      !info[1].As<Napi::Object>().InstanceOf(ApplianceExport::ctor->Value())) {
    Fail(env, "NBD_INVALID_ARGUMENT", "answer(id, export) needs an id and an ApplianceExport").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto view = ApplianceExport::Unwrap(info[1].As<Napi::Object>())->view();
  if (!view) {
    Fail(env, "NBD_INVALID_ARGUMENT", "answer(id, export): the export is closed").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return Napi::Boolean::New(env, exports_->Answer(uint64_t(info[0].As<Napi::Number>().Int64Value()), view, 0, ""));
}

Napi::Value ApplianceNbd::DisconnectExport(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject() || !info[0].As<Napi::Object>().InstanceOf(ApplianceExport::ctor->Value())) {
    Fail(env, "NBD_INVALID_ARGUMENT", "disconnect(export) needs an ApplianceExport").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto view = ApplianceExport::Unwrap(info[0].As<Napi::Object>())->view();
  return Napi::Number::New(env, view && server_ ? server_->Disconnect(view.get()) : 0);
}

}  // namespace

void InitApplianceNbd(Napi::Env env, Napi::Object exports) {
  Napi::Function pm = PointMap::Init(env);
  PointMap::ctor = new Napi::FunctionReference(Napi::Persistent(pm));
  Napi::Function ae = ApplianceExport::Init(env);
  ApplianceExport::ctor = new Napi::FunctionReference(Napi::Persistent(ae));
  exports.Set("PointMap", pm);
  Napi::Function ri = ReplicaImage::Init(env);
  ReplicaImage::ctor = new Napi::FunctionReference(Napi::Persistent(ri));
  exports.Set("ReplicaImage", ri);
  exports.Set("ApplianceExport", ae);
  Napi::Function an = ApplianceNbd::Init(env);
  ApplianceNbd::ctor = new Napi::FunctionReference(Napi::Persistent(an));
  exports.Set("ApplianceNbd", an);
  Napi::Object layout = Napi::Object::New(env);
  layout.Set("size", Napi::Number::New(env, double(sizeof(tidemark::MapExtent))));
  layout.Set("sector", Napi::Number::New(env, double(offsetof(tidemark::MapExtent, sector))));
  layout.Set("pos", Napi::Number::New(env, double(offsetof(tidemark::MapExtent, pos))));
  layout.Set("count", Napi::Number::New(env, double(offsetof(tidemark::MapExtent, count))));
  layout.Set("file", Napi::Number::New(env, double(offsetof(tidemark::MapExtent, file))));
  exports.Set("pointMapLayout", layout);
}
