//===- AmdMfma.cpp - CDNA matrix instructions ------------------------------===//
#include "lib/Sim/AmdMfma.h"
#include "lib/Sim/Numbers.h"

#include <cmath>
#include <cstring>
#include <regex>
#include <vector>

namespace attn::sim::amd {

int elemBits(Elem e) {
  switch (e) {
  case Elem::F32: return 32;
  case Elem::F16:
  case Elem::BF16: return 16;
  case Elem::I8:
  case Elem::Fp8:
  case Elem::Bf8: return 8;
  case Elem::F64: return 64;
  }
  return 32;
}

bool mfmaShape(const std::string &mnemonic, int aDwords, bool ocp,
               MfmaShape &s) {
  // v_mfma_<out>_<M>x<N>x<K>[_<B>b][_]<in>[_1k]
  static const std::regex re(
      "v_mfma_(f32|i32|f64)_([0-9]+)x([0-9]+)x([0-9]+)(?:_([0-9]+)b)?_?"
      "([a-z0-9_]+)");
  std::smatch m;
  if (!std::regex_match(mnemonic, m, re))
    return false;
  s = MfmaShape();
  s.m = std::stoi(m[2]);
  s.n = std::stoi(m[3]);
  s.k = std::stoi(m[4]);
  s.intOut = m[1] == "i32";
  s.f64 = m[1] == "f64";
  s.ocp = ocp;
  std::string in = m[6];
  if (in == "f32") {
    s.a = s.b = Elem::F32;
  } else if (in == "f16") {
    s.a = s.b = Elem::F16;
  } else if (in == "bf16" || in == "bf16_1k") {
    // gfx90a's pre-"1k" bf16 MFMAs (v_mfma_f32_32x32x2bf16 and co.) take
    // two bf16 per register like the 1k ones, so one rule serves both.
    s.a = s.b = Elem::BF16;
  } else if (in == "i8") {
    s.a = s.b = Elem::I8;
  } else if (in == "f64") {
    s.a = s.b = Elem::F64;
  } else if (in == "fp8_fp8" || in == "fp8_bf8" || in == "bf8_fp8" ||
             in == "bf8_bf8") {
    s.a = in.substr(0, 3) == "fp8" ? Elem::Fp8 : Elem::Bf8;
    s.b = in.substr(4, 3) == "fp8" ? Elem::Fp8 : Elem::Bf8;
  } else {
    return false; // xf32, scaled f8f6f4, sparse: not modelled
  }
  if (s.intOut != (s.a == Elem::I8) || s.f64 != (s.a == Elem::F64))
    return false;
  // Blocks from the A operand's size: M * K * blocks elements in 64 lanes.
  int perLane = aDwords * 32 / elemBits(s.a);
  if (perLane * 64 % (s.m * s.k))
    return false;
  s.blocks = perLane * 64 / (s.m * s.k);
  if (m[5].matched && std::stoi(m[5]) != s.blocks)
    return false;
  return s.blocks >= 1 && 64 % (s.m * s.blocks) == 0 &&
         s.k % (64 / (s.m * s.blocks)) == 0;
}

MfmaSlot mfmaInput(const MfmaShape &s, bool isB, int row, int k, int block) {
  int rows = isB ? s.n : s.m;
  int groups = 64 / (rows * s.blocks);
  int perLane = s.k / groups; // E: consecutive k in one lane
  int element = k % perLane;
  int bits = elemBits(isB ? s.b : s.a);
  MfmaSlot slot;
  if (bits == 64) {
    slot.reg = element * 2;
  } else {
    slot.reg = element * bits / 32;
    slot.sub = element % (32 / bits);
  }
  slot.lane = block * rows + (k / perLane) * rows * s.blocks + row;
  return slot;
}

MfmaSlot mfmaOutput(const MfmaShape &s, int i, int j, int block) {
  int height = s.f64 ? 1 : 4;
  int side = 64 / s.n; // multi-rows per register
  int perRegister = (64 + s.n * s.m / height - 1) / (s.n * s.m / height);
  int element = block * (s.m * s.n / 64) + (i / (height * side)) * height +
                i % height;
  MfmaSlot slot;
  slot.reg = s.f64 ? element * 2 : element;
  slot.lane = (block % perRegister) * s.n +
              ((i / height) % side) * perRegister * s.n + j;
  return slot;
}

int mfmaInputDwords(const MfmaShape &s) {
  return std::max(1, s.m * s.k * s.blocks * elemBits(s.a) / 64 / 32);
}

int mfmaOutputDwords(const MfmaShape &s) {
  return s.m * s.n * s.blocks / 64 * (s.f64 ? 2 : 1);
}

float fnuzToFloat(uint8_t v, int exp, int man) {
  if (v == 0x80)
    return NAN;
  int bias = 1 << (exp - 1);
  int e = (v >> man) & ((1 << exp) - 1);
  int m = v & ((1 << man) - 1);
  float x = e == 0 ? std::ldexp(float(m), 1 - bias - man)
                   : std::ldexp(1.0f + float(m) / float(1 << man), e - bias);
  return (v & 0x80) ? -x : x;
}

uint8_t floatToFnuz(float f, int exp, int man, bool saturate) {
  if (std::isnan(f))
    return 0x80;
  int bias = 1 << (exp - 1);
  uint8_t sign = std::signbit(f) ? 0x80 : 0;
  double a = std::fabs(double(f));
  double maxValue =
      std::ldexp(2.0 - std::ldexp(1.0, -man), (1 << exp) - 1 - bias);
  if (std::isinf(a) || a > maxValue) {
    // Beyond the largest value even before rounding: NaN or saturate.
    if (!saturate && (std::isinf(a) ||
                      a >= maxValue + std::ldexp(1.0, (1 << exp) - 1 - bias -
                                                         man - 1)))
      return 0x80;
    return sign | 0x7f;
  }
  int e2 = 0;
  std::frexp(a, &e2); // a = f * 2^e2, f in [0.5, 1)
  int unbiased = std::max(e2 - 1, 1 - bias);
  double quantum = std::ldexp(1.0, unbiased - man);
  double q = std::nearbyint(a / quantum) * quantum; // ties to even
  if (q > maxValue)
    return saturate ? (sign | 0x7f) : 0x80;
  if (q == 0)
    return 0; // FNUZ has no -0
  int code;
  if (q < std::ldexp(1.0, 1 - bias)) {
    code = int(q / std::ldexp(1.0, 1 - bias - man));
  } else {
    std::frexp(q, &e2);
    int e = e2 - 1 + bias;
    int m = int((q / std::ldexp(1.0, e2 - 1) - 1.0) * (1 << man) + 0.5);
    code = (e << man) | m;
  }
  return uint8_t(sign | code);
}

double mfmaInputValue(const MfmaShape &s, Elem e, uint32_t bits) {
  switch (e) {
  case Elem::F32: return bitsToFloat(bits);
  case Elem::F16: return f16ToFloat(uint16_t(bits));
  case Elem::BF16: return bf16ToFloat(uint16_t(bits));
  case Elem::I8: return double(int8_t(bits));
  case Elem::Fp8:
    return s.ocp ? e4m3ToFloat(uint8_t(bits)) : fnuzToFloat(uint8_t(bits), 4, 3);
  case Elem::Bf8:
    return s.ocp ? e5m2ToFloat(uint8_t(bits)) : fnuzToFloat(uint8_t(bits), 5, 2);
  case Elem::F64: return 0; // read as two dwords by the caller
  }
  return 0;
}

namespace {

/// Element (row, k) of an input operand.
double inputAt(const MfmaShape &s, bool isB, const uint32_t *regs, int row,
               int k, int block) {
  MfmaSlot slot = mfmaInput(s, isB, row, k, block);
  Elem e = isB ? s.b : s.a;
  int bits = elemBits(e);
  if (bits == 64) {
    uint64_t v = regs[slot.reg * 64 + slot.lane] |
                 uint64_t(regs[(slot.reg + 1) * 64 + slot.lane]) << 32;
    return bitsToDouble(v);
  }
  uint32_t word = regs[slot.reg * 64 + slot.lane];
  uint32_t value = bits == 32 ? word : (word >> (slot.sub * bits)) &
                                           ((1u << bits) - 1);
  return mfmaInputValue(s, e, value);
}

} // namespace

void mfmaExecute(const MfmaShape &s, const uint32_t *a, const uint32_t *b,
                 const uint32_t *c, uint32_t *d) {
  int outDwords = mfmaOutputDwords(s);
  std::vector<uint32_t> result(size_t(outDwords) * 64);
  std::vector<double> av(size_t(s.m) * s.k), bv(size_t(s.k) * s.n);
  for (int blk = 0; blk < s.blocks; ++blk) {
    for (int i = 0; i < s.m; ++i)
      for (int k = 0; k < s.k; ++k)
        av[i * s.k + k] = inputAt(s, false, a, i, k, blk);
    for (int k = 0; k < s.k; ++k)
      for (int j = 0; j < s.n; ++j)
        bv[k * s.n + j] = inputAt(s, true, b, j, k, blk);
    for (int i = 0; i < s.m; ++i)
      for (int j = 0; j < s.n; ++j) {
        MfmaSlot o = mfmaOutput(s, i, j, blk);
        size_t at = size_t(o.reg) * 64 + o.lane;
        if (s.intOut) {
          int64_t sum = int32_t(c[at]);
          for (int k = 0; k < s.k; ++k)
            sum += int64_t(av[i * s.k + k]) * int64_t(bv[k * s.n + j]);
          result[at] = uint32_t(sum);
        } else if (s.f64) {
          double acc = bitsToDouble(c[at] | uint64_t(c[at + 64]) << 32);
          for (int k = 0; k < s.k; ++k)
            acc = std::fma(av[i * s.k + k], bv[k * s.n + j], acc);
          uint64_t bits = doubleToBits(acc);
          result[at] = uint32_t(bits);
          result[at + 64] = uint32_t(bits >> 32);
        } else {
          double acc = 0;
          for (int k = 0; k < s.k; ++k)
            acc += av[i * s.k + k] * bv[k * s.n + j];
          result[at] = floatToBits(float(acc + double(bitsToFloat(c[at]))));
        }
      }
  }
  std::memcpy(d, result.data(), result.size() * sizeof(uint32_t));
}

} // namespace attn::sim::amd
