//===- MergeSplits.h - the split-KV merge, written once -------------------===//
//
// Split-KV runs the key range of a row in parts, each with its own
// normalized result o_p and log-sum lse_p; the merge combines them:
//   m = max_p lse_p,  w_p = exp(lse_p - m)
//   o = sum_p w_p o_p / sum_p w_p,  lse = m + log(sum_p w_p)
// for normalizers with a row sum (dialect/Normalizers.h hasRowSum); the
// others' parts add up (o = sum_p o_p) and leave lse alone. A part that
// kept no key has lse_p = -inf and weight 0; a row where no part kept any
// gives o = 0 and lse = -inf, as the unsplit kernel does.
//
// Targets differ only in how they iterate (the CPU's work loop over rows
// and a loop over columns, a GPU thread per (row, column)) and in where the
// values are read and written, which they pass in as callbacks.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_TRANSFORMS_MERGESPLITS_H
#define ATTN_TRANSFORMS_MERGESPLITS_H

#include "dialect/Normalizers.h"

#include "mlir/IR/Builders.h"

namespace mlir::attn {

/// Where the merge reads one output row's parts: their count (index), and
/// part p's f32 lse and o (at the column being merged).
struct SplitParts {
  Value count;
  llvm::function_ref<Value(OpBuilder &, Value part)> lse;
  llvm::function_ref<Value(OpBuilder &, Value part)> out;
};

/// What a row's columns share: for weighted merges (row-sum normalizers)
/// the largest part lse, the shift the weights subtract (that max, or 0
/// when no part kept a key, so no weight is exp(-inf - -inf)) and whether
/// no part kept a key; all null otherwise.
struct MergeRow {
  bool weighted = false;
  Value maxLse, shift, none;
};

/// The row's shared values (reads every part's lse when weighted).
MergeRow emitMergeRow(OpBuilder &b, Location loc, Normalize norm,
                      const SplitParts &parts);

/// Merges one column of the row: stores the merged o, converted to
/// `outElt`, through storeOut, and with `storeLse` the row's lse through
/// it, at column 0 only (weighted merges; others leave lse alone).
void emitMergeColumn(
    OpBuilder &b, Location loc, const MergeRow &row, const SplitParts &parts,
    Value column, Type outElt,
    llvm::function_ref<void(OpBuilder &, Value)> storeOut,
    llvm::function_ref<void(OpBuilder &, Value)> storeLse = nullptr);

} // namespace mlir::attn

#endif // ATTN_TRANSFORMS_MERGESPLITS_H
