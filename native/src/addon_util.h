// What the addon's classes share at the Node boundary: errors with a stable
// code, and log lines posted from native threads to a JavaScript callback.
#pragma once

#include <napi.h>

#include <mutex>
#include <string>

namespace tidemark_addon {

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

}  // namespace tidemark_addon
