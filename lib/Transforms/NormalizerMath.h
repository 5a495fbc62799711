//===- NormalizerMath.h - each normalizer's pointwise math ----------------===//
//
// What `normalize = ...` (DSL.md) computes at one score entry, forward and
// backward side by side, so a new normalizer's p = f(t) and its derivative
// are written in one file (NormalizerMath.cpp). Every target emits them
// through these functions: the CPU tiler's row state (RowState.cpp), the
// CPU backward (TileBackward.cpp) and the GPU backward (GpuBackward.cpp).
// Which row state a normalizer needs (running max, row sum, lse) is not
// here: dialect/Normalizers.h answers it.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_TRANSFORMS_NORMALIZERMATH_H
#define ATTN_TRANSFORMS_NORMALIZERMATH_H

#include "dialect/AttnDialect.h"
#include "mlir/IR/Builders.h"

#include <utility>

namespace mlir::attn {

/// The pointwise normalizer p = f(t) of a score t, for a normalizer without
/// a running max (!hasRunningMax, dialect/Normalizers.h); each one's f is
/// at its case in NormalizerMath.cpp. Every target emits p through this; a
/// masked entry's p is 0 afterwards.
Value normalizeScore(OpBuilder &b, Location loc, Normalize norm, Value t);

/// The backward of the normalizer at one entry, the math every target's
/// backward kernel emits: given the score u (after the score region), dp =
/// dO . v, the row's forward lse and delta = rowsum(dO * O), returns p (as
/// the forward used it: exp(u - lse) for softmax, f(u) / exp(lse) for the
/// other normalizers with a row sum, f(u) for the rest) and du = dL/du
/// (each normalizer's at its case in NormalizerMath.cpp). Backward kernels
/// call it through keptNormalizerAdjoint, which zeroes both where they do
/// not count.
std::pair<Value, Value> normalizerAdjoint(OpBuilder &b, Location loc,
                                          Normalize norm, Value u, Value dp,
                                          Value lse, Value delta);

/// An entry's p and du in the backward, and whether it counts.
struct EntryAdjoint {
  Value p, du, kept;
};

/// normalizerAdjoint at an entry that counts where `kept` (i1: inside the
/// problem and kept by the mask): for a normalizer with a row sum, an entry
/// also needs its row to have mass (lse > -inf; a row whose kept scores are
/// all -inf has o = 0 and nothing to differentiate, and exp(u - lse) would
/// be NaN). p and du are 0 where the entry does not count; `kept` comes
/// back with the row's verdict, for the caller's other terms.
EntryAdjoint keptNormalizerAdjoint(OpBuilder &b, Location loc, Normalize norm,
                                   Value u, Value dp, Value lse, Value delta,
                                   Value kept);

} // namespace mlir::attn

#endif // ATTN_TRANSFORMS_NORMALIZERMATH_H
