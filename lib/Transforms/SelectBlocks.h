//===- SelectBlocks.h - the select pre-pass, once for every target -------===//
//
// select (DSL.md) keeps, per query block, the key blocks its rule picks by
// pooled score, plus the diagonal block. The rule lives here: pooling,
// eligibility through the mask classifier, the block score, topk / mass /
// above and the tie rule. A target says only how the work is spread (the
// CPU's loops; GPU threads striding over blocks, barriers between phases,
// one thread for the serial parts) and where the scratch lives, through
// SelectWork and SelectBlocks' callbacks.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_TRANSFORMS_SELECTBLOCKS_H
#define ATTN_TRANSFORMS_SELECTBLOCKS_H

#include "dialect/AttnOps.h"

#include "mlir/IR/Builders.h"

#include <functional>
#include <optional>

namespace mlir::attn {

/// How a target spreads the pre-pass's loops: forEach(end, body) runs
/// body(i) for i = first, first + step, ... < end (the CPU: 0, 1; GPUs:
/// threadIdx.x, blockDim.x), so every loop over blocks or columns gives
/// each worker the same indices. barrier orders the phases (nothing on the
/// CPU); single runs a body once (GPUs: thread 0).
struct SelectWork {
  Value first, step;
  std::function<void(OpBuilder &)> barrier;
  std::function<void(OpBuilder &, llvm::function_ref<void(OpBuilder &)>)>
      single;

  void forEach(OpBuilder &b, Location loc, Value end,
               llvm::function_ref<void(OpBuilder &, Value)> body) const;
};

/// The pooled (mean) block of rows [s, e) (index values, s < e):
/// store(d, mean) for the worker's columns d < D, each column's
/// element(r, d) summed in row order, times 1 / (e - s). With `load`, the
/// sums go through the destination (store, then load back), rows outside
/// and columns inside so each row is read contiguously (the CPU
/// vectorizes it); without, each column sums in a register (GPU threads
/// own columns). Either way the same sums in the same order.
void emitPooledRows(
    OpBuilder &b, Location loc, const SelectWork &work, int64_t D, Value s,
    Value e, llvm::function_ref<Value(OpBuilder &, Value, Value)> element,
    llvm::function_ref<void(OpBuilder &, Value, Value)> store,
    llvm::function_ref<Value(OpBuilder &, Value)> load = nullptr);

/// Whether key block a (score sa, index ia) goes ahead of block c in
/// select's order: the higher score, on equal scores the lower index. The
/// one tie rule: the CPU's best-first rounds, the GPU's cross-thread
/// argmax, mass's sort and its ranking all order blocks by it. Indices of
/// one integer type.
Value selectGoesAhead(OpBuilder &b, Location loc, Value sa, Value ia,
                      Value sc, Value ic);

/// select's eligibility of queries [qs, qe) x keys [ks, ke) (index values):
/// whether the mask keeps any entry, by the classifier's verdict (PARTIAL
/// when the op has none) and for PARTIAL blocks a scan up to the first kept
/// entry; true without a mask. inlineRegion(b, region, args) inlines one
/// of the op's regions; b32, h32 are the batch and query head (i32).
Value selectEligible(
    OpBuilder &b, Location loc, AttentionOp op, Value b32, Value h32,
    Value qs, Value qe, Value ks, Value ke,
    llvm::function_ref<Value(OpBuilder &, Region &, ValueRange)> inlineRegion);

/// One query block's selection, rows [qs, qe) against numBlocks key blocks
/// of blockSize keys. The target gives the pooled query and keys, and where
/// the per-block scratch lives: record stores a block's eligibility (i1)
/// and score and clears its kept flag; eligibleAt, scoreAt, keptAt read
/// them back; keep sets the kept flag.
struct SelectBlocks {
  SelectWork work;
  int64_t blockSize = 0, D = 0;
  Value qs, qe, seqQ, seqKV, numBlocks, scale;
  std::function<Value(OpBuilder &, Value, Value)> eligible; // (ks, ke)
  std::function<Value(OpBuilder &, Value)> pooledQueryAt;   // (d)
  std::function<Value(OpBuilder &, Value, Value)> pooledKeyAt; // (kb, d)
  std::function<void(OpBuilder &, Value, Value, Value)> record;
  std::function<Value(OpBuilder &, Value)> eligibleAt, scoreAt, keptAt;
  std::function<void(OpBuilder &, Value)> keep;
  /// topk: the round's winner from each worker's best open block (index,
  /// numBlocks for none) and its score, by selectGoesAhead; what the
  /// target knows of its workers (on the CPU the one candidate).
  std::function<Value(OpBuilder &, Value, Value)> bestOfWorkers;
  /// mass: sort buffers (f32 scores, i32 keys) of at least the next power
  /// of two of numBlocks entries, or of sortCapacity entries when given:
  /// more blocks than that are ranked instead, each against all others.
  Value sortScore, sortKey;
  std::optional<int64_t> sortCapacity;
};

/// The pre-pass for one query block: every key block's eligibility and
/// pooled score (mean(q) . mean(k) * scale, -inf where ineligible), then
/// the rule `kind` with argument `arg`: topk(K) in K rounds of the best
/// open block, mass(P) the fewest best blocks whose softmax shares reach
/// P, above(T) those scoring above T; and the diagonal block, always.
/// Blocks are taken in selectGoesAhead's order.
void emitSelectBlocks(OpBuilder &b, Location loc, SelectKind kind, Value arg,
                      const SelectBlocks &sel);

/// The select block always kept for the query block ending at `qe`: the one
/// holding its last query's key position (queries aligned to the end of
/// the keys), clamped into [0, numBlocks). Index values.
Value selectDiagonalBlock(OpBuilder &b, Location loc, Value qe, Value seqQ,
                          Value seqKV, int64_t blockSize, Value numBlocks);

/// topk(K)'s block count from its f32 argument: K clamped into [0, 1e9], 0
/// for NaN, as an index.
Value selectTopkCount(OpBuilder &b, Location loc, Value arg);

} // namespace mlir::attn

#endif // ATTN_TRANSFORMS_SELECTBLOCKS_H
