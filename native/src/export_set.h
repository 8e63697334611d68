// Which exports an NBD server offers: the names a client may ask for, and
// the Export behind each one, looked up when a client asks (NBD_OPT_GO,
// NBD_OPT_INFO, NBD_OPT_EXPORT_NAME) rather than fixed at start.
//
// The tap and a client-side TimeView serve a fixed list (StaticExports). The
// appliance serves names that are computed: `VOLUME@POINT` resolves to a
// point of a volume when the client connects, and a view made with
// `timeview create` appears and goes while the server runs. A connection
// keeps the shared_ptr it was given for as long as it lasts, which is what
// keeps the files under an appliance export open.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "export.h"
#include "nbd_proto.h"

namespace tidemark {

struct ExportListing {
  std::string name;
  std::string description;
};

class ExportSet {
 public:
  virtual ~ExportSet() = default;
  // The export `name` names ("" is the default export, if there is one), for
  // a client of this identity (its TLS certificate's; "" without TLS).
  // On refusal returns null and sets *rep_err (an nbd::kRepErr* code) and
  // *why, the one-line reason the client is sent in the option's error reply.
  // Called on connection threads, several at once.
  virtual std::shared_ptr<Export> Open(const std::string& name, const std::string& identity, uint32_t* rep_err,
                                       std::string* why) = 0;
  // NBD_OPT_LIST: the names to show, each with an optional description (the
  // text NBD_REP_SERVER carries after the name). A client that wants more
  // asks NBD_OPT_INFO of each (nbdinfo --list does: size, flags).
  virtual std::vector<ExportListing> List(const std::string& identity) = 0;
};

// A fixed list; the first one is the default export.
class StaticExports : public ExportSet {
 public:
  explicit StaticExports(std::vector<std::shared_ptr<Export>> exports) : exports_(std::move(exports)) {}
  std::shared_ptr<Export> Open(const std::string& name, const std::string&, uint32_t* rep_err, std::string* why) override {
    if (name.empty() && !exports_.empty()) return exports_[0];
    for (auto& e : exports_)
      if (e->name() == name) return e;
    *rep_err = nbd::kRepErrUnknown;
    *why = "no export named '" + name + "'";
    return nullptr;
  }
  std::vector<ExportListing> List(const std::string&) override {
    std::vector<ExportListing> out;
    // Names only: a client that wants to know more asks NBD_OPT_INFO.
    for (auto& e : exports_) out.push_back({e->name(), std::string()});
    return out;
  }

 private:
  std::vector<std::shared_ptr<Export>> exports_;
};

}  // namespace tidemark
