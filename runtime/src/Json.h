//===- Json.h - a small JSON reader/writer for bundle metadata ------------===//
//
// attnrt links nothing but the C++ library, so bundle manifests and JIT
// cache records are read with this. Internal to attnc (not installed).
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_RUNTIME_JSON_H
#define ATTN_RUNTIME_JSON_H

#include "attn/runtime.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace attn::json {

class Value {
public:
  enum class Kind { Null, Bool, Number, String, Array, Object };
  Value() = default;
  Value(bool b) : kind_(Kind::Bool), b_(b) {}
  Value(double n) : kind_(Kind::Number), n_(n) {}
  Value(int64_t n) : kind_(Kind::Number), n_(double(n)) {}
  Value(int n) : kind_(Kind::Number), n_(n) {}
  Value(std::string s) : kind_(Kind::String), s_(std::move(s)) {}
  Value(const char *s) : kind_(Kind::String), s_(s) {}
  static Value array() { Value v; v.kind_ = Kind::Array; return v; }
  static Value object() { Value v; v.kind_ = Kind::Object; return v; }

  Kind kind() const { return kind_; }
  bool isNull() const { return kind_ == Kind::Null; }

  // Typed access; throw attn::Error("manifest", ...) on a mismatch.
  bool asBool() const;
  double asNumber() const;
  int64_t asInt() const;
  const std::string &asString() const;
  const std::vector<Value> &asArray() const;
  const Value &operator[](const std::string &key) const; // Null if absent
  bool has(const std::string &key) const;

  Value &set(const std::string &key, Value v);
  Value &push(Value v);

  std::string dump() const;

private:
  Kind kind_ = Kind::Null;
  bool b_ = false;
  double n_ = 0;
  std::string s_;
  std::vector<Value> items_;
  std::vector<std::pair<std::string, Value>> fields_; // insertion order
};

/// Parses a JSON document; throws attn::Error("manifest", ...) when it is
/// malformed (never crashes on bad input).
Value parse(const std::string &text);

/// KernelInfo <-> JSON (the "kernels" entries of a bundle manifest and the
/// records of the JIT's disk cache).
Value toJson(const KernelInfo &info);
KernelInfo kernelInfoFrom(const Value &v);

} // namespace attn::json

#endif // ATTN_RUNTIME_JSON_H
