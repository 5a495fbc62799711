//===- AttnOps.td - attn dialect operations ----------------*- tablegen -*-===//
#ifndef ATTN_OPS_TD
#define ATTN_OPS_TD

include "dialect/AttnBase.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/Interfaces/ControlFlowInterfaces.td"
include "mlir/Interfaces/InferTypeOpInterface.td"
include "mlir/IR/RegionKindInterface.td"
include "mlir/IR/OpAsmInterface.td"

def Attn_Float : AnyTypeOf<[F32, F16, BF16]>;
def Attn_QKVMemRef : MemRefRankOf<[F32, F16, BF16], [4]>;
// K and V: floats like q, or i8 bytes holding quantized codes.
def Attn_KVMemRef : MemRefRankOf<[F32, F16, BF16, I8], [4]>;
def Attn_KScaleMemRef : MemRefRankOf<[F32], [4]>;
def Attn_VScaleMemRef : MemRefRankOf<[F32], [3]>;
def Attn_PageTableMemRef : MemRefRankOf<[I32], [2]>;
def Attn_SeqLensMemRef : MemRefRankOf<[I32], [1]>;
def Attn_KVIndexMemRef : MemRefRankOf<[I32], [3]>;
def Attn_LseMemRef : MemRefRankOf<[F32], [3]>;
def Attn_Param : AnyTypeOf<[I32, F32]>;
def Attn_Capture : MemRefOf<[I32, F32, F16, BF16]>;
def Attn_BlockMapMemRef : MemRefRankOf<[I8], [4]>;
def Attn_PartialOutMemRef : MemRefRankOf<[F32], [5]>;
def Attn_PartialLseMemRef : MemRefRankOf<[F32], [4]>;
def Attn_GradMemRef : MemRefOf<[F32]>;

def Attn_AttentionOp : Attn_Op<"attention", [
    AttrSizedOperandSegments,
    DeclareOpInterfaceMethods<OpAsmOpInterface, ["getAsmBlockArgumentNames"]>]> {
  let summary = "one attention computation with a variant's regions";
  let description = [{
    Reads `q [B, Hq, Sq, D]`, `k [B, Hkv, Skv, D]`, `v [B, Hkv, Skv, Dv]` and
    writes `o [B, Hq, Sq, Dv]` and, when present, `lse [B, Hq, Sq]` (natural
    log). `s = (q . k) * scale` where `scale` is the `scale` attribute, the
    value yielded by the `scale` region, or `1/sqrt(D)` when neither is given.

    Regions (each may be empty; an empty region means "absent"):
    - `scale_expr ()`: yields the f32 scale; used when it is not a constant.
    - `score (s: f32, b, h, q, kv: i32)`: yields the modified f32 score.
    - `mask (b, h, q, kv: i32)`: yields i1, true keeps the entry.
    - `sink (h: i32)`: yields an f32 logit joining the softmax denominator.
    - `select_arg ()`: with `select`, yields its f32 argument (K, P or T).
    - `score_grad (s: f32, b, h, q, kv: i32, g: f32)`, `sink_grad (h: i32,
      g: f32)`, `scale_grad (g: f32)`: added by `attn-differentiate`, the
      adjoints of `score`, `sink` and `scale_expr`: given `g`, the gradient
      of the loss with respect to the region's value at those arguments,
      `score_grad` yields the gradient with respect to `s`, and each adds
      the gradients with respect to the f32 params and f32 captured-tensor
      elements its region reads with `attn.accumulate_grad`.
    - `classify (b, h_lo, h_hi, q_lo, q_hi, kv_lo, kv_hi: i32)`: added by
      `attn-classify-mask`; yields the class of the block of entries
      h in [h_lo, h_hi], q in [q_lo, q_hi], kv in [kv_lo, kv_hi]: 0 EMPTY (the mask is false on
      all of it), 2 FULL (true on all of it), 1 PARTIAL (unknown).

    Regions may use the op's `params` and `captures` operands (defined above)
    and `attn.dim`/`attn.load`; nothing else from outside.

    With a `block_map` operand [B, Hq, query tiles, key tiles] (i8), the op
    computes no attention: it writes the class of each tile of the tiling
    that `attn-tile` chooses (0 EMPTY, 1 PARTIAL, 2 FULL), the map a kernel
    with the same tiling walks. With `select`, that map also keeps only the
    key blocks the rule selects for each query block of `block` tokens
    (DSL.md `select`), and its tiles divide `block`. A `tile_classes` operand of that shape (its
    batch and head dims may be 1 to broadcast) is such a map given to the
    kernel: when it is not empty, the kernel takes the classes from it
    instead of evaluating the classifier (a map built once per launch
    shape and reused, e.g. across layers).

    With `splits(%n) partials(%o_part, %lse_part)`, the key range is split
    into `%n` parts processed independently (decode parallelism): when
    `%n > 1`, part `i` writes its normalized output and lse to
    `%o_part[i, b, h, q]` and `%lse_part[i, b, h, q]` (for normalizers
    without a row sum, its unnormalized sum) and `attn.merge_splits`
    combines them; with `%n == 1` the op writes `o` and `lse` directly.

    Quantized K/V (`kv_quant`): `k` and `v` hold i8 codes (int4: two per
    byte, low nibble first, so their last dims are D/2 and Dv/2);
    `kv_scales(%k_scale [B, Hkv, ceil(Skv/G), D], %v_scale [B, Hkv, Skv])`
    give `k = code * k_scale[b, hkv, kv / G, d]` (G = `group`) and
    `v = code * v_scale[b, hkv, kv]`.

    Paged K/V (`page_size = P`): `k` and `v` are pools
    `[pages, Hkv, P, D]`; `pages(%page_table [B, max_pages], %seq_lens [B])`
    map key position `kv` of batch `b` to page `page_table[b, kv / P]`,
    slot `kv % P`, and batch `b` has `Skv = seq_lens[b]` keys (what
    `attn.dim Skv` reads in the regions). Scales stay indexed by position.

    Backward (`backward(%do, %dq, %dk, %dv) phase(%p)`): the op computes
    the gradients of `L = sum(o * do)` instead of o: `o` and (softmax,
    softplus) `lse` are the forward's results, read here; phase 0 writes
    `dk` and `dv`, phase 1 writes `dq`; both add the gradients of the f32
    params (`param_grads`, one `memref<1xf32>` each, in operand order) and
    f32 captured tensors (`capture_grads`, one per such capture, its
    shape) to what those buffers hold. Needs the grad regions of
    `attn-differentiate` for the variant's regions; no quantized, paged,
    kv_index, block-map or split operands. With `select`, `tile_classes`
    is required: the forward's block map, whose choices the backward
    holds constant (EMPTY tiles skipped, PARTIAL ones masked).

    Sparse K/V (`kv_index(%idx [B, Hkv, N])`): the op attends to the key
    positions `%idx[b, hkv, 0..N)` only (entries outside [0, Skv) are
    skipped); regions see those positions as `kv`.
  }];
  // Reads q, k, v and the captures, writes o and lse: the effects keep the
  // op alive through canonicalization and order it against other accesses.
  let arguments = (ins Arg<Attn_QKVMemRef, "", [MemRead]>:$query,
                       Arg<Attn_KVMemRef, "", [MemRead]>:$key,
                       Arg<Attn_KVMemRef, "", [MemRead]>:$value,
                       Arg<Attn_QKVMemRef, "", [MemWrite]>:$out,
                       Arg<Optional<Attn_LseMemRef>, "", [MemWrite]>:$lse,
                       Arg<Optional<Attn_KScaleMemRef>, "", [MemRead]>:$keyScale,
                       Arg<Optional<Attn_VScaleMemRef>, "", [MemRead]>:$valueScale,
                       Arg<Optional<Attn_PageTableMemRef>, "", [MemRead]>:$pageTable,
                       Arg<Optional<Attn_SeqLensMemRef>, "", [MemRead]>:$seqLens,
                       Arg<Optional<Attn_KVIndexMemRef>, "", [MemRead]>:$kvIndex,
                       Arg<Optional<Attn_BlockMapMemRef>, "", [MemWrite]>:$blockMap,
                       Arg<Optional<Attn_BlockMapMemRef>, "", [MemRead]>:$tileClasses,
                       Optional<I32>:$numSplits,
                       Arg<Optional<Attn_PartialOutMemRef>, "", [MemWrite]>:$outPartial,
                       Arg<Optional<Attn_PartialLseMemRef>, "", [MemWrite]>:$lsePartial,
                       Variadic<Attn_Param>:$params,
                       Arg<Variadic<Attn_Capture>, "", [MemRead]>:$captures,
                       Arg<Optional<Attn_QKVMemRef>, "", [MemRead]>:$gradOut,
                       Arg<Optional<Attn_QKVMemRef>, "", [MemWrite]>:$gradQuery,
                       Arg<Optional<Attn_KVMemRef>, "", [MemWrite]>:$gradKey,
                       Arg<Optional<Attn_KVMemRef>, "", [MemWrite]>:$gradValue,
                       Arg<Variadic<Attn_GradMemRef>, "", [MemRead, MemWrite]>:$paramGrads,
                       Arg<Variadic<Attn_GradMemRef>, "", [MemRead, MemWrite]>:$captureGrads,
                       Optional<I32>:$phase,
                       Attn_NormalizeKind:$normalize,
                       OptionalAttr<F32Attr>:$scale,
                       OptionalAttr<Attn_SelectKind>:$select,
                       OptionalAttr<I64Attr>:$selectBlock,
                       OptionalAttr<Attn_KVQuantKind>:$kvQuant,
                       OptionalAttr<I64Attr>:$kvGroup,
                       OptionalAttr<I64Attr>:$pageSize);
  let regions = (region MaxSizedRegion<1>:$scaleExpr, MaxSizedRegion<1>:$score,
                        MaxSizedRegion<1>:$mask, MaxSizedRegion<1>:$sink,
                        MaxSizedRegion<1>:$classify,
                        MaxSizedRegion<1>:$selectArg,
                        MaxSizedRegion<1>:$scoreGrad,
                        MaxSizedRegion<1>:$sinkGrad,
                        MaxSizedRegion<1>:$scaleGrad);
  let assemblyFormat = [{
    `ins` `(` $query `,` $key `,` $value `:` type($query) `,` type($key) `,` type($value) `)`
    `outs` `(` $out `:` type($out) `)`
    (`lse` `(` $lse^ `:` type($lse) `)`)?
    (`kv_scales` `(` $keyScale^ `,` $valueScale `:` type($keyScale) `,` type($valueScale) `)`)?
    (`pages` `(` $pageTable^ `,` $seqLens `:` type($pageTable) `,` type($seqLens) `)`)?
    (`kv_index` `(` $kvIndex^ `:` type($kvIndex) `)`)?
    (`block_map` `(` $blockMap^ `:` type($blockMap) `)`)?
    (`tile_classes` `(` $tileClasses^ `:` type($tileClasses) `)`)?
    (`splits` `(` $numSplits^ `)` `partials` `(` $outPartial `,` $lsePartial `:`
       type($outPartial) `,` type($lsePartial) `)`)?
    (`params` `(` $params^ `:` type($params) `)`)?
    (`captures` `(` $captures^ `:` type($captures) `)`)?
    (`backward` `(` $gradOut^ `,` $gradQuery `,` $gradKey `,` $gradValue `:`
       type($gradOut) `,` type($gradQuery) `,` type($gradKey) `,` type($gradValue) `)`
       `phase` `(` $phase `)`)?
    (`param_grads` `(` $paramGrads^ `:` type($paramGrads) `)`)?
    (`capture_grads` `(` $captureGrads^ `:` type($captureGrads) `)`)?
    `normalize` `=` $normalize
    (`scale` `=` $scale^)?
    (`select` $select^ `block` $selectBlock)?
    (`kv_quant` $kvQuant^ `group` $kvGroup)?
    (`page_size` $pageSize^)?
    attr-dict
    (`scale_expr` $scaleExpr^)?
    (`score` $score^)?
    (`mask` $mask^)?
    (`sink` $sink^)?
    (`classify` $classify^)?
    (`select_arg` $selectArg^)?
    (`score_grad` $scoreGrad^)?
    (`sink_grad` $sinkGrad^)?
    (`scale_grad` $scaleGrad^)?
  }];
  let hasVerifier = 1;
  let hasRegionVerifier = 1;
  let extraClassDeclaration = [{
    int64_t getHeadDim();
    int64_t getValueHeadDim();
    bool hasScore() { return !getScore().empty(); }
    bool hasMask() { return !getMask().empty(); }
    bool hasSink() { return !getSink().empty(); }
    bool hasScaleExpr() { return !getScaleExpr().empty(); }
    bool hasClassify() { return !getClassify().empty(); }
    bool hasSelect() { return getSelect().has_value(); }
    bool isPaged() { return getPageSize().has_value(); }
    /// Computes gradients (the `backward` operands) instead of o.
    bool isBackward() { return getGradOut() != nullptr; }
    bool isDifferentiated() {
      return !getScoreGrad().empty() || !getSinkGrad().empty() ||
             !getScaleGrad().empty();
    }
    /// The normalizer's properties (dialect/Normalizers.h): o is divided by
    /// a row sum and an lse output exists (softmax, softplus).
    bool hasRowSum();
    /// log2(e) multiplies the scale itself (softmax, which runs in the log2
    /// domain, with no score region between the scaled score and the exp).
    bool foldsLog2eIntoScale();
    /// The backward operands' checks (part of verify()).
    LogicalResult verifyBackwardOperands();
  }];
}

def Attn_MergeSplitsOp : Attn_Op<"merge_splits"> {
  let summary = "combines split-KV partial results by their lse";
  let description = [{
    `o = sum_i exp(lse_i - lse) o_i` with `lse = log sum_i exp(lse_i)` for
    softmax and softplus (parts with lse = -inf contribute nothing; all of
    them -inf gives o = 0, lse = -inf); a plain sum of the parts for the
    normalizers without a row sum.
  }];
  let arguments = (ins Arg<Attn_PartialOutMemRef, "", [MemRead]>:$outPartial,
                       Arg<Attn_PartialLseMemRef, "", [MemRead]>:$lsePartial,
                       Arg<Attn_QKVMemRef, "", [MemWrite]>:$out,
                       Arg<Optional<Attn_LseMemRef>, "", [MemWrite]>:$lse,
                       Attn_NormalizeKind:$normalize);
  let assemblyFormat = [{
    `ins` `(` $outPartial `,` $lsePartial `:` type($outPartial) `,` type($lsePartial) `)`
    `outs` `(` $out `:` type($out) `)`
    (`lse` `(` $lse^ `:` type($lse) `)`)?
    `normalize` `=` $normalize attr-dict
  }];
}

def Attn_DimOp : Attn_Op<"dim", [Pure,
    DeclareOpInterfaceMethods<OpAsmOpInterface, ["getAsmResultNames"]>]> {
  let summary = "a problem size (B, Hq, Hkv, Sq, Skv, D, Dv) as i32";
  let arguments = (ins Attn_SizeKind:$size);
  let results = (outs I32:$result);
  let assemblyFormat = "$size attr-dict";
}

def Attn_LoadOp : Attn_Op<"load", [MemoryEffects<[MemRead]>,
    TypesMatchWith<"result type matches the element type of the tensor",
                   "tensor", "result",
                   "::llvm::cast<::mlir::MemRefType>($_self).getElementType()">]> {
  let summary = "reads one element of a captured tensor with i32 indices";
  let description = [{
    Out-of-bounds indices are undefined behaviour on the fast paths, as
    DSL.md states; the index count must equal the tensor's rank.
  }];
  let arguments = (ins Attn_Capture:$tensor, Variadic<I32>:$indices);
  let results = (outs AnyTypeOf<[I32, F32, F16, BF16]>:$result);
  let assemblyFormat = "$tensor `[` $indices `]` attr-dict `:` type($tensor)";
  let hasVerifier = 1;
}

class Attn_IntBinaryOp<string mnemonic, string summ>
    : Attn_Op<mnemonic, [Pure, SameOperandsAndResultType]> {
  let summary = summ;
  let arguments = (ins I32:$lhs, I32:$rhs);
  let results = (outs I32:$result);
  let assemblyFormat = "$lhs `,` $rhs attr-dict";
}

def Attn_FloorDivOp : Attn_IntBinaryOp<"floordiv",
    "integer floor division (Python `//`); a zero divisor gives 0"> {
  let hasFolder = 1;
}
def Attn_FloorModOp : Attn_IntBinaryOp<"floormod",
    "integer floor modulo (Python `%`); a zero divisor gives the dividend"> {
  let hasFolder = 1;
}

def Attn_AccumulateGradOp : Attn_Op<"accumulate_grad", [
    MemoryEffects<[MemWrite]>]> {
  let summary = "adds to the gradient of a param or captured-tensor element";
  let description = [{
    In the adjoint regions of `attn.attention` (`score_grad`, `sink_grad`,
    `scale_grad`): adds `value` to the gradient of `target`, one of the
    op's f32 params (no indices) or an element of one of its f32 captured
    tensors (one i32 index per dimension). How the sums are kept (and in
    which order they are reduced) is the backward kernel's choice.
  }];
  let arguments = (ins F32:$value, AnyType:$target, Variadic<I32>:$indices);
  let assemblyFormat = [{
    $value `to` $target (`[` $indices^ `]`)? attr-dict `:` type($target)
  }];
  let hasVerifier = 1;
}

def Attn_YieldOp : Attn_Op<"yield", [Pure, ReturnLike, Terminator,
    ParentOneOf<["AttentionOp"]>]> {
  let summary = "yields a region's value";
  let arguments = (ins Variadic<AnyType>:$values);
  let builders = [OpBuilder<(ins), [{ /* nothing */ }]>];
  let assemblyFormat = "($values^ `:` type($values))? attr-dict";
}

#endif // ATTN_OPS_TD
