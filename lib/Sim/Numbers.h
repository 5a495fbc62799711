//===- Numbers.h - narrow float formats, bit-exact ------------------------===//
//
// IEEE binary16, bfloat16, and the OCP FP8 formats (E4M3: bias 7, no
// infinities, NaN = S.1111.111; E5M2: bias 15, IEEE-like) as GPUs define
// them: conversions from f32 round to nearest even unless told otherwise,
// and `satfinite` clamps to the largest finite value (NaN stays NaN).
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_SIM_NUMBERS_H
#define ATTN_SIM_NUMBERS_H

#include <cmath>
#include <cstdint>
#include <cstring>

namespace attn::sim {

inline float bitsToFloat(uint32_t b) { float f; memcpy(&f, &b, 4); return f; }
inline uint32_t floatToBits(float f) { uint32_t b; memcpy(&b, &f, 4); return b; }
inline double bitsToDouble(uint64_t b) { double d; memcpy(&d, &b, 8); return d; }
inline uint64_t doubleToBits(double d) { uint64_t b; memcpy(&b, &d, 8); return b; }

inline float bf16ToFloat(uint16_t h) { return bitsToFloat(uint32_t(h) << 16); }
inline uint16_t floatToBf16(float f) {
  uint32_t b = floatToBits(f);
  if (std::isnan(f))
    return static_cast<uint16_t>((b >> 16) | 0x40); // quiet, sign kept
  b += 0x7FFF + ((b >> 16) & 1);
  return static_cast<uint16_t>(b >> 16);
}
inline uint16_t floatToBf16Rz(float f) {
  if (std::isnan(f))
    return static_cast<uint16_t>((floatToBits(f) >> 16) | 0x40);
  return static_cast<uint16_t>(floatToBits(f) >> 16);
}

inline float f16ToFloat(uint16_t h) {
  _Float16 x;
  memcpy(&x, &h, 2);
  return static_cast<float>(x);
}
inline uint16_t floatToF16(float f) {
  _Float16 x = static_cast<_Float16>(f); // round to nearest even
  uint16_t h;
  memcpy(&h, &x, 2);
  return h;
}
inline uint16_t doubleToF16(double d) {
  _Float16 x = static_cast<_Float16>(d);
  uint16_t h;
  memcpy(&h, &x, 2);
  return h;
}

/// A narrow float with `exp` exponent bits and `man` mantissa bits.
inline float narrowToFloat(uint8_t v, int exp, int man, bool hasInf) {
  int bias = (1 << (exp - 1)) - 1;
  bool sign = v >> 7;
  int e = (v >> man) & ((1 << exp) - 1);
  int m = v & ((1 << man) - 1);
  float r;
  if (hasInf && e == (1 << exp) - 1)
    r = m ? NAN : INFINITY;
  else if (!hasInf && e == (1 << exp) - 1 && m == (1 << man) - 1)
    r = NAN;
  else if (e == 0)
    r = std::ldexp(static_cast<float>(m), 1 - bias - man);
  else
    r = std::ldexp(static_cast<float>(m | (1 << man)), e - bias - man);
  return sign ? -r : r;
}
inline float e4m3ToFloat(uint8_t v) { return narrowToFloat(v, 4, 3, false); }
inline float e5m2ToFloat(uint8_t v) { return narrowToFloat(v, 5, 2, true); }

/// Round-to-nearest-even conversion to a narrow float; with `satfinite`
/// out-of-range values become the largest finite value of their sign, else
/// infinity (E5M2) or NaN (E4M3, which has no infinity).
inline uint8_t floatToNarrow(float f, int exp, int man, bool hasInf,
                             bool satfinite) {
  int bias = (1 << (exp - 1)) - 1;
  uint8_t sign = std::signbit(f) ? 0x80 : 0;
  uint8_t nan = hasInf ? uint8_t(0x7F) : uint8_t(0x7F);
  if (std::isnan(f))
    return sign | nan;
  // Largest finite: E4M3 1.75 * 2^8 = 448 (S.1111.110), E5M2 1.75 * 2^15.
  int maxE = hasInf ? (1 << exp) - 2 : (1 << exp) - 1;
  int maxM = hasInf ? (1 << man) - 1 : (1 << man) - 2;
  double maxVal = std::ldexp(1.0 + maxM / double(1 << man), maxE - bias);
  double a = std::fabs(static_cast<double>(f));
  uint8_t maxCode = static_cast<uint8_t>((maxE << man) | maxM);
  uint8_t overflow = satfinite ? maxCode
                     : hasInf ? static_cast<uint8_t>(((1 << exp) - 1) << man)
                              : nan;
  if (std::isinf(f))
    return sign | overflow;
  // Quantize in units of the smallest subnormal, then by the exponent.
  int e;
  std::frexp(a, &e); // a = frac * 2^e, frac in [0.5, 1)
  int unbiased = e - 1;
  int minExp = 1 - bias;
  int quantumExp = (unbiased < minExp ? minExp : unbiased) - man;
  double q = std::ldexp(a, -quantumExp);
  double r = std::nearbyint(q); // ties to even (default rounding mode)
  double value = std::ldexp(r, quantumExp);
  if (value > maxVal) {
    // Past the largest finite value: anything that rounds beyond it.
    return sign | overflow;
  }
  if (value == 0)
    return sign;
  int ve;
  std::frexp(value, &ve);
  int vexp = ve - 1;
  uint8_t code;
  if (vexp < minExp) {
    code = static_cast<uint8_t>(std::ldexp(value, -(minExp - man)));
  } else {
    int m = static_cast<int>(std::ldexp(value, -(vexp - man))) - (1 << man);
    code = static_cast<uint8_t>(((vexp + bias) << man) | m);
  }
  return sign | code;
}
inline uint8_t floatToE4m3(float f, bool satfinite) {
  return floatToNarrow(f, 4, 3, false, satfinite);
}
inline uint8_t floatToE5m2(float f, bool satfinite) {
  return floatToNarrow(f, 5, 2, true, satfinite);
}

} // namespace attn::sim

#endif // ATTN_SIM_NUMBERS_H
