// Batched positional reads for the appliance's image reads (restores,
// TimeViews, fingerprints). A restore of random 4 KiB writes is a million
// preads at scattered journal offsets; one libuv request and one promise per
// pread cost more than the pread itself on page-cached data. readBatch hands
// a whole window of them (typically a few hundred) to one worker thread.
//
//   readBatch(buf: Buffer, reqs: Float64Array) -> Promise<void>
//   reqs holds 4 numbers per read: fd, file position, length, offset in buf.
// Every read must be complete: a short read (the file ends) or an error
// rejects with the fd, position and errno text. The buffer and the array are
// kept referenced until the worker is done.
//
//   peerCredentials(fd: number) -> { uid, gid, pid }
// The credentials of the process at the other end of a connected unix
// socket (getsockopt SO_PEERCRED), as the kernel recorded them at connect():
// the appliance's unix listener (appliance/unix-listener.ts) identifies its
// callers by uid this way. Node has no API for it.
#include <errno.h>
#include <napi.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

namespace {

struct Req {
  int fd;
  uint64_t pos;
  size_t len;
  size_t off;
};

class ReadBatchWorker : public Napi::AsyncWorker {
 public:
  ReadBatchWorker(Napi::Env env, Napi::Buffer<uint8_t> buf, std::vector<Req> reqs)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), data_(buf.Data()), reqs_(std::move(reqs)) {
    buf_ref_ = Napi::Persistent(buf);
  }

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    for (const Req& r : reqs_) {
      size_t done = 0;
      while (done < r.len) {
        const ssize_t n = pread(r.fd, data_ + r.off + done, r.len - done, off_t(r.pos + done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          SetError(std::string(n == 0 ? "short read" : std::strerror(errno)) + " reading fd " + std::to_string(r.fd) +
                   " at " + std::to_string(r.pos + done));
          return;
        }
        done += size_t(n);
      }
    }
  }

  void OnOK() override { deferred_.Resolve(Env().Undefined()); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::Reference<Napi::Buffer<uint8_t>> buf_ref_;
  uint8_t* data_;
  std::vector<Req> reqs_;
};

Napi::Value ReadBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsBuffer() || !info[1].IsTypedArray()) {
    Napi::TypeError::New(env, "readBatch(buf, reqs) expects a Buffer and a Float64Array").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto buf = info[0].As<Napi::Buffer<uint8_t>>();
  auto arr = info[1].As<Napi::TypedArray>();
  if (arr.TypedArrayType() != napi_float64_array || arr.ElementLength() % 4 != 0) {
    Napi::TypeError::New(env, "readBatch: reqs must be a Float64Array of (fd, position, length, offset) quadruples")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto f = arr.As<Napi::Float64Array>();
  std::vector<Req> reqs;
  reqs.reserve(f.ElementLength() / 4);
  for (size_t i = 0; i < f.ElementLength(); i += 4) {
    const double fd = f[i], pos = f[i + 1], len = f[i + 2], off = f[i + 3];
    if (fd < 0 || pos < 0 || len < 0 || off < 0 || off + len > double(buf.Length())) {
      Napi::RangeError::New(env, "readBatch: read " + std::to_string(i / 4) + " falls outside the buffer")
          .ThrowAsJavaScriptException();
      return env.Undefined();
    }
    reqs.push_back({int(fd), uint64_t(pos), size_t(len), size_t(off)});
  }
  auto* w = new ReadBatchWorker(env, buf, std::move(reqs));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

Napi::Value PeerCredentials(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) {
    Napi::TypeError::New(env, "peerCredentials(fd) expects a file descriptor").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const int fd = info[0].As<Napi::Number>().Int32Value();
  struct ucred cred {};
  socklen_t len = sizeof(cred);
  if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || len != sizeof(cred)) {
    Napi::Error::New(env, std::string("SO_PEERCRED on fd ") + std::to_string(fd) + ": " + std::strerror(fd < 0 ? EBADF : errno))
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("uid", Napi::Number::New(env, double(cred.uid)));
  o.Set("gid", Napi::Number::New(env, double(cred.gid)));
  o.Set("pid", Napi::Number::New(env, double(cred.pid)));
  return o;
}

}  // namespace

void InitIo(Napi::Env env, Napi::Object exports) {
  exports.Set("readBatch", Napi::Function::New(env, ReadBatch, "readBatch"));
  exports.Set("peerCredentials", Napi::Function::New(env, PeerCredentials, "peerCredentials"));
}
