// The journal's direct appender for JavaScript (direct_append.h): one per
// segment being written, every call on a libuv worker thread.
//
//   new JournalAppender()
//   open(path, end) -> Promise<boolean>   false: the file system refuses O_DIRECT
//   append(bufs: Buffer[], offset) -> Promise<void>
//   trim() -> Promise<void>               cut the file back to the journal's end
//   close()
//
// A failure rejects with an Error whose code is the errno's name (ENOSPC,
// EIO, ...), as Node's own file calls do, so the journal names it the same
// way (appliance/journal.ts writeError). The Buffers are kept referenced
// until their write is done.
#include <napi.h>
#include <string.h>

#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "addon_util.h"
#include "direct_append.h"

namespace {

using tidemark::DirectAppender;
using tidemark_addon::Fail;

// The appender and the lock that keeps two workers off it (the journal never
// overlaps them; the lock makes a misuse wait instead of corrupting).
struct Shared {
  std::mutex mu;
  DirectAppender a;
};

class AppendWorker : public Napi::AsyncWorker {
 public:
  enum class Op { kOpen, kAppend, kTrim };
  AppendWorker(Napi::Env env, std::shared_ptr<Shared> s, Op op)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), s_(std::move(s)), op_(op) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

  std::string path;
  uint64_t offset = 0;
  std::vector<std::pair<const uint8_t*, size_t>> pieces;
  Napi::ObjectReference keep;  // the Buffers of an append

  void Execute() override {
    std::lock_guard<std::mutex> lk(s_->mu);
    std::string error;
    bool ok = true;
    switch (op_) {
      case Op::kOpen:
        ok = s_->a.Open(path, offset, &unsupported_, &error);
        if (!ok && unsupported_) return;  // not an error: the caller falls back
        break;
      case Op::kAppend:
        ok = s_->a.Append(pieces, offset, &error);
        break;
      case Op::kTrim:
        ok = s_->a.Trim(&error);
        break;
    }
    if (!ok) {
      errno_ = s_->a.last_errno();
      SetError(error);
    }
  }
  void OnOK() override {
    keep.Reset();
    if (op_ == Op::kOpen) {
      deferred_.Resolve(Napi::Boolean::New(Env(), !unsupported_));
    } else {
      deferred_.Resolve(Env().Undefined());
    }
  }
  void OnError(const Napi::Error& e) override {
    keep.Reset();
    const char* name = errno_ ? strerrorname_np(errno_) : nullptr;
    e.Set("code", Napi::String::New(Env(), name ? name : "JOURNAL_IO"));
    if (errno_) e.Set("errno", Napi::Number::New(Env(), -errno_));
    deferred_.Reject(e.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<Shared> s_;
  Op op_;
  bool unsupported_ = false;
  int errno_ = 0;
};

class JournalAppender : public Napi::ObjectWrap<JournalAppender> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "JournalAppender",
                       {InstanceMethod("open", &JournalAppender::Open), InstanceMethod("append", &JournalAppender::Append),
                        InstanceMethod("trim", &JournalAppender::Trim), InstanceMethod("close", &JournalAppender::Close)});
  }
  explicit JournalAppender(const Napi::CallbackInfo& info) : Napi::ObjectWrap<JournalAppender>(info), s_(std::make_shared<Shared>()) {}

 private:
  Napi::Value Open(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsString() || !info[1].IsNumber() || info[1].As<Napi::Number>().DoubleValue() < 0) {
      Fail(env, "APPEND_INVALID_ARGUMENT", "open(path, end) needs a path and a non-negative end").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    auto* w = new AppendWorker(env, s_, AppendWorker::Op::kOpen);
    w->path = info[0].As<Napi::String>().Utf8Value();
    w->offset = uint64_t(info[1].As<Napi::Number>().Int64Value());
    w->Queue();
    return w->Promise();
  }

  Napi::Value Append(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsArray() || !info[1].IsNumber() || info[1].As<Napi::Number>().DoubleValue() < 0) {
      Fail(env, "APPEND_INVALID_ARGUMENT", "append(buffers, offset) needs an array of Buffers and a non-negative offset")
          .ThrowAsJavaScriptException();
      return env.Undefined();
    }
    Napi::Array bufs = info[0].As<Napi::Array>();
    auto* w = new AppendWorker(env, s_, AppendWorker::Op::kAppend);
    for (uint32_t i = 0; i < bufs.Length(); i++) {
      Napi::Value v = bufs[i];
      if (!v.IsBuffer()) {
        delete w;
        Fail(env, "APPEND_INVALID_ARGUMENT", "append(buffers, offset): element " + std::to_string(i) + " is not a Buffer")
            .ThrowAsJavaScriptException();
        return env.Undefined();
      }
      Napi::Buffer<uint8_t> b = v.As<Napi::Buffer<uint8_t>>();
      w->pieces.emplace_back(b.Data(), b.Length());
    }
    w->keep = Napi::Persistent(bufs.As<Napi::Object>());
    w->offset = uint64_t(info[1].As<Napi::Number>().Int64Value());
    w->Queue();
    return w->Promise();
  }

  Napi::Value Trim(const Napi::CallbackInfo& info) {
    auto* w = new AppendWorker(info.Env(), s_, AppendWorker::Op::kTrim);
    w->Queue();
    return w->Promise();
  }

  // Closes the descriptor once no worker holds the appender.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    std::lock_guard<std::mutex> lk(s_->mu);
    s_->a.Close();
    return info.Env().Undefined();
  }

  std::shared_ptr<Shared> s_;
};

}  // namespace

void InitJournalAppend(Napi::Env env, Napi::Object exports) { exports.Set("JournalAppender", JournalAppender::Init(env)); }
