//===- RegionInliner.h - attn.attention regions inlined into kernels ------===//
#ifndef ATTN_TRANSFORMS_REGIONINLINER_H
#define ATTN_TRANSFORMS_REGIONINLINER_H

#include "dialect/AttnOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"

namespace mlir::attn {

/// Copies the body of one of an attention op's regions (score, mask,
/// sink, ...) to a builder, as every target's kernel does per element:
/// block arguments take the given values, `attn.dim` the kernel's sizes,
/// and `attn.load` becomes a memref.load of the capture with each index
/// clamped into range (DSL.md leaves an out-of-range index undefined;
/// clamping keeps "undefined" from ever meaning a crash, e.g. for padded
/// tail rows that evaluate the mask past Sq and Skv).
class RegionInliner {
public:
  /// `outside` maps the op's params and captures to the values the kernel
  /// uses for them (empty: the op's own operands).
  RegionInliner(AttentionOp op, IRMapping outside = {})
      : op(op), outside(std::move(outside)) {}

  /// i32 problem sizes B, Hq, Hkv, Sq, Skv, D, Dv (indexed by attn::Size);
  /// set before inlining, and changed where a size varies (paged Skv).
  Value sizes[7];

  /// Computes each capture's last valid index per dimension; call once at
  /// a point that dominates all inlined regions.
  void computeCaptureBounds(OpBuilder &b, Location loc);

  /// The value the region yields for `args` (null for regions that yield
  /// nothing, as the grad regions sink_grad and scale_grad).
  Value inlineRegion(OpBuilder &b, Region &region, ValueRange args);

  /// Where `attn.accumulate_grad` in an inlined grad region adds: the
  /// gradient buffer of each f32 param (memref<1xf32>) and f32 capture (its
  /// shape), keyed by the op's operand. A target missing from the map has
  /// its accumulations dropped (a backward pass that recomputes entries
  /// another pass accounts for). Capture indices are clamped as loads are,
  /// so an element's gradient goes where its value came from.
  llvm::DenseMap<Value, Value> gradientOf;
  /// When set, a param's accumulation goes to element `paramLane` of its
  /// gradient buffer instead of element 0: one partial sum per vector lane,
  /// so that a loop accumulating a param stays vectorizable.
  Value paramLane;

private:
  void accumulate(OpBuilder &b, AccumulateGradOp acc, IRMapping &map);
  SmallVector<Value> clampedIndices(OpBuilder &b, Location loc, Value tensor,
                                    ValueRange indices, IRMapping &map);

  Value loadCapture(OpBuilder &b, LoadOp load, IRMapping &map);

  AttentionOp op;
  IRMapping outside;
  SmallVector<Value> captureMaxIndex; // per capture, per dim (i32)
};

} // namespace mlir::attn

#endif // ATTN_TRANSFORMS_REGIONINLINER_H
