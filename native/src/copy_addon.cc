// The Node boundary of the NBD copier: class NativeNbdCopy.
//
//   const c = new NativeNbdCopy(config)
//   c.start() -> Promise<result>   runs the copy (nbd_copy.h) on a worker thread
//   c.progress() -> [done, size]   bytes committed to the target, and the export's size
//   c.cancel()                     the promise rejects with COPY_CANCELLED
//
// The copy's own threads never touch JavaScript; progress is two atomics
// read when JavaScript asks (a terminal's progress line asks a few times a
// second), so nothing crosses per block. Failures reject with an Error whose
// code is stable (NBD_CONNECT, NBD_TLS_REQUIRED, NBD_REFUSED, NBD_PROTOCOL,
// NBD_ERROR, COPY_TARGET, TLS_FILE, COPY_CANCELLED) and whose message is one line.
#include <napi.h>

#include <memory>

#include "addon_util.h"
#include "nbd_copy.h"

namespace {

using tidemark::CopyConfig;
using tidemark::CopyError;
using tidemark::CopyResult;
using tidemark::NbdCopy;
using tidemark::NbdEndpoint;

const char* CodeOf(CopyError e) {
  switch (e) {
    case CopyError::kConnect: return "NBD_CONNECT";
    case CopyError::kTlsRequired: return "NBD_TLS_REQUIRED";
    case CopyError::kRefused: return "NBD_REFUSED";
    case CopyError::kProtocol: return "NBD_PROTOCOL";
    case CopyError::kSource: return "NBD_ERROR";
    case CopyError::kTarget: return "COPY_TARGET";
    case CopyError::kTlsFiles: return "TLS_FILE";
    case CopyError::kCancelled: return "COPY_CANCELLED";
    case CopyError::kNone: break;
  }
  return "COPY_FAILED";
}

using tidemark_addon::Fail;

// { unix } or { host, port }, and export.
bool ReadEndpoint(Napi::Value v, NbdEndpoint* e) {
  if (!v.IsObject()) return false;
  Napi::Object o = v.As<Napi::Object>();
  if (!o.Get("export").IsString()) return false;
  e->export_name = o.Get("export").As<Napi::String>();
  if (o.Get("unix").IsString()) {
    e->unix_path = o.Get("unix").As<Napi::String>();
    return !e->unix_path.empty();
  }
  if (!o.Get("host").IsString() || !o.Get("port").IsNumber()) return false;
  e->host = o.Get("host").As<Napi::String>();
  e->port = o.Get("port").As<Napi::Number>().Int32Value();
  return !e->host.empty() && e->port > 0 && e->port < 65536;
}

class CopyWorker : public Napi::AsyncWorker {
 public:
  CopyWorker(Napi::Env env, std::shared_ptr<NbdCopy> copy, CopyConfig config, Napi::ObjectReference keep)
      : Napi::AsyncWorker(env),
        deferred_(Napi::Promise::Deferred::New(env)),
        copy_(std::move(copy)),
        config_(std::move(config)),
        keep_(std::move(keep)) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override { copy_->Run(config_, &result_); }

  void OnOK() override {
    Napi::Env env = Env();
    if (result_.error != CopyError::kNone) {
      deferred_.Reject(Fail(env, CodeOf(result_.error), result_.message).Value());
      return;
    }
    Napi::Object o = Napi::Object::New(env);
    o.Set("size", Napi::Number::New(env, double(result_.size)));
    o.Set("dataBytes", Napi::Number::New(env, double(result_.data_bytes)));
    o.Set("dataRuns", Napi::Number::New(env, double(result_.data_runs)));
    o.Set("zeroBytes", Napi::Number::New(env, double(result_.zero_bytes)));
    o.Set("connections", Napi::Number::New(env, result_.connections));
    o.Set("requestBytes", Napi::Number::New(env, result_.request_bytes));
    o.Set("targetKind", Napi::String::New(env, result_.target_kind));
    o.Set("serverCopy", Napi::Boolean::New(env, result_.server_copy));
    o.Set("serverCopySkipped", result_.server_copy_skipped.empty() ? env.Null()
                                                                    : Napi::String::New(env, result_.server_copy_skipped));
    deferred_.Resolve(o);
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<NbdCopy> copy_;
  CopyConfig config_;
  CopyResult result_;
  Napi::ObjectReference keep_;
};

class NativeNbdCopy : public Napi::ObjectWrap<NativeNbdCopy> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "NativeNbdCopy",
                       {InstanceMethod("start", &NativeNbdCopy::Start), InstanceMethod("progress", &NativeNbdCopy::Progress),
                        InstanceMethod("cancel", &NativeNbdCopy::Cancel)});
  }

  // new NativeNbdCopy({ source, target: string | endpoint, connections, requests,
  //                     requestBytes, targetZeroed, sync, serverCopy, serverCopyConnections })
  explicit NativeNbdCopy(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeNbdCopy>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) {
      Fail(env, "COPY_INVALID_ARGUMENT", "NativeNbdCopy(config) expects an object").ThrowAsJavaScriptException();
      return;
    }
    Napi::Object o = info[0].As<Napi::Object>();
    if (!ReadEndpoint(o.Get("source"), &config_.source)) {
      Fail(env, "COPY_INVALID_ARGUMENT", "NativeNbdCopy: source must be { unix, export } or { host, port, export }")
          .ThrowAsJavaScriptException();
      return;
    }
    Napi::Value t = o.Get("target");
    if (t.IsString()) {
      config_.target_path = t.As<Napi::String>();
    } else if (ReadEndpoint(t, &config_.target_nbd)) {
      config_.target_is_nbd = true;
    } else {
      Fail(env, "COPY_INVALID_ARGUMENT", "NativeNbdCopy: target must be a path or an NBD endpoint")
          .ThrowAsJavaScriptException();
      return;
    }
    auto num = [&](const char* k, int64_t dflt, int64_t lo, int64_t hi) {
      Napi::Value v = o.Get(k);
      const int64_t x = v.IsNumber() ? v.As<Napi::Number>().Int64Value() : dflt;
      return std::min(std::max(x, lo), hi);
    };
    config_.connections = int(num("connections", config_.connections, 1, 64));
    config_.requests = int(num("requests", config_.requests, 1, 256));
    config_.request_bytes = uint32_t(num("requestBytes", config_.request_bytes, 4096, 32 << 20));
    config_.target_zeroed = o.Get("targetZeroed").ToBoolean();
    config_.sync = o.Has("sync") ? o.Get("sync").ToBoolean().Value() : true;
    config_.server_copy = o.Has("serverCopy") ? o.Get("serverCopy").ToBoolean().Value() : true;
    config_.server_copy_connections = int(num("serverCopyConnections", config_.server_copy_connections, 1, 64));
    Napi::Value tls = o.Get("tls");
    if (tls.IsObject()) {
      Napi::Object t = tls.As<Napi::Object>();
      if (!t.Get("cert").IsString() || !t.Get("key").IsString() || !t.Get("ca").IsString()) {
        Fail(env, "COPY_INVALID_ARGUMENT", "NativeNbdCopy: tls must be { cert, key, ca } (paths of PEM files)")
            .ThrowAsJavaScriptException();
        return;
      }
      config_.tls_cert = t.Get("cert").As<Napi::String>();
      config_.tls_key = t.Get("key").As<Napi::String>();
      config_.tls_ca = t.Get("ca").As<Napi::String>();
    }
    copy_ = std::make_shared<NbdCopy>();
  }

 private:
  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (started_) {
      Fail(env, "COPY_INVALID_ARGUMENT", "this copy has already been started").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    started_ = true;
    auto* w = new CopyWorker(env, copy_, config_, Napi::Persistent(Value()));
    Napi::Promise p = w->Promise();
    w->Queue();
    return p;
  }

  Napi::Value Progress(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Array a = Napi::Array::New(env, 2);
    a.Set(uint32_t(0), Napi::Number::New(env, double(copy_->done())));
    a.Set(uint32_t(1), Napi::Number::New(env, double(copy_->size())));
    return a;
  }

  Napi::Value Cancel(const Napi::CallbackInfo& info) {
    copy_->Cancel();
    return info.Env().Undefined();
  }

  CopyConfig config_;
  std::shared_ptr<NbdCopy> copy_;
  bool started_ = false;
};

}  // namespace

void InitCopy(Napi::Env env, Napi::Object exports) { exports.Set("NativeNbdCopy", NativeNbdCopy::Init(env)); }
