//===- TileBackward.cpp - attn.attention's backward as two tiled passes ---===//
//
// FlashAttention-2's backward made deterministic (docs/backward.md): no
// entry of P is stored; each pass recomputes it from q, k and the
// forward's lse, per (key tile, query tile) pair the mask keeps:
//
//   S^T  = K . Q^T                  t = S^T * scale, u = score(t)
//   p    = softmax: exp(u - lse)    softplus: softplus(u) / exp(lse)
//          sigmoid, relu, relu2: f(u)           (0 where masked)
//   dP^T = V . dO^T                 delta = rowsum(dO * O) per query row
//   du   = the normalizer's adjoint of dp (softmax: p (dp - delta))
//   dt   = score_grad(t, .., du),   dS^T = dt * scale
//
// Phase 0 work items are (b, kv head, key tile): dV += P^T . dO and
// dK += dS^T . Q over the query heads of the group and every kept query
// tile, in a fixed order; the f32 params' and captures' gradients
// (score_grad's and scale_grad's attn.accumulate_grad) are added to the
// buffers the op names. Phase 1 work items are (b, query head, query
// tile): dQ += dS . K over the kept key tiles, plus each row's sink-logit
// gradient -exp(sink - lse) * delta. Every output element is written by
// one work item, and every gradient buffer is added to in item order, so
// the runtime gets the same bits on any thread count by giving groups of
// items their own buffers (runtime/src/Launch.cpp).
//
// The tile products are linalg.matmul on f32 stack buffers in the forms
// the CPU's matmul vectorizer takes (C[m, n] += A[m, k] B[k, n], A
// possibly read transposed); the per-entry code runs along a row of S^T,
// one query per lane.
//
//===----------------------------------------------------------------------===//
#include "lib/Transforms/LoopBuilder.h"
#include "lib/Transforms/Passes.h"
#include "lib/Transforms/RegionInliner.h"
#include "lib/Transforms/TileWalk.h"
#include "lib/Transforms/Transforms.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"

#include <cmath>

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNTILEBACKWARDPASS
#include "lib/Transforms/Passes.h.inc"
} // namespace mlir::attn

using namespace mlir;
using namespace mlir::attn;

namespace {

/// The C library's sched_yield, which the ordered-dQ wait calls.
constexpr llvm::StringLiteral kYieldFunction = "sched_yield";

class BackwardTiler : LoopBuilder {
public:
  /// `dqAccum` [B, Hq, Sq, D] f32 and `progress` [B, Hkv, key tiles, 16]
  /// i32, both zeroed by the caller: when given, phase 0 also adds each
  /// tile pair's dQ to dqAccum, key tiles in a fixed order per query tile
  /// (see emitOrderedDqAdd), and phase 1 only converts it.
  BackwardTiler(RewriterBase &rewriter, AttentionOp op, TileSizes sizes,
                Value dqAccum = {}, Value progress = {})
      : LoopBuilder(op.getLoc()), rw(rewriter), op(op), BQ(sizes.blockQ),
        BK(sizes.blockKV), D(op.getHeadDim()), Dv(op.getValueHeadDim()),
        norm(op.getNormalize()), regions(op), dqAccum(dqAccum),
        progress(progress) {}

  scf::ParallelOp build();

private:
  Value ult(OpBuilder &b, Value x, Value y) {
    return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, x, y);
  }
  Value add(OpBuilder &b, Value x, Value y) {
    return arith::AddIOp::create(b, loc, x, y);
  }
  void forLoop(OpBuilder &b, Value lb, Value ub, BodyFn body) {
    LoopBuilder::forLoop(b, lb, ub, 1, body);
  }
  using LoopBuilder::forLoop;
  Value stackBuffer(OpBuilder &b, ArrayRef<int64_t> shape) {
    // Aligned for the matmuls' vector loads and stores.
    return memref::AllocaOp::create(b, loc, MemRefType::get(shape, f32),
                                    b.getI64IntegerAttr(64));
  }
  void fill(OpBuilder &b, Value buf, double v) {
    linalg::FillOp::create(b, loc, ValueRange{cF32(b, v)}, ValueRange{buf});
  }
  /// C += A . B; `transposedA` reads A as [k, m].
  void matmul(OpBuilder &b, Value A, Value B, Value C, bool transposedA) {
    MLIRContext *ctx = b.getContext();
    AffineExpr m, n, k;
    bindDims(ctx, m, n, k);
    auto maps = b.getAffineMapArrayAttr(
        {AffineMap::get(3, 0, {transposedA ? k : m, transposedA ? m : k}, ctx),
         AffineMap::get(3, 0, {k, n}, ctx), AffineMap::get(3, 0, {m, n}, ctx)});
    linalg::MatmulOp::create(b, loc, ValueRange{A, B}, ValueRange{C},
                             {b.getNamedAttr("indexing_maps", maps)});
  }

  void emitSetup(OpBuilder &b);
  /// Copies rows [r0, r0 + rowsInTile) of `src` [b, h, r, 0..width) into
  /// `dst` [rows, width] (`transposed`: [width, rows]) as f32, zeros past
  /// `limit`.
  void loadRows(OpBuilder &b, Value src, Value bI, Value hI, Value r0,
                Value limit, int64_t rowsInTile, int64_t width, Value dst,
                bool transposed);
  /// Stores `acc` [rows, width] (f32) times nothing into rows
  /// [r0, min(r0 + rows, limit)) of `dst`, converting to its element type.
  void storeRows(OpBuilder &b, Value acc, Value dst, Value bI, Value hI,
                 Value r0, Value limit, int64_t rowsInTile, int64_t width);
  /// lse and delta = rowsum(dO * O) for the BQ query rows at q0 of head h
  /// (0 past Sq).
  void loadRowStats(OpBuilder &b, Value bI, Value hI, Value q0);
  /// The class of the block (h, [q0, q0 + BQ), [k0, k0 + BK)) clipped to
  /// the sizes: EMPTY, PARTIAL or FULL.
  Value classify(OpBuilder &b, Value bI, Value hI, Value q0, Value k0);
  /// S^T, dP^T and the per-entry code for the tile pair at (q0, k0) of
  /// head hI, leaving P^T (phase 0) and dS^T in their buffers. Phase 0
  /// adds the params' and captures' gradients.
  void emitTilePair(OpBuilder &b, Value bI, Value hI, Value q0, Value k0,
                    Value cls, bool phase0);
  void emitEntries(OpBuilder &b, Value bI, Value hI, Value q0, Value k0,
                   bool withMask, bool phase0);
  /// Phase 0's score_grad accumulations for the tile pair at (q0, k0),
  /// from the entries' du (duBuf): a loop of its own, so that the entries'
  /// loop stays free of scattered read-add-writes.
  void emitScoreGradSums(OpBuilder &b, Value bI, Value hI, Value q0,
                         Value k0);
  /// Adds each param's lane sums (in lane order) to element `slot` of its
  /// gradient buffer.
  void emitParamLaneSums(OpBuilder &b, Value slot);

  void emitKeyTileItem(OpBuilder &b, Value bI, Value hkv, Value kTile);
  /// Waits until the next key tile's item has passed pair `pos` of the
  /// walk, adds `part` (the pair's dQ to query head hI's rows from q0, or
  /// nothing when null: an EMPTY pair), and publishes pos + 1 as passed.
  void emitOrderedDqAdd(OpBuilder &b, Value bI, Value hkv, Value hI,
                        Value q0, Value kTile, Value pos, Value part);
  /// The address of item (bI, hkv, kTile)'s count of passed pairs.
  Value progressPointer(OpBuilder &b, Value bI, Value hkv, Value kTile);
  void storeProgress(OpBuilder &b, Value bI, Value hkv, Value kTile,
                     Value passed);
  void emitQueryTileItem(OpBuilder &b, Value bI, Value hI, Value qTile);
  /// Phase 1 without dqAccum: dQ over the kept key tiles, recomputing
  /// S and dP.
  void emitDqByRecomputing(OpBuilder &b, Value bI, Value hI, Value hkv,
                           Value q0);
  /// Each query row's sink-logit gradient (phase 1).
  void emitSinkGradients(OpBuilder &b, Value hI, Value q0);
  /// Converts rows [r0, min(r0 + rows, limit)) of `src` [b, h, r, :] (f32)
  /// into `dst`'s element type.
  void storeRowsFrom(OpBuilder &b, Value src, Value dst, Value bI, Value hI,
                     Value r0, Value limit, int64_t rowsInTile,
                     int64_t width);

  RewriterBase &rw;
  AttentionOp op;
  int64_t BQ, BK, D, Dv;
  Normalize norm;
  RegionInliner regions;
  Value dqAccum, progress;
  // Phase 0 with dqAccum: the next key tile's count of passed pairs, as
  // last read.
  Value seenBuf;

  Value batch, headsQ, headsKV, seqQ, seqKV, group, scale;
  Value numQTiles, numKTiles;
  // Per work item stack buffers.
  Value qBuf, qTBuf, doBuf, doTBuf, kBuf, vBuf, sTBuf, dpTBuf, pTBuf,
      dsTBuf, lseBuf, deltaBuf, accA, accB, dqPart;
  // Phase 0's gradient sums: du for score_grad's accumulations (when it
  // has any), and per query lane the partial sums of each f32 param's
  // gradient and of dL/dscale.
  Value duBuf, scaleLanes;
  SmallVector<Value> f32Params, paramLanes;
};

void BackwardTiler::emitSetup(OpBuilder &b) {
  Value q = op.getQuery(), k = op.getKey();
  batch = memref::DimOp::create(b, loc, q, 0);
  headsQ = memref::DimOp::create(b, loc, q, 1);
  seqQ = memref::DimOp::create(b, loc, q, 2);
  headsKV = memref::DimOp::create(b, loc, k, 1);
  seqKV = memref::DimOp::create(b, loc, k, 2);
  // Launches check Hq % Hkv == 0 and Hkv > 0; max() keeps the division
  // defined for a caller that skipped the checks.
  Value safeHkv = arith::MaxUIOp::create(b, loc, headsKV, cIdx(b, 1));
  group = arith::DivUIOp::create(b, loc, headsQ, safeHkv);
  numQTiles = arith::CeilDivUIOp::create(b, loc, seqQ, cIdx(b, BQ));
  numKTiles = arith::CeilDivUIOp::create(b, loc, seqKV, cIdx(b, BK));
  Value dims[] = {batch, headsQ, headsKV, seqQ, seqKV};
  for (int i = 0; i < 5; ++i)
    regions.sizes[i] = toI32(b, dims[i]);
  regions.sizes[static_cast<int>(Size::D)] =
      arith::ConstantIntOp::create(b, loc, D, 32);
  regions.sizes[static_cast<int>(Size::Dv)] =
      arith::ConstantIntOp::create(b, loc, Dv, 32);
  regions.computeCaptureBounds(b, loc);
  scale = op.getScale() ? cF32(b, op.getScale()->convertToDouble())
          : op.hasScaleExpr()
              ? regions.inlineRegion(b, op.getScaleExpr(), {})
              : cF32(b, 1.0 / std::sqrt(double(D)));
}

void BackwardTiler::loadRows(OpBuilder &b, Value src, Value bI, Value hI,
                             Value r0, Value limit, int64_t rowsInTile,
                             int64_t width, Value dst, bool transposed) {
  Value zero = cF32(b, 0.0);
  forLoop(b, rowsInTile, [&](OpBuilder &b, Value i) {
    Value r = add(b, r0, i);
    Value inside = ult(b, r, limit);
    // Rows past the end read the last row (any valid one) and become 0.
    Value safe = arith::SelectOp::create(
        b, loc, inside, r,
        arith::SubIOp::create(b, loc, arith::MaxUIOp::create(b, loc, limit,
                                                             cIdx(b, 1)),
                              cIdx(b, 1)));
    forLoop(b, width, [&](OpBuilder &b, Value d) {
      Value x = toF32(b, memref::LoadOp::create(b, loc, src,
                                                ValueRange{bI, hI, safe, d}));
      x = arith::SelectOp::create(b, loc, inside, x, zero);
      memref::StoreOp::create(b, loc, x, dst,
                              transposed ? ValueRange{d, i} : ValueRange{i, d});
    });
  });
}

void BackwardTiler::storeRows(OpBuilder &b, Value acc, Value dst, Value bI,
                              Value hI, Value r0, Value limit,
                              int64_t rowsInTile, int64_t width) {
  Type elt = cast<MemRefType>(dst.getType()).getElementType();
  Value end = arith::MinUIOp::create(
      b, loc, arith::SubIOp::create(b, loc, limit, r0), cIdx(b, rowsInTile));
  forLoop(b, cIdx(b, 0), end, [&](OpBuilder &b, Value i) {
    forLoop(b, width, [&](OpBuilder &b, Value d) {
      Value x = memref::LoadOp::create(b, loc, acc, ValueRange{i, d});
      if (elt != f32)
        x = arith::TruncFOp::create(b, loc, elt, x);
      memref::StoreOp::create(b, loc, x, dst,
                              ValueRange{bI, hI, add(b, r0, i), d});
    });
  });
}

void BackwardTiler::storeRowsFrom(OpBuilder &b, Value src, Value dst,
                                  Value bI, Value hI, Value r0, Value limit,
                                  int64_t rowsInTile, int64_t width) {
  Type elt = cast<MemRefType>(dst.getType()).getElementType();
  Value end = arith::MinUIOp::create(
      b, loc, arith::SubIOp::create(b, loc, limit, r0), cIdx(b, rowsInTile));
  forLoop(b, cIdx(b, 0), end, [&](OpBuilder &b, Value i) {
    Value row = add(b, r0, i);
    forLoop(b, width, [&](OpBuilder &b, Value d) {
      Value x = memref::LoadOp::create(b, loc, src, ValueRange{bI, hI, row, d});
      if (elt != f32)
        x = arith::TruncFOp::create(b, loc, elt, x);
      memref::StoreOp::create(b, loc, x, dst, ValueRange{bI, hI, row, d});
    });
  });
}

void BackwardTiler::loadRowStats(OpBuilder &b, Value bI, Value hI, Value q0) {
  Value zero = cF32(b, 0.0);
  Value lastRow = arith::SubIOp::create(
      b, loc, arith::MaxUIOp::create(b, loc, seqQ, cIdx(b, 1)), cIdx(b, 1));
  forLoop(b, BQ, [&](OpBuilder &b, Value i) {
    Value r = add(b, q0, i);
    Value inside = ult(b, r, seqQ);
    Value safe = arith::SelectOp::create(b, loc, inside, r, lastRow);
    Value lse = zero;
    if (op.getLse())
      lse = arith::SelectOp::create(
          b, loc, inside,
          memref::LoadOp::create(b, loc, op.getLse(),
                                 ValueRange{bI, hI, safe}),
          zero);
    memref::StoreOp::create(b, loc, lse, lseBuf, ValueRange{i});
    auto sum = scf::ForOp::create(
        b, loc, cIdx(b, 0), cIdx(b, Dv), cIdx(b, 1), ValueRange{zero},
        [&](OpBuilder &b, Location, Value d, ValueRange acc) {
          Value o = toF32(b, memref::LoadOp::create(
                                 b, loc, op.getOut(),
                                 ValueRange{bI, hI, safe, d}));
          Value dO = toF32(b, memref::LoadOp::create(
                                  b, loc, op.getGradOut(),
                                  ValueRange{bI, hI, safe, d}));
          Value prod = arith::MulFOp::create(b, loc, o, dO, fastMath(b));
          scf::YieldOp::create(
              b, loc,
              arith::AddFOp::create(b, loc, acc[0], prod, fastMath(b))
                  .getResult());
        });
    memref::StoreOp::create(
        b, loc, arith::SelectOp::create(b, loc, inside, sum.getResult(0), zero),
        deltaBuf, ValueRange{i});
  });
}

Value BackwardTiler::classify(OpBuilder &b, Value bI, Value hI, Value q0,
                              Value k0) {
  // select's choices: the forward's block map, per query head and tile
  // pair of this tiling (Kernel::blockMap).
  if (Value map = op.getTileClasses()) {
    Value cls = memref::LoadOp::create(
        b, loc, map,
        ValueRange{bI, hI, arith::DivUIOp::create(b, loc, q0, cIdx(b, BQ)),
                   arith::DivUIOp::create(b, loc, k0, cIdx(b, BK))});
    return arith::ExtUIOp::create(b, loc, b.getI32Type(), cls);
  }
  Value one = cIdx(b, 1);
  Value qHi = arith::SubIOp::create(
      b, loc, arith::MinUIOp::create(b, loc, add(b, q0, cIdx(b, BQ)), seqQ),
      one);
  Value kHi = arith::SubIOp::create(
      b, loc, arith::MinUIOp::create(b, loc, add(b, k0, cIdx(b, BK)), seqKV),
      one);
  Value h = toI32(b, hI);
  return classifyBlock(b, loc, op, regions,
                       {toI32(b, bI), h, h, toI32(b, q0), toI32(b, qHi),
                        toI32(b, k0), toI32(b, kHi)});
}

void BackwardTiler::emitEntries(OpBuilder &b, Value bI, Value hI, Value q0,
                                Value k0, bool withMask, bool phase0) {
  Value zero = cF32(b, 0.0);
  Value bI32 = toI32(b, bI), hI32 = toI32(b, hI);
  Value qEnd = arith::SubIOp::create(b, loc, seqQ, q0);
  Value kEnd = arith::SubIOp::create(b, loc, seqKV, k0);

  forLoop(b, BK, [&](OpBuilder &b, Value j) {
    Value kvPos = add(b, k0, j);
    Value kvI32 = toI32(b, kvPos);
    Value keyInside = ult(b, j, kEnd);
    forLoop(b, BQ, [&](OpBuilder &b, Value i) {
      Value qPos = add(b, q0, i);
      Value qI32 = toI32(b, qPos);
      Value kept = arith::AndIOp::create(b, loc, keyInside, ult(b, i, qEnd));
      if (withMask)
        kept = arith::AndIOp::create(
            b, loc, kept,
            regions.inlineRegion(b, op.getMask(), {bI32, hI32, qI32, kvI32}));
      Value dot = memref::LoadOp::create(b, loc, sTBuf, ValueRange{j, i});
      Value t = arith::MulFOp::create(b, loc, dot, scale);
      Value u = op.hasScore() ? regions.inlineRegion(
                                    b, op.getScore(),
                                    {t, bI32, hI32, qI32, kvI32})
                              : t;
      Value dp = memref::LoadOp::create(b, loc, dpTBuf, ValueRange{j, i});
      Value lse = memref::LoadOp::create(b, loc, lseBuf, ValueRange{i});
      Value delta = memref::LoadOp::create(b, loc, deltaBuf, ValueRange{i});
      EntryAdjoint entry =
          keptNormalizerAdjoint(b, loc, norm, u, dp, lse, delta, kept);
      Value p = entry.p, du = entry.du;
      kept = entry.kept;
      // score_grad's accumulations leave this loop (they would keep it
      // from vectorizing): phase 0 makes them in emitScoreGradSums, and
      // phase 1 recomputes what phase 0 accounted for.
      llvm::DenseMap<Value, Value> gradients;
      std::swap(gradients, regions.gradientOf);
      Value dt = op.hasScore() ? regions.inlineRegion(
                                     b, op.getScoreGrad(),
                                     {t, bI32, hI32, qI32, kvI32, du})
                               : du;
      std::swap(gradients, regions.gradientOf);
      if (phase0 && duBuf)
        memref::StoreOp::create(b, loc, du, duBuf, ValueRange{j, i});
      if (phase0 && op.hasScaleExpr()) {
        // dL/dscale = sum dt * (q . k), one partial sum per query lane;
        // the region's adjoint runs once per work item on their sum.
        Value g = memref::LoadOp::create(b, loc, scaleLanes, ValueRange{i});
        Value term = arith::SelectOp::create(
            b, loc, kept, arith::MulFOp::create(b, loc, dt, dot), zero);
        memref::StoreOp::create(b, loc, arith::AddFOp::create(b, loc, g, term),
                                scaleLanes, ValueRange{i});
      }
      Value ds = arith::SelectOp::create(
          b, loc, kept, arith::MulFOp::create(b, loc, dt, scale), zero);
      memref::StoreOp::create(b, loc, ds, dsTBuf, ValueRange{j, i});
      if (phase0)
        memref::StoreOp::create(b, loc, p, pTBuf, ValueRange{j, i});
    });
  });
}

void BackwardTiler::emitScoreGradSums(OpBuilder &b, Value bI, Value hI,
                                      Value q0, Value k0) {
  Value bI32 = toI32(b, bI), hI32 = toI32(b, hI);
  // Params add to one slot per query lane (summed at the item's end);
  // captured elements directly, in entry order.
  llvm::DenseMap<Value, Value> direct = regions.gradientOf;
  for (auto [param, lanes] : llvm::zip(f32Params, paramLanes))
    regions.gradientOf[param] = lanes;
  forLoop(b, BK, [&](OpBuilder &b, Value j) {
    Value kvI32 = toI32(b, add(b, k0, j));
    forLoop(b, BQ, [&](OpBuilder &b, Value i) {
      Value t = arith::MulFOp::create(
          b, loc, memref::LoadOp::create(b, loc, sTBuf, ValueRange{j, i}),
          scale);
      Value du = memref::LoadOp::create(b, loc, duBuf, ValueRange{j, i});
      regions.paramLane = i;
      regions.inlineRegion(b, op.getScoreGrad(),
                           {t, bI32, hI32, toI32(b, add(b, q0, i)), kvI32, du});
      regions.paramLane = Value();
    });
  });
  regions.gradientOf = std::move(direct);
}

void BackwardTiler::emitTilePair(OpBuilder &b, Value bI, Value hI, Value q0,
                                 Value k0, Value cls, bool phase0) {
  fill(b, sTBuf, 0.0);
  matmul(b, kBuf, qTBuf, sTBuf, /*transposedA=*/false);
  fill(b, dpTBuf, 0.0);
  matmul(b, vBuf, doTBuf, dpTBuf, /*transposedA=*/false);
  if (!op.hasMask()) {
    emitEntries(b, bI, hI, q0, k0, /*withMask=*/false, phase0);
    if (phase0 && duBuf)
      emitScoreGradSums(b, bI, hI, q0, k0);
    return;
  }
  Value full = arith::CmpIOp::create(
      b, loc, arith::CmpIPredicate::eq, cls,
      arith::ConstantIntOp::create(b, loc, kTileFull, 32));
  auto ifOp = scf::IfOp::create(b, loc, TypeRange{}, full,
                                /*withElseRegion=*/true);
  OpBuilder tb = ifOp.getThenBodyBuilder();
  emitEntries(tb, bI, hI, q0, k0, /*withMask=*/false, phase0);
  OpBuilder eb = ifOp.getElseBodyBuilder();
  emitEntries(eb, bI, hI, q0, k0, /*withMask=*/true, phase0);
  if (phase0 && duBuf)
    emitScoreGradSums(b, bI, hI, q0, k0);
}

void BackwardTiler::emitKeyTileItem(OpBuilder &b, Value bI, Value hkv,
                                    Value kTile) {
  Value k0 = arith::MulIOp::create(b, loc, kTile, cIdx(b, BK));
  loadRows(b, op.getKey(), bI, hkv, k0, seqKV, BK, D, kBuf, false);
  loadRows(b, op.getValue(), bI, hkv, k0, seqKV, BK, Dv, vBuf, false);
  Value dk = accA, dv = accB; // [BK, D], [BK, Dv]
  fill(b, dk, 0.0);
  fill(b, dv, 0.0);
  if (scaleLanes)
    fill(b, scaleLanes, 0.0);
  for (Value lanes : paramLanes)
    fill(b, lanes, 0.0);
  Value h0 = arith::MulIOp::create(b, loc, hkv, group);
  if (dqAccum)
    memref::StoreOp::create(b, loc,
                            arith::ConstantIntOp::create(b, loc, 0, 32),
                            seenBuf, ValueRange{cIdx(b, 0)});
  forLoop(b, h0, add(b, h0, group), [&](OpBuilder &b, Value hI) {
    forLoop(b, cIdx(b, 0), numQTiles, [&](OpBuilder &b, Value qTile) {
      Value q0 = arith::MulIOp::create(b, loc, qTile, cIdx(b, BQ));
      Value cls = classify(b, bI, hI, q0, k0);
      Value kept = arith::CmpIOp::create(
          b, loc, arith::CmpIPredicate::ne, cls,
          arith::ConstantIntOp::create(b, loc, kTileEmpty, 32));
      // Where this pair sits in the item's walk (heads, then query tiles).
      Value pos = toI32(
          b, add(b, arith::MulIOp::create(
                        b, loc, arith::SubIOp::create(b, loc, hI, h0),
                        numQTiles),
                 qTile));
      auto ifOp = scf::IfOp::create(b, loc, TypeRange{}, kept,
                                    /*withElseRegion=*/dqAccum != nullptr);
      if (dqAccum) {
        OpBuilder eb = ifOp.getElseBodyBuilder();
        emitOrderedDqAdd(eb, bI, hkv, hI, q0, kTile, pos, Value());
      }
      OpBuilder tb = ifOp.getThenBodyBuilder();
      loadRows(tb, op.getQuery(), bI, hI, q0, seqQ, BQ, D, qBuf, false);
      loadRows(tb, op.getQuery(), bI, hI, q0, seqQ, BQ, D, qTBuf, true);
      loadRows(tb, op.getGradOut(), bI, hI, q0, seqQ, BQ, Dv, doBuf, false);
      loadRows(tb, op.getGradOut(), bI, hI, q0, seqQ, BQ, Dv, doTBuf, true);
      loadRowStats(tb, bI, hI, q0);
      emitTilePair(tb, bI, hI, q0, k0, cls, /*phase0=*/true);
      matmul(tb, pTBuf, doBuf, dv, /*transposedA=*/false);
      matmul(tb, dsTBuf, qBuf, dk, /*transposedA=*/false);
      if (dqAccum) {
        fill(tb, dqPart, 0.0);
        matmul(tb, dsTBuf, kBuf, dqPart, /*transposedA=*/true);
        emitOrderedDqAdd(tb, bI, hkv, hI, q0, kTile, pos, dqPart);
      }
    });
  });
  if (dqAccum) // every pair passed
    storeProgress(b, bI, hkv, kTile,
                  toI32(b, arith::MulIOp::create(b, loc, group, numQTiles)));
  storeRows(b, dk, op.getGradKey(), bI, hkv, k0, seqKV, BK, D);
  storeRows(b, dv, op.getGradValue(), bI, hkv, k0, seqKV, BK, Dv);
  // With ordered dQ, phase 0's items add their params' gradients to a slot
  // of their own (the runtime sums the slots in item order): the items run
  // concurrently and share no gradient copy.
  Value slot = cIdx(b, 0);
  if (dqAccum)
    slot = arith::AddIOp::create(
        b, loc,
        arith::MulIOp::create(
            b, loc,
            arith::AddIOp::create(b, loc,
                                  arith::MulIOp::create(b, loc, bI, headsKV),
                                  hkv),
            numKTiles),
        kTile);
  emitParamLaneSums(b, slot);
  if (scaleLanes) {
    auto sum = scf::ForOp::create(
        b, loc, cIdx(b, 0), cIdx(b, BQ), cIdx(b, 1),
        ValueRange{cF32(b, 0.0)},
        [&](OpBuilder &b, Location, Value i, ValueRange acc) {
          Value x = memref::LoadOp::create(b, loc, scaleLanes, ValueRange{i});
          scf::YieldOp::create(
              b, loc, arith::AddFOp::create(b, loc, acc[0], x).getResult());
        });
    regions.paramLane = slot;
    regions.inlineRegion(b, op.getScaleGrad(), {sum.getResult(0)});
    regions.paramLane = Value();
  }
}

void BackwardTiler::emitParamLaneSums(OpBuilder &b, Value slot) {
  for (auto [param, lanes] : llvm::zip(f32Params, paramLanes)) {
    Value grad = regions.gradientOf.lookup(param);
    auto sum = scf::ForOp::create(
        b, loc, cIdx(b, 0), cIdx(b, BQ), cIdx(b, 1),
        ValueRange{memref::LoadOp::create(b, loc, grad, ValueRange{slot})},
        [&](OpBuilder &b, Location, Value i, ValueRange acc) {
          Value x = memref::LoadOp::create(b, loc, lanes, ValueRange{i});
          scf::YieldOp::create(
              b, loc, arith::AddFOp::create(b, loc, acc[0], x).getResult());
        });
    memref::StoreOp::create(b, loc, sum.getResult(0), grad, ValueRange{slot});
  }
}

Value BackwardTiler::progressPointer(OpBuilder &b, Value bI, Value hkv,
                                     Value kTile) {
  // progress is [B, Hkv, key tiles, 16] i32 with the identity layout: one
  // 64-byte line per item, so an item's stores do not share a cache line
  // with the next item's.
  Value item = add(b,
                   arith::MulIOp::create(b, loc,
                                         add(b, arith::MulIOp::create(
                                                    b, loc, bI, headsKV),
                                             hkv),
                                         numKTiles),
                   kTile);
  Value offset = arith::MulIOp::create(b, loc, item, cIdx(b, 16 * 4));
  Value base =
      memref::ExtractAlignedPointerAsIndexOp::create(b, loc, progress);
  Value address = arith::IndexCastOp::create(b, loc, b.getI64Type(),
                                             add(b, base, offset));
  return LLVM::IntToPtrOp::create(b, loc,
                                  LLVM::LLVMPointerType::get(b.getContext()),
                                  address);
}

void BackwardTiler::storeProgress(OpBuilder &b, Value bI, Value hkv,
                                  Value kTile, Value passed) {
  // A release store: the dQ rows added before it are visible to whoever
  // reads the count with an acquire load.
  LLVM::StoreOp::create(b, loc, passed, progressPointer(b, bI, hkv, kTile),
                        /*alignment=*/4, /*isVolatile=*/false,
                        /*isNonTemporal=*/false, /*isInvariantGroup=*/false,
                        LLVM::AtomicOrdering::release);
}

void BackwardTiler::emitOrderedDqAdd(OpBuilder &b, Value bI, Value hkv,
                                     Value hI, Value q0, Value kTile,
                                     Value pos, Value part) {
  // Key tiles add to a query tile's dQ from the last to the first: the
  // order the work range hands phase 0's items out (last tile first).
  // Each item publishes how many pairs of its walk it has passed (a
  // release store per pair; on x86 a plain store to its own line), and
  // before passing pair `pos` waits until the item of the next key tile
  // has passed it, so every tile after it has too: the adds to a query
  // tile happen in key-tile order, whatever the threads do, and an item
  // only ever waits on one handed out before it (running or done). The
  // count last seen is kept so that a pair already passed costs no read
  // of the other core's line.
  Value lastTile = arith::SubIOp::create(b, loc, numKTiles, cIdx(b, 1));
  Value hasNext = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult,
                                        kTile, lastTile);
  auto waitIf = scf::IfOp::create(b, loc, TypeRange{}, hasNext,
                                  /*withElseRegion=*/false);
  {
    OpBuilder tb = waitIf.getThenBodyBuilder();
    Value seen = memref::LoadOp::create(tb, loc, seenBuf,
                                        ValueRange{cIdx(tb, 0)});
    Value behind = arith::CmpIOp::create(tb, loc, arith::CmpIPredicate::sle,
                                         seen, pos);
    auto refresh = scf::IfOp::create(tb, loc, TypeRange{}, behind,
                                     /*withElseRegion=*/false);
    OpBuilder rb = refresh.getThenBodyBuilder();
    Value next = progressPointer(rb, bI, hkv, add(rb, kTile, cIdx(rb, 1)));
    // Every 64 reads the waiting thread yields its core: the item it waits
    // on may be running on a thread the OS has put aside (more threads
    // than free cores), and spinning would only keep it there.
    Type i32Type = rb.getI32Type();
    auto wait = scf::WhileOp::create(
        rb, loc, TypeRange{i32Type, i32Type},
        ValueRange{arith::ConstantIntOp::create(rb, loc, 0, 32)},
        [&](OpBuilder &b, Location, ValueRange spins) {
          Value count = LLVM::LoadOp::create(
              b, loc, b.getI32Type(), next, /*alignment=*/4,
              /*isVolatile=*/false, /*isNonTemporal=*/false,
              /*isInvariant=*/false, /*isInvariantGroup=*/false,
              LLVM::AtomicOrdering::acquire);
          Value notYet = arith::CmpIOp::create(
              b, loc, arith::CmpIPredicate::sle, count, pos);
          scf::ConditionOp::create(b, loc, notYet,
                                   ValueRange{count, spins[0]});
        },
        [&](OpBuilder &b, Location, ValueRange counts) {
          Value spins = arith::AddIOp::create(
              b, loc, counts[1], arith::ConstantIntOp::create(b, loc, 1, 32));
          Value yieldNow = arith::CmpIOp::create(
              b, loc, arith::CmpIPredicate::eq,
              arith::AndIOp::create(
                  b, loc, spins, arith::ConstantIntOp::create(b, loc, 63, 32)),
              arith::ConstantIntOp::create(b, loc, 0, 32));
          auto yieldIf = scf::IfOp::create(b, loc, TypeRange{}, yieldNow,
                                           /*withElseRegion=*/false);
          OpBuilder yb = yieldIf.getThenBodyBuilder();
          func::CallOp::create(yb, loc, kYieldFunction, TypeRange{i32Type},
                               ValueRange{});
          scf::YieldOp::create(b, loc, ValueRange{spins});
        });
    memref::StoreOp::create(rb, loc, wait.getResult(0), seenBuf,
                            ValueRange{cIdx(rb, 0)});
  }
  if (part) {
    Value end = arith::MinUIOp::create(
        b, loc, arith::SubIOp::create(b, loc, seqQ, q0), cIdx(b, BQ));
    forLoop(b, cIdx(b, 0), end, [&](OpBuilder &b, Value i) {
      Value row = add(b, q0, i);
      forLoop(b, D, [&](OpBuilder &b, Value d) {
        Value x = memref::LoadOp::create(b, loc, part, ValueRange{i, d});
        Value acc = memref::LoadOp::create(b, loc, dqAccum,
                                           ValueRange{bI, hI, row, d});
        memref::StoreOp::create(b, loc, arith::AddFOp::create(b, loc, acc, x),
                                dqAccum, ValueRange{bI, hI, row, d});
      });
    });
  }
  storeProgress(b, bI, hkv, kTile,
                arith::AddIOp::create(
                    b, loc, pos, arith::ConstantIntOp::create(b, loc, 1, 32)));
}

void BackwardTiler::emitQueryTileItem(OpBuilder &b, Value bI, Value hI,
                                      Value qTile) {
  Value q0 = arith::MulIOp::create(b, loc, qTile, cIdx(b, BQ));
  Value safeGroup = arith::MaxUIOp::create(b, loc, group, cIdx(b, 1));
  Value hkv = arith::DivUIOp::create(b, loc, hI, safeGroup);
  if (!dqAccum || op.hasSink())
    loadRowStats(b, bI, hI, q0);
  if (dqAccum) {
    // Phase 0 summed dQ; what is left is its conversion and the sinks.
    storeRowsFrom(b, dqAccum, op.getGradQuery(), bI, hI, q0, seqQ, BQ, D);
  } else {
    emitDqByRecomputing(b, bI, hI, hkv, q0);
  }
  emitSinkGradients(b, hI, q0);
}

void BackwardTiler::emitDqByRecomputing(OpBuilder &b, Value bI, Value hI,
                                        Value hkv, Value q0) {
  loadRows(b, op.getQuery(), bI, hI, q0, seqQ, BQ, D, qTBuf, true);
  loadRows(b, op.getGradOut(), bI, hI, q0, seqQ, BQ, Dv, doTBuf, true);
  Value dq = accA; // [BQ, D]
  fill(b, dq, 0.0);
  forLoop(b, cIdx(b, 0), numKTiles, [&](OpBuilder &b, Value kTile) {
    Value k0 = arith::MulIOp::create(b, loc, kTile, cIdx(b, BK));
    Value cls = classify(b, bI, hI, q0, k0);
    Value kept = arith::CmpIOp::create(
        b, loc, arith::CmpIPredicate::ne, cls,
        arith::ConstantIntOp::create(b, loc, kTileEmpty, 32));
    auto ifOp = scf::IfOp::create(b, loc, TypeRange{}, kept,
                                  /*withElseRegion=*/false);
    OpBuilder tb = ifOp.getThenBodyBuilder();
    loadRows(tb, op.getKey(), bI, hkv, k0, seqKV, BK, D, kBuf, false);
    loadRows(tb, op.getValue(), bI, hkv, k0, seqKV, BK, Dv, vBuf, false);
    emitTilePair(tb, bI, hI, q0, k0, cls, /*phase0=*/false);
    // dQ[i, :] += sum_j dS^T[j, i] K[j, :].
    matmul(tb, dsTBuf, kBuf, dq, /*transposedA=*/true);
  });
  storeRows(b, dq, op.getGradQuery(), bI, hI, q0, seqQ, BQ, D);
}

void BackwardTiler::emitSinkGradients(OpBuilder &b, Value hI, Value q0) {
  if (!op.hasSink())
    return;
  // The sink is one more softmax entry with no value row: its logit's
  // gradient is p_sink (0 - delta) per query row.
  Value hI32 = toI32(b, hI);
  Value end = arith::MinUIOp::create(
      b, loc, arith::SubIOp::create(b, loc, seqQ, q0), cIdx(b, BQ));
  forLoop(b, cIdx(b, 0), end, [&](OpBuilder &b, Value i) {
    Value sink = regions.inlineRegion(b, op.getSink(), {hI32});
    Value lse = memref::LoadOp::create(b, loc, lseBuf, ValueRange{i});
    Value delta = memref::LoadOp::create(b, loc, deltaBuf, ValueRange{i});
    Value pSink =
        math::ExpOp::create(b, loc, arith::SubFOp::create(b, loc, sink, lse));
    Value g = arith::NegFOp::create(
        b, loc, arith::MulFOp::create(b, loc, pSink, delta));
    regions.inlineRegion(b, op.getSinkGrad(), {hI32, g});
  });
}

scf::ParallelOp BackwardTiler::build() {
  OpBuilder &b = rw;
  emitSetup(b);
  // Where accumulate_grad adds: the op's gradient buffers by target.
  size_t next = 0;
  for (Value p : op.getParams())
    if (p.getType().isF32())
      regions.gradientOf[p] = op.getParamGrads()[next++];
  next = 0;
  for (Value c : op.getCaptures())
    if (cast<MemRefType>(c.getType()).getElementType().isF32())
      regions.gradientOf[c] = op.getCaptureGrads()[next++];
  for (Value p : op.getParams())
    if (p.getType().isF32())
      f32Params.push_back(p);
  bool scoreGradAccumulates = false;
  op.getScoreGrad().walk(
      [&](AccumulateGradOp) { scoreGradAccumulates = true; });

  Value phase0 = arith::CmpIOp::create(
      b, loc, arith::CmpIPredicate::eq, op.getPhase(),
      arith::ConstantIntOp::create(b, loc, 0, 32));
  Value heads = arith::SelectOp::create(b, loc, phase0, headsKV, headsQ);
  Value tiles = arith::SelectOp::create(b, loc, phase0, numKTiles, numQTiles);
  Value zero = cIdx(b, 0), one = cIdx(b, 1);
  auto par = scf::ParallelOp::create(
      b, loc, ValueRange{zero, zero, zero}, ValueRange{batch, heads, tiles},
      ValueRange{one, one, one},
      [&](OpBuilder &nb, Location, ValueRange ivs) {
        auto scope = memref::AllocaScopeOp::create(nb, loc, TypeRange{});
        OpBuilder sb(nb.getContext());
        sb.createBlock(&scope.getBodyRegion());
        qBuf = stackBuffer(sb, {BQ, D});
        qTBuf = stackBuffer(sb, {D, BQ});
        doBuf = stackBuffer(sb, {BQ, Dv});
        doTBuf = stackBuffer(sb, {Dv, BQ});
        kBuf = stackBuffer(sb, {BK, D});
        vBuf = stackBuffer(sb, {BK, Dv});
        sTBuf = stackBuffer(sb, {BK, BQ});
        dpTBuf = stackBuffer(sb, {BK, BQ});
        pTBuf = stackBuffer(sb, {BK, BQ});
        dsTBuf = stackBuffer(sb, {BK, BQ});
        lseBuf = stackBuffer(sb, {BQ});
        deltaBuf = stackBuffer(sb, {BQ});
        scaleLanes = op.hasScaleExpr() ? stackBuffer(sb, {BQ}) : Value();
        duBuf = scoreGradAccumulates ? stackBuffer(sb, {BK, BQ}) : Value();
        paramLanes.clear();
        for (size_t i = 0; scoreGradAccumulates && i < f32Params.size(); ++i)
          paramLanes.push_back(stackBuffer(sb, {BQ}));
        Value dk = stackBuffer(sb, {BK, D}), dv = stackBuffer(sb, {BK, Dv}),
              dq = stackBuffer(sb, {BQ, D});
        dqPart = dqAccum ? dq : Value();
        seenBuf = dqAccum ? memref::AllocaOp::create(
                                sb, loc, MemRefType::get({1}, sb.getI32Type()))
                                .getResult()
                          : Value();
        auto ifOp = scf::IfOp::create(sb, loc, TypeRange{}, phase0,
                                      /*withElseRegion=*/true);
        OpBuilder tb = ifOp.getThenBodyBuilder();
        accA = dk;
        accB = dv;
        emitKeyTileItem(tb, ivs[0], ivs[1], ivs[2]);
        OpBuilder eb = ifOp.getElseBodyBuilder();
        accA = dq;
        emitQueryTileItem(eb, ivs[0], ivs[1], ivs[2]);
        memref::AllocaScopeReturnOp::create(sb, loc, ValueRange{});
      });
  par->setAttr(kWorkLoopAttr, b.getUnitAttr());
  return par;
}

struct AttnTileBackwardPass final
    : mlir::attn::impl::AttnTileBackwardPassBase<AttnTileBackwardPass> {
  using AttnTileBackwardPassBase::AttnTileBackwardPassBase;
  void runOnOperation() override {
    if (blockQ <= 0 || blockKV <= 0) {
      getOperation().emitError("expected positive tile sizes, got block-q=")
          << blockQ << " block-kv=" << blockKV;
      return signalPassFailure();
    }
    SmallVector<AttentionOp> ops;
    getOperation().walk([&](AttentionOp op) {
      if (op.isBackward())
        ops.push_back(op);
    });
    ModuleOp module = getOperation();
    if (orderedDq && !ops.empty() &&
        !module.lookupSymbol<func::FuncOp>(kYieldFunction)) {
      // A module pass, so that it may declare what its code calls.
      OpBuilder b = OpBuilder::atBlockBegin(module.getBody());
      auto decl = func::FuncOp::create(
          b, module.getLoc(), kYieldFunction,
          b.getFunctionType({}, {b.getI32Type()}));
      decl.setPrivate();
    }
    IRRewriter rewriter(&getContext());
    for (AttentionOp op : ops)
      if (failed(tileAttentionBackward(rewriter, op,
                                       TileSizes{blockQ, blockKV}, orderedDq)))
        return signalPassFailure();
  }
};

} // namespace

FailureOr<scf::ParallelOp>
mlir::attn::tileAttentionBackward(RewriterBase &rewriter, AttentionOp op,
                                  TileSizes sizes, bool orderedDq) {
  if (!op.isBackward())
    return op.emitOpError("expected a backward attention op");
  if (failed(differentiate(op)))
    return failure();
  Value dqAccum, progress;
  if (orderedDq) {
    // Phase 0 runs without per-group gradient copies then (its items
    // depend on each other through the turns): params' gradients go to one
    // slot per item, and captured tensors' would need one copy per item.
    bool toCaptures = false;
    for (Region *r : {&op.getScoreGrad(), &op.getScaleGrad()})
      r->walk([&](AccumulateGradOp acc) {
        toCaptures |= llvm::is_contained(op.getCaptures(), acc.getTarget());
      });
    if (toCaptures)
      return op.emitOpError("ordered dQ needs score and scale expressions "
                            "that add no captured-tensor gradients");
    auto func = op->getParentOfType<func::FuncOp>();
    if (!func)
      return op.emitOpError("expected to be in a func.func");
    MLIRContext *ctx = op.getContext();
    int64_t dyn = ShapedType::kDynamic;
    unsigned n = func.getNumArguments();
    auto accumType = MemRefType::get({dyn, dyn, dyn, op.getHeadDim()},
                                     Float32Type::get(ctx));
    auto progressType =
        MemRefType::get({dyn, dyn, dyn, 16}, IntegerType::get(ctx, 32));
    if (failed(func.insertArgument(n, accumType, {}, op.getLoc())) ||
        failed(func.insertArgument(n + 1, progressType, {}, op.getLoc())))
      return op.emitOpError("cannot append the ordered dQ arguments");
    func.setArgAttr(n, "attn.name", StringAttr::get(ctx, "dq_accum"));
    func.setArgAttr(n + 1, "attn.name", StringAttr::get(ctx, "dq_progress"));
    dqAccum = func.getArgument(n);
    progress = func.getArgument(n + 1);
  }
  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(op);
  BackwardTiler tiler(rewriter, op, sizes, dqAccum, progress);
  scf::ParallelOp par = tiler.build();
  rewriter.eraseOp(op);
  return par;
}
