//===- Passes.td - attn transformations --------------------*- tablegen -*-===//
#ifndef ATTN_TRANSFORMS_PASSES_TD
#define ATTN_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

def AttnTilePass : Pass<"attn-tile", "::mlir::func::FuncOp"> {
  let summary = "Turn attn.attention into the online-softmax loop nest";
  let description = [{
    Rewrites each `attn.attention` into the FlashAttention-2 recurrence over
    (query tile, key tile): an `scf.parallel` over (b, h, query tile) whose
    body keeps a running row max and sum and a rescaled f32 accumulator in
    stack buffers, walks key tiles with `scf.for`, computes `Q K^T` and
    `P V` on the tiles with `linalg.matmul` (each target lowers them its own
    way), and inlines the score, mask and sink regions into the tile body. Softmax uses `exp2` with
    `log2(e)` folded into the scale. Tails of `Sq` and `Skv` that are not a
    tile multiple are padded and masked; rows with every key masked give
    `o = 0` and `lse = -inf`.
  }];
  let options = [
    Option<"blockQ", "block-q", "int64_t", "64", "query rows per tile">,
    Option<"blockKV", "block-kv", "int64_t", "64", "key rows per tile">,
  ];
  let dependentDialects = ["::mlir::scf::SCFDialect",
                           "::mlir::linalg::LinalgDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect"];
}

def AttnExpandFloorDivPass : Pass<"attn-expand-floordiv"> {
  let summary = "Lower attn.floordiv/attn.floormod to arith";
  let description = [{
    Expands the DSL's integer floor division and modulo into `arith` ops that
    never trap: a zero divisor gives 0 (`/`) or the dividend (`%`), and
    `INT_MIN / -1` wraps.
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect"];
}

#endif // ATTN_TRANSFORMS_PASSES_TD
