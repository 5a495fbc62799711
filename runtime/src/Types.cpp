//===- Types.cpp - dtypes and tensor views --------------------------------===//
#include "attn/runtime.h"

#include <cstdint>

namespace attn {

const char *dtypeName(DType t) {
  switch (t) {
  case DType::f32: return "f32";
  case DType::f16: return "f16";
  case DType::bf16: return "bf16";
  case DType::i32: return "i32";
  case DType::i8: return "i8";
  case DType::f8e4m3: return "f8e4m3";
  case DType::f8e5m2: return "f8e5m2";
  }
  return "?";
}

size_t dtypeSize(DType t) {
  switch (t) {
  case DType::f16:
  case DType::bf16:
    return 2;
  case DType::i8:
  case DType::f8e4m3:
  case DType::f8e5m2:
    return 1;
  default:
    return 4;
  }
}

std::optional<DType> parseDType(const std::string &name) {
  for (DType t : {DType::f32, DType::f16, DType::bf16, DType::i32, DType::i8,
                 DType::f8e4m3, DType::f8e5m2})
    if (name == dtypeName(t))
      return t;
  return std::nullopt;
}

namespace {

std::string shapeText(const std::vector<int64_t> &shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

} // namespace

int64_t TensorRef::numel() const {
  int64_t n = 1;
  for (int64_t d : shape)
    if (__builtin_mul_overflow(n, d, &n))
      throw Error("", "shape " + shapeText(shape) +
                          " has more elements than fit in 64 bits");
  return n;
}

std::vector<int64_t> TensorRef::effectiveStrides() const {
  if (!strides.empty())
    return strides;
  // Row-major strides; one that does not fit saturates (the view then has
  // more elements than fit too, which its checks reject).
  std::vector<int64_t> s(shape.size(), 1);
  for (size_t i = shape.size(); i-- > 1;)
    if (__builtin_mul_overflow(s[i], shape[i], &s[i - 1]))
      s[i - 1] = INT64_MAX;
  return s;
}

bool TensorRef::isContiguous() const {
  if (strides.empty())
    return true;
  std::vector<int64_t> s = effectiveStrides();
  int64_t expect = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    if (shape[i] != 1 && s[i] != expect)
      return false;
    if (__builtin_mul_overflow(expect, shape[i], &expect))
      return false; // no view that large is contiguous memory
  }
  return true;
}

} // namespace attn
