//===- Quantize.cpp - K/V into the quantized layout kernels read ----------===//
//
// DSL.md's layout (KIVI): keys get one scale per channel for each group of
// G tokens, values one scale per token; codes are symmetric,
// scale = amax / max code, so the largest magnitude of a group maps to the
// largest code exactly.
//
//===----------------------------------------------------------------------===//
#include "attn/runtime.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace attn {
namespace {

enum class Code { Int8, E4M3, E5M2, Int4 };

Code parseKind(const std::string &kind) {
  if (kind == "int8")
    return Code::Int8;
  if (kind == "fp8e4m3")
    return Code::E4M3;
  if (kind == "fp8e5m2")
    return Code::E5M2;
  if (kind == "int4")
    return Code::Int4;
  throw Error("kv_dtype", "unknown K/V code '" + kind +
                              "'; expected int8, fp8e4m3, fp8e5m2 or int4");
}

double maxCode(Code c) {
  switch (c) {
  case Code::Int8: return 127;
  case Code::E4M3: return 448;
  case Code::E5M2: return 57344;
  case Code::Int4: return 7;
  }
  return 1;
}

/// The value of an fp8 byte's magnitude bits (0..0x7f), as kernels decode
/// it: exponent and mantissa moved into an f32 and rescaled by the bias.
double fp8Value(Code c, int bits) {
  bool e4m3 = c == Code::E4M3;
  int manBits = e4m3 ? 3 : 2, bias = e4m3 ? 7 : 15;
  int exp = bits >> manBits, man = bits & ((1 << manBits) - 1);
  if (exp == 0)
    return std::ldexp(double(man), 1 - bias - manBits);
  return std::ldexp(1.0 + double(man) / (1 << manBits), exp - bias);
}

/// Finite fp8 magnitudes in increasing order (e4m3: 0x00..0x7e, e5m2:
/// 0x00..0x7b; the rest are inf/NaN and never produced).
const std::vector<double> &fp8Table(Code c) {
  static const auto build = [](Code c) {
    std::vector<double> t;
    int last = c == Code::E4M3 ? 0x7e : 0x7b;
    for (int b = 0; b <= last; ++b)
      t.push_back(fp8Value(c, b));
    return t;
  };
  static const std::vector<double> e4m3 = build(Code::E4M3);
  static const std::vector<double> e5m2 = build(Code::E5M2);
  return c == Code::E4M3 ? e4m3 : e5m2;
}

/// Round to nearest, ties to even, saturating at the largest finite code.
uint8_t encodeFp8(Code c, double x) {
  const std::vector<double> &t = fp8Table(c);
  double a = std::fabs(x);
  size_t hi = std::lower_bound(t.begin(), t.end(), a) - t.begin();
  size_t code;
  if (hi == t.size())
    code = t.size() - 1;
  else if (hi == 0 || t[hi] == a)
    code = hi;
  else {
    double dLo = a - t[hi - 1], dHi = t[hi] - a;
    code = dLo < dHi ? hi - 1 : dHi < dLo ? hi : (hi % 2 == 0 ? hi : hi - 1);
  }
  return static_cast<uint8_t>(code | (std::signbit(x) && code ? 0x80 : 0));
}

int encodeInt(double x, double max) {
  return static_cast<int>(std::clamp(std::nearbyint(x), -max, max));
}

float loadFloat(const TensorRef &t, int64_t offset) {
  const char *p = static_cast<const char *>(t.data);
  switch (t.dtype) {
  case DType::f32: {
    float f;
    std::memcpy(&f, p + 4 * offset, 4);
    return f;
  }
  case DType::f16: {
    _Float16 h;
    std::memcpy(&h, p + 2 * offset, 2);
    return static_cast<float>(h);
  }
  case DType::bf16: {
    uint16_t b;
    std::memcpy(&b, p + 2 * offset, 2);
    uint32_t bits = uint32_t(b) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  default:
    return 0;
  }
}

/// K or V [B, H, S, D]: sizes a launch accepts (each at most 2^31 - 1) and
/// an element count that fits, so that no index below can overflow.
void checkSizes(const TensorRef &t, const char *name) {
  if (t.shape.size() != 4)
    throw Error(name, std::string("expected [B, Hkv, S, ") +
                          (name[0] == 'k' ? "D]" : "Dv]"));
  for (int64_t d : t.shape)
    if (d < 0 || d > INT32_MAX)
      throw Error(name, "expected sizes in 0..2^31 - 1");
  int64_t n = 1;
  for (int64_t d : t.shape)
    if (__builtin_mul_overflow(n, d, &n) || n > INT64_MAX / 4)
      throw Error(name, "more elements than fit in 64-bit byte offsets");
}

/// Shared checks: src [B, H, S, D] float, codes [B, H, S, D/pack] of the
/// code dtype, scale of `scaleShape`, all contiguous rows.
void checkQuantizeArgs(const TensorRef &src, const char *srcName, Code c,
                       const std::string &kind, const TensorRef &codes,
                       const TensorRef &scale,
                       const std::vector<int64_t> &scaleShape) {
  if (src.shape.size() != 4 ||
      (src.dtype != DType::f32 && src.dtype != DType::f16 &&
       src.dtype != DType::bf16) || !src.isContiguous())
    throw Error(srcName, "expected a contiguous [B, Hkv, S, D] f32, f16 or "
                         "bf16 tensor");
  int64_t pack = c == Code::Int4 ? 2 : 1;
  if (src.shape[3] % pack)
    throw Error(srcName, "int4 packs two codes per byte: expected an even D");
  std::vector<int64_t> want = src.shape;
  want[3] /= pack;
  if (codes.dtype != codeDType(kind) || codes.shape != want ||
      !codes.isContiguous())
    throw Error("codes", std::string("expected a contiguous ") +
                             dtypeName(codeDType(kind)) + " tensor of shape [" +
                             std::to_string(want[0]) + ", " +
                             std::to_string(want[1]) + ", " +
                             std::to_string(want[2]) + ", " +
                             std::to_string(want[3]) + "]");
  if (scale.dtype != DType::f32 || scale.shape != scaleShape ||
      !scale.isContiguous())
    throw Error("scale", "expected a contiguous f32 tensor of " +
                             std::to_string(scaleShape.size()) +
                             " dims matching the layout");
  if ((src.numel() && !src.data) || (codes.numel() && !codes.data) ||
      (scale.numel() && !scale.data))
    throw Error(srcName, "null data pointer");
}

/// Writes the codes of `n` values at `values` (already divided by their
/// scales) starting at code index `first` of a row.
void storeCode(Code c, void *codes, int64_t index, double x) {
  auto *bytes = static_cast<uint8_t *>(codes);
  switch (c) {
  case Code::Int8:
    bytes[index] = static_cast<uint8_t>(static_cast<int8_t>(encodeInt(x, 127)));
    break;
  case Code::E4M3:
  case Code::E5M2:
    bytes[index] = encodeFp8(c, x);
    break;
  case Code::Int4: {
    uint8_t nibble = static_cast<uint8_t>(encodeInt(x, 7)) & 0xf;
    uint8_t &b = bytes[index / 2];
    b = index % 2 ? uint8_t((b & 0x0f) | (nibble << 4))
                  : uint8_t((b & 0xf0) | nibble);
    break;
  }
  }
}

} // namespace

DType codeDType(const std::string &kind) {
  switch (parseKind(kind)) {
  case Code::E4M3: return DType::f8e4m3;
  case Code::E5M2: return DType::f8e5m2;
  default: return DType::i8;
  }
}

int64_t codesPerElement(const std::string &kind) {
  return parseKind(kind) == Code::Int4 ? 2 : 1;
}

void quantizeKeys(const TensorRef &k, const std::string &kind, int64_t group,
                  const TensorRef &codes, const TensorRef &scale) {
  Code c = parseKind(kind);
  if (group < 1)
    throw Error("group", "expected a positive group size");
  checkSizes(k, "k");
  int64_t B = k.shape[0], H = k.shape[1], S = k.shape[2], D = k.shape[3];
  int64_t groups = (S + group - 1) / group;
  checkQuantizeArgs(k, "k", c, kind, codes, scale, {B, H, groups, D});
  auto *scales = static_cast<float *>(scale.data);
  int64_t pack = c == Code::Int4 ? 2 : 1;
  for (int64_t bh = 0; bh < B * H; ++bh)
    for (int64_t g = 0; g < groups; ++g) {
      int64_t s0 = g * group, s1 = std::min(S, s0 + group);
      for (int64_t d = 0; d < D; ++d) {
        double amax = 0;
        for (int64_t s = s0; s < s1; ++s)
          amax = std::max<double>(amax,
                                  std::fabs(loadFloat(k, (bh * S + s) * D + d)));
        float sc = static_cast<float>(amax / maxCode(c));
        scales[(bh * groups + g) * D + d] = sc;
        double inv = sc > 0 ? 1.0 / sc : 0.0;
        for (int64_t s = s0; s < s1; ++s)
          storeCode(c,
                    static_cast<uint8_t *>(codes.data) + (bh * S + s) * D / pack,
                    d, loadFloat(k, (bh * S + s) * D + d) * inv);
      }
    }
}

void quantizeValues(const TensorRef &v, const std::string &kind,
                    const TensorRef &codes, const TensorRef &scale) {
  Code c = parseKind(kind);
  checkSizes(v, "v");
  int64_t B = v.shape[0], H = v.shape[1], S = v.shape[2], D = v.shape[3];
  checkQuantizeArgs(v, "v", c, kind, codes, scale, {B, H, S});
  auto *scales = static_cast<float *>(scale.data);
  int64_t pack = c == Code::Int4 ? 2 : 1;
  for (int64_t row = 0; row < B * H * S; ++row) {
    double amax = 0;
    for (int64_t d = 0; d < D; ++d)
      amax = std::max<double>(amax, std::fabs(loadFloat(v, row * D + d)));
    float sc = static_cast<float>(amax / maxCode(c));
    scales[row] = sc;
    double inv = sc > 0 ? 1.0 / sc : 0.0;
    for (int64_t d = 0; d < D; ++d)
      storeCode(c, static_cast<uint8_t *>(codes.data) + row * D / pack, d,
                loadFloat(v, row * D + d) * inv);
  }
}

} // namespace attn
