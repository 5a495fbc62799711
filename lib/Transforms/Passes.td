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
    `o = 0` and `lse = -inf`. Decode-shaped work (at most 4 query rows)
    reads whole key tiles of the cache in place: quantized codes feed the
    products directly (int8/fp8 through `linalg.matmul`, int4 still packed
    through two `linalg.generic`s marked `attn.int4_pairs`).
  }];
  let options = [
    Option<"blockQ", "block-q", "int64_t", "64", "query rows per tile">,
    Option<"blockKV", "block-kv", "int64_t", "64", "key rows per tile">,
    Option<"rows", "rows", "std::string", "\"all\"",
           "which query-tile widths to emit: all (tiles of block-q rows, "
           "and for tiles with at most 16 valid rows narrow and in-place "
           "paths), many (block-q-wide tiles only: right for any launch) "
           "or few (the narrow and in-place paths only: right for launches "
           "with at most 16 rows per kv head, G * Sq)">,
  ];
  let dependentDialects = ["::mlir::scf::SCFDialect",
                           "::mlir::linalg::LinalgDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect",
                           "::mlir::vector::VectorDialect"];
}

def AttnTileBackwardPass : Pass<"attn-tile-backward", "::mlir::ModuleOp"> {
  let summary = "Turn a backward attn.attention into its two tiled passes";
  let description = [{
    Rewrites each `attn.attention` with `backward` operands (differentiated
    first by `attn-differentiate`'s rules when it has no grad regions) into
    one work loop `scf.parallel` over (b, heads, tiles) whose body runs
    phase 0 (the op's `phase` is 0: items are (b, kv head, key tile),
    writing dK and dV and adding the params' and captures' gradients) or
    phase 1 (items (b, query head, query tile), writing dQ and adding the
    sink logit's gradient). P is recomputed from q, k and the forward's
    lse; tiles the classifier calls EMPTY are skipped in both phases;
    tile products are `linalg.matmul`s on f32 stack buffers.

    With `ordered-dq`, phase 0 also computes each tile pair's dQ and adds
    it to an f32 buffer `dq_accum` [B, Hq, Sq, D] appended to the function
    with `dq_progress` [B, Hkv, key tiles, 16] (i32, a cache line per item;
    both zeroed by the caller): per query tile the key tiles add from the
    last to the first; each item publishes how many (head, query tile)
    pairs of its walk it has passed (release stores) and, before passing
    one, waits (acquire loads in a loop, yielding the core with the C
    library's `sched_yield`, which the pass declares, every 64 reads) until
    the next key tile's item has passed it, so the sum's order is fixed
    without atomics on floats. Phase 1 then only
    converts dQ and adds the sinks' gradients: five tile products per pair
    instead of seven. The items of phase 0 must be handed out in work-loop
    order (the CPU runtime's counter does), and phase 0 must add no
    param/capture gradients (the op is rejected otherwise). See
    docs/backward.md.
  }];
  let options = [
    Option<"blockQ", "block-q", "int64_t", "64", "query rows per tile">,
    Option<"blockKV", "block-kv", "int64_t", "64", "key rows per tile">,
    Option<"orderedDq", "ordered-dq", "bool", "false",
           "sum dQ in phase 0, key tiles in a fixed order (see above)">,
  ];
  let dependentDialects = ["::mlir::scf::SCFDialect",
                           "::mlir::linalg::LinalgDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect",
                           "::mlir::func::FuncDialect",
                           "::mlir::LLVM::LLVMDialect"];
}

def AttnDifferentiatePass : Pass<"attn-differentiate"> {
  let summary = "Derive the adjoints of attn.attention's regions";
  let description = [{
    Adds `score_grad`, `sink_grad` and `scale_grad` to each `attn.attention`
    with a `score`, `sink` or `scale_expr` region: reverse-mode derivatives
    of those straight-line regions. Each recomputes its region's values,
    then propagates `g` (the loss gradient with respect to the region's
    value) backwards: `score_grad` yields the gradient with respect to `s`,
    and every region adds the gradients with respect to the f32 params and
    f32 captured-tensor elements it reads with `attn.accumulate_grad`.
    Integer values, masks and comparisons carry no gradient. At points
    where an op has no derivative: `minimumf`/`maximumf` split a tie
    evenly, `absf` has derivative 0 at 0, `floor`/`ceil`/`round` have
    derivative 0, `select` passes the gradient to the chosen operand.
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect",
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

def AttnClassifyMaskPass : Pass<"attn-classify-mask", "::mlir::func::FuncOp"> {
  let summary = "Derive a tile classifier (FULL/PARTIAL/EMPTY) from the mask";
  let description = [{
    Adds a `classify` region to each `attn.attention` with a mask. The region
    is the mask re-evaluated in interval arithmetic: given a block of
    queries [q_lo, q_hi] and keys [kv_lo, kv_hi] (and exact b, h, params and
    sizes), every i32 value becomes a range, every i1 a pair (may be true,
    may be false), and the region yields EMPTY when the mask is false on the
    whole block, FULL when it is true on all of it, PARTIAL otherwise. The
    result is sound for any mask: whatever the analysis cannot bound becomes
    an unknown range, which can only turn FULL or EMPTY into PARTIAL. It is
    exact for the usual families (causal, windows, sinks, chunks, bands,
    dilation and neighborhoods with `/` and `%` by params) and costs a few
    dozen scalar ops, so kernels classify ranges of key tiles at run time
    and bisect them: EMPTY ranges are never visited, FULL tiles skip the
    mask. Captured-tensor reads are exact when their indices are exact
    (`plen[b]`); a read whose one varying index spans a range (`doc[b, kv]`)
    is bounded by the min and max of the tensor over that range, read by a
    loop (ranges over 16384 elements stay unknown until bisection shortens
    them): sorted document ids then give EMPTY blocks across documents and
    FULL ones inside them.
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::scf::SCFDialect"];
}

#endif // ATTN_TRANSFORMS_PASSES_TD
