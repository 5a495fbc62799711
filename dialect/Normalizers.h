//===- Normalizers.h - what each row normalizer implies -------------------===//
//
// The one place that says what `normalize = ...` (DSL.md) means for the
// code built from it. Passes and targets ask these properties instead of
// comparing the enum; the pointwise p = f(t) is normalizeScore
// (lib/Transforms/Transforms.h), which every target calls.
//
//   softmax   p = exp(t - max) / sum: online softmax. Needs each row's
//             running max, so the accumulator and row sum are rescaled when
//             it grows, and a masked score is -inf before the exp; runs in
//             the log2 domain (exp2); a sink logit joins the row sum;
//             lse = m + log l (back in natural log).
//   softplus  p = log(1 + exp(t)), o = sum p v / sum p: a row sum with no
//             max (p grows only linearly in t: nothing to shift);
//             lse = log l.
//   sigmoid, relu, relu2, laplace
//             p = f(t), o = sum p v: neither a max nor a sum; no lse
//             output, and split-KV parts simply add up. laplace is Mega's
//             (Ma et al., ICLR 2023) p = 0.5 (1 + erf((t - mu) / (sigma
//             sqrt 2))), mu = sqrt(1/2), sigma = sqrt(1/(4 pi)).
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_DIALECT_NORMALIZERS_H
#define ATTN_DIALECT_NORMALIZERS_H

#include "dialect/AttnDialect.h"

namespace mlir::attn {

/// o is divided by the row sum l = sum p (0 when l is 0), so the variant
/// has an lse output (log l, with the max added back for softmax) and
/// split-KV parts are merged weighted by exp(lse_i). softmax and softplus.
inline bool hasRowSum(Normalize norm) {
  return norm == Normalize::softmax || norm == Normalize::softplus;
}

/// p depends on the row's maximum score (online softmax): a running max m
/// per row, the accumulator and row sum rescaled by exp2(m_old - m_new) as
/// it grows, and l = sum exp2(t - m), whence lse = (m + log2 l) ln 2
/// rather than log l. The other normalizers are pointwise: p =
/// normalizeScore(t), with no alpha. softmax only.
inline bool hasRunningMax(Normalize norm) { return norm == Normalize::softmax; }

/// Scores are carried multiplied by log2(e) so that exp2 computes the exp:
/// the scale absorbs log2(e) where nothing comes between it and the exp
/// (AttentionOp::foldsLog2eIntoScale), else a score region's result and a
/// sink logit are multiplied by it. softmax only.
inline bool runsInLog2Domain(Normalize norm) {
  return norm == Normalize::softmax;
}

/// A masked (dropped) entry is a score of -inf before the normalizer (max
/// ignores it, exp2 makes it 0); for the pointwise normalizers the entry's
/// p is set to 0 after normalizeScore instead. softmax only.
inline bool maskedScoreIsMinusInf(Normalize norm) {
  return hasRunningMax(norm);
}

/// A sink logit (DSL.md `sink`) is one more entry of the softmax
/// denominator, exp(sink - m) with no value row: it needs the running max
/// and row sum. softmax only (the verifier rejects a sink elsewhere).
inline bool allowsSink(Normalize norm) { return hasRunningMax(norm); }

} // namespace mlir::attn

#endif // ATTN_DIALECT_NORMALIZERS_H
