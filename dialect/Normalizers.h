//===- Normalizers.h - what each row normalizer implies -------------------===//
//
// What `normalize = ...` (DSL.md) means for the code built from it, asked
// of the dialect's Normalize. Passes and targets ask these properties
// instead of comparing the enum. Normalizers.cpp answers them from the one
// table of normalizers, runtime/support/Normalizers.h (shared with the
// frontend and attnrt, where the normalizers themselves are described),
// included there only: its namespace ::attn would make `attn::` ambiguous
// in files that say `using namespace mlir`. The pointwise p = f(t) and its
// derivative are lib/Transforms/NormalizerMath.h.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_DIALECT_NORMALIZERS_H
#define ATTN_DIALECT_NORMALIZERS_H

#include "dialect/AttnDialect.h"

#include <string>

namespace mlir::attn {

/// o is divided by the row sum l = sum p (0 when l is 0), so the variant
/// has an lse output (log l, with the max added back for softmax) and
/// split-KV parts are merged weighted by exp(lse_i). softmax and softplus.
bool hasRowSum(Normalize norm);

/// p depends on the row's maximum score (online softmax): a running max m
/// per row, the accumulator and row sum rescaled by exp2(m_old - m_new) as
/// it grows, and l = sum exp2(t - m), whence lse = (m + log2 l) ln 2
/// rather than log l. The other normalizers are pointwise: p =
/// normalizeScore(t), with no alpha. softmax only.
bool hasRunningMax(Normalize norm);

/// Scores are carried multiplied by log2(e) so that exp2 computes the exp:
/// the scale absorbs log2(e) where nothing comes between it and the exp
/// (AttentionOp::foldsLog2eIntoScale), else a score region's result and a
/// sink logit are multiplied by it. softmax only.
bool runsInLog2Domain(Normalize norm);

/// A masked (dropped) entry is a score of -inf before the normalizer (max
/// ignores it, exp2 makes it 0); for the pointwise normalizers the entry's
/// p is set to 0 after normalizeScore instead. softmax only.
inline bool maskedScoreIsMinusInf(Normalize norm) {
  return hasRunningMax(norm);
}

/// A sink logit (DSL.md `sink`) is one more entry of the softmax
/// denominator, exp(sink - m) with no value row: it needs the running max
/// and row sum. softmax only (the verifier rejects a sink elsewhere).
bool allowsSink(Normalize norm);

/// The names of the normalizers with a row sum, "softmax and softplus",
/// for messages.
std::string rowSumNormalizerNames();

} // namespace mlir::attn

#endif // ATTN_DIALECT_NORMALIZERS_H
