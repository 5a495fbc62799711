//===- Transforms.h - attn transformations as functions -------------------===//
#ifndef ATTN_TRANSFORMS_TRANSFORMS_H
#define ATTN_TRANSFORMS_TRANSFORMS_H

#include "dialect/AttnOps.h"
#include "dialect/Normalizers.h"
#include "lib/Transforms/NormalizerMath.h" // normalizeScore, normalizerAdjoint
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/PatternMatch.h"

#include <functional>
#include <optional>

namespace mlir::attn {

/// The query-tile widths a kernel handles. A launch's rows per work item
/// (G * Sq packed per kv head) pick a width at run time; a kernel built for
/// one class of launches leaves the other widths' code out, which takes a
/// third to a half off its compile time.
enum class RowWidths {
  All,  // every width: block-q rows, and narrow/in-place for <= 16 rows
  Many, // block-q rows only; rows past the last are padding (any launch)
  Few,  // narrow and in-place only (launches with <= 16 rows per kv head)
};

/// `all`, `many` or `few`.
std::optional<RowWidths> parseRowWidths(llvm::StringRef name);

struct TileSizes {
  int64_t blockQ = 64;
  int64_t blockKV = 64;
  RowWidths rows = RowWidths::All;
};

/// Name of the unit attribute marking the (b, h, query tile) loop that the
/// tiling creates; targets map it to threads or to a grid.
inline constexpr llvm::StringLiteral kWorkLoopAttr = "attn.work_loop";

/// Names the fp8 format (`fp8e4m3`, `fp8e5m2`) of the i8 operands of a
/// tile matmul that reads quantized codes in place.
inline constexpr llvm::StringLiteral kKVCodesAttr = "attn.kv_codes";

/// Marks a tile matmul whose first (i8) operand holds unsigned 8-bit codes
/// (decode's probabilities rounded to 0..255), not signed ones.
inline constexpr llvm::StringLiteral kUnsignedLhsAttr = "attn.unsigned_lhs";

/// Classes a `classify` region yields for a block of (query, key) entries.
enum TileClass : int32_t { kTileEmpty = 0, kTilePartial = 1, kTileFull = 2 };

/// Builds `op`'s classify region from its mask (see AttnClassifyMaskPass).
/// Does nothing for ops without a mask or with a classify region already.
LogicalResult buildMaskClassifier(RewriterBase &rewriter, AttentionOp op);

/// Adds the adjoint regions (score_grad, sink_grad, scale_grad) of `op`'s
/// score, sink and scale_expr regions (see AttnDifferentiatePass). Does
/// nothing for an op that has them; fails, naming the op, on a region op
/// without a derivative rule.
LogicalResult differentiate(AttentionOp op);

/// Rewrites `op` into the online-softmax loop nest (see AttnTilePass).
FailureOr<scf::ParallelOp> tileAttention(RewriterBase &rewriter,
                                         AttentionOp op, TileSizes sizes);

/// Rewrites a backward `op` (AttentionOp::isBackward) into its two tiled
/// passes over one work loop (see AttnTileBackwardPass); differentiates it
/// first when needed. `orderedDq` appends the arguments dq_accum and
/// dq_turns to the enclosing function and sums dQ in phase 0.
FailureOr<scf::ParallelOp> tileAttentionBackward(RewriterBase &rewriter,
                                                 AttentionOp op,
                                                 TileSizes sizes,
                                                 bool orderedDq = false);
/// attn.floordiv / attn.floormod -> arith.
void populateExpandFloorDivPatterns(RewritePatternSet &patterns);

/// A quantized K/V code (i8: an int8, a sign-extended int4 nibble, or fp8
/// bits) as f32, before its scale.
Value decodeKVCode(OpBuilder &b, Location loc, KVQuant kind, Value code);

/// Whether `kind` is one of the fp8 code formats.
inline bool isFp8(KVQuant kind) {
  return kind == KVQuant::fp8e4m3 || kind == KVQuant::fp8e5m2;
}

/// Whether `op`'s K codes share one set of scales across every key of a
/// `blockKV`-key tile (token groups covering whole tiles, keys not gathered
/// by kv_index), so K's scales can fold into the query once per tile.
inline bool keyScalesFoldPerTile(AttentionOp op, int64_t blockKV) {
  return op.getKvQuant() && !op.getKvIndex() &&
         *op.getKvGroup() % blockKV == 0;
}

/// The two int4 codes of a byte of packed codes (i8, or a vector of them),
/// sign-extended: (low nibble, high nibble), the low one first in order.
std::pair<Value, Value> splitInt4Codes(OpBuilder &b, Location loc,
                                       Value bytes);

/// Marks the two int4 tile products below, which read K's or V's codes
/// packed two per byte in place (a target may lower them to byte dot
/// products on the nibbles without unpacking a tile first).
inline constexpr llvm::StringLiteral kInt4PairsAttr = "attn.int4_pairs";

/// S^T[m, n] += sum over packed columns c of lo(K[m, c]) * Q[n, 2c] +
/// hi(K[m, c]) * Q[n, 2c + 1]: K's int4 codes packed ([M, D/2] i8), Q's
/// int8 codes ([N, D] i8) read as stride-2 views of its even and odd
/// columns, S^T f32 [M, N].
Operation *createInt4KeyDots(OpBuilder &b, Location loc, Value packedKeys,
                             Value queryCodes, Value scoresT);

/// C[m, 2c] += sum_k P[k, m] * lo(V[k, c]) and C[m, 2c + 1] += sum_k
/// P[k, m] * hi(V[k, c]): P's unsigned 8-bit codes [K, M], V's int4 codes
/// packed ([K, Dv/2] i8), C f32 [M, Dv] written through stride-2 views of
/// its even and odd columns.
Operation *createInt4ValueProducts(OpBuilder &b, Location loc, Value pCodesT,
                                   Value packedValues, Value out);

/// body(x) for x = start, start / 2, ..., 1 (index; none when start is 0):
/// the stages of tree reductions and bitonic merges.
void forEachHalving(OpBuilder &b, Location loc, Value start,
                    llvm::function_ref<void(OpBuilder &, Value)> body);

/// Query rows per work item of the CPU's select pre-pass (the block-map
/// function): whole select blocks of `blockSize` rows, at least 512 rows,
/// so the item's pooled keys serve many query blocks.
inline int64_t selectRowsPerWorkItem(int64_t blockSize) {
  return blockSize * std::max<int64_t>(1, 512 / blockSize);
}

/// Column `d` (index) of a quantized K row as f32, its code decoded and
/// times `scale`; `load(col)` reads the row's byte at col (int4: two codes
/// per byte, low nibble first, so byte d / 2).
Value dequantizedKeyAt(OpBuilder &b, Location loc, KVQuant kind, Value d,
                       Value scale,
                       llvm::function_ref<Value(OpBuilder &, Value)> load);

} // namespace mlir::attn

#endif // ATTN_TRANSFORMS_TRANSFORMS_H
