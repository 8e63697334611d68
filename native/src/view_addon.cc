// The Node boundary of a TimeView: class NativeView.
//
// new NativeView(config, onFetch(id, offset, length), onLog(level, message))
// opens the view and listens. A connection thread that needs bytes of the
// point posts a fetch through a thread-safe function and waits on a
// condition variable; JavaScript answers with complete(id, data) or
// fail(id, message), from whatever gRPC call it made. The JavaScript event
// loop never runs on an NBD thread and never waits for one.
//
// close() stops the NBD server on a worker thread while the event loop keeps
// answering fetches, so in-flight requests finish; a fetch that JavaScript
// has not answered within kCloseGrace is failed (EIO) so close() always ends.
#include <napi.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "addon_util.h"
#include "nbd_server.h"
#include "nbd_source.h"
#include "view.h"

namespace {

using tidemark::NbdServer;
using tidemark::View;

constexpr auto kCloseGrace = std::chrono::seconds(10);

using tidemark_addon::Fail;
using tidemark_addon::LogEvent;
using tidemark_addon::LogTsfn;

struct FetchEvent {
  uint64_t id, offset;
  uint32_t length;
};
void CallFetch(Napi::Env env, Napi::Function fn, std::nullptr_t*, FetchEvent* e) {
  if (env != nullptr && fn != nullptr) {
    fn.Call({Napi::Number::New(env, double(e->id)), Napi::Number::New(env, double(e->offset)),
             Napi::Number::New(env, e->length)});
  }
  delete e;
}
using FetchTsfn = Napi::TypedThreadSafeFunction<std::nullptr_t, FetchEvent, CallFetch>;

// Fetches waiting for JavaScript, by id. A waiter's request lives on its own
// stack; it is removed from the map (under mu_) before the waiter returns, so
// a late complete() finds nothing instead of writing into a dead frame.
class FetchBridge {
 public:
  bool Fetch(FetchTsfn& tsfn, uint64_t offset, uint32_t length, uint8_t* out, std::string* error) {
    Pending p;
    p.out = out;
    p.length = length;
    uint64_t id;
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (aborted_) {
        *error = "the TimeView is closing";
        return false;
      }
      id = next_id_++;
      pending_[id] = &p;
    }
    auto* e = new FetchEvent{id, offset, length};
    if (tsfn.NonBlockingCall(e) != napi_ok) {
      delete e;
      std::lock_guard<std::mutex> lk(mu_);
      pending_.erase(id);
      *error = "the TimeView is closing (JavaScript no longer takes reads)";
      return false;
    }
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [&] { return p.done || aborted_; });
    if (!p.done) {
      pending_.erase(id);
      *error = "the TimeView closed before the appliance answered";
      return false;
    }
    if (!p.ok) *error = p.error;
    return p.ok;
  }

  // From JavaScript. data == nullptr: failed with `error`. Returns false if
  // no fetch waits under that id (it was given up on).
  bool Complete(uint64_t id, const uint8_t* data, size_t length, const std::string& error) {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = pending_.find(id);
    if (it == pending_.end()) return false;
    Pending* p = it->second;
    pending_.erase(it);
    if (data && length == p->length) {
      std::memcpy(p->out, data, length);
      p->ok = true;
    } else {
      p->error = data ? "the appliance answered a read of " + std::to_string(p->length) + " bytes with " +
                            std::to_string(length)
                      : error;
    }
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
    uint8_t* out = nullptr;
    uint32_t length = 0;
    bool done = false, ok = false;
    std::string error;
  };
  std::mutex mu_;
  std::condition_variable cv_;
  std::unordered_map<uint64_t, Pending*> pending_;
  uint64_t next_id_ = 1;
  bool aborted_ = false;
};

class NativeView : public Napi::ObjectWrap<NativeView> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "NativeView",
                       {InstanceMethod("complete", &NativeView::Complete), InstanceMethod("fail", &NativeView::FailFetch),
                        InstanceMethod("stats", &NativeView::Stats), InstanceMethod("tcpPort", &NativeView::TcpPort),
                        InstanceMethod("close", &NativeView::Close)});
  }

  explicit NativeView(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeView>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsObject() || !info[1].IsFunction() || !info[2].IsFunction()) {
      Fail(env, "VIEW_INVALID_ARGUMENT", "NativeView(config, onFetch, onLog) expects an object and two functions")
          .ThrowAsJavaScriptException();
      return;
    }
    Napi::Object o = info[0].As<Napi::Object>();
    tidemark::ViewConfig c;
    std::string bad;
    if (!tidemark_addon::ViewConfigFrom(o, &c, "NativeView", &bad)) {
      Fail(env, "VIEW_INVALID_ARGUMENT", bad).ThrowAsJavaScriptException();
      return;
    }
    if (o.Get("cacheBytes").IsNumber()) c.cache_bytes = size_t(o.Get("cacheBytes").As<Napi::Number>().Int64Value());
    if (o.Get("readAheadBytes").IsNumber())
      c.read_ahead_bytes = size_t(o.Get("readAheadBytes").As<Napi::Number>().Int64Value());
    std::string unix_path, tcp_host;
    int tcp_port = 0;
    if (o.Get("unix").IsString()) unix_path = o.Get("unix").As<Napi::String>();
    if (o.Get("tcpHost").IsString()) {
      tcp_host = o.Get("tcpHost").As<Napi::String>();
      tcp_port = o.Get("tcpPort").As<Napi::Number>().Int32Value();
    }
    if (unix_path.empty() && tcp_host.empty()) {
      Fail(env, "VIEW_INVALID_ARGUMENT", "NativeView config needs unix or tcpHost").ThrowAsJavaScriptException();
      return;
    }

    // Unbounded queue: the fetches waiting are bounded by the threads that
    // can ask (the NBD front's request threads and the view's read-ahead
    // threads), each waiting for its own; JavaScript bounds the calls it
    // makes at once (native/view.ts).
    // upstream: the appliance's own NBD export of the point (nbd_source.h):
    // misses are read natively from it instead of through onFetch.
    std::string error;
    tidemark::NbdServerOptions nbd_options;
    if (!tidemark_addon::NbdServerOptionsFrom(o, &nbd_options, &error)) {
      Fail(env, "TLS_FILE", error).ThrowAsJavaScriptException();
      return;
    }
    if (o.Get("upstream").IsObject() && !OpenUpstream(o.Get("upstream").As<Napi::Object>(), c.size, &error)) {
      Fail(env, "VIEW_OPEN_FAILED", error).ThrowAsJavaScriptException();
      return;
    }
    fetch_tsfn_ = FetchTsfn::New(env, info[1].As<Napi::Function>(), "tidemark-view-fetch", 0, 1);
    log_tsfn_ = LogTsfn::New(env, info[2].As<Napi::Function>(), "tidemark-view-log", 4096, 1);
    auto* self = this;
    tidemark::LogFn log = [self](int level, const std::string& msg) { self->EmitLog(level, msg); };
    tidemark::FetchFn fetch = [self](uint64_t offset, uint32_t length, uint8_t* out, std::string* err) {
      return self->bridge_.Fetch(self->fetch_tsfn_, offset, length, out, err);
    };
    if (upstream_) {
      fetch = [src = upstream_](uint64_t offset, uint32_t length, uint8_t* out, std::string* err) {
        return src->Read(offset, length, out, err);
      };
    }
    view_ = std::make_shared<View>(c, fetch, log);
    bool ok = view_->Open(&error);
    if (ok) {
      server_ = std::make_unique<NbdServer>(std::vector<std::shared_ptr<tidemark::Export>>{view_}, log);
      server_->Configure(nbd_options);
      if (!unix_path.empty()) ok = server_->ListenUnix(unix_path, &error);
      if (ok && !tcp_host.empty()) ok = server_->ListenTcp(tcp_host, tcp_port, &tcp_port_, &error);
    }
    if (!ok) {
      server_.reset();
      view_->Close();
      ReleaseTsfns();
      closed_ = true;
      Fail(env, "VIEW_OPEN_FAILED", error).ThrowAsJavaScriptException();
      return;
    }
    server_->Start();
  }

  ~NativeView() override {
    // Collected without close(): nothing can answer a fetch any more.
    bridge_.Abort();
    if (upstream_) upstream_->Close();
    if (server_) server_->Stop();
    if (view_) view_->Close();
  }

 private:
  // { unix | host + port, export, tlsCert?, tlsKey?, tlsCa?, connections? }
  bool OpenUpstream(Napi::Object u, uint64_t size, std::string* error) {
    tidemark::NbdEndpoint e;
    if (u.Get("unix").IsString()) e.unix_path = u.Get("unix").As<Napi::String>();
    if (u.Get("host").IsString()) e.host = u.Get("host").As<Napi::String>();
    if (u.Get("port").IsNumber()) e.port = u.Get("port").As<Napi::Number>().Int32Value();
    if (u.Get("export").IsString()) e.export_name = u.Get("export").As<Napi::String>();
    std::shared_ptr<tidemark::TlsCredentials> creds;
    if (u.Get("tlsCert").IsString()) {
      creds = tidemark::TlsCredentials::Load(u.Get("tlsCert").As<Napi::String>(), u.Get("tlsKey").ToString(),
                                                            u.Get("tlsCa").ToString(), error);
      if (!creds) return false;
    }
    const int n = u.Get("connections").IsNumber() ? u.Get("connections").As<Napi::Number>().Int32Value() : 8;
    upstream_ = std::make_shared<tidemark::NbdSource>(e, creds, n);
    uint64_t got = 0;
    if (!upstream_->Open(&got, error)) return false;
    if (got != size) {
      *error = e.Describe() + " is " + std::to_string(got) + " bytes, the volume " + std::to_string(size);
      return false;
    }
    return true;
  }

  void EmitLog(int level, const std::string& msg) {
    if (released_.load()) return;
    auto* e = new LogEvent{level, msg};
    if (log_tsfn_.NonBlockingCall(e) != napi_ok) delete e;
  }
  void ReleaseTsfns() {
    if (released_.exchange(true)) return;
    fetch_tsfn_.Release();
    log_tsfn_.Release();
  }

  bool IdArg(const Napi::CallbackInfo& info, uint64_t* id) {
    if (info.Length() < 2 || !info[0].IsNumber()) {
      Fail(info.Env(), "VIEW_INVALID_ARGUMENT", "complete(id, data) / fail(id, message) need a fetch id")
          .ThrowAsJavaScriptException();
      return false;
    }
    *id = uint64_t(info[0].As<Napi::Number>().Int64Value());
    return true;
  }

  // complete(id, data: Buffer) -> boolean (false: nobody waits for it any more)
  Napi::Value Complete(const Napi::CallbackInfo& info) {
    uint64_t id;
    if (!IdArg(info, &id)) return info.Env().Undefined();
    if (!info[1].IsTypedArray()) {
      Fail(info.Env(), "VIEW_INVALID_ARGUMENT", "complete(id, data) needs a Buffer").ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    auto data = info[1].As<Napi::Uint8Array>();
    return Napi::Boolean::New(info.Env(), bridge_.Complete(id, data.Data(), data.ByteLength(), std::string()));
  }

  // fail(id, message) -> boolean
  Napi::Value FailFetch(const Napi::CallbackInfo& info) {
    uint64_t id;
    if (!IdArg(info, &id)) return info.Env().Undefined();
    const std::string msg = info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "the read failed";
    return Napi::Boolean::New(info.Env(), bridge_.Complete(id, nullptr, 0, msg));
  }

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
    n("trims", s.trims);
    n("zeroes", s.zeroes);
    n("flushes", s.flushes);
    n("chunkHits", s.chunk_hits);
    n("chunkMisses", s.chunk_misses);
    n("fetches", s.fetches);
    n("fetchBytes", s.fetch_bytes);
    n("fetchErrors", s.fetch_errors);
    n("cacheBytes", s.cache_bytes);
    n("cacheEvictions", s.cache_evictions);
    n("overlayBytes", s.overlay_bytes);
    n("fetchWaits", s.fetch_waits);
    n("readAheadFetches", s.read_ahead_fetches);
    n("readAheadBytes", s.read_ahead_bytes);
    n("fetchesInFlightMax", s.fetches_in_flight_max);
    n("rejected", s.rejected);
    n("ioErrors", s.io_errors);
    n("connections", s.connections);
    n("connectionsTotal", s.connections_total);
    return o;
  }

  Napi::Value TcpPort(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), tcp_port_); }

  // close() -> Promise: stops listening, lets in-flight requests finish,
  // closes the connections and discards the overlay.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    return tidemark_addon::CloseOnWorker(info.Env(), &closed_, Value(), [this] { Shutdown(); }, [this] { ReleaseTsfns(); });
  }

  // close()'s work, on a worker thread.
  void Shutdown() {
    // The watchdog gives JavaScript kCloseGrace to answer the fetches that
    // in-flight requests wait on, then fails them so Stop() can join.
    std::mutex mu;
    std::condition_variable cv;
    bool stopped = false;
    std::thread watchdog([&] {
      std::unique_lock<std::mutex> lk(mu);
      if (!cv.wait_for(lk, kCloseGrace, [&] { return stopped; })) bridge_.Abort();
    });
    if (server_) server_->Stop();
    if (upstream_) upstream_->Close();
    {
      std::lock_guard<std::mutex> lk(mu);
      stopped = true;
    }
    cv.notify_all();
    watchdog.join();
    bridge_.Abort();
    if (view_) view_->Close();  // the overlay is gone from here on
  }

  FetchTsfn fetch_tsfn_;
  LogTsfn log_tsfn_;
  std::atomic<bool> released_{false};
  FetchBridge bridge_;
  std::shared_ptr<tidemark::NbdSource> upstream_;
  std::shared_ptr<View> view_;
  std::unique_ptr<NbdServer> server_;
  int tcp_port_ = 0;
  bool closed_ = false;
};

}  // namespace

void InitView(Napi::Env env, Napi::Object exports) { exports.Set("NativeView", NativeView::Init(env)); }
