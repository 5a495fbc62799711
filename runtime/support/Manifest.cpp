//===- Manifest.cpp - bundle manifests and JIT cache records as JSON ------===//
//
// Every field is written once (toJson, the write* functions) and read once
// (the read* functions, through Field, which knows where in the document
// it is and turns every mismatch into attn::Error("manifest", ...)).
// nlohmann-json parses and encodes; its exceptions never leave this file.
//
//===----------------------------------------------------------------------===//
#include "runtime/support/Manifest.h"
#include "runtime/support/Normalizers.h"

#include <nlohmann/json.hpp>

#include <climits>
#include <cmath>
#include <cstdio>
#include <set>

namespace attn::manifest {
namespace {

// Insertion order: fields appear in the order they are set, as attnc has
// always written them.
using Json = nlohmann::ordered_json;

/// Containers deeper than this are refused while parsing (a manifest
/// nests 6 deep: kernels, a kernel, captures, a capture, dims, a dim).
constexpr int kMaxDepth = 64;
constexpr int64_t kInt32Max = INT32_MAX;
constexpr int64_t kInt64Max = INT64_MAX;

/// Text from the document, quoted in an error message: bytes other than
/// printable ASCII as \xNN, at most `limit` of them.
std::string printable(std::string_view s, size_t limit = 48) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < limit; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  if (s.size() > limit)
    out += "...";
  return out;
}

[[noreturn]] void fail(const std::string &origin, const std::string &path,
                       const std::string &message) {
  throw Error("manifest", "'" + origin + "': " +
                              (path.empty() ? "" : path + ": ") + message);
}

/// What a value is, for "expected X, got Y".
std::string describe(const Json &j) {
  switch (j.type()) {
  case Json::value_t::null: return "null";
  case Json::value_t::boolean: return j.get<bool>() ? "true" : "false";
  case Json::value_t::number_integer:
    return "number " + std::to_string(j.get<int64_t>());
  case Json::value_t::number_unsigned:
    return "number " + std::to_string(j.get<uint64_t>());
  case Json::value_t::number_float: {
    double d = j.get<double>();
    if (!std::isfinite(d))
      return "a number beyond the range of a double";
    char buf[40];
    std::snprintf(buf, sizeof buf, "number %.17g", d);
    return buf;
  }
  case Json::value_t::string:
    return "string \"" + printable(j.get_ref<const std::string &>()) + "\"";
  case Json::value_t::array: return "an array";
  case Json::value_t::object: return "an object";
  default: return "an unreadable value";
  }
}

std::string integerRange(int64_t lo, int64_t hi) {
  if (hi == kInt64Max)
    return lo == 0 ? "a non-negative integer"
                   : "an integer of at least " + std::to_string(lo);
  return "an integer from " + std::to_string(lo) + " to " +
         std::to_string(hi);
}

/// A value in a document and where it is ("kernels[0].params[1].default"),
/// or the place of a missing member. Each accessor checks the type (and
/// range) and throws attn::Error naming the place otherwise.
class Field {
public:
  Field(const Json *value, std::string path, const std::string &origin)
      : value(value), path(std::move(path)), origin(origin) {}

  bool present() const { return value != nullptr; }
  /// The value itself; only when present().
  const Json &raw() const { return *value; }
  const std::string &where() const { return path; }
  [[noreturn]] void fail(const std::string &message) const {
    manifest::fail(origin, path, message);
  }

  /// A member; absent members give a Field that is not present().
  Field operator[](const char *key) const {
    const Json &j = object();
    auto it = j.find(key);
    return Field(it == j.end() ? nullptr : &*it,
                 path.empty() ? key : path + "." + key, origin);
  }

  const Json &object() const {
    expect(Json::value_t::object, "an object");
    return *value;
  }
  std::vector<Field> items() const {
    expect(Json::value_t::array, "an array");
    std::vector<Field> out;
    out.reserve(value->size());
    for (size_t i = 0; i < value->size(); ++i)
      out.emplace_back(&(*value)[i], path + "[" + std::to_string(i) + "]",
                       origin);
    return out;
  }
  const std::string &str() const {
    expect(Json::value_t::string, "a string");
    return value->get_ref<const std::string &>();
  }
  /// A string that names something (an entry symbol): not empty.
  const std::string &name() const {
    const std::string &s = str();
    if (s.empty())
      fail("expected a non-empty string, got \"\"");
    return s;
  }
  bool boolean() const {
    expect(Json::value_t::boolean, "true or false");
    return value->get<bool>();
  }
  int64_t integer(int64_t lo, int64_t hi) const {
    std::string expected = integerRange(lo, hi);
    if (!value)
      fail("missing; expected " + expected);
    int64_t v;
    if (value->is_number_unsigned()) {
      uint64_t u = value->get<uint64_t>();
      if (u > static_cast<uint64_t>(hi))
        fail("expected " + expected + ", got " + describe(*value));
      v = static_cast<int64_t>(u);
    } else if (value->is_number_integer()) {
      v = value->get<int64_t>();
    } else if (value->is_number_float()) {
      // Integral floats ("64.0") read as integers, as they always have.
      double d = value->get<double>();
      if (!(d >= -9.2e18 && d <= 9.2e18) || d != std::trunc(d))
        fail("expected " + expected + ", got " + describe(*value));
      v = static_cast<int64_t>(d);
    } else {
      fail("expected " + expected + ", got " + describe(*value));
    }
    if (v < lo || v > hi)
      fail("expected " + expected + ", got " + describe(*value));
    return v;
  }
  DType dtype() const {
    const std::string &s = str();
    if (auto d = parseDType(s))
      return *d;
    fail("unknown dtype \"" + printable(s) +
         "\" (expected f32, f16, bf16, i32, i8, f8e4m3 or f8e5m2)");
  }

  // Optional members: the default when absent.
  std::string strOr(const char *key, std::string fallback) const {
    Field f = (*this)[key];
    return f.present() ? f.str() : fallback;
  }
  int64_t integerOr(const char *key, int64_t fallback, int64_t lo,
                    int64_t hi) const {
    Field f = (*this)[key];
    return f.present() ? f.integer(lo, hi) : fallback;
  }
  bool booleanOr(const char *key, bool fallback) const {
    Field f = (*this)[key];
    return f.present() ? f.boolean() : fallback;
  }

private:
  void expect(Json::value_t type, const char *what) const {
    if (!value)
      fail(std::string("missing; expected ") + what);
    if (value->type() != type)
      fail(std::string("expected ") + what + ", got " + describe(*value));
  }

  const Json *value;
  std::string path;
  const std::string &origin;
};

/// attnc's writer before this one printed non-finite param defaults as
/// bare `inf`, `-inf`, `nan` or `-nan`, which is not JSON, into bundles
/// and cache records of the same formats. A default is the last member of
/// its param, and inside a JSON string every `"` is escaped, so the
/// patterns below occur only there; they are quoted as this writer does.
std::string quoteLegacyNonFinite(std::string_view text) {
  std::string out(text);
  for (auto [bare, quoted] : {std::pair{"inf", "inf"}, {"-inf", "-inf"},
                              {"nan", "nan"}, {"-nan", "nan"}}) {
    std::string from = std::string("\"default\": ") + bare + "}";
    std::string to = std::string("\"default\": \"") + quoted + "\"}";
    for (size_t at = out.find(from); at != std::string::npos;
         at = out.find(from, at + to.size()))
      out.replace(at, from.size(), to);
  }
  return out;
}

/// The document `text` as JSON; an attn::Error naming `origin` when it is
/// not JSON (the parser's reason, line and column), nests too deeply, or
/// is not an object.
Json parseObject(std::string_view text, const std::string &origin) {
  std::string input;
  if (text.find("\"default\": ") != std::string_view::npos)
    input = quoteLegacyNonFinite(text);
  else
    input.assign(text);
  Json::parser_callback_t limitDepth = [&](int depth,
                                           Json::parse_event_t event,
                                           Json &) {
    if ((event == Json::parse_event_t::object_start ||
         event == Json::parse_event_t::array_start) &&
        depth >= kMaxDepth)
      fail(origin, "",
           "not a valid manifest: nested deeper than " +
               std::to_string(kMaxDepth) + " levels");
    return true;
  };
  Json j;
  try {
    j = Json::parse(input, limitDepth);
  } catch (const Json::exception &e) {
    // "[json.exception.parse_error.101] parse error at line 1, column 2:
    // syntax error ..." without the bracketed id; it quotes the input.
    std::string what = e.what();
    if (size_t close = what.find("] ");
        what[0] == '[' && close != std::string::npos)
      what = what.substr(close + 2);
    fail(origin, "", "not valid JSON: " + printable(what, 300));
  }
  if (!j.is_object())
    fail(origin, "", "expected a JSON object, got " + describe(j));
  return j;
}

/// Runs a reader, so that nothing but attn::Error leaves it (the Field
/// accessors check before they read; this is the backstop).
template <typename Fn>
auto guarded(const std::string &origin, Fn fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Json::exception &e) {
    fail(origin, "", printable(e.what(), 300));
  }
}

/// Lays out a value on one line as attnc has always written its manifests
/// ({"key": value, ...}, [a, b]); nlohmann encodes every string and
/// number. Strings that are not UTF-8 (a source file's name) get U+FFFD.
void layout(const Json &j, std::string &out) {
  auto scalar = [&](const Json &v) {
    out += v.dump(-1, ' ', false, Json::error_handler_t::replace);
  };
  if (j.is_object()) {
    out += '{';
    bool first = true;
    for (auto it = j.begin(); it != j.end(); ++it) {
      out += first ? "" : ", ";
      first = false;
      scalar(Json(it.key()));
      out += ": ";
      layout(it.value(), out);
    }
    out += '}';
  } else if (j.is_array()) {
    out += '[';
    for (size_t i = 0; i < j.size(); ++i) {
      out += i ? ", " : "";
      layout(j[i], out);
    }
    out += ']';
  } else {
    scalar(j);
  }
}

std::string text(const Json &j) {
  std::string out;
  layout(j, out);
  return out;
}

//===----------------------------------------------------------------------===//
// KernelInfo
//===----------------------------------------------------------------------===//

/// A param default: a number, null for none, or "inf", "-inf", "nan"
/// (JSON has no non-finite numbers). Integral values are written as
/// integers ("8", not "8.0").
Json defaultToJson(const std::optional<double> &v) {
  if (!v)
    return nullptr;
  if (std::isnan(*v))
    return "nan";
  if (std::isinf(*v))
    return *v > 0 ? "inf" : "-inf";
  if (*v == std::trunc(*v) && std::fabs(*v) < 9e15)
    return static_cast<int64_t>(*v);
  return *v;
}

std::optional<double> defaultFrom(const Field &f) {
  const std::string expected =
      "expected a number, null (no default), \"inf\", \"-inf\" or \"nan\"";
  if (!f.present())
    f.fail("missing; " + expected);
  const Json &j = f.raw();
  if (j.is_null())
    return std::nullopt;
  if (j.is_number()) {
    double d = j.get<double>();
    if (!std::isfinite(d))
      f.fail(expected + ", got " + describe(j));
    return d;
  }
  if (j.is_string()) {
    const std::string &s = j.get_ref<const std::string &>();
    if (s == "inf" || s == "-inf")
      return s[0] == '-' ? -HUGE_VAL : HUGE_VAL;
    if (s == "nan")
      return std::nan("");
  }
  f.fail(expected + ", got " + describe(j));
}

Json toJson(const KernelInfo &info) {
  Json v = Json::object();
  v["name"] = info.name;
  v["target"] = info.target;
  v["dtype"] = dtypeName(info.dtype);
  v["out_dtype"] = dtypeName(info.outDType);
  v["head_dim"] = info.headDim;
  v["value_head_dim"] = info.valueHeadDim;
  v["lse"] = info.lse;
  v["normalize"] = info.normalize;
  // The normalizer table's row-sum property, for readers of the info that
  // lack the table (attn_torch.py: whether the backward reads the lse);
  // attnrt itself asks the table by name, so it is not read back, and
  // older bundles' info gets it here too. False for a name the table lacks,
  // as attnrt's backward treats it.
  const NormalizerTraits *traits = findNormalizer(info.normalize);
  v["row_sum"] = traits && traits->rowSum;
  v["block_q"] = info.blockQ;
  v["block_kv"] = info.blockKV;
  v["compiler"] = info.compilerVersion;
  v["block_map"] = info.hasBlockMap;
  v["select_block"] = info.selectBlock;
  v["select_rows_per_item"] = info.selectRowsPerItem;
  v["packed_heads"] = info.packedHeads;
  v["split_kv"] = info.splitKv;
  v["kv_dtype"] = info.kvDtype;
  v["kv_group"] = info.kvGroup;
  v["page_size"] = info.pageSize;
  if (info.backward) // absent in bundles from before issue 20: false
    v["backward"] = true;
  if (info.backwardOrderedDq)
    v["backward_ordered_dq"] = true;
  if (!info.cpu.empty()) // set by the loader; bundles' entries have none
    v["cpu"] = info.cpu;
  Json params = Json::array();
  for (const ParamInfo &p : info.params) {
    Json pv = Json::object();
    pv["name"] = p.name;
    pv["type"] = dtypeName(p.type);
    pv["default"] = defaultToJson(p.defaultValue);
    params.push_back(std::move(pv));
  }
  v["params"] = std::move(params);
  Json captures = Json::array();
  for (const CaptureInfo &c : info.captures) {
    Json cv = Json::object();
    cv["name"] = c.name;
    cv["dtype"] = dtypeName(c.dtype);
    cv["dims"] = c.dimText;
    cv["dims_rpn"] = c.dimRpn;
    captures.push_back(std::move(cv));
  }
  v["captures"] = std::move(captures);
  return v;
}

KernelInfo kernelInfoFrom(const Field &v) {
  v.object();
  KernelInfo info;
  info.name = v["name"].name();
  info.target = v["target"].name();
  info.dtype = v["dtype"].dtype();
  info.outDType = v["out_dtype"].dtype();
  info.headDim = v["head_dim"].integer(1, kInt32Max);
  info.valueHeadDim = v["value_head_dim"].integer(1, kInt32Max);
  info.lse = v["lse"].boolean();
  info.normalize = v["normalize"].name();
  info.blockQ = v["block_q"].integer(1, kInt32Max);
  info.blockKV = v["block_kv"].integer(1, kInt32Max);
  info.compilerVersion = v["compiler"].str();
  // Added after format 1 first shipped: absent means what it meant then.
  info.hasBlockMap = v.booleanOr("block_map", false);
  info.selectBlock = v.integerOr("select_block", 0, 0, kInt32Max);
  info.selectRowsPerItem =
      v.integerOr("select_rows_per_item", 0, 0, kInt32Max);
  info.packedHeads = v.booleanOr("packed_heads", true);
  info.splitKv = v.integerOr("split_kv", 0, 0, kInt32Max);
  info.kvDtype = v.strOr("kv_dtype", "same");
  info.kvGroup = v.integerOr("kv_group", 0, 0, kInt32Max);
  info.pageSize = v.integerOr("page_size", 0, 0, kInt32Max);
  info.cpu = v.strOr("cpu", "");
  info.backward = v.booleanOr("backward", false);
  info.backwardOrderedDq = v.booleanOr("backward_ordered_dq", false);
  std::set<std::string> names;
  for (const Field &pv : v["params"].items()) {
    pv.object();
    ParamInfo p;
    p.name = pv["name"].name();
    if (!names.insert(p.name).second)
      pv["name"].fail("\"" + printable(p.name) + "\" is listed twice");
    Field type = pv["type"];
    p.type = type.dtype();
    if (p.type != DType::i32 && p.type != DType::f32)
      type.fail("expected i32 or f32, got " + std::string(dtypeName(p.type)));
    p.defaultValue = defaultFrom(pv["default"]);
    info.params.push_back(std::move(p));
  }
  for (const Field &cv : v["captures"].items()) {
    cv.object();
    CaptureInfo c;
    c.name = cv["name"].name();
    if (!names.insert(c.name).second)
      cv["name"].fail("\"" + printable(c.name) + "\" is listed twice");
    c.dtype = cv["dtype"].dtype();
    for (const Field &d : cv["dims"].items())
      c.dimText.push_back(d.str());
    Field rpn = cv["dims_rpn"];
    for (const Field &d : rpn.items())
      c.dimRpn.push_back(d.name());
    if (c.dimRpn.empty())
      rpn.fail("expected one expression per dimension, got none");
    if (c.dimText.size() != c.dimRpn.size())
      rpn.fail("expected " + std::to_string(c.dimText.size()) +
               " expressions (one per entry of dims), got " +
               std::to_string(c.dimRpn.size()));
    info.captures.push_back(std::move(c));
  }
  return info;
}

/// A GPU kernel's backward entries (KernelInfo::backward, NVIDIA), in bundle
/// manifests and cache records alike; absent without a backward.
void writeGpuBackward(Json &j, const std::string &kv, const std::string &q,
                      int64_t kvThreads, int64_t kvRows, int64_t qThreads,
                      int64_t qRows, bool gradients) {
  if (kv.empty())
    return;
  if (gradients)
    j["backward_gradients"] = true;
  j["backward_kv_entry"] = kv;
  j["backward_kv_threads"] = kvThreads;
  j["backward_kv_rows"] = kvRows;
  j["backward_q_entry"] = q;
  j["backward_q_threads"] = qThreads;
  j["backward_q_rows"] = qRows;
}
void readGpuBackward(const Field &j, std::string &kv, std::string &q,
                     int64_t &kvThreads, int64_t &kvRows, int64_t &qThreads,
                     int64_t &qRows, bool &gradients) {
  if (!j["backward_kv_entry"].present())
    return;
  // Absent in code that predates the gradient buffers.
  gradients = j.booleanOr("backward_gradients", false);
  kv = j["backward_kv_entry"].name();
  kvThreads = j["backward_kv_threads"].integer(1, 1024);
  kvRows = j["backward_kv_rows"].integer(1, 1024);
  q = j["backward_q_entry"].name();
  qThreads = j["backward_q_threads"].integer(1, 1024);
  qRows = j["backward_q_rows"].integer(1, 1024);
}

} // namespace

//===----------------------------------------------------------------------===//
// Bundle manifests
//===----------------------------------------------------------------------===//

std::string writeBundleManifest(const BundleManifest &m) {
  Json j = Json::object();
  j["format"] = m.format;
  j["compiler"] = m.compiler;
  j["source"] = m.source;
  Json kernels = Json::array();
  for (const KernelEntry &k : m.kernels) {
    Json v = toJson(k.info);
    v["binary"] = k.binary;
    if (!k.fallbackBinaries.empty())
      v["fallback_binaries"] = k.fallbackBinaries;
    if (k.ptxBinary)
      v["ptx_binary"] = *k.ptxBinary;
    v["entry"] = k.entry;
    if (!k.blockMapEntry.empty())
      v["block_map_entry"] = k.blockMapEntry;
    if (k.gpu) {
      v["block_threads"] = k.gpu->blockThreads;
      v["rows_per_block"] = k.gpu->rowsPerBlock;
      v["shared_bytes"] = k.gpu->sharedBytes;
      v["tensor_maps"] = k.gpu->tensorMaps; // key tiles: block_kv
      if (k.gpu->clusterCtas > 1)
        v["cluster_ctas"] = k.gpu->clusterCtas;
    }
    v["merge_entry"] = k.mergeEntry;
    if (!k.backwardEntry.empty())
      v["backward_entry"] = k.backwardEntry;
    if (k.gpu) {
      if (!k.gpu->selectEntry.empty()) {
        v["select_pool_entry"] = k.gpu->selectPoolEntry;
        v["select_entry"] = k.gpu->selectEntry;
      }
      const GpuLaunch &g = *k.gpu;
      writeGpuBackward(v, g.backwardKvEntry, g.backwardQEntry,
                       g.backwardKvThreads, g.backwardKvRows,
                       g.backwardQThreads, g.backwardQRows,
                       g.backwardGradients);
      v["registers"] = k.gpu->registers;
    }
    kernels.push_back(std::move(v));
  }
  j["kernels"] = std::move(kernels);
  Json binaries = Json::array();
  for (const BinaryEntry &b : m.binaries) {
    Json v = Json::object();
    v["target"] = b.target;
    v["kind"] = b.kind;
    if (b.target == "cpu") {
      v["cpu"] = b.cpu;
      v["cpu_features"] = b.cpuFeatures;
    }
    v["size"] = b.size;
    v["checksum"] = b.checksum;
    v["offset"] = b.offset;
    binaries.push_back(std::move(v));
  }
  j["binaries"] = std::move(binaries);
  return text(j);
}

BundleManifest readBundleManifest(std::string_view text,
                                  const std::string &origin) {
  return guarded(origin, [&] {
    Json j = parseObject(text, origin);
    Field root(&j, "", origin);
    BundleManifest m;
    m.format = root["format"].integer(1, UINT32_MAX);
    m.compiler = root["compiler"].str();
    m.source = root["source"].str();
    for (const Field &b : root["binaries"].items()) {
      b.object();
      BinaryEntry e;
      e.target = b["target"].name();
      e.kind = b["kind"].name();
      if (e.target == "cpu") {
        e.cpu = b["cpu"].str();
        for (const Field &f : b["cpu_features"].items())
          e.cpuFeatures.push_back(f.name());
      }
      e.offset = b["offset"].integer(0, kInt64Max);
      e.size = b["size"].integer(0, kInt64Max);
      e.checksum = b["checksum"].name();
      m.binaries.push_back(std::move(e));
    }
    std::set<std::string> names;
    for (const Field &k : root["kernels"].items()) {
      KernelEntry e;
      e.info = kernelInfoFrom(k);
      if (!names.insert(e.info.name).second)
        k["name"].fail("a second kernel named \"" + printable(e.info.name) +
                       "\"");
      bool gpu = e.info.target != "cpu";
      // A payload index: in range, and code for this kernel's target.
      auto payload = [&](const Field &f) {
        int64_t index = f.integer(0, kInt32Max);
        if (size_t(index) >= m.binaries.size())
          f.fail("names payload " + std::to_string(index) +
                 ", but the bundle has " +
                 std::to_string(m.binaries.size()));
        const std::string &target = m.binaries[index].target;
        if (target != e.info.target)
          f.fail("payload " + std::to_string(index) + " is code for '" +
                 printable(target) + "', but the kernel's target is '" +
                 printable(e.info.target) + "'");
        return index;
      };
      e.binary = payload(k["binary"]);
      if (Field fb = k["fallback_binaries"]; fb.present()) {
        if (gpu)
          fb.fail("only CPU kernels have fallback binaries");
        if (m.format < 3)
          fb.fail("fallback binaries need bundle format 3, but the "
                  "manifest says format " + std::to_string(m.format));
        std::set<int64_t> seen{e.binary};
        for (const Field &f : fb.items()) {
          int64_t index = payload(f);
          if (!seen.insert(index).second)
            f.fail("names payload " + std::to_string(index) +
                   " a second time for this kernel");
          e.fallbackBinaries.push_back(index);
        }
      }
      e.entry = k["entry"].name();
      e.mergeEntry = k["merge_entry"].name();
      if (Field bm = k["block_map_entry"]; bm.present())
        e.blockMapEntry = bm.name();
      if (Field be = k["backward_entry"]; be.present()) {
        if (gpu)
          be.fail("only CPU kernels have a backward entry so far");
        e.backwardEntry = be.name();
      }
      if (e.info.backward && !gpu && e.backwardEntry.empty())
        k["backward_entry"].fail("a kernel with \"backward\": true needs "
                                 "its backward entry");
      if (e.info.target.rfind("sm_", 0) == 0)
        e.ptxBinary = payload(k["ptx_binary"]);
      if (gpu) {
        GpuLaunch g;
        g.blockThreads = k["block_threads"].integer(1, kInt32Max);
        g.rowsPerBlock = k["rows_per_block"].integer(1, kInt32Max);
        g.sharedBytes = k["shared_bytes"].integer(0, kInt32Max);
        g.tensorMaps = k.booleanOr("tensor_maps", false);
        g.clusterCtas = k.integerOr("cluster_ctas", 1, 1, 8);
        // Older TMA kernels read 16-byte-wide unswizzled boxes: the maps
        // this attnrt encodes would land scrambled in their tiles.
        if (g.tensorMaps && m.format < detail::kSwizzledTmaBundleFormat)
          k["tensor_maps"].fail(
              "this TMA kernel was compiled by an older attnc for "
              "unswizzled tiles (bundle format " + std::to_string(m.format) +
              "); recompile it with this attnc");
        if (e.info.selectBlock > 0) {
          // The pre-pass of select, which every launch runs.
          g.selectPoolEntry = k["select_pool_entry"].name();
          g.selectEntry = k["select_entry"].name();
        }
        readGpuBackward(k, g.backwardKvEntry, g.backwardQEntry,
                        g.backwardKvThreads, g.backwardKvRows,
                        g.backwardQThreads, g.backwardQRows,
                       g.backwardGradients);
        if (e.info.backward && g.backwardKvEntry.empty())
          k["backward_kv_entry"].fail("a GPU kernel with \"backward\": true "
                                      "needs its backward entries");
        g.registers = k.integerOr("registers", 0, 0, kInt32Max);
        e.gpu = std::move(g);
      }
      m.kernels.push_back(std::move(e));
    }
    return m;
  });
}

std::string writeKernelInfo(const KernelInfo &info) {
  return text(toJson(info));
}

KernelInfo readKernelInfo(std::string_view text, const std::string &origin) {
  return guarded(origin, [&] {
    Json j = parseObject(text, origin);
    return kernelInfoFrom(Field(&j, "", origin));
  });
}

//===----------------------------------------------------------------------===//
// JIT cache records
//===----------------------------------------------------------------------===//

namespace {
constexpr int64_t kCacheFormat = 1;

void checkCacheFormat(const Field &root) {
  Field f = root["format"];
  if (f.integer(0, kInt64Max) != kCacheFormat)
    f.fail("this attnc reads cache records of format " +
           std::to_string(kCacheFormat) + ", got " +
           std::to_string(f.integer(0, kInt64Max)));
}
} // namespace

std::string writeCacheRecord(const CpuCacheRecord &r) {
  Json j = Json::object();
  j["format"] = kCacheFormat;
  j["compiler"] = r.compiler;
  j["key"] = r.key;
  j["entry"] = r.entry;
  if (!r.blockMapEntry.empty())
    j["block_map_entry"] = r.blockMapEntry;
  j["merge_entry"] = r.mergeEntry;
  if (!r.backwardEntry.empty())
    j["backward_entry"] = r.backwardEntry;
  j["object_size"] = r.objectSize;
  j["object_checksum"] = r.objectChecksum;
  j["kernel"] = toJson(r.info);
  return text(j);
}

std::string writeCacheRecord(const GpuCacheRecord &r) {
  const detail::GpuCode &c = r.code;
  Json j = Json::object();
  j["format"] = kCacheFormat;
  j["compiler"] = r.compiler;
  j["key"] = r.key;
  j["chip"] = c.chip;
  j["entry"] = c.entry;
  j["block_threads"] = c.blockThreads;
  j["rows_per_block"] = c.rowsPerBlock;
  j["shared_bytes"] = c.sharedBytes;
  j["tensor_maps"] = c.tensorMaps;
  j["block_kv"] = c.blockKV;
  if (c.clusterCtas > 1)
    j["cluster_ctas"] = c.clusterCtas;
  j["merge_entry"] = c.mergeEntry;
  j["select_pool_entry"] = c.selectPoolEntry;
  j["select_entry"] = c.selectEntry;
  writeGpuBackward(j, c.backwardKvEntry, c.backwardQEntry,
                   c.backwardKvThreads, c.backwardKvRows, c.backwardQThreads,
                   c.backwardQRows, c.backwardGradients);
  j["binary_checksum"] = r.binaryChecksum;
  j["ptx_checksum"] = r.ptxChecksum;
  j["kernel"] = toJson(r.info);
  return text(j);
}

CpuCacheRecord readCpuCacheRecord(std::string_view text,
                                  const std::string &origin) {
  return guarded(origin, [&] {
    Json j = parseObject(text, origin);
    Field root(&j, "", origin);
    checkCacheFormat(root);
    CpuCacheRecord r;
    r.compiler = root["compiler"].str();
    r.key = root["key"].name();
    r.entry = root["entry"].name();
    if (Field bm = root["block_map_entry"]; bm.present())
      r.blockMapEntry = bm.name();
    r.mergeEntry = root["merge_entry"].name();
    if (Field be = root["backward_entry"]; be.present())
      r.backwardEntry = be.name();
    r.objectSize = root["object_size"].integer(0, kInt64Max);
    r.objectChecksum = root["object_checksum"].name();
    r.info = kernelInfoFrom(root["kernel"]);
    return r;
  });
}

GpuCacheRecord readGpuCacheRecord(std::string_view text,
                                  const std::string &origin) {
  return guarded(origin, [&] {
    Json j = parseObject(text, origin);
    Field root(&j, "", origin);
    checkCacheFormat(root);
    GpuCacheRecord r;
    r.compiler = root["compiler"].str();
    r.key = root["key"].name();
    detail::GpuCode &c = r.code;
    c.chip = root["chip"].name();
    c.entry = root["entry"].name();
    c.blockThreads = root["block_threads"].integer(1, kInt32Max);
    c.rowsPerBlock = root["rows_per_block"].integer(1, kInt32Max);
    c.sharedBytes = root["shared_bytes"].integer(0, kInt32Max);
    c.tensorMaps = root["tensor_maps"].boolean();
    c.blockKV = root["block_kv"].integer(0, kInt32Max);
    c.clusterCtas = root.integerOr("cluster_ctas", 1, 1, 8);
    c.mergeEntry = root["merge_entry"].name();
    c.selectPoolEntry = root["select_pool_entry"].str();
    c.selectEntry = root["select_entry"].str();
    readGpuBackward(root, c.backwardKvEntry, c.backwardQEntry,
                    c.backwardKvThreads, c.backwardKvRows, c.backwardQThreads,
                    c.backwardQRows, c.backwardGradients);
    r.binaryChecksum = root["binary_checksum"].name();
    r.ptxChecksum = root["ptx_checksum"].name();
    r.info = kernelInfoFrom(root["kernel"]);
    return r;
  });
}

} // namespace attn::manifest
