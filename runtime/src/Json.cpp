//===- Json.cpp -----------------------------------------------------------===//
#include "Json.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace attn::json {

namespace {
[[noreturn]] void fail(const std::string &message) {
  throw Error("manifest", message);
}
const Value &nullValue() {
  static const Value v;
  return v;
}
} // namespace

bool Value::asBool() const {
  if (kind_ != Kind::Bool)
    fail("expected a boolean");
  return b_;
}
double Value::asNumber() const {
  if (kind_ != Kind::Number)
    fail("expected a number");
  return n_;
}
int64_t Value::asInt() const {
  double n = asNumber();
  if (n != std::floor(n) || std::fabs(n) > 9e15)
    fail("expected an integer");
  return static_cast<int64_t>(n);
}
const std::string &Value::asString() const {
  if (kind_ != Kind::String)
    fail("expected a string");
  return s_;
}
const std::vector<Value> &Value::asArray() const {
  if (kind_ != Kind::Array)
    fail("expected an array");
  return items_;
}
const Value &Value::operator[](const std::string &key) const {
  if (kind_ != Kind::Object)
    fail("expected an object with '" + key + "'");
  for (const auto &[k, v] : fields_)
    if (k == key)
      return v;
  return nullValue();
}
bool Value::has(const std::string &key) const {
  if (kind_ != Kind::Object)
    return false;
  for (const auto &[k, v] : fields_)
    if (k == key)
      return true;
  return false;
}
Value &Value::set(const std::string &key, Value v) {
  kind_ = Kind::Object;
  for (auto &[k, old] : fields_)
    if (k == key) {
      old = std::move(v);
      return *this;
    }
  fields_.emplace_back(key, std::move(v));
  return *this;
}
Value &Value::push(Value v) {
  kind_ = Kind::Array;
  items_.push_back(std::move(v));
  return *this;
}

static void dumpString(const std::string &s, std::string &out) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
    case '"': out += "\\\""; break;
    case '\\': out += "\\\\"; break;
    case '\n': out += "\\n"; break;
    case '\t': out += "\\t"; break;
    default:
      if (c < 0x20) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", c);
        out += buf;
      } else {
        out += static_cast<char>(c);
      }
    }
  }
  out += '"';
}

std::string Value::dump() const {
  std::string out;
  switch (kind_) {
  case Kind::Null: out = "null"; break;
  case Kind::Bool: out = b_ ? "true" : "false"; break;
  case Kind::Number: {
    char buf[40];
    if (n_ == std::floor(n_) && std::fabs(n_) < 9e15)
      std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(n_));
    else
      std::snprintf(buf, sizeof buf, "%.17g", n_);
    out = buf;
    break;
  }
  case Kind::String: dumpString(s_, out); break;
  case Kind::Array:
    out = "[";
    for (size_t i = 0; i < items_.size(); ++i)
      out += (i ? ", " : "") + items_[i].dump();
    out += "]";
    break;
  case Kind::Object:
    out = "{";
    for (size_t i = 0; i < fields_.size(); ++i) {
      out += i ? ", " : "";
      dumpString(fields_[i].first, out);
      out += ": " + fields_[i].second.dump();
    }
    out += "}";
    break;
  }
  return out;
}

namespace {

class Parser {
public:
  explicit Parser(const std::string &text) : s(text) {}
  Value parseDocument() {
    Value v = parseValue(0);
    skipSpace();
    if (pos != s.size())
      fail("trailing characters at offset " + std::to_string(pos));
    return v;
  }

private:
  void skipSpace() {
    while (pos < s.size() &&
           (s[pos] == ' ' || s[pos] == '\n' || s[pos] == '\r' || s[pos] == '\t'))
      ++pos;
  }
  bool consume(char c) {
    skipSpace();
    if (pos < s.size() && s[pos] == c) {
      ++pos;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!consume(c))
      fail(std::string("expected '") + c + "' at offset " +
           std::to_string(pos));
  }
  Value parseValue(int depth) {
    if (depth > 64)
      fail("nested too deeply");
    skipSpace();
    if (pos >= s.size())
      fail("unexpected end");
    char c = s[pos];
    if (c == '{') {
      ++pos;
      Value obj = Value::object();
      if (consume('}'))
        return obj;
      do {
        skipSpace();
        std::string key = parseString();
        expect(':');
        obj.set(key, parseValue(depth + 1));
      } while (consume(','));
      expect('}');
      return obj;
    }
    if (c == '[') {
      ++pos;
      Value arr = Value::array();
      if (consume(']'))
        return arr;
      do {
        arr.push(parseValue(depth + 1));
      } while (consume(','));
      expect(']');
      return arr;
    }
    if (c == '"')
      return Value(parseString());
    if (s.compare(pos, 4, "true") == 0) {
      pos += 4;
      return Value(true);
    }
    if (s.compare(pos, 5, "false") == 0) {
      pos += 5;
      return Value(false);
    }
    if (s.compare(pos, 4, "null") == 0) {
      pos += 4;
      return Value();
    }
    const char *begin = s.c_str() + pos;
    char *end = nullptr;
    double n = std::strtod(begin, &end);
    if (end == begin)
      fail("unexpected character at offset " + std::to_string(pos));
    pos += end - begin;
    return Value(n);
  }
  std::string parseString() {
    if (pos >= s.size() || s[pos] != '"')
      fail("expected a string at offset " + std::to_string(pos));
    ++pos;
    std::string out;
    while (pos < s.size() && s[pos] != '"') {
      char c = s[pos++];
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos >= s.size())
        break;
      char e = s[pos++];
      switch (e) {
      case 'n': out += '\n'; break;
      case 't': out += '\t'; break;
      case 'r': out += '\r'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'u': {
        if (pos + 4 > s.size())
          fail("bad \\u escape");
        unsigned code = std::strtoul(s.substr(pos, 4).c_str(), nullptr, 16);
        pos += 4;
        out += code < 0x80 ? static_cast<char>(code) : '?';
        break;
      }
      default: out += e; break;
      }
    }
    if (pos >= s.size())
      fail("unterminated string");
    ++pos;
    return out;
  }

  const std::string &s;
  size_t pos = 0;
};

} // namespace

Value parse(const std::string &text) { return Parser(text).parseDocument(); }

static DType dtypeFrom(const Value &v) {
  auto d = parseDType(v.asString());
  if (!d)
    fail("unknown dtype '" + v.asString() + "'");
  return *d;
}

Value toJson(const KernelInfo &info) {
  Value v = Value::object();
  v.set("name", info.name);
  v.set("target", info.target);
  v.set("dtype", dtypeName(info.dtype));
  v.set("out_dtype", dtypeName(info.outDType));
  v.set("head_dim", info.headDim);
  v.set("value_head_dim", info.valueHeadDim);
  v.set("lse", info.lse);
  v.set("normalize", info.normalize);
  v.set("block_q", info.blockQ);
  v.set("block_kv", info.blockKV);
  v.set("compiler", info.compilerVersion);
  v.set("block_map", info.hasBlockMap);
  v.set("select_block", info.selectBlock);
  v.set("select_rows_per_item", info.selectRowsPerItem);
  v.set("packed_heads", info.packedHeads);
  v.set("split_kv", info.splitKv);
  v.set("kv_dtype", info.kvDtype);
  v.set("kv_group", info.kvGroup);
  v.set("page_size", info.pageSize);
  Value params = Value::array();
  for (const ParamInfo &p : info.params) {
    Value pv = Value::object();
    pv.set("name", p.name);
    pv.set("type", dtypeName(p.type));
    pv.set("default", p.defaultValue ? Value(*p.defaultValue) : Value());
    params.push(std::move(pv));
  }
  v.set("params", std::move(params));
  Value captures = Value::array();
  for (const CaptureInfo &c : info.captures) {
    Value cv = Value::object();
    cv.set("name", c.name);
    cv.set("dtype", dtypeName(c.dtype));
    Value text = Value::array(), rpn = Value::array();
    for (const std::string &d : c.dimText)
      text.push(d);
    for (const std::string &d : c.dimRpn)
      rpn.push(d);
    cv.set("dims", std::move(text));
    cv.set("dims_rpn", std::move(rpn));
    captures.push(std::move(cv));
  }
  v.set("captures", std::move(captures));
  return v;
}

KernelInfo kernelInfoFrom(const Value &v) {
  KernelInfo info;
  info.name = v["name"].asString();
  info.target = v["target"].asString();
  info.dtype = dtypeFrom(v["dtype"]);
  info.outDType = dtypeFrom(v["out_dtype"]);
  info.headDim = v["head_dim"].asInt();
  info.valueHeadDim = v["value_head_dim"].asInt();
  info.lse = v["lse"].asBool();
  info.normalize = v["normalize"].asString();
  info.blockQ = v["block_q"].asInt();
  info.blockKV = v["block_kv"].asInt();
  info.compilerVersion = v["compiler"].asString();
  info.hasBlockMap = v.has("block_map") && v["block_map"].asBool();
  info.selectBlock = v.has("select_block") ? v["select_block"].asInt() : 0;
  info.selectRowsPerItem = v.has("select_rows_per_item")
                               ? v["select_rows_per_item"].asInt()
                               : 0;
  info.packedHeads = !v.has("packed_heads") || v["packed_heads"].asBool();
  info.splitKv = v.has("split_kv") ? v["split_kv"].asInt() : 0;
  info.kvDtype = v.has("kv_dtype") ? v["kv_dtype"].asString() : "same";
  info.kvGroup = v.has("kv_group") ? v["kv_group"].asInt() : 0;
  info.pageSize = v.has("page_size") ? v["page_size"].asInt() : 0;
  if (info.headDim <= 0 || info.valueHeadDim <= 0 || info.blockQ <= 0 ||
      info.blockKV <= 0)
    fail("kernel '" + info.name + "' has non-positive sizes");
  for (const Value &pv : v["params"].asArray()) {
    ParamInfo p;
    p.name = pv["name"].asString();
    p.type = dtypeFrom(pv["type"]);
    if (!pv["default"].isNull())
      p.defaultValue = pv["default"].asNumber();
    info.params.push_back(std::move(p));
  }
  for (const Value &cv : v["captures"].asArray()) {
    CaptureInfo c;
    c.name = cv["name"].asString();
    c.dtype = dtypeFrom(cv["dtype"]);
    for (const Value &d : cv["dims"].asArray())
      c.dimText.push_back(d.asString());
    for (const Value &d : cv["dims_rpn"].asArray())
      c.dimRpn.push_back(d.asString());
    if (c.dimText.size() != c.dimRpn.size() || c.dimRpn.empty())
      fail("captured tensor '" + c.name + "' has inconsistent dims");
    info.captures.push_back(std::move(c));
  }
  return info;
}

} // namespace attn::json
