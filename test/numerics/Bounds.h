//===- Bounds.h - the accuracy bounds of docs/numerics.md -----------------===//
//
// What the numerics tests assert, in one place for the CPU tests and the
// GPU ones on the simulator.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_TEST_BOUNDS_H
#define ATTN_TEST_BOUNDS_H

#include "attn/runtime.h"

#include <cmath>
#include <string>

namespace attn::testing {

/// Bound on max |o - ref| (docs/numerics.md): 2e-4 absolute (`absolute`),
/// plus for f16/bf16 outputs the rounding of o to its dtype, one ulp
/// relative to the answer's scale.
inline double outputBound(DType out, double refMaxAbs,
                          double absolute = 2e-4) {
  switch (out) {
  case DType::f16: return absolute + std::ldexp(refMaxAbs, -10);
  case DType::bf16: return absolute + std::ldexp(refMaxAbs, -7);
  default: return absolute;
  }
}

/// GPU kernels multiply P, rounded to the input dtype, with V on the
/// tensor cores: o carries that rounding whatever its own dtype, so the
/// input dtype's bound applies, also with `out_dtype = f32`.
inline double gpuOutputBound(const KernelInfo &info, double refMaxAbs,
                             double absolute = 2e-4) {
  return outputBound(info.dtype, refMaxAbs, absolute);
}

/// Bound on max |lse - ref| over finite values (lse is f32 for every dtype).
constexpr double kLseBound = 2e-4;

/// f32 o and lse with logits of magnitude ~300.
constexpr double kLargeLogitBound = 5e-4;

/// Quantized K/V against the float64 reference on the unquantized inputs
/// (unit-normal data), as relative L1 error of o (about 1.4x plain
/// symmetric quantization in DSL.md's layout).
struct QuantBound {
  const char *kind;
  double bound;
};
inline constexpr QuantBound kQuantBounds[] = {
    {"int8", 1.5e-2}, {"fp8e4m3", 5e-2}, {"fp8e5m2", 1e-1}, {"int4", 2e-1}};

/// The bound of `kind` (one of kQuantBounds), 0 for an unknown kind.
inline double quantBound(const std::string &kind) {
  for (const QuantBound &q : kQuantBounds)
    if (kind == q.kind)
      return q.bound;
  return 0;
}

} // namespace attn::testing

#endif // ATTN_TEST_BOUNDS_H
