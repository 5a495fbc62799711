//===- ReferenceBackward.h - float64 reference backward -------------------===//
//
// The oracle for backward tests: the gradients of L = sum(o * dout), o being
// exactly what referenceAttention computes, with respect to q, k, v, every
// f32 param and every f32 captured tensor. The score, sink and scale
// expressions are differentiated on their AST by a small reverse-mode
// evaluator (a tape per evaluation point), with the derivative rules of
// docs/numerics.md "Reference backward" (documented choices at the
// non-differentiable points, the same the compiler's differentiation uses).
// Masks, `select` choices and `kv_index` listings are constants. Slow,
// double precision, deterministic (fixed summation order).
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_TEST_REFERENCE_BACKWARD_H
#define ATTN_TEST_REFERENCE_BACKWARD_H

#include "test/reference/Reference.h"

#include <vector>

namespace attn::ref {

struct RefGradients {
  std::vector<double> dq, dk, dv; // shapes of q, k, v
  /// One per param, declaration order; 0 for i32 params.
  std::vector<double> dparams;
  /// One per capture, same shape; zeros for i32/f16/bf16 tensors.
  std::vector<RefTensor> dcaptures;
};

/// Gradients of L = sum(o * dout); `dout` is [B, Hq, Sq, Dv].
RefGradients referenceBackward(const fe::Variant &variant, const RefProblem &p,
                               const std::vector<double> &dout);

} // namespace attn::ref

#endif // ATTN_TEST_REFERENCE_BACKWARD_H
