// What the addon's classes share at the Node boundary: errors with a stable
// code, and log lines posted from native threads to a JavaScript callback.
#pragma once

#include <napi.h>

#include <functional>
#include <mutex>
#include <string>

#include "nbd_server.h"
#include "view.h"

namespace tidemark_addon {

// What an NBD listener admits, from its config object: "tlsCert", "tlsKey",
// "tlsCa" (all three: clients must STARTTLS with a certificate the CA
// signed), "maxConnections", "handshakeTimeoutMs". False (and *error) when
// the TLS files cannot be loaded.
inline bool NbdServerOptionsFrom(const Napi::Object& o, tidemark::NbdServerOptions* out, std::string* error) {
  if (o.Get("maxConnections").IsNumber()) out->max_connections = o.Get("maxConnections").As<Napi::Number>().Int32Value();
  if (o.Get("handshakeTimeoutMs").IsNumber())
    out->handshake_timeout_ms = o.Get("handshakeTimeoutMs").As<Napi::Number>().Int32Value();
  if (o.Get("tlsCert").IsString()) {
    out->tls = tidemark::TlsCredentials::Load(o.Get("tlsCert").As<Napi::String>(), o.Get("tlsKey").ToString(),
                                              o.Get("tlsCa").ToString(), error);
    if (!out->tls) return false;
  }
  return true;
}

inline Napi::Error Fail(Napi::Env env, const char* code, const std::string& msg) {
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, code));
  return e;
}

struct LogEvent {
  int level;
  std::string message;
};
inline void CallLog(Napi::Env env, Napi::Function fn, std::nullptr_t*, LogEvent* e) {
  if (env != nullptr && fn != nullptr) fn.Call({Napi::Number::New(env, e->level), Napi::String::New(env, e->message)});
  delete e;
}
using LogTsfn = Napi::TypedThreadSafeFunction<std::nullptr_t, LogEvent, CallLog>;

// A log callback shared by native objects that may outlive the one that made
// it (an export a connection still holds after its server closed): lines
// posted after Close() are dropped, never sent to a released function.
class LogSink {
 public:
  LogSink(Napi::Env env, Napi::Function fn, const char* name) : tsfn_(LogTsfn::New(env, fn, name, 4096, 1)) {}
  void Emit(int level, const std::string& msg) {
    std::lock_guard<std::mutex> lk(mu_);
    if (closed_) return;
    auto* e = new LogEvent{level, msg};
    if (tsfn_.NonBlockingCall(e) != napi_ok) delete e;
  }
  void Close() {
    std::lock_guard<std::mutex> lk(mu_);
    if (closed_) return;
    closed_ = true;
    tsfn_.Release();
  }

 private:
  std::mutex mu_;
  LogTsfn tsfn_;
  bool closed_ = false;
};

// What a TimeView and an appliance export share of their config object:
// name and size (required), description, writable, overlayDir. false (with
// *error naming what is missing) when name or size is not given.
inline bool ViewConfigFrom(Napi::Object o, tidemark::ViewConfig* c, const char* what, std::string* error) {
  if (!o.Get("name").IsString() || !o.Get("size").IsNumber()) {
    *error = std::string(what) + " config needs name (string) and size (number)";
    return false;
  }
  c->name = o.Get("name").As<Napi::String>();
  c->size = uint64_t(o.Get("size").As<Napi::Number>().Int64Value());
  if (o.Get("description").IsString()) c->description = o.Get("description").As<Napi::String>();
  c->writable = o.Get("writable").ToBoolean();
  if (o.Get("overlayDir").IsString()) c->overlay_dir = o.Get("overlayDir").As<Napi::String>();
  return true;
}

// close() -> Promise for an object whose closing blocks (joins threads):
// `work` runs on a worker thread, `done` then on the JavaScript thread, and
// the object stays referenced until the promise settles. A second close()
// resolves at once.
class CloseWorker : public Napi::AsyncWorker {
 public:
  CloseWorker(Napi::Env env, Napi::ObjectReference keep, std::function<void()> work, std::function<void()> done)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), keep_(std::move(keep)),
        work_(std::move(work)), done_(std::move(done)) {}
  void Execute() override { work_(); }
  void OnOK() override {
    done_();
    deferred_.Resolve(Env().Undefined());
  }
  Napi::Promise Promise() { return deferred_.Promise(); }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference keep_;
  std::function<void()> work_, done_;
};

inline Napi::Value CloseOnWorker(Napi::Env env, bool* closed, Napi::Object self, std::function<void()> work,
                                 std::function<void()> done) {
  if (*closed) {
    auto d = Napi::Promise::Deferred::New(env);
    d.Resolve(env.Undefined());
    return d.Promise();
  }
  *closed = true;
  auto* w = new CloseWorker(env, Napi::Persistent(self), std::move(work), std::move(done));
  w->Queue();
  return w->Promise();
}

}  // namespace tidemark_addon
