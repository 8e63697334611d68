// What the addon's classes share at the Node boundary: errors with a stable
// code, and log lines posted from native threads to a JavaScript callback.
#pragma once

#include <napi.h>

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

}  // namespace tidemark_addon
