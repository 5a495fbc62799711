//===- RowState.h - one query row's online-normalizer math ----------------===//
//
// The math of one query row as key tiles go by, for every normalizer
// (dialect/Normalizers.h) and sinks, written once for the CPU tiler and
// the GPU kernel builders:
//
//   start    m = -inf ("nothing kept yet"), l = 0; a sink logit is one
//            more entry of the denominator: m = sink log2(e), l = 1
//   entry    t = the score in the normalizer's domain, masked: -inf for a
//            running max, p = normalizeScore(t) or 0 otherwise
//   tile     m' = max(m, the tile's row max); mUse = m', or 0 while m' is
//            -inf (so that exp2(-inf - -inf) never makes a NaN); alpha =
//            exp2(m - mUse); l' = l alpha + sum p with p = exp2(t - mUse)
//            (acc is rescaled by alpha too); pointwise: l' = l + sum p
//   end      o = acc / l (0 when l = 0) or acc; lse = (m + log2 l) ln 2,
//            log l, -inf for an empty row
//
// Each function emits elementwise arith/math ops on f32 scalars or vectors
// of f32. What is target specific stays with the caller: the reductions of
// a row's max and sum (loops on the CPU, lane shuffles on GPUs), where the
// state lives (buffers or registers) and which lane or split-KV part counts
// the sink. Functions that do nothing for a normalizer create no ops.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_TRANSFORMS_ROWSTATE_H
#define ATTN_TRANSFORMS_ROWSTATE_H

#include "dialect/Normalizers.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/IR/Builders.h"

namespace mlir::attn {

/// x in the normalizer's domain: times log2(e) where the row runs in the
/// log2 domain (runsInLog2Domain), for a score region's result and a sink
/// logit (a plain scaled score carries log2(e) in its scale already).
Value toNormalizerDomain(OpBuilder &b, Location loc, Normalize norm, Value x);

/// The running max a row starts with: -inf, or `sinkMax` (a sink logit in
/// the normalizer's domain; null without a sink) where `sinkCounts` holds
/// (i1; null: everywhere), e.g. only in split-KV part 0.
Value initialRowMax(OpBuilder &b, Location loc, Value sinkMax,
                    Value sinkCounts);

/// The row sum a row starts with: 0, or with a sink, whose entry is
/// exp(sink - m) = 1 against m = the sink, 1 where `sinkCounts` holds (i1;
/// null: everywhere; on GPUs also only in the lane that owns the row's
/// share of l).
Value initialRowSum(OpBuilder &b, Location loc, bool sink, Value sinkCounts);

/// An entry's normalizer input from its score t (in the normalizer's
/// domain) and `keep` (i1; null: the entry is known to be kept): for a
/// running max, t, or -inf where dropped (max ignores it, exp2 makes it 0);
/// for the pointwise normalizers already p = normalizeScore(t), 0 where
/// dropped.
Value maskEntry(OpBuilder &b, Location loc, Normalize norm, Value t,
                Value keep);

/// One key tile's step of a row's state.
struct RowRescale {
  /// The running max after the tile (the old one without a running max).
  Value m;
  /// What the tile's entries are exponentiated against: m, or 0 while m is
  /// -inf (nothing kept yet). Null without a running max.
  Value mUse;
  /// -mUse, made when asked for: exp2(s scale - mUse) is one FMA.
  Value minusMUse;
  /// exp2(mOld - mUse), which the accumulator and the row sum are
  /// multiplied by; null where nothing is rescaled.
  Value alpha;
  /// The row sum rescaled (l alpha), before the tile's entries join.
  Value l;
};

/// The row's step over a key tile from its state (mOld, l) and `newMax`,
/// the max of mOld and the tile's entries (maskEntry) that the caller
/// reduced; ignored (and best null) without a running max, where the state
/// passes through unchanged. `withMinusMUse` also makes -mUse.
RowRescale rescaleRow(OpBuilder &b, Location loc, Normalize norm, Value mOld,
                      Value newMax, Value l, bool withMinusMUse = false);

/// p of an entry whose normalizer input (maskEntry) is x: exp2(x - mUse)
/// for a running max (mUse of rescaleRow), x itself otherwise.
Value entryProbability(OpBuilder &b, Location loc, Normalize norm, Value x,
                       Value mUse);

/// p of an entry for a running max when x is the score before a scale
/// that the exponent absorbs (see KernelBase::scaleFoldsIntoExp):
/// exp2(fma(x, scale, -mUse)); x itself without a running max.
Value entryProbabilityScaled(OpBuilder &b, Location loc, Normalize norm,
                             Value x, Value scale, const RowRescale &row);

/// l + p for a normalizer with a row sum (hasRowSum); l otherwise, and null
/// l stays null. `flags` are the addition's fast-math flags.
Value addToRowSum(OpBuilder &b, Location loc, Normalize norm, Value l,
                  Value p,
                  arith::FastMathFlags flags = arith::FastMathFlags::none);

/// What the epilogue multiplies acc by, o = acc * inv: 1 / l, or 0 for an
/// empty row (l == 0: every key masked or underflowed), with `empty` that
/// test. Both null without a row sum: o = acc.
struct RowNormalization {
  Value empty, inv;
};
RowNormalization normalizeRow(OpBuilder &b, Location loc, Normalize norm,
                              Value l);

/// The row's log-sum-exp (natural log) from its final state and
/// normalizeRow's `empty`: (m + log2 l) ln 2 for a running max (l is
/// relative to m, in the log2 domain), log l for a row sum alone, -inf for
/// an empty row. Null without a row sum (no lse output).
Value rowLse(OpBuilder &b, Location loc, Normalize norm, Value m, Value l,
             Value empty);

} // namespace mlir::attn

#endif // ATTN_TRANSFORMS_ROWSTATE_H
