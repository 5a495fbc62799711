//===- TileAttention.cpp - attn.attention to the online-softmax loop nest -===//
//
// FlashAttention-2's recurrence, per (b, h, query tile):
//   m = -inf (or the sink logit), l = 0 (or 1), acc = 0
//   for each key tile:
//     t   = score(s) * log2(e), -inf where masked      (softmax)
//     m'  = max(m, rowmax(t));  alpha = exp2(m - m')
//     p   = exp2(t - m');       l = l * alpha + rowsum(p)
//     acc = acc * alpha + p . V
//   o = acc / l, lse = (m + log2 l) * ln 2;  l == 0 gives o = 0, lse = -inf
// Without a score region log2(e) is folded into the scale applied to q.
//
// Rows: the query heads that share a kv head are packed into one row space
// per (b, kv head), row r = (head hkv * G + r / Sq, query r % Sq), so each
// key/value tile is loaded once for the whole group (GQA/MQA decode reads
// the cache once, not G times). A query tile is BQ consecutive rows.
//
// The score tile is kept transposed, S^T = K_tile . Q_tile^T (BK x BQ): q is
// transposed once per work item instead of K once per key tile, and the
// per-row max and sum become element-wise updates across a row of S^T (one
// query per lane) instead of horizontal reductions.
//
//===----------------------------------------------------------------------===//
#include "lib/Transforms/AttentionTiler.h"
#include "lib/Transforms/KeyRows.h"
#include "lib/Transforms/LoopBuilder.h"
#include "lib/Transforms/MergeSplits.h"
#include "lib/Transforms/Passes.h"
#include "lib/Transforms/QueryCodes.h"
#include "lib/Transforms/RegionInliner.h"
#include "lib/Transforms/TileWalk.h"
#include "lib/Transforms/RowState.h"
#include "lib/Transforms/SelectBlocks.h"
#include "lib/Transforms/Transforms.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Arith/Utils/Utils.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/Matchers.h"

#include "llvm/Support/SaveAndRestore.h"

#include <cmath>

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNTILEPASS
#include "lib/Transforms/Passes.h.inc"
} // namespace mlir::attn

using namespace mlir;
using namespace mlir::attn;

using namespace mlir::attn::tiler;

namespace mlir::attn::tiler {

constexpr double kLog2E = 1.4426950408889634;

void AttentionTiler::emitSetup(OpBuilder &b) {
  Value q = op.getQuery(), k = op.getKey();
  batch = memref::DimOp::create(b, loc, q, 0);
  headsQ = memref::DimOp::create(b, loc, q, 1);
  seqQ = memref::DimOp::create(b, loc, q, 2);
  headsKV = memref::DimOp::create(b, loc, k, 1);
  // A paged pool holds max_pages * P positions per batch; each batch's own
  // length comes from seq_lens in the work item.
  seqKV = op.isPaged()
              ? arith::MulIOp::create(
                    b, loc, memref::DimOp::create(b, loc, op.getPageTable(), 1),
                    cIdx(b, *op.getPageSize()))
                    .getResult()
              : memref::DimOp::create(b, loc, k, 2).getResult();
  // Launches check Hq % Hkv == 0 and Hkv > 0; max() keeps the division
  // defined even for a caller that skipped the checks.
  Value safeHkv = arith::MaxUIOp::create(b, loc, headsKV, cIdx(b, 1));
  group = arith::DivUIOp::create(b, loc, headsQ, safeHkv);
  // The select pre-pass works per query block of the rule, not per tile,
  // and per query head; everything else packs heads of a group into rows.
  packed = !op.hasSelect();
  workRows = op.getBlockMap() && op.hasSelect()
                 ? selectRowsPerWorkItem(*op.getSelectBlock())
                 : BQ;
  rows = packed ? arith::MulIOp::create(b, loc, group, seqQ).getResult()
                : seqQ;
  numQTiles = arith::CeilDivUIOp::create(b, loc, rows, cIdx(b, workRows));
  numSplits = cIdx(b, 1);
  if (Value n = op.getNumSplits())
    numSplits = arith::MaxUIOp::create(
        b, loc, arith::IndexCastOp::create(b, loc, b.getIndexType(), n),
        cIdx(b, 1));
  Value dims[] = {batch, headsQ, headsKV, seqQ, seqKV};
  for (int i = 0; i < 5; ++i)
    sizeI32[i] = toI32(b, dims[i]);
  sizeI32[static_cast<int>(Size::D)] =
      arith::ConstantIntOp::create(b, loc, D, 32);
  sizeI32[static_cast<int>(Size::Dv)] =
      arith::ConstantIntOp::create(b, loc, Dv, 32);
  regions.computeCaptureBounds(b, loc);

  emitScale(b);
  if (op.hasSelect())
    selectArg = inlineRegion(b, op.getSelectArg(), {});
}

void AttentionTiler::emitScale(OpBuilder &b) {
  Value scale = op.getScale()
                    ? cF32(b, op.getScale()->convertToDouble())
                    : (op.hasScaleExpr()
                           ? inlineRegion(b, op.getScaleExpr(), {})
                           : cF32(b, 1.0 / std::sqrt(double(D))));
  qScale = scale;
  scaleValue = scale;
  if (op.foldsLog2eIntoScale())
    qScale = arith::MulFOp::create(b, loc, scale, cF32(b, kLog2E));
}

scf::ParallelOp AttentionTiler::build() {
  OpBuilder &b = rw;
  emitSetup(b);
  Value zero = cIdx(b, 0), one = cIdx(b, 1);
  auto par = scf::ParallelOp::create(
      b, loc, ValueRange{zero, zero, zero},
      ValueRange{batch, packed ? headsKV : headsQ,
                 op.getNumSplits()
                     ? arith::MulIOp::create(b, loc, numQTiles, numSplits)
                           .getResult()
                     : numQTiles},
      ValueRange{one, one, one},
      [&](OpBuilder &nb, Location, ValueRange ivs) {
        // The scope frees the per-item stack buffers on every iteration.
        auto scope = memref::AllocaScopeOp::create(nb, loc, TypeRange{});
        OpBuilder sb(nb.getContext());
        sb.createBlock(&scope.getBodyRegion());
        emitWorkItem(sb, ivs[0], ivs[1], ivs[2]);
        memref::AllocaScopeReturnOp::create(sb, loc, ValueRange{});
      });
  par->setAttr(kWorkLoopAttr, b.getUnitAttr());
  return par;
}

void AttentionTiler::emitWorkItem(OpBuilder &b, Value bI, Value hI,
                                  Value qTile) {
  if (op.isPaged()) {
    // This batch's length, clamped into the table's capacity; regions, a
    // scale expression and select's rule argument see it as Skv.
    Value len = memref::LoadOp::create(b, loc, op.getSeqLens(), ValueRange{bI});
    len = arith::MaxSIOp::create(b, loc, len,
                                 arith::ConstantIntOp::create(b, loc, 0, 32));
    seqKV = minIdx(b, arith::IndexCastOp::create(b, loc, b.getIndexType(), len),
                   seqKV);
    sizeI32[static_cast<int>(Size::Skv)] = toI32(b, seqKV);
    if (op.hasScaleExpr())
      emitScale(b);
    if (op.hasSelect())
      selectArg = inlineRegion(b, op.getSelectArg(), {});
  }
  keySlots = op.getKvIndex()
                 ? memref::DimOp::create(b, loc, op.getKvIndex(), 2).getResult()
                 : seqKV;
  Value keyTiles = arith::CeilDivUIOp::create(b, loc, keySlots, cIdx(b, BK));
  split = cIdx(b, 0);
  tileBegin = split;
  tileEnd = keyTiles;
  if (op.getNumSplits()) {
    // The third index enumerates (row tile, part of the key range).
    split = arith::RemUIOp::create(b, loc, qTile, numSplits);
    qTile = arith::DivUIOp::create(b, loc, qTile, numSplits);
    Value perSplit = arith::CeilDivUIOp::create(b, loc, keyTiles, numSplits);
    tileBegin = minIdx(b, arith::MulIOp::create(b, loc, split, perSplit),
                       keyTiles);
    tileEnd = minIdx(b, arith::AddIOp::create(b, loc, tileBegin, perSplit),
                     keyTiles);
  }
  bIdx = bI;
  hIdx = hI; // the kv head when packed, else the query head
  b32 = toI32(b, bI);
  h32 = toI32(b, hI);
  hkvIdx = packed ? hI : arith::DivUIOp::create(b, loc, hI, group).getResult();
  q0 = arith::MulIOp::create(b, loc, qTile, cIdx(b, BQ));
  qn = minIdx(b, cIdx(b, BQ), arith::SubIOp::create(b, loc, rows, q0));
  qTileIdx = qTile;

  if (op.getBlockMap() && op.hasSelect()) {
    // The item's query blocks share one pooled copy of K (on the heap: a
    // block's mean per row of D floats, for every key block).
    int64_t N = *op.getSelectBlock();
    int64_t perItem = selectRowsPerWorkItem(N) / N;
    Value numBlocks = arith::CeilDivUIOp::create(b, loc, seqKV, cIdx(b, N));
    Value pooledK = memref::AllocOp::create(
        b, loc, MemRefType::get({ShapedType::kDynamic, D}, f32),
        ValueRange{numBlocks});
    emitPooledKeys(b, numBlocks, pooledK);
    Value first = arith::MulIOp::create(b, loc, qTile, cIdx(b, perItem));
    Value last = minIdx(b, arith::AddIOp::create(b, loc, first,
                                                 cIdx(b, perItem)),
                        arith::CeilDivUIOp::create(b, loc, seqQ, cIdx(b, N)));
    forLoop(b, first, last, 1, [&](OpBuilder &b, Value qBlock) {
      // (Each query block's buffers are freed before the next.)
      auto scope = memref::AllocaScopeOp::create(b, loc, TypeRange{});
      OpBuilder sb(b.getContext());
      sb.createBlock(&scope.getBodyRegion());
      emitSelectBlocks(sb, qBlock, pooledK);
      memref::AllocaScopeReturnOp::create(sb, loc, ValueRange{});
    });
    memref::DeallocOp::create(b, loc, pooledK);
    return;
  }
  emitRowTable(b);
  if (BQ > kNarrowRows && rowWidths != RowWidths::Many) {
    // Few: every item has at most kNarrowRows valid rows (the launch
    // promises it), so the full-width paths are never emitted.
    narrow = rowWidths == RowWidths::Few
                 ? arith::ConstantIntOp::create(b, loc, 1, 1).getResult()
                 : arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ule,
                                         qn, cIdx(b, kNarrowRows))
                       .getResult();
    rowsUsed = arith::SelectOp::create(b, loc, narrow, cIdx(b, kNarrowRows),
                                       cIdx(b, BQ));
    tiny = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ule, qn,
                                 cIdx(b, kTinyRows));
    fewRows = rowWidths == RowWidths::Few &&
                      kTinyRows * kRowGroups >= kNarrowRows
                  ? narrow
                  : arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ule,
                                          qn, cIdx(b, kTinyRows * kRowGroups))
                        .getResult();
    rowsUsed = arith::SelectOp::create(b, loc, tiny, cIdx(b, kTinyRows),
                                       rowsUsed);
  } else {
    rowsUsed = cIdx(b, BQ);
  }
  if (Value map = op.getBlockMap()) {
    // Block-map mode: every tile starts EMPTY; the walk marks the rest.
    Value numTiles = arith::CeilDivUIOp::create(b, loc, seqKV, cIdx(b, BK));
    Value empty = arith::ConstantIntOp::create(b, loc, kTileEmpty, 8);
    forLoop(b, cIdx(b, 0), numTiles, 1, [&](OpBuilder &b, Value t) {
      memref::StoreOp::create(b, loc, empty, map,
                              ValueRange{bIdx, hIdx, qTile, t});
    });
    emitKeyLoop(b);
    return;
  }

  auto buffer = [&](ArrayRef<int64_t> shape) {
    return memref::AllocaOp::create(b, loc, MemRefType::get(shape, f32),
                                    b.getI64IntegerAttr(64));
  };
  qTBuf = buffer({D, BQ});
  if (tiny)
    qRowBuf = buffer({kTinyRows * kRowGroups, D});
  // Unquantized or int8 caches (whose K group must cover whole tiles for
  // its scales to fold into Q), contiguous rows.
  // Pages must hold whole tiles.
  auto quant = op.getKvQuant();
  // The compact scores go a quad (4 keys x 4 rows) at a time: key tiles
  // of a multiple of 4 keys (explicit --block-kv may be any size).
  directCodes = tiny && !op.getKvIndex() &&
                BK % (kQuad / kTinyRows) == 0 &&
                (!op.isPaged() || *op.getPageSize() % BK == 0 ||
                 BK % *op.getPageSize() == 0) &&
                (!quant || keyScalesFoldPerTile(op, BK));
  if (directCodes && op.getKvQuant()) {
    qScaledBuf = buffer({kTinyRows * kRowGroups, D});
    qGroupBuf = memref::AllocaOp::create(
        b, loc, MemRefType::get({1}, b.getIndexType()));
  }
  bool integerCodes = quant == KVQuant::int8 || quant == KVQuant::int4;
  if (directCodes && quant && isFp8(*quant))
    pBf16Buf = memref::AllocaOp::create(
        b, loc, MemRefType::get({BK, kTinyRows}, b.getBF16Type()),
        b.getI64IntegerAttr(64));
  if (directCodes && integerCodes) {
    pCodeBuf = memref::AllocaOp::create(
        b, loc, MemRefType::get({BK, kTinyRows}, b.getI8Type()),
        b.getI64IntegerAttr(64));
    pScaleBuf = buffer({kTinyRows});
    pvBuf = buffer({kTinyRows, Dv});
    qCodeBuf = memref::AllocaOp::create(
        b, loc, MemRefType::get({kTinyRows * kRowGroups, D}, b.getI8Type()),
        b.getI64IntegerAttr(64));
    qRowScaleBuf = buffer({kTinyRows * kRowGroups});
  }
  auto contiguousF32Rows = [](Value cache) {
    auto type = cast<MemRefType>(cache.getType());
    SmallVector<int64_t> strides;
    int64_t offset;
    return type.getElementType().isF32() &&
           succeeded(type.getStridesAndOffset(strides, offset)) &&
           strides.back() == 1;
  };
  wholeTilesInPlace = !quant && !op.isPaged() && !op.getKvIndex() &&
                      contiguousF32Rows(op.getKey()) &&
                      contiguousF32Rows(op.getValue());
  kBuf = buffer({BK, D});
  vBuf = buffer({BK, Dv});
  sTBuf = buffer({BK, BQ});
  if (directCodes) // in-place tiles' scores, rows next to each other
    sTTinyBuf = buffer({BK, kTinyRows});
  if (directCodes) {
    // Whole tiles of at most kTinyRows rows are read in place, so a staged
    // one is only ever the last, partial key tile: it runs kNarrowRows
    // wide rather than through a third copy of the tile's code.
    stagedTiny = false;
    rowsUsed = arith::SelectOp::create(b, loc, narrow, cIdx(b, kNarrowRows),
                                       cIdx(b, BQ));
    // The raw copy's rows (a part per page when pages are smaller than a
    // tile) must fit the cache's row views, to which they are cast.
    int64_t partRows =
        op.isPaged() ? std::min<int64_t>(BK, *op.getPageSize()) : BK;
    int64_t perByte = quant == KVQuant::int4 ? 2 : 1;
    auto rawFits = [&](Value cache, int64_t width) {
      Type elt = cast<MemRefType>(cache.getType()).getElementType();
      MemRefType view = cacheRowsType(cache, qn, partRows, width);
      for (int64_t part = 0; part < BK; part += partRows) {
        auto rawPart = MemRefType::get(
            {partRows, width}, elt,
            StridedLayoutAttr::get(b.getContext(), part * width, {width, 1}));
        if (!memref::CastOp::areCastCompatible(rawPart, view))
          return false;
      }
      return true;
    };
    rawPartialTile = rawFits(op.getKey(), D / perByte) &&
                     rawFits(op.getValue(), Dv / perByte);
    auto rawBuf = [&](Value cache, int64_t width) -> Value {
      Type elt = cast<MemRefType>(cache.getType()).getElementType();
      return memref::AllocaOp::create(b, loc, MemRefType::get({BK, width}, elt),
                                      b.getI64IntegerAttr(64));
    };
    if (rawPartialTile) {
      rawKBuf = rawBuf(op.getKey(), D / perByte);
      rawVBuf = rawBuf(op.getValue(), Dv / perByte);
    }
  }
  accBuf = buffer({BQ, Dv});
  mBuf = buffer({BQ});
  lBuf = buffer({BQ});
  mUseBuf = buffer({BQ});
  alphaBuf = buffer({BQ});
  if (op.getKvQuant())
    vScaleBuf = buffer({BK});
  if (op.getKvIndex())
    posBuf = memref::AllocaOp::create(b, loc, MemRefType::get({BK}, i32),
                                      b.getI64IntegerAttr(64));

  // Load the query tile transposed and scaled; rows past the last are zero
  // and never stored. Initial running max and sum per row: a sink logit
  // joins the denominator as one extra entry with p = exp(sink - m), i.e.
  // m = sink, l = 1.
  Value fzero = cF32(b, 0.0);
  forLoop(b, BQ, [&](OpBuilder &b, Value i) {
    Value valid = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, i,
                                        qn);
    Value head = memref::LoadOp::create(b, loc, rowHeadBuf, ValueRange{i});
    Value row = memref::LoadOp::create(b, loc, rowQBuf, ValueRange{i});
    Value sinkM, first;
    if (op.hasSink()) {
      // With split-KV the sink joins the first part only.
      Value head32 = memref::LoadOp::create(b, loc, rowHead32Buf,
                                            ValueRange{i});
      sinkM = toNormalizerDomain(b, loc, norm,
                                 inlineRegion(b, op.getSink(), {head32}));
      if (op.getNumSplits())
        first = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, split,
                                      cIdx(b, 0));
    }
    Value mInit = initialRowMax(b, loc, sinkM, first);
    Value lInit = initialRowSum(b, loc, op.hasSink(), first);
    forLoop(b, D, [&](OpBuilder &b, Value d) {
      Value x = memref::LoadOp::create(
          b, loc, op.getQuery(), ValueRange{bIdx, head, row, d});
      x = arith::MulFOp::create(b, loc, toF32(b, x), qScale);
      x = arith::SelectOp::create(b, loc, valid, x, fzero);
      memref::StoreOp::create(b, loc, x, qTBuf, ValueRange{d, i});
      if (qRowBuf) {
        Value inRowGroups = arith::CmpIOp::create(
            b, loc, arith::CmpIPredicate::ult, i,
            cIdx(b, kTinyRows * kRowGroups));
        scf::IfOp::create(b, loc, inRowGroups, [&](OpBuilder &b, Location) {
          memref::StoreOp::create(b, loc, x, qRowBuf, ValueRange{i, d});
          scf::YieldOp::create(b, loc);
        });
      }
    });
    memref::StoreOp::create(b, loc, mInit, mBuf, ValueRange{i});
    memref::StoreOp::create(b, loc, lInit, lBuf, ValueRange{i});
    forLoop(b, Dv, [&](OpBuilder &b, Value d) {
      memref::StoreOp::create(b, loc, fzero, accBuf, ValueRange{i, d});
    });
  });

  if (qGroupBuf) // new Q rows: no group's scaled rows yet
    memref::StoreOp::create(b, loc, cIdx(b, -1), qGroupBuf,
                            ValueRange{cIdx(b, 0)});
  emitKeyLoop(b);
  emitEpilogue(b);
}

/// Without a classifier every key tile is visited with the mask applied.
/// With one, ranges of key tiles are classified and bisected: EMPTY ranges
/// are dropped whole, FULL ones run without evaluating the mask, and only
/// single PARTIAL tiles evaluate it. The stack holds at most two ranges per
/// level of bisection, so 64 entries cover any i32 length.
/// The head and position of each row of the tile, and the ranges of both
/// the classifier sees: one head's rows give exact heads and a position
/// range; rows across heads give the head range and all positions.
void AttentionTiler::emitRowTable(OpBuilder &b) {
  auto table = [&](Type t) {
    return memref::AllocaOp::create(b, loc, MemRefType::get({BQ}, t));
  };
  rowHeadBuf = table(b.getIndexType());
  rowQBuf = table(b.getIndexType());
  rowHead32Buf = table(b.getI32Type());
  rowQ32Buf = table(b.getI32Type());
  Value one = cIdx(b, 1);
  Value last = arith::SubIOp::create(b, loc, rows, one);
  auto headAndQ = [&](OpBuilder &b, Value r) -> std::pair<Value, Value> {
    if (!packed)
      return {hIdx, r};
    Value head = arith::AddIOp::create(
        b, loc, arith::MulIOp::create(b, loc, hIdx, group),
        arith::DivUIOp::create(b, loc, r, seqQ));
    return {head, arith::RemUIOp::create(b, loc, r, seqQ)};
  };
  forLoop(b, BQ, [&](OpBuilder &b, Value i) {
    // Rows past the end repeat the last one (computed, never stored).
    Value r = minIdx(b, arith::AddIOp::create(b, loc, q0, i), last);
    auto [head, q] = headAndQ(b, r);
    memref::StoreOp::create(b, loc, head, rowHeadBuf, ValueRange{i});
    memref::StoreOp::create(b, loc, q, rowQBuf, ValueRange{i});
    memref::StoreOp::create(b, loc, toI32(b, head), rowHead32Buf,
                            ValueRange{i});
    memref::StoreOp::create(b, loc, toI32(b, q), rowQ32Buf, ValueRange{i});
  });
  auto [hFirst, qFirst] = headAndQ(b, q0);
  auto [hLast, qLast] = headAndQ(
      b, arith::SubIOp::create(b, loc, arith::AddIOp::create(b, loc, q0, qn),
                               one));
  Value oneHead = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq,
                                        hFirst, hLast);
  tileHLo = toI32(b, hFirst);
  tileHHi = toI32(b, hLast);
  tileQLo = toI32(b, arith::SelectOp::create(b, loc, oneHead, qFirst,
                                             cIdx(b, 0)));
  tileQHi = toI32(b, arith::SelectOp::create(
                         b, loc, oneHead, qLast,
                         arith::SubIOp::create(b, loc, seqQ, one)));
}

SelectWork AttentionTiler::selectWork(OpBuilder &b) {
  SelectWork work;
  work.first = cIdx(b, 0);
  work.step = cIdx(b, 1);
  work.barrier = [](OpBuilder &) {};
  work.single = [](OpBuilder &b, function_ref<void(OpBuilder &)> body) {
    body(b);
  };
  return work;
}

void AttentionTiler::emitPooledKeys(OpBuilder &b, Value numBlocks,
                                    Value pooledK) {
  int64_t N = *op.getSelectBlock();
  SelectWork work = selectWork(b);
  forLoop(b, cIdx(b, 0), numBlocks, 1, [&](OpBuilder &b, Value kb) {
    Value ks = arith::MulIOp::create(b, loc, kb, cIdx(b, N));
    Value ke = minIdx(b, arith::AddIOp::create(b, loc, ks, cIdx(b, N)), seqKV);
    emitPooledRows(
        b, loc, work, D, ks, ke,
        [&](OpBuilder &b, Value r, Value d) {
          return kvRows().keyElement(b, r, d, op.getKey(), op.getKeyScale());
        },
        [&](OpBuilder &b, Value d, Value x) {
          memref::StoreOp::create(b, loc, x, pooledK, ValueRange{kb, d});
        },
        [&](OpBuilder &b, Value d) -> Value {
          return memref::LoadOp::create(b, loc, pooledK, ValueRange{kb, d});
        });
  });
}

/// The select pre-pass for one query block (DSL.md `select`, the rule in
/// SelectBlocks.h) over per-block buffers on the stack, then the classes
/// of the block's tiles: EMPTY outside kept key blocks, the mask's class
/// inside them.
void AttentionTiler::emitSelectBlocks(OpBuilder &b, Value qBlock,
                                      Value pooledK) {
  int64_t N = *op.getSelectBlock();
  Value one = cIdx(b, 1), zero = cIdx(b, 0);
  Value map = op.getBlockMap();
  Value qs = arith::MulIOp::create(b, loc, qBlock, cIdx(b, N));
  Value qe = minIdx(b, arith::AddIOp::create(b, loc, qs, cIdx(b, N)), seqQ);
  SelectWork work = selectWork(b);
  Value pq = memref::AllocaOp::create(b, loc, MemRefType::get({D}, f32));
  emitPooledRows(
      b, loc, work, D, qs, qe,
      [&](OpBuilder &b, Value r, Value d) {
        return toF32(b, memref::LoadOp::create(b, loc, op.getQuery(),
                                               ValueRange{bIdx, hIdx, r, d}));
      },
      [&](OpBuilder &b, Value d, Value x) {
        memref::StoreOp::create(b, loc, x, pq, ValueRange{d});
      },
      [&](OpBuilder &b, Value d) -> Value {
        return memref::LoadOp::create(b, loc, pq, ValueRange{d});
      });

  Value numBlocks = arith::CeilDivUIOp::create(b, loc, seqKV, cIdx(b, N));
  auto dyn = [&](Type t, Value size) {
    return memref::AllocaOp::create(
        b, loc, MemRefType::get({ShapedType::kDynamic}, t), ValueRange{size});
  };
  Value scores = dyn(f32, numBlocks), eligible = dyn(b.getI8Type(), numBlocks),
        kept = dyn(b.getI8Type(), numBlocks);
  Value zero8 = arith::ConstantIntOp::create(b, loc, 0, 8);
  auto load = [&](OpBuilder &b, Value buf, Value kb) -> Value {
    return memref::LoadOp::create(b, loc, buf, ValueRange{kb});
  };
  auto flagAt = [&](OpBuilder &b, Value buf, Value kb) -> Value {
    return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ne,
                                 load(b, buf, kb), zero8);
  };
  SelectBlocks sel;
  sel.work = work;
  sel.blockSize = N;
  sel.D = D;
  sel.qs = qs;
  sel.qe = qe;
  sel.seqQ = seqQ;
  sel.seqKV = seqKV;
  sel.numBlocks = numBlocks;
  sel.scale = scaleValue;
  sel.eligible = [&](OpBuilder &b, Value ks, Value ke) {
    return selectEligible(
        b, loc, op, b32, h32, qs, qe, ks, ke,
        [&](OpBuilder &b, Region &region, ValueRange args) {
          return inlineRegion(b, region, args);
        });
  };
  sel.pooledQueryAt = [&](OpBuilder &b, Value d) { return load(b, pq, d); };
  sel.pooledKeyAt = [&](OpBuilder &b, Value kb, Value d) -> Value {
    return memref::LoadOp::create(b, loc, pooledK, ValueRange{kb, d});
  };
  sel.record = [&](OpBuilder &b, Value kb, Value ok, Value score) {
    memref::StoreOp::create(
        b, loc, arith::ExtUIOp::create(b, loc, b.getI8Type(), ok), eligible,
        ValueRange{kb});
    memref::StoreOp::create(b, loc, zero8, kept, ValueRange{kb});
    memref::StoreOp::create(b, loc, score, scores, ValueRange{kb});
  };
  sel.eligibleAt = [&](OpBuilder &b, Value kb) {
    return flagAt(b, eligible, kb);
  };
  sel.scoreAt = [&](OpBuilder &b, Value kb) { return load(b, scores, kb); };
  sel.keptAt = [&](OpBuilder &b, Value kb) { return flagAt(b, kept, kb); };
  sel.keep = [&](OpBuilder &b, Value kb) {
    memref::StoreOp::create(b, loc, arith::ConstantIntOp::create(b, loc, 1, 8),
                            kept, ValueRange{kb});
  };
  // One worker: its candidate is the round's winner.
  sel.bestOfWorkers = [](OpBuilder &, Value kb, Value) { return kb; };
  // mass sorts every block (by a bitonic sort of the next power of two).
  if (*op.getSelect() == SelectKind::mass) {
    Value cap = arith::MulIOp::create(b, loc, numBlocks, cIdx(b, 2));
    sel.sortScore = dyn(f32, cap);
    sel.sortKey = dyn(b.getI32Type(), cap);
  }
  mlir::attn::emitSelectBlocks(b, loc, *op.getSelect(), selectArg, sel);

  // Tile classes for the block's query tiles.
  Value qtBegin = arith::DivUIOp::create(b, loc, qs, cIdx(b, BQ));
  Value qtEnd = arith::CeilDivUIOp::create(b, loc, qe, cIdx(b, BQ));
  Value numTiles = arith::CeilDivUIOp::create(b, loc, seqKV, cIdx(b, BK));
  forLoop(b, qtBegin, qtEnd, 1, [&](OpBuilder &b, Value qt) {
    Value tq0 = arith::MulIOp::create(b, loc, qt, cIdx(b, BQ));
    Value tq1 = minIdx(b, arith::AddIOp::create(b, loc, tq0, cIdx(b, BQ)),
                       seqQ);
    forLoop(b, zero, numTiles, 1, [&](OpBuilder &b, Value kt) {
      Value k0 = arith::MulIOp::create(b, loc, kt, cIdx(b, BK));
      Value k1 = minIdx(b, arith::AddIOp::create(b, loc, k0, cIdx(b, BK)),
                        seqKV);
      Value kb = arith::DivUIOp::create(b, loc, k0, cIdx(b, N));
      Value isKept = arith::CmpIOp::create(
          b, loc, arith::CmpIPredicate::ne,
          memref::LoadOp::create(b, loc, kept, ValueRange{kb}), zero8);
      Value cls = arith::ConstantIntOp::create(b, loc, kTileFull, 32);
      if (op.hasMask())
        cls = inlineRegion(
            b, op.getClassify(),
            {b32, h32, h32, toI32(b, tq0),
             toI32(b, arith::SubIOp::create(b, loc, tq1, one)), toI32(b, k0),
             toI32(b, arith::SubIOp::create(b, loc, k1, one))});
      cls = arith::SelectOp::create(
          b, loc, isKept, cls,
          arith::ConstantIntOp::create(b, loc, kTileEmpty, 32));
      memref::StoreOp::create(
          b, loc, arith::TruncIOp::create(b, loc, b.getI8Type(), cls), map,
          ValueRange{bIdx, hIdx, qt, kt});
    });
  });
}

/// The class of key tiles [lo, hi) for this query tile: from the given
/// block map when there is one, else from the classifier on the key range
/// [kvLo, kvEnd).
Value AttentionTiler::classifyRange(OpBuilder &b, Value lo, Value hi,
                                    Value qLo, Value qHi, Value kvLo,
                                    Value kvEnd) {
  auto fromClassifier = [&](OpBuilder &b) -> Value {
    return classifyBlock(
        b, loc, op, regions,
        {b32, tileHLo, tileHHi, qLo, qHi, toI32(b, kvLo),
         toI32(b, arith::SubIOp::create(b, loc, kvEnd, cIdx(b, 1)))});
  };
  Value map = op.getTileClasses();
  if (!map)
    return fromClassifier(b);
  Value haveMap = arith::CmpIOp::create(
      b, loc, arith::CmpIPredicate::ugt,
      memref::DimOp::create(b, loc, map, 3), cIdx(b, 0));
  auto ifOp = scf::IfOp::create(b, loc, TypeRange{b.getI32Type()}, haveMap,
                                /*withElseRegion=*/true);
  {
    OpBuilder tb = ifOp.getThenBodyBuilder();
    scf::YieldOp::create(
        tb, loc,
        classifyMappedTiles(tb, loc, map, bIdx, hIdx, qTileIdx, lo, hi));
  }
  {
    OpBuilder eb = ifOp.getElseBodyBuilder();
    scf::YieldOp::create(eb, loc, fromClassifier(eb));
  }
  return ifOp.getResult(0);
}

void AttentionTiler::emitKeyLoop(OpBuilder &b) {
  // Bisection where there are classes to ask (a mostly empty or mostly
  // full item asks few ranges); every tile otherwise.
  bool classified = op.hasClassify() || op.getTileClasses();
  auto classifyTiles = [&](OpBuilder &b, Value lo, Value hi) {
    Value kvLo = arith::MulIOp::create(b, loc, lo, cIdx(b, BK));
    Value kvEnd =
        minIdx(b, arith::MulIOp::create(b, loc, hi, cIdx(b, BK)), seqKV);
    return classifyRange(b, lo, hi, tileQLo, tileQHi, kvLo, kvEnd);
  };
  walkKeyTilesBisecting(
      b, loc, tileBegin, tileEnd,
      classified ? function_ref<Value(OpBuilder &, Value, Value)>(classifyTiles)
                 : nullptr,
      [&](OpBuilder &b, const TileVisit &tile) {
        Value map = op.getBlockMap();
        if (map && tile.cls)
          memref::StoreOp::create(
              b, loc, arith::TruncIOp::create(b, loc, b.getI8Type(), tile.cls),
              map, ValueRange{bIdx, hIdx, qTileIdx, tile.tile});
        else
          emitKeyTile(b, arith::MulIOp::create(b, loc, tile.tile, cIdx(b, BK)),
                      tile.full);
      });
}

void AttentionTiler::withMaskVariants(
    OpBuilder &b, Value fullTile,
    function_ref<void(OpBuilder &, bool)> body) {
  if (!fullTile || !op.hasMask()) {
    body(b, op.hasMask());
    return;
  }
  scf::IfOp::create(
      b, loc, fullTile,
      [&](OpBuilder &b, Location) {
        body(b, false);
        scf::YieldOp::create(b, loc);
      },
      [&](OpBuilder &b, Location) {
        body(b, true);
        scf::YieldOp::create(b, loc);
      });
}

/// K and V rows of a key tile in f32: rows past the slots (or skipped by
/// kv_index) are zero. Paged rows go through the page table; quantized
/// codes are decoded here, K's per-channel scales applied as the row is
/// copied and V's per-token scale kept for P.
void AttentionTiler::emitKeyRows(OpBuilder &b, Value k0, Value kn) {
  Value fzero = cF32(b, 0.0);
  auto quant = op.getKvQuant();
  forLoop(b, BK, [&](OpBuilder &b, Value j) {
    Value valid = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, j,
                                        kn);
    Value slot = arith::SelectOp::create(
        b, loc, valid, arith::AddIOp::create(b, loc, k0, j), k0);
    Value pos = slot;
    if (op.getKvIndex()) {
      // slot < keySlots: the tile's first slot stands in past the end.
      Value p32 = kvRows().listedAt(b, slot);
      valid = arith::AndIOp::create(b, loc, valid, kvRows().isListed(b, p32));
      memref::StoreOp::create(
          b, loc,
          arith::SelectOp::create(b, loc, valid, p32,
                                  arith::ConstantIntOp::create(b, loc, -1, 32)),
          posBuf, ValueRange{j});
      pos = arith::IndexCastOp::create(b, loc, b.getIndexType(), p32);
    }
    auto zeroRow = [&](OpBuilder &b) {
      forLoop(b, D, [&](OpBuilder &b, Value d) {
        memref::StoreOp::create(b, loc, fzero, kBuf, ValueRange{j, d});
      });
      forLoop(b, Dv, [&](OpBuilder &b, Value d) {
        memref::StoreOp::create(b, loc, fzero, vBuf, ValueRange{j, d});
      });
      if (vScaleBuf)
        memref::StoreOp::create(b, loc, fzero, vScaleBuf, ValueRange{j});
    };
    auto copyRow = [&](OpBuilder &b) {
      auto [outer, row] = locateRow(b, pos);
      if (op.isPaged() && !op.getKvIndex()) {
        // Pages sit in any order, which defeats the hardware prefetcher:
        // ask for the same row of the key tile after next while this one
        // runs.
        Value next =
            arith::AddIOp::create(b, loc, pos, cIdx(b, kPrefetchTiles * BK));
        Value ahead = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult,
                                            next, seqKV);
        scf::IfOp::create(b, loc, ahead, [&](OpBuilder &b, Location) {
          auto [nOuter, nRow] = locateRow(b, next);
          prefetchRow(b, nOuter, nRow);
          scf::YieldOp::create(b, loc);
        });
      }
      Value group;
      if (quant)
        group = kvRows().keyScaleGroup(b, pos);
      auto store = [&](OpBuilder &b, Value x, Value dst, Value d, bool key) {
        if (key && quant)
          x = arith::MulFOp::create(
              b, loc, x,
              memref::LoadOp::create(b, loc, op.getKeyScale(),
                                     ValueRange{bIdx, hkvIdx, group, d}));
        memref::StoreOp::create(b, loc, x, dst, ValueRange{j, d});
      };
      auto copy = [&](Value src, Value dst, int64_t width, bool key) {
        if (quant == KVQuant::int4) {
          // Two codes per byte, low nibble first, each sign-extended.
          forLoop(b, width / 2, [&](OpBuilder &b, Value d2) {
            Value byte = memref::LoadOp::create(
                b, loc, src, ValueRange{outer, hkvIdx, row, d2});
            auto [lo, hi] = splitInt4Codes(b, loc, byte);
            Value d = arith::MulIOp::create(b, loc, d2, cIdx(b, 2));
            store(b, decodeKVCode(b, loc, *quant, lo), dst, d, key);
            store(b, decodeKVCode(b, loc, *quant, hi), dst,
                  arith::AddIOp::create(b, loc, d, cIdx(b, 1)), key);
          });
          return;
        }
        forLoop(b, width, [&](OpBuilder &b, Value d) {
          Value x = memref::LoadOp::create(b, loc, src,
                                           ValueRange{outer, hkvIdx, row, d});
          store(b, quant ? decodeKVCode(b, loc, *quant, x) : toF32(b, x), dst,
                d, key);
        });
      };
      copy(op.getKey(), kBuf, D, true);
      copy(op.getValue(), vBuf, Dv, false);
      if (vScaleBuf)
        memref::StoreOp::create(
            b, loc,
            memref::LoadOp::create(b, loc, op.getValueScale(),
                                   ValueRange{bIdx, hkvIdx, pos}),
            vScaleBuf, ValueRange{j});
    };
    scf::IfOp::create(
        b, loc, valid,
        [&](OpBuilder &b, Location) {
          copyRow(b);
          scf::YieldOp::create(b, loc);
        },
        [&](OpBuilder &b, Location) {
          zeroRow(b);
          scf::YieldOp::create(b, loc);
        });
  });
}

void AttentionTiler::emitKeyTile(OpBuilder &b, Value k0, Value fullTile) {
  Value kn =
      minIdx(b, cIdx(b, BK), arith::SubIOp::create(b, loc, keySlots, k0));
  auto staged = [&](OpBuilder &b) {
    if (!wholeTilesInPlace) {
      emitKeyRows(b, k0, kn);
      emitTileCompute(b, k0, kn, fullTile);
      return;
    }
    // Whole tiles' matmuls read the cache's rows, the last, partial tile
    // the staged (zero-padded) copy, through one type of view, so the
    // tile's compute is emitted once.
    Value kRows = cacheRows(b, op.getKey(), bIdx, k0, BK, D);
    Value vRows = cacheRows(b, op.getValue(), bIdx, k0, BK, Dv);
    auto kType = cast<MemRefType>(kRows.getType());
    auto vType = cast<MemRefType>(vRows.getType());
    Value whole = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, kn,
                                        cIdx(b, BK));
    auto rows = scf::IfOp::create(b, loc, TypeRange{kType, vType}, whole,
                                  /*withElseRegion=*/true);
    {
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(rows.thenBlock());
      scf::YieldOp::create(b, loc, ValueRange{kRows, vRows});
      b.setInsertionPointToStart(rows.elseBlock());
      emitKeyRows(b, k0, kn);
      scf::YieldOp::create(
          b, loc,
          ValueRange{memref::CastOp::create(b, loc, kType, kBuf),
                     memref::CastOp::create(b, loc, vType, vBuf)});
    }
    KeyValueRows inPlace{rows.getResult(0), rows.getResult(1)};
    emitTileCompute(b, k0, kn, fullTile, /*direct=*/nullptr, &inPlace);
  };
  if (!directCodes) {
    staged(b);
    return;
  }
  // Decode: whole tiles skip the f32 staging copy (it costs as much as the
  // dot products); the last, partial one is copied raw and takes the same
  // code (rawPartialTile), or else is staged.
  Value whole =
      rawPartialTile
          ? fewRows
          : arith::AndIOp::create(b, loc,
                                  arith::CmpIOp::create(
                                      b, loc, arith::CmpIPredicate::eq, kn,
                                      cIdx(b, BK)),
                                  fewRows)
                .getResult();
  if (matchPattern(whole, m_One())) { // launches of few rows only
    emitDirectTile(b, k0, kn, fullTile);
    return;
  }
  scf::IfOp::create(
      b, loc, whole,
      [&](OpBuilder &b, Location) {
        emitDirectTile(b, k0, kn, fullTile);
        scf::YieldOp::create(b, loc);
      },
      [&](OpBuilder &b, Location) {
        staged(b);
        scf::YieldOp::create(b, loc);
      });
}

void AttentionTiler::emitTileCompute(OpBuilder &b, Value k0, Value kn,
                                     Value fullTile,
                                     const TileOperands *direct,
                                     const KeyValueRows *rowsIn) {
  // In place, the row count is known to be tiny.
  auto rowWidths = [&](OpBuilder &b,
                       function_ref<void(OpBuilder &, int64_t)> body) {
    if (direct)
      body(b, kTinyRows);
    else
      withRowWidth(b, body);
  };
  // (Staged tiles with at most kTinyRows rows: the first rows of qRowBuf.)
  Value qRows = direct    ? direct->qRows
                : qRowBuf ? rowsOf(b, qRowBuf, kTinyRows)
                          : Value();
  // K/V row parts and the rows of a 2-D tile buffer each one covers.
  SmallVector<Value> kParts = direct   ? direct->k
                              : rowsIn ? SmallVector<Value>{rowsIn->k}
                                       : SmallVector<Value>{kBuf};
  SmallVector<Value> vParts = direct   ? direct->v
                              : rowsIn ? SmallVector<Value>{rowsIn->v}
                                       : SmallVector<Value>{vBuf};
  int64_t partRows = BK / int64_t(kParts.size());
  auto partOf = [&](OpBuilder &b, Value buf, size_t part) -> Value {
    if (kParts.size() == 1)
      return buf;
    auto type = cast<MemRefType>(buf.getType());
    return memref::SubViewOp::create(
        b, loc, buf,
        ArrayRef<OpFoldResult>{b.getIndexAttr(int64_t(part) * partRows),
                               b.getIndexAttr(0)},
        ArrayRef<OpFoldResult>{b.getIndexAttr(partRows),
                               b.getIndexAttr(type.getDimSize(1))},
        ArrayRef<OpFoldResult>{b.getIndexAttr(1), b.getIndexAttr(1)});
  };
  Value fzero = cF32(b, 0.0);
  // int4 codes in place: K and V rows packed, two codes per byte.
  bool int4Codes = direct && op.getKvQuant() == KVQuant::int4;

  // S^T = K_tile . Q_tile^T, as a named op each target lowers its own way
  // (register-blocked vector code on the CPU); narrow tiles use only the
  // first query columns.
  MLIRContext *ctx = b.getContext();
  AffineExpr m, n, k;
  bindDims(ctx, m, n, k);
  rowWidths(b, [&](OpBuilder &b, int64_t width) {
    Value sT = columns(b, sTBuf, width);
    linalg::FillOp::create(b, loc, ValueRange{fzero}, ValueRange{sT});
    if (width == kTinyRows && qRows) {
      // Dot products of K rows with Q rows: S^T[j, i] = K[j, :] . Q[i, :].
      auto dotMaps = b.getAffineMapArrayAttr(
          {AffineMap::get(3, 0, {m, k}, ctx), AffineMap::get(3, 0, {n, k}, ctx),
           AffineMap::get(3, 0, {m, n}, ctx)});
      for (size_t part = 0; part < kParts.size(); ++part) {
        if (int4Codes) {
          createInt4KeyDots(b, loc, kParts[part], qRows, partOf(b, sT, part));
          continue;
        }
        auto matmul = linalg::MatmulOp::create(
            b, loc, ValueRange{kParts[part], qRows},
            ValueRange{partOf(b, sT, part)},
            {b.getNamedAttr("indexing_maps", dotMaps)});
        markCodes(b, matmul, direct);
      }
      if (direct && direct->qRowScale) {
        // Each key's kTinyRows scores times their rows' scales.
        auto rowsF32 = VectorType::get({kTinyRows}, f32);
        Value scale = vector::LoadOp::create(b, loc, rowsF32, direct->qRowScale,
                                             ValueRange{cIdx(b, 0)});
        forLoop(b, BK, [&](OpBuilder &b, Value j) {
          Value s = vector::LoadOp::create(b, loc, rowsF32, sT,
                                           ValueRange{j, cIdx(b, 0)});
          vector::StoreOp::create(b, loc,
                                  arith::MulFOp::create(b, loc, s, scale), sT,
                                  ValueRange{j, cIdx(b, 0)});
        });
      }
      return;
    }
    linalg::MatmulOp::create(b, loc,
                             ValueRange{kParts[0], columns(b, qTBuf, width)},
                             ValueRange{sT});
  });

  // Rounded P codes (int8/int4 in place) give P . V in their own buffer:
  // the accumulator is rescaled as that is added, in one pass.
  bool roundedP = direct && direct->qRowScale && pCodeBuf;
  if (hasRunningMax(norm))
    emitScoresSoftmax(b, k0, kn, fullTile, direct != nullptr, roundedP);
  else
    emitScoresPointwise(b, k0, kn, fullTile);

  // acc += P . V, reading P from the transposed tile (for int8 codes in
  // place, P rounded to 0..255 per row first: codes times codes; for fp8
  // codes in place, P rounded to bf16).
  auto maps = b.getAffineMapArrayAttr(
      {AffineMap::get(3, 0, {k, m}, ctx), AffineMap::get(3, 0, {k, n}, ctx),
       AffineMap::get(3, 0, {m, n}, ctx)});
  bool bf16P = direct && pBf16Buf;
  if (roundedP) {
    emitRoundedProbabilities(b);
    linalg::FillOp::create(b, loc, ValueRange{fzero}, ValueRange{pvBuf});
  }
  if (bf16P) {
    Value flat = flatScores(b, sTBuf), flatBf16 = flatScores(b, pBf16Buf);
    auto quadType = VectorType::get({kQuad}, f32);
    forLoop(b, cIdx(b, 0), cIdx(b, BK * kTinyRows), kQuad,
            [&](OpBuilder &b, Value at) {
              Value p = vector::LoadOp::create(b, loc, quadType, flat,
                                               ValueRange{at});
              vector::StoreOp::create(
                  b, loc,
                  arith::TruncFOp::create(
                      b, loc, VectorType::get({kQuad}, b.getBF16Type()), p),
                  flatBf16, ValueRange{at});
            });
  }
  rowWidths(b, [&](OpBuilder &b, int64_t width) {
    for (size_t part = 0; part < vParts.size(); ++part) {
      Value p = roundedP ? pCodeBuf
                : bf16P  ? pBf16Buf
                         : columns(b, sTBuf, width);
      if (int4Codes) {
        createInt4ValueProducts(b, loc, partOf(b, p, part), vParts[part],
                                pvBuf);
        continue;
      }
      auto matmul = linalg::MatmulOp::create(
          b, loc, ValueRange{partOf(b, p, part), vParts[part]},
          ValueRange{roundedP ? pvBuf : rowsOf(b, accBuf, width)},
          {b.getNamedAttr("indexing_maps", maps)});
      markCodes(b, matmul, direct);
      if (roundedP)
        matmul->setAttr(kUnsignedLhsAttr, b.getUnitAttr());
    }
  });
  if (!roundedP)
    return;
  // acc = acc * alpha + (P codes . V codes) * the rows' P scales (softmax;
  // the other normalizers keep no running max and no alpha).
  bool rescale = hasRunningMax(norm);
  forLoop(b, kTinyRows, [&](OpBuilder &b, Value i) {
    Value scale = memref::LoadOp::create(b, loc, pScaleBuf, ValueRange{i});
    Value alpha = rescale ? memref::LoadOp::create(b, loc, alphaBuf,
                                                   ValueRange{i})
                                .getResult()
                          : Value();
    forLoop(b, Dv, [&](OpBuilder &b, Value d) {
      Value x = memref::LoadOp::create(b, loc, pvBuf, ValueRange{i, d});
      Value a = memref::LoadOp::create(b, loc, accBuf, ValueRange{i, d});
      if (rescale)
        a = arith::MulFOp::create(b, loc, a, alpha);
      memref::StoreOp::create(
          b, loc,
          arith::AddFOp::create(b, loc, a,
                                arith::MulFOp::create(b, loc, x, scale)),
          accBuf, ValueRange{i, d});
    });
  });
}

/// Applies the score region and the mask to the raw score `s` of entry
/// (i, j); returns the modified score and sets `keep`.
Value AttentionTiler::emitScoreAndMask(OpBuilder &b, Value s, Value i, Value j,
                                       Value k0, Value kn, bool withMask,
                                       Value &keep) {
  Value q32 = memref::LoadOp::create(b, loc, rowQ32Buf, ValueRange{i});
  Value head32 = memref::LoadOp::create(b, loc, rowHead32Buf, ValueRange{i});
  Value kv32;
  if (posBuf) {
    // kv_index: the slot's position; -1 marks a skipped slot.
    kv32 = memref::LoadOp::create(b, loc, posBuf, ValueRange{j});
    keep = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::sge, kv32,
                                 arith::ConstantIntOp::create(b, loc, 0, 32));
  } else {
    kv32 = toI32(b, arith::AddIOp::create(b, loc, k0, j));
    keep = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, j, kn);
  }
  if (op.hasScore())
    s = inlineRegion(b, op.getScore(), {s, b32, head32, q32, kv32});
  if (withMask) {
    Value m = inlineRegion(b, op.getMask(), {b32, head32, q32, kv32});
    keep = arith::AndIOp::create(b, loc, keep, m);
  }
  return s;
}

void AttentionTiler::emitScoresSoftmax(OpBuilder &b, Value k0, Value kn,
                                       Value fullTile, bool rowVectors,
                                       bool deferRescale) {
  Value negInf = cF32(b, -INFINITY);
  Value fzero = cF32(b, 0.0);
  auto fm = fastMath(b);
  auto rowsType = VectorType::get({kTinyRows}, f32);
  auto loadRows = [&](OpBuilder &b, Value buf, ValueRange at) -> Value {
    return vector::LoadOp::create(b, loc, rowsType, buf, at);
  };
  auto storeRows = [&](OpBuilder &b, Value x, Value buf, ValueRange at) {
    vector::StoreOp::create(b, loc, x, buf, at);
  };
  Value c0 = cIdx(b, 0);
  // With rowVectors, sTBuf is the compact [BK, kTinyRows] tile: read as
  // one row of BK * kTinyRows scores, a quad (4 keys x 4 rows) at a time.
  auto quadType = VectorType::get({kQuad}, f32);
  auto loadQuad = [&](OpBuilder &b, Value at) -> Value {
    return vector::LoadOp::create(b, loc, quadType, flatScores(b, sTBuf),
                                  ValueRange{at});
  };
  auto splatQuad = [&](OpBuilder &b, Value x) -> Value {
    return vector::BroadcastOp::create(b, loc, quadType, x);
  };
  // New running max: mUse starts as the old max, then takes each row of
  // modified (and masked) scores element-wise.
  if (rowVectors)
    storeRows(b, loadRows(b, mBuf, {c0}), mUseBuf, {c0});
  else
    forRows(b, [&](OpBuilder &b, Value i) {
      Value m = memref::LoadOp::create(b, loc, mBuf, ValueRange{i});
      memref::StoreOp::create(b, loc, m, mUseBuf, ValueRange{i});
    });
  withMaskVariants(b, fullTile, [&](OpBuilder &b, bool withMask) {
    if (rowVectors && !withMask && !op.hasScore()) {
      // Every entry of an unmasked tile is kept as it is but for keys past
      // kn (the partial last tile's zero rows: -inf): the max of 4 keys x
      // 4 rows at a time, then of the 4 keys.
      Value negInfRows = vector::BroadcastOp::create(b, loc, rowsType, negInf);
      forLoop(b, kn, cIdx(b, BK), 1, [&](OpBuilder &b, Value j) {
        storeRows(b, negInfRows, sTBuf, {j, c0});
      });
      Value mx = loadRows(b, mUseBuf, {c0});
      for (Value key :
           keysOfQuad(b, maxOfQuads(b, flatScores(b, sTBuf),
                                    splatQuad(b, negInf))))
        mx = arith::MaximumFOp::create(b, loc, mx, key);
      storeRows(b, mx, mUseBuf, {c0});
      return;
    }
    if (!rowVectors && !withMask && !op.hasScore() && !posBuf) {
      // Without a mask or score region only the partial last tile's rows
      // past kn change (to -inf, once): the max then reads the scores and
      // stores nothing back (one select and one store less per vector).
      // The max is written as x86's vmaxps reads it (mx > t ? mx : t: one
      // instruction; maximumf, even nnan, became four that keep a NaN). It
      // may drop a NaN, which then still reaches p and O through exp2.
      forLoop(b, kn, cIdx(b, BK), 1, [&](OpBuilder &b, Value j) {
        forRows(b, [&](OpBuilder &b, Value i) {
          memref::StoreOp::create(b, loc, negInf, sTBuf, ValueRange{j, i});
        });
      });
      forLoop(b, BK, [&](OpBuilder &b, Value j) {
        forRows(b, [&](OpBuilder &b, Value i) {
          Value t = memref::LoadOp::create(b, loc, sTBuf, ValueRange{j, i});
          Value mx = memref::LoadOp::create(b, loc, mUseBuf, ValueRange{i});
          Value larger = arith::CmpFOp::create(
              b, loc, arith::CmpFPredicate::OGT, mx, t);
          memref::StoreOp::create(
              b, loc, arith::SelectOp::create(b, loc, larger, mx, t), mUseBuf,
              ValueRange{i});
        });
      });
      return;
    }
    forLoop(b, BK, [&](OpBuilder &b, Value j) {
      forRows(b, [&](OpBuilder &b, Value i) {
        Value s = memref::LoadOp::create(b, loc, sTBuf, ValueRange{j, i});
        Value keep;
        Value t = emitScoreAndMask(b, s, i, j, k0, kn, withMask, keep);
        if (op.hasScore())
          t = toNormalizerDomain(b, loc, norm, t);
        t = maskEntry(b, loc, norm, t, keep);
        memref::StoreOp::create(b, loc, t, sTBuf, ValueRange{j, i});
        Value mx = memref::LoadOp::create(b, loc, mUseBuf, ValueRange{i});
        mx = arith::MaximumFOp::create(b, loc, mx, t);
        memref::StoreOp::create(b, loc, mx, mUseBuf, ValueRange{i});
      });
    });
  });
  // Per query: rescale factor, new max and what p exponentiates against
  // (mUse: kept in mUseBuf from here on).
  if (rowVectors) {
    Value mNew = loadRows(b, mUseBuf, {c0});
    RowRescale row = rescaleRow(b, loc, norm, loadRows(b, mBuf, {c0}), mNew,
                                loadRows(b, lBuf, {c0}));
    Value mUse = row.mUse, l = row.l;
    storeRows(b, mNew, mBuf, {c0});
    storeRows(b, mUse, mUseBuf, {c0});
    storeRows(b, row.alpha, alphaBuf, {c0});
    // p = exp2(t - m) for 4 keys x 4 rows at a time, summed per row.
    SmallVector<int64_t> keysTimes4;
    for (int64_t at = 0; at < kQuad; ++at)
      keysTimes4.push_back(at / kTinyRows);
    Value mUseQuad = rowsOverQuad(b, mUse);
    auto sumLoop = scf::ForOp::create(
        b, loc, c0, cIdx(b, BK * kTinyRows), cIdx(b, kQuad),
        ValueRange{splatQuad(b, fzero)},
        [&](OpBuilder &b, Location, Value at, ValueRange acc) {
          Value p = entryProbability(b, loc, norm, loadQuad(b, at), mUseQuad);
          Value stored = p;
          if (vScaleBuf) {
            // V's scales of the 4 keys, each over its 4 rows.
            Value key = arith::DivUIOp::create(b, loc, at, cIdx(b, kTinyRows));
            Value scales = vector::LoadOp::create(
                b, loc, VectorType::get({kQuad / kTinyRows}, f32), vScaleBuf,
                ValueRange{key});
            stored = arith::MulFOp::create(
                b, loc, p,
                vector::ShuffleOp::create(b, loc, scales, scales, keysTimes4));
          }
          vector::StoreOp::create(b, loc, stored, flatScores(b, sTBuf),
                                  ValueRange{at});
          scf::YieldOp::create(
              b, loc,
              ValueRange{addToRowSum(b, loc, norm, acc[0], p, fm.getValue())});
        });
    Value sum = l;
    for (Value key : keysOfQuad(b, sumLoop.getResult(0)))
      sum = addToRowSum(b, loc, norm, sum, key, fm.getValue());
    storeRows(b, sum, lBuf, {c0});
  } else {
    forRows(b, [&](OpBuilder &b, Value i) {
      Value mNew = memref::LoadOp::create(b, loc, mUseBuf, ValueRange{i});
      RowRescale row = rescaleRow(
          b, loc, norm, memref::LoadOp::create(b, loc, mBuf, ValueRange{i}),
          mNew, memref::LoadOp::create(b, loc, lBuf, ValueRange{i}));
      memref::StoreOp::create(b, loc, row.l, lBuf, ValueRange{i});
      memref::StoreOp::create(b, loc, mNew, mBuf, ValueRange{i});
      memref::StoreOp::create(b, loc, row.mUse, mUseBuf, ValueRange{i});
      memref::StoreOp::create(b, loc, row.alpha, alphaBuf, ValueRange{i});
    });
    // p = exp2(t - m), summed per query.
    forLoop(b, BK, [&](OpBuilder &b, Value j) {
      forRows(b, [&](OpBuilder &b, Value i) {
        Value t = memref::LoadOp::create(b, loc, sTBuf, ValueRange{j, i});
        Value mUse = memref::LoadOp::create(b, loc, mUseBuf, ValueRange{i});
        Value p = entryProbability(b, loc, norm, t, mUse);
        memref::StoreOp::create(b, loc, scaleByValueScale(b, p, j), sTBuf,
                                ValueRange{j, i});
        Value l = memref::LoadOp::create(b, loc, lBuf, ValueRange{i});
        l = addToRowSum(b, loc, norm, l, p, fm.getValue());
        memref::StoreOp::create(b, loc, l, lBuf, ValueRange{i});
      });
    });
  }
  if (deferRescale)
    return;
  forRows(b, [&](OpBuilder &b, Value i) {
    Value alpha = memref::LoadOp::create(b, loc, alphaBuf, ValueRange{i});
    forLoop(b, Dv, [&](OpBuilder &b, Value d) {
      Value a = memref::LoadOp::create(b, loc, accBuf, ValueRange{i, d});
      a = arith::MulFOp::create(b, loc, a, alpha);
      memref::StoreOp::create(b, loc, a, accBuf, ValueRange{i, d});
    });
  });
}

/// sigmoid, relu, relu2 and softplus need no running max: each probability
/// depends on its own score only.
void AttentionTiler::emitScoresPointwise(OpBuilder &b, Value k0, Value kn,
                                         Value fullTile) {
  withMaskVariants(b, fullTile, [&](OpBuilder &b, bool withMask) {
    emitPointwiseLoop(b, k0, kn, withMask);
  });
}

void AttentionTiler::emitPointwiseLoop(OpBuilder &b, Value k0, Value kn,
                                       bool withMask) {
  auto fm = fastMath(b);
  forLoop(b, BK, [&](OpBuilder &b, Value j) {
    forRows(b, [&](OpBuilder &b, Value i) {
      Value s = memref::LoadOp::create(b, loc, sTBuf, ValueRange{j, i});
      Value keep;
      Value t = emitScoreAndMask(b, s, i, j, k0, kn, withMask, keep);
      Value p = maskEntry(b, loc, norm, t, keep);
      memref::StoreOp::create(b, loc, scaleByValueScale(b, p, j), sTBuf,
                              ValueRange{j, i});
      if (hasRowSum(norm)) { // only then does lBuf hold a row sum
        Value l = memref::LoadOp::create(b, loc, lBuf, ValueRange{i});
        l = addToRowSum(b, loc, norm, l, p, fm.getValue());
        memref::StoreOp::create(b, loc, l, lBuf, ValueRange{i});
      }
    });
  });
}

void AttentionTiler::emitEpilogue(OpBuilder &b) {
  Type outElt = cast<MemRefType>(op.getOut().getType()).getElementType();
  // Writes o (or this part's partial result) and lse for valid rows.
  auto write = [&](OpBuilder &b, bool partial) {
    forLoop(b, cIdx(b, 0), qn, 1, [&](OpBuilder &b, Value i) {
      Value head = memref::LoadOp::create(b, loc, rowHeadBuf, ValueRange{i});
      Value row = memref::LoadOp::create(b, loc, rowQBuf, ValueRange{i});
      Value l = memref::LoadOp::create(b, loc, lBuf, ValueRange{i});
      RowNormalization end = normalizeRow(b, loc, norm, l);
      forLoop(b, Dv, [&](OpBuilder &b, Value d) {
        Value a = memref::LoadOp::create(b, loc, accBuf, ValueRange{i, d});
        if (end.inv)
          a = arith::MulFOp::create(b, loc, a, end.inv);
        if (partial) {
          memref::StoreOp::create(b, loc, a, op.getOutPartial(),
                                  ValueRange{split, bIdx, head, row, d});
          return;
        }
        if (outElt != f32)
          a = arith::TruncFOp::create(b, loc, outElt, a);
        memref::StoreOp::create(b, loc, a, op.getOut(),
                                ValueRange{bIdx, head, row, d});
      });
      Value lse = partial ? op.getLsePartial() : op.getLse();
      Value value =
          lse ? rowLse(b, loc, norm,
                       memref::LoadOp::create(b, loc, mBuf, ValueRange{i}), l,
                       end.empty)
              : Value();
      if (!value)
        return;
      if (partial)
        memref::StoreOp::create(b, loc, value, lse,
                                ValueRange{split, bIdx, head, row});
      else
        memref::StoreOp::create(b, loc, value, lse,
                                ValueRange{bIdx, head, row});
    });
  };
  if (!op.getNumSplits()) {
    write(b, false);
    return;
  }
  Value several = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ugt,
                                        numSplits, cIdx(b, 1));
  scf::IfOp::create(
      b, loc, several,
      [&](OpBuilder &b, Location) {
        write(b, true);
        scf::YieldOp::create(b, loc);
      },
      [&](OpBuilder &b, Location) {
        write(b, false);
        scf::YieldOp::create(b, loc);
      });
}

} // namespace mlir::attn::tiler

namespace {

/// attn.merge_splits: per (b, h, q) row, a work item merging the row's
/// parts column by column (MergeSplits.h).
FailureOr<scf::ParallelOp> lowerMergeSplits(RewriterBase &rw,
                                            MergeSplitsOp op) {
  Location loc = op.getLoc();
  OpBuilder::InsertionGuard guard(rw);
  rw.setInsertionPoint(op);
  auto c = [&](OpBuilder &b, int64_t v) {
    return arith::ConstantIndexOp::create(b, loc, v).getResult();
  };
  Value parts = memref::DimOp::create(rw, loc, op.getOutPartial(), 0);
  Value out = op.getOut();
  Value B = memref::DimOp::create(rw, loc, out, 0);
  Value H = memref::DimOp::create(rw, loc, out, 1);
  Value S = memref::DimOp::create(rw, loc, out, 2);
  int64_t Dv = cast<MemRefType>(out.getType()).getShape().back();
  Type outElt = cast<MemRefType>(out.getType()).getElementType();
  Value zero = c(rw, 0), one = c(rw, 1);
  auto par = scf::ParallelOp::create(
      rw, loc, ValueRange{zero, zero, zero}, ValueRange{B, H, S},
      ValueRange{one, one, one},
      [&](OpBuilder &b, Location, ValueRange ivs) {
        Value bi = ivs[0], hi = ivs[1], qi = ivs[2];
        auto partLse = [&](OpBuilder &b, Value p) -> Value {
          return memref::LoadOp::create(b, loc, op.getLsePartial(),
                                        ValueRange{p, bi, hi, qi});
        };
        MergeRow row =
            emitMergeRow(b, loc, op.getNormalize(), {parts, partLse, {}});
        auto storeLse = [&](OpBuilder &b, Value lse) {
          memref::StoreOp::create(b, loc, lse, op.getLse(),
                                  ValueRange{bi, hi, qi});
        };
        scf::ForOp::create(
            b, loc, zero, c(b, Dv), one, ValueRange{},
            [&](OpBuilder &b, Location, Value d, ValueRange) {
              auto partOut = [&](OpBuilder &b, Value p) -> Value {
                return memref::LoadOp::create(b, loc, op.getOutPartial(),
                                              ValueRange{p, bi, hi, qi, d});
              };
              emitMergeColumn(
                  b, loc, row, {parts, partLse, partOut}, d, outElt,
                  [&](OpBuilder &b, Value o) {
                    memref::StoreOp::create(b, loc, o, out,
                                            ValueRange{bi, hi, qi, d});
                  },
                  op.getLse() ? function_ref<void(OpBuilder &, Value)>(storeLse)
                              : nullptr);
              scf::YieldOp::create(b, loc);
            });
      });
  par->setAttr(kWorkLoopAttr, rw.getUnitAttr());
  rw.eraseOp(op);
  return par;
}

struct AttnTilePass final
    : mlir::attn::impl::AttnTilePassBase<AttnTilePass> {
  using AttnTilePassBase::AttnTilePassBase;
  void runOnOperation() override {
    if (blockQ <= 0 || blockKV <= 0) {
      getOperation().emitError("expected positive tile sizes, got block-q=")
          << blockQ << " block-kv=" << blockKV;
      return signalPassFailure();
    }
    SmallVector<AttentionOp> ops;
    // Backward ops are attn-tile-backward's.
    getOperation().walk([&](AttentionOp op) {
      if (!op.isBackward())
        ops.push_back(op);
    });
    std::optional<RowWidths> widths = parseRowWidths(rows);
    if (!widths) {
      getOperation().emitError("expected rows=all, many or few, got '")
          << rows << "'";
      return signalPassFailure();
    }
    IRRewriter rewriter(&getContext());
    SmallVector<MergeSplitsOp> merges;
    getOperation().walk([&](MergeSplitsOp op) { merges.push_back(op); });
    for (MergeSplitsOp op : merges)
      if (failed(lowerMergeSplits(rewriter, op)))
        return signalPassFailure();
    for (AttentionOp op : ops) {
      rewriter.setInsertionPoint(op);
      if (failed(tileAttention(rewriter, op,
                               TileSizes{blockQ, blockKV, *widths})))
        return signalPassFailure();
    }
  }
};

} // namespace

std::optional<RowWidths> mlir::attn::parseRowWidths(llvm::StringRef name) {
  if (name == "all")
    return RowWidths::All;
  if (name == "many")
    return RowWidths::Many;
  if (name == "few")
    return RowWidths::Few;
  return std::nullopt;
}

FailureOr<scf::ParallelOp> mlir::attn::tileAttention(RewriterBase &rewriter,
                                                     AttentionOp op,
                                                     TileSizes sizes) {
  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(op);
  AttentionTiler tiler(rewriter, op, sizes);
  scf::ParallelOp par = tiler.build();
  rewriter.eraseOp(op);
  return par;
}
