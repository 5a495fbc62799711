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

#include "llvm/Support/SaveAndRestore.h"

#include <cmath>

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNTILEPASS
#include "lib/Transforms/Passes.h.inc"
} // namespace mlir::attn

using namespace mlir;
using namespace mlir::attn;

namespace {

constexpr double kLog2E = 1.4426950408889634;
/// How many key tiles ahead paged K/V rows are prefetched.
constexpr int64_t kPrefetchTiles = 2;

/// Builds the loop nest for one attention op. Values are created at the
/// builder's insertion point; loop bodies use their own nested builders.
class AttentionTiler : LoopBuilder {
public:
  AttentionTiler(RewriterBase &rewriter, AttentionOp op, TileSizes sizes)
      : LoopBuilder(op.getLoc()), rw(rewriter), op(op), BQ(sizes.blockQ),
        BK(sizes.blockKV), D(op.getHeadDim()), Dv(op.getValueHeadDim()),
        norm(op.getNormalize()), rowWidths(sizes.rows) {}

  scf::ParallelOp build();

private:
  Value inlineRegion(OpBuilder &b, Region &region, ValueRange args) {
    return regions.inlineRegion(b, region, args);
  }

  void emitSetup(OpBuilder &b);
  void emitScale(OpBuilder &b);
  void emitKeyRows(OpBuilder &b, Value k0, Value kn);
  /// This item's K/V row lookup (batch, kv head, key slots, Skv).
  KeyRows kvRows() {
    return {op,       loc,
            bIdx,     hkvIdx,
            keySlots, seqKV,
            sizeI32[static_cast<int>(Size::Skv)],
            op.getPageTable(), op.getKvIndex()};
  }
  /// Where key position `p` lives in K/V (pages of K's pool).
  std::pair<Value, Value> locateRow(OpBuilder &b, Value p) {
    return kvRows().rowAt(b, p, op.getKey());
  }
  /// Prefetches K's and V's row `row` of (page or batch) `outer`, every
  /// cache line of it, into L2 (prefetcht1): into L1 (t0) each prefetch
  /// holds one of the few L1 miss buffers, and a tile's worth of them
  /// stalled the loads of the tile being computed (int8 decode over 64-row
  /// pages: 11.2-11.8 ms with t0 one tile ahead, 8.7-8.9 with t1 two
  /// tiles ahead).
  void prefetchRow(OpBuilder &b, Value outer, Value row) {
    for (Value src : {op.getKey(), op.getValue()}) {
      auto type = cast<MemRefType>(src.getType());
      int64_t eltBits = type.getElementTypeBitWidth();
      int64_t bytes = type.getShape().back() * eltBits / 8;
      for (int64_t off = 0; off < bytes; off += 64)
        memref::PrefetchOp::create(
            b, loc, src,
            ValueRange{outer, hkvIdx, row, cIdx(b, off * 8 / eltBits)},
            /*isWrite=*/false, /*localityHint=*/2, /*isDataCache=*/true);
    }
  }
  /// K[position pos, column d] in f32, whatever the layout: through the
  /// page table, decoded and scaled for quantized codes.
  Value keyElement(OpBuilder &b, Value pos, Value d);
  /// Quantized V: P's entries for key row j carry that row's V scale (the
  /// row sums keep the unscaled p).
  Value scaleByValueScale(OpBuilder &b, Value p, Value j) {
    if (!vScaleBuf)
      return p;
    return arith::MulFOp::create(
        b, loc, p, memref::LoadOp::create(b, loc, vScaleBuf, ValueRange{j}));
  }
  void emitWorkItem(OpBuilder &b, Value bIdx, Value hIdx, Value qTile);
  void emitKeyLoop(OpBuilder &b);
  void emitRowTable(OpBuilder &b);
  void withRowWidth(OpBuilder &b,
                    function_ref<void(OpBuilder &, int64_t)> body);
  Value columns(OpBuilder &b, Value buf, int64_t width);
  Value rowsOf(OpBuilder &b, Value buf, int64_t width);
  /// for i in [0, rowsUsed): the rows a key tile needs to process.
  void forRows(OpBuilder &b, BodyFn body) {
    forLoop(b, cIdx(b, 0), rowsUsed, 1, body);
  }
  void emitSelectBlocks(OpBuilder &b, Value qBlock, Value pooledK);
  /// Each key block's mean key row (this item's batch and K/V head) into
  /// pooledK [blocks, D].
  void emitPooledKeys(OpBuilder &b, Value numBlocks, Value pooledK);
  /// The select pre-pass's loops, one worker: plain loops, no barriers.
  SelectWork selectWork(OpBuilder &b);
  Value classifyRange(OpBuilder &b, Value lo, Value hi, Value qLo, Value qHi,
                      Value kvLo, Value kvEnd);
  void emitKeyTile(OpBuilder &b, Value k0, Value fullTile);
  /// Where a tile's matmuls read K, V and Q: the staged f32 tiles, or for
  /// a whole tile at <= kTinyRows * kRowGroups query rows (one group of
  /// kTinyRows at a time), the rows in the cache themselves (f32, f16,
  /// bf16, or codes with K's channel scales folded into Q's rows).
  struct TileOperands {
    // The tile's K and V rows, in parts of equal row counts: one view of
    // the cache, or one per page when pages are smaller than the tile.
    SmallVector<Value> k, v;
    Value qRows;
    // int8 Q rows (qRows holds their codes): S^T's columns times these.
    Value qRowScale;
  };
  /// A key tile's K and V rows for tiles of any row count: views of the
  /// cache (whole tiles) or of the staged tile (the partial last one).
  struct KeyValueRows {
    Value k, v;
  };
  /// Scores, normalizer and P.V of a staged key tile (or one read in
  /// place: `direct` for few rows, `rowsIn` for any).
  void emitTileCompute(OpBuilder &b, Value k0, Value kn, Value fullTile,
                       const TileOperands *direct = nullptr,
                       const KeyValueRows *rowsIn = nullptr);
  /// Rows [row0, row0 + rows) x columns [0, width) of K or V at (batch or
  /// page `outer`, this item's kv head), as a 2-D view.
  Value cacheRows(OpBuilder &b, Value cache, Value outer, Value row0,
                  int64_t rows, int64_t width) {
    auto type = cast<MemRefType>(cache.getType());
    SmallVector<OpFoldResult> offsets = {outer, hkvIdx, row0,
                                         b.getIndexAttr(0)};
    SmallVector<OpFoldResult> sizes = {b.getIndexAttr(1), b.getIndexAttr(1),
                                       b.getIndexAttr(rows),
                                       b.getIndexAttr(width)};
    SmallVector<OpFoldResult> strides(4, b.getIndexAttr(1));
    auto viewType = memref::SubViewOp::inferRankReducedResultType(
        {rows, width}, type, offsets, sizes, strides);
    return memref::SubViewOp::create(b, loc, cast<MemRefType>(viewType),
                                     cache, offsets, sizes, strides);
  }
  /// The in-place tile at k0 (BK keys): for int8, V scales per row and
  /// Q's rows times the tile's K group scales; then the compute on the
  /// cache's rows.
  void emitDirectTile(OpBuilder &b, Value k0, Value kn, Value fullTile);
  /// The rows of every row group times K's scales of `group` (qScaledBuf)
  /// and, for int8/int4 caches, rounded to int8 codes with a scale per row.
  void emitGroupQueryRows(OpBuilder &b, Value group);
  /// An in-place int8 tile's P (compact sTBuf) rounded to unsigned 8-bit
  /// codes per row (pCodeBuf) with the rows' scales (pScaleBuf).
  void emitRoundedProbabilities(OpBuilder &b);
  /// A matmul reading fp8 codes in place says how they decode
  /// (kKVCodesAttr; int8 codes are plain integers).
  void markCodes(OpBuilder &b, Operation *matmul, const TileOperands *direct) {
    auto quant = op.getKvQuant();
    // (int4 tiles take their own products: createInt4KeyDots and
    // createInt4ValueProducts.)
    if (direct && quant && quant != KVQuant::int8 && quant != KVQuant::int4)
      matmul->setAttr(kKVCodesAttr, b.getStringAttr(stringifyKVQuant(*quant)));
  }
  /// Emits body(withMask); when `fullTile` is given, once under
  /// `scf.if fullTile` without the mask and once with it.
  void withMaskVariants(OpBuilder &b, Value fullTile,
                        function_ref<void(OpBuilder &, bool)> body);
  /// With `rowVectors` (in-place tiles: kTinyRows rows, whole tiles) the
  /// per-row state and each key's row entries are handled as vectors of
  /// kTinyRows lanes, and unmasked tiles without a score region take the
  /// row max without per-entry code.
  /// With `deferRescale` the accumulator keeps its old scale: the caller
  /// multiplies it by alphaBuf when it adds the tile's P . V.
  void emitScoresSoftmax(OpBuilder &b, Value k0, Value kn, Value fullTile,
                         bool rowVectors = false, bool deferRescale = false);
  void emitScoresPointwise(OpBuilder &b, Value k0, Value kn, Value fullTile);
  void emitPointwiseLoop(OpBuilder &b, Value k0, Value kn, bool withMask);
  Value emitScoreAndMask(OpBuilder &b, Value s, Value i, Value j, Value k0,
                         Value kn, bool withMask, Value &keep);
  void emitEpilogue(OpBuilder &b);

  RewriterBase &rw;
  AttentionOp op;
  int64_t BQ, BK, D, Dv;
  Normalize norm;
  RowWidths rowWidths;

  // Set up once per op.
  Value batch, headsQ, seqQ, headsKV, seqKV, group, numQTiles;
  // Key slots the loop walks: Skv positions, or kv_index entries.
  Value keySlots;
  RegionInliner regions{op};
  Value *sizeI32 = regions.sizes;
  Value qScale, scaleValue, selectArg;
  int64_t workRows = 0;

  // Per work item.
  Value b32, h32, bIdx, hIdx, hkvIdx, q0, qn, qTileIdx;
  // Packed rows: per row of the tile, its query head and position (index
  // and i32), and the head/position ranges the tile covers.
  bool packed = false;
  Value rows, numRowTiles;
  Value rowHeadBuf, rowQBuf, rowHead32Buf, rowQ32Buf;
  Value tileHLo, tileHHi, tileQLo, tileQHi; // i32
  // Tiles with few valid rows (decode: G * Sq rows) run narrow: the first
  // kNarrowRows query columns of the tile only.
  static constexpr int64_t kNarrowRows = 16;
  // With at most kTinyRows valid rows (GQA decode with small groups, MQA),
  // Q.K^T runs as dot products along D against Q's rows (qRowBuf) instead
  // of broadcasts into 16-wide query columns, and P.V on those rows only.
  static constexpr int64_t kTinyRows = 4;
  // In-place tiles' compact scores are handled kQuad at a time: 4 keys x
  // kTinyRows rows.
  static constexpr int64_t kQuad = 16;
  /// The compact [BK, kTinyRows] sTBuf as one row of BK * kTinyRows.
  Value flatScores(OpBuilder &b, Value buf) {
    return memref::CollapseShapeOp::create(
        b, loc, buf, ArrayRef<ReassociationIndices>{{0, 1}});
  }
  /// The 4 keys' row vectors (kTinyRows each) of a quad.
  SmallVector<Value> keysOfQuad(OpBuilder &b, Value quad) {
    SmallVector<Value> out;
    for (int64_t key = 0; key < kQuad / kTinyRows; ++key)
      out.push_back(vector::ExtractStridedSliceOp::create(
          b, loc, quad, ArrayRef<int64_t>{key * kTinyRows},
          ArrayRef<int64_t>{kTinyRows}, ArrayRef<int64_t>{1}));
    return out;
  }
  /// The element-wise max of `start` and every quad of the compact tile
  /// `flat` ([BK * kTinyRows]): all quads loaded, then a tree of maxes, so
  /// the maxes do not wait on each other as a running max would. A NaN may
  /// be dropped by this max (nnan), but then it still reaches p and O.
  Value maxOfQuads(OpBuilder &b, Value flat, Value start) {
    auto quadType = VectorType::get({kQuad}, f32);
    auto flags = arith::FastMathFlagsAttr::get(
        b.getContext(), arith::FastMathFlags::nnan | arith::FastMathFlags::nsz);
    SmallVector<Value> level = {start};
    for (int64_t at = 0; at < BK * kTinyRows; at += kQuad)
      level.push_back(vector::LoadOp::create(b, loc, quadType, flat,
                                             ValueRange{cIdx(b, at)}));
    while (level.size() > 1) {
      SmallVector<Value> next;
      for (size_t i = 0; i + 1 < level.size(); i += 2)
        next.push_back(
            arith::MaximumFOp::create(b, loc, level[i], level[i + 1], flags));
      if (level.size() % 2)
        next.push_back(level.back());
      level = std::move(next);
    }
    return level[0];
  }
  /// A vector of kTinyRows per-row values, repeated for each key of a quad.
  Value rowsOverQuad(OpBuilder &b, Value rows) {
    SmallVector<int64_t> mask;
    for (int64_t at = 0; at < kQuad; ++at)
      mask.push_back(at % kTinyRows);
    return vector::ShuffleOp::create(b, loc, rows, rows, mask);
  }
  Value narrow, tiny, rowsUsed;
  // Whether staged tiles of at most kTinyRows rows get code of their own.
  bool stagedTiny = true;
  // At most kTinyRows * kRowGroups valid rows (multi-token decode: Sq up to
  // 4 with GQA groups of 4): whole key tiles are still read in place, and
  // their compute runs per group of kTinyRows rows while the tile is in L1.
  static constexpr int64_t kRowGroups = 4;
  Value fewRows;
  /// body() once per group of kTinyRows rows of an in-place tile, with the
  /// per-row buffers (state, query rows, row table) viewed at the group.
  void forEachRowGroup(OpBuilder &b, function_ref<void(OpBuilder &)> body);
  /// How many groups of kTinyRows rows this item's valid rows fill.
  Value rowGroupCount(OpBuilder &b) {
    return arith::CeilDivUIOp::create(b, loc, qn, cIdx(b, kTinyRows));
  }
  Value qRowBuf;
  // Split-KV: parts of the key range, this item's part and tile range.
  Value numSplits, split, tileBegin, tileEnd;
  Value qTBuf, kBuf, vBuf, sTBuf, accBuf, mBuf, lBuf, mUseBuf, alphaBuf;
  // In-place tiles' S^T/P ([BK, kTinyRows], contiguous): sTBuf while one is
  // emitted, so its softmax runs on whole vectors of 4 keys x 4 rows.
  Value sTTinyBuf;
  // Per key tile row: its position (kv_index; -1 when skipped) and V scale.
  Value posBuf, vScaleBuf;
  // int8 K/V read in place by decode's dot products (see TileOperands).
  bool directCodes = false;
  // Whole key tiles of f32 K/V in contiguous rows (no pages, kv_index or
  // codes) feed the matmuls from the cache at every row count: staging
  // them was about a tenth of a dense prefill's time.
  bool wholeTilesInPlace = false;
  Value qScaledBuf;
  // int8 caches: those rows rounded to int8, one scale per row and tile.
  Value qCodeBuf, qRowScaleBuf;
  // The K group qScaledBuf (and the codes) were made for (-1: none yet).
  Value qGroupBuf;
  // int8/int4 tiles read in place: P rounded to unsigned 8-bit codes
  // ([BK, rows], as the compact scores), the rows' scales, and P . V
  // before those scales.
  Value pCodeBuf, pScaleBuf, pvBuf;
  // In-place fp8 tiles: P^T ([BK, kTinyRows]) rounded to bf16, which P.V
  // multiplies by V's codes as bf16 pairs (vdpbf16ps where there is one).
  Value pBf16Buf;
};

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
        [&](OpBuilder &b, Value r, Value d) { return keyElement(b, r, d); },
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

Value AttentionTiler::keyElement(OpBuilder &b, Value pos, Value d) {
  auto [outer, row] = locateRow(b, pos);
  auto loadAt = [&](OpBuilder &b, Value col) -> Value {
    return memref::LoadOp::create(b, loc, op.getKey(),
                                  ValueRange{outer, hkvIdx, row, col});
  };
  auto quant = op.getKvQuant();
  if (!quant)
    return toF32(b, loadAt(b, d));
  Value group = kvRows().keyScaleGroup(b, pos);
  return dequantizedKeyAt(
      b, loc, *quant, d,
      memref::LoadOp::create(b, loc, op.getKeyScale(),
                             ValueRange{bIdx, hkvIdx, group, d}),
      loadAt);
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
  // dot products); the last, partial one keeps it.
  Value whole = arith::AndIOp::create(
      b, loc,
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, kn,
                            cIdx(b, BK)),
      fewRows);
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

void AttentionTiler::emitDirectTile(OpBuilder &b, Value k0, Value kn,
                                    Value fullTile) {
  // The tile's rows in parts that each lie within one page: the whole
  // tile, or one page's rows per part when pages are smaller.
  int64_t partRows =
      op.isPaged() ? std::min<int64_t>(BK, *op.getPageSize()) : BK;
  TileOperands direct;
  direct.qRows = qRowBuf;
  if (op.isPaged()) {
    // Pages sit in any order, which defeats the hardware prefetcher: ask
    // for the rows of the tile after next, page by page, while this one
    // runs.
    Value next = arith::AddIOp::create(b, loc, k0, cIdx(b, kPrefetchTiles * BK));
    Value whole = arith::CmpIOp::create(
        b, loc, arith::CmpIPredicate::ule,
        arith::AddIOp::create(b, loc, next, cIdx(b, BK)), keySlots);
    scf::IfOp::create(b, loc, whole, [&](OpBuilder &b, Location) {
      for (int64_t part = 0; part < BK; part += partRows) {
        auto [nOuter, nRow] =
            locateRow(b, arith::AddIOp::create(b, loc, next, cIdx(b, part)));
        forLoop(b, partRows, [&](OpBuilder &b, Value r) {
          prefetchRow(b, nOuter, arith::AddIOp::create(b, loc, nRow, r));
        });
      }
      scf::YieldOp::create(b, loc);
    });
  }
  for (int64_t part = 0; part < BK; part += partRows) {
    auto [outer, row0] = locateRow(b, arith::AddIOp::create(b, loc, k0,
                                                            cIdx(b, part)));
    // int4 rows stay packed, two codes per byte.
    int64_t perByte = op.getKvQuant() == KVQuant::int4 ? 2 : 1;
    direct.k.push_back(
        cacheRows(b, op.getKey(), outer, row0, partRows, D / perByte));
    direct.v.push_back(
        cacheRows(b, op.getValue(), outer, row0, partRows, Dv / perByte));
  }
  llvm::SaveAndRestore<Value> compactScores(sTBuf, sTTinyBuf);
  if (!op.getKvQuant()) {
    forEachRowGroup(b, [&](OpBuilder &b) {
      direct.qRows = qRowBuf;
      emitTileCompute(b, k0, kn, fullTile, &direct);
    });
    return;
  }
  forLoop(b, BK, [&](OpBuilder &b, Value j) {
    memref::StoreOp::create(
        b, loc,
        memref::LoadOp::create(
            b, loc, op.getValueScale(),
            ValueRange{bIdx, hkvIdx, arith::AddIOp::create(b, loc, k0, j)}),
        vScaleBuf, ValueRange{j});
  });
  // Q's rows for this tile's K group, recomputed only when the group
  // changes (groups span several tiles).
  Value group = kvRows().keyScaleGroup(b, k0);
  Value stale = arith::CmpIOp::create(
      b, loc, arith::CmpIPredicate::ne,
      memref::LoadOp::create(b, loc, qGroupBuf, ValueRange{cIdx(b, 0)}),
      group);
  scf::IfOp::create(b, loc, stale, [&](OpBuilder &b, Location) {
    emitGroupQueryRows(b, group);
    memref::StoreOp::create(b, loc, group, qGroupBuf, ValueRange{cIdx(b, 0)});
    scf::YieldOp::create(b, loc);
  });
  forEachRowGroup(b, [&](OpBuilder &b) {
    direct.qRows = qCodeBuf ? qCodeBuf : qScaledBuf;
    direct.qRowScale = qRowScaleBuf;
    emitTileCompute(b, k0, kn, fullTile, &direct);
  });
}

void AttentionTiler::forEachRowGroup(OpBuilder &b,
                                     function_ref<void(OpBuilder &)> body) {
  forLoop(b, cIdx(b, 0), rowGroupCount(b), 1, [&](OpBuilder &b, Value g) {
    Value r0 = arith::MulIOp::create(b, loc, g, cIdx(b, kTinyRows));
    // buf's kTinyRows rows from r0 (all columns of a 2-D buffer).
    auto atGroup = [&](Value buf) -> Value {
      if (!buf)
        return buf;
      auto type = cast<MemRefType>(buf.getType());
      SmallVector<OpFoldResult> offsets = {r0}, sizes = {
                                                    b.getIndexAttr(kTinyRows)};
      SmallVector<OpFoldResult> strides = {b.getIndexAttr(1)};
      if (type.getRank() == 2) {
        offsets.push_back(b.getIndexAttr(0));
        sizes.push_back(b.getIndexAttr(type.getDimSize(1)));
        strides.push_back(b.getIndexAttr(1));
      }
      return memref::SubViewOp::create(b, loc, buf, offsets, sizes, strides);
    };
    SmallVector<Value *> perRow = {&mBuf,         &lBuf,        &mUseBuf,
                                   &alphaBuf,     &accBuf,      &rowHead32Buf,
                                   &rowQ32Buf,    &qRowBuf,     &qScaledBuf,
                                   &qCodeBuf,     &qRowScaleBuf};
    SmallVector<Value> saved;
    for (Value *v : perRow) {
      saved.push_back(*v);
      *v = atGroup(*v);
    }
    llvm::SaveAndRestore<Value> groupRows(rowsUsed, cIdx(b, kTinyRows));
    body(b);
    for (auto [v, old] : llvm::zip(perRow, saved))
      *v = old;
  });
}

void AttentionTiler::emitGroupQueryRows(OpBuilder &b, Value group) {
  Type i32Type = b.getI32Type();
  bool fp8Codes = isFp8(*op.getKvQuant());
  // Every row of the groups the tile's compute will take.
  Value rowsOfGroups =
      arith::MulIOp::create(b, loc, rowGroupCount(b), cIdx(b, kTinyRows));
  forLoop(b, cIdx(b, 0), rowsOfGroups, 1, [&](OpBuilder &b, Value i) {
    // q * K's scales, and for int8 the row's absolute max: |x|'s bits
    // order like |x| (finite or inf), so it is an unsigned max reduction,
    // which LLVM vectorizes (a float max with NaN rules it does not).
    auto scaleLoop = scf::ForOp::create(
        b, loc, cIdx(b, 0), cIdx(b, D), cIdx(b, 1),
        ValueRange{arith::ConstantIntOp::create(b, loc, 0, 32)},
        [&](OpBuilder &b, Location, Value d, ValueRange acc) {
          Value scale = memref::LoadOp::create(
              b, loc, op.getKeyScale(), ValueRange{bIdx, hkvIdx, group, d});
          Value q = memref::LoadOp::create(b, loc, qRowBuf, ValueRange{i, d});
          Value x = arith::MulFOp::create(b, loc, q, scale);
          if (fp8Codes) // as the bf16 dot products read it (CPU, BF16)
            x = arith::ExtFOp::create(
                b, loc, Type(f32),
                arith::TruncFOp::create(b, loc, b.getBF16Type(), x)
                    .getResult());
          memref::StoreOp::create(b, loc, x, qScaledBuf, ValueRange{i, d});
          Value magnitude = arith::AndIOp::create(
              b, loc, arith::BitcastOp::create(b, loc, i32Type, x),
              arith::ConstantIntOp::create(b, loc, 0x7fffffff, 32));
          scf::YieldOp::create(
              b, loc,
              ValueRange{arith::MaxUIOp::create(b, loc, acc[0], magnitude)});
        });
    if (!qCodeBuf)
      return;
    // int8 codes times int8 codes (VNNI dot products on the CPU): the row
    // rounded to int8 against its absolute max; S^T's column is scaled
    // back by max / 127.
    Value amax = arith::BitcastOp::create(b, loc, f32, scaleLoop.getResult(0));
    QueryRowScale rowScale =
        queryRowScale(b, loc, amax, queryCodeLimit(KVQuant::int8));
    memref::StoreOp::create(b, loc, rowScale.scale, qRowScaleBuf,
                            ValueRange{i});
    forLoop(b, D, [&](OpBuilder &b, Value d) {
      Value x = memref::LoadOp::create(b, loc, qScaledBuf, ValueRange{i, d});
      memref::StoreOp::create(b, loc,
                              int8QueryCodes(b, loc, x, rowScale.inverse),
                              qCodeBuf, ValueRange{i, d});
    });
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

void AttentionTiler::emitRoundedProbabilities(OpBuilder &b) {
  // P (V's scales folded in) is never negative: per row, codes
  // round(p * 255 / max p), 16 at a time over the compact [BK, 4] tile.
  auto quadType = VectorType::get({kQuad}, f32);
  auto rowsType = VectorType::get({kTinyRows}, f32);
  Value flat = flatScores(b, sTBuf), flatCodes = flatScores(b, pCodeBuf);
  Value c0 = cIdx(b, 0);
  auto splat = [&](VectorType type, double v) -> Value {
    return arith::ConstantOp::create(
        b, loc, type,
        DenseElementsAttr::get(type, b.getF32FloatAttr(float(v))));
  };
  Value pmax = splat(rowsType, 0.0);
  for (Value key : keysOfQuad(b, maxOfQuads(b, flat, splat(quadType, 0.0))))
    pmax = arith::MaximumFOp::create(b, loc, pmax, key);
  Value nonzero = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OGT, pmax,
                                        splat(rowsType, 0.0));
  Value inv = arith::SelectOp::create(
      b, loc, nonzero,
      arith::DivFOp::create(b, loc, splat(rowsType, 255.0), pmax),
      splat(rowsType, 0.0));
  vector::StoreOp::create(
      b, loc, arith::MulFOp::create(b, loc, pmax, splat(rowsType, 1.0 / 255.0)),
      pScaleBuf, ValueRange{c0});
  Value invQuad = rowsOverQuad(b, inv);
  forLoop(b, c0, cIdx(b, BK * kTinyRows), kQuad, [&](OpBuilder &b, Value at) {
    Value p = vector::LoadOp::create(b, loc, quadType, flat, ValueRange{at});
    Value code = arith::FPToSIOp::create(
        b, loc, VectorType::get({kQuad}, b.getI32Type()),
        math::RoundEvenOp::create(b, loc,
                                  arith::MulFOp::create(b, loc, p, invQuad)));
    vector::StoreOp::create(
        b, loc,
        arith::TruncIOp::create(
            b, loc, VectorType::get({kQuad}, b.getI8Type()), code),
        flatCodes, ValueRange{at});
  });
}

void AttentionTiler::withRowWidth(
    OpBuilder &b, function_ref<void(OpBuilder &, int64_t)> body) {
  if (!narrow) {
    body(b, BQ);
    return;
  }
  auto narrowOrFull = [&](OpBuilder &b) {
    if (rowWidths == RowWidths::Few) {
      body(b, kNarrowRows);
      return;
    }
    scf::IfOp::create(
        b, loc, narrow,
        [&](OpBuilder &b, Location) {
          body(b, kNarrowRows);
          scf::YieldOp::create(b, loc);
        },
        [&](OpBuilder &b, Location) {
          body(b, BQ);
          scf::YieldOp::create(b, loc);
        });
  };
  if (!stagedTiny) {
    narrowOrFull(b);
    return;
  }
  scf::IfOp::create(
      b, loc, tiny,
      [&](OpBuilder &b, Location) {
        body(b, kTinyRows);
        scf::YieldOp::create(b, loc);
      },
      [&](OpBuilder &b, Location) {
        narrowOrFull(b);
        scf::YieldOp::create(b, loc);
      });
}

/// The first `width` columns (or rows) of a 2-D tile buffer as a static
/// strided view.
Value AttentionTiler::columns(OpBuilder &b, Value buf, int64_t width) {
  auto type = cast<MemRefType>(buf.getType());
  if (width == type.getDimSize(1))
    return buf;
  return memref::SubViewOp::create(
      b, loc, buf, ArrayRef<OpFoldResult>{b.getIndexAttr(0), b.getIndexAttr(0)},
      ArrayRef<OpFoldResult>{b.getIndexAttr(type.getDimSize(0)),
                             b.getIndexAttr(width)},
      ArrayRef<OpFoldResult>{b.getIndexAttr(1), b.getIndexAttr(1)});
}

Value AttentionTiler::rowsOf(OpBuilder &b, Value buf, int64_t width) {
  auto type = cast<MemRefType>(buf.getType());
  if (width == type.getDimSize(0))
    return buf;
  return memref::SubViewOp::create(
      b, loc, buf, ArrayRef<OpFoldResult>{b.getIndexAttr(0), b.getIndexAttr(0)},
      ArrayRef<OpFoldResult>{b.getIndexAttr(width),
                             b.getIndexAttr(type.getDimSize(1))},
      ArrayRef<OpFoldResult>{b.getIndexAttr(1), b.getIndexAttr(1)});
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
      // Every entry of a whole unmasked tile is kept as it is: the max of
      // 4 keys x 4 rows at a time, then of the 4 keys.
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

std::pair<Value, Value> mlir::attn::splitInt4Codes(OpBuilder &b, Location loc,
                                                   Value bytes) {
  Value four = arith::ConstantIntOp::create(b, loc, 4, 8);
  if (auto v = dyn_cast<VectorType>(bytes.getType()))
    four = vector::BroadcastOp::create(b, loc, v, four);
  return {arith::ShRSIOp::create(b, loc,
                                 arith::ShLIOp::create(b, loc, bytes, four),
                                 four),
          arith::ShRSIOp::create(b, loc, bytes, four)};
}

namespace {
/// The even (parity 0) or odd (parity 1) columns of a 2-D buffer.
Value strideTwoColumns(OpBuilder &b, Location loc, Value buf, int64_t parity) {
  auto type = cast<MemRefType>(buf.getType());
  return memref::SubViewOp::create(
      b, loc, buf,
      ArrayRef<OpFoldResult>{b.getIndexAttr(0), b.getIndexAttr(parity)},
      ArrayRef<OpFoldResult>{b.getIndexAttr(type.getDimSize(0)),
                             b.getIndexAttr(type.getDimSize(1) / 2)},
      ArrayRef<OpFoldResult>{b.getIndexAttr(1), b.getIndexAttr(2)});
}

/// A linalg.generic over (m, n, k) reading `ins` through `inMaps` and
/// writing `outs` at (m, n), marked kInt4PairsAttr.
Operation *createInt4Product(
    OpBuilder &b, Location loc, ValueRange ins, ArrayRef<AffineMap> inMaps,
    ValueRange outs,
    function_ref<void(OpBuilder &, Location, ValueRange)> body) {
  MLIRContext *ctx = b.getContext();
  AffineExpr m, n, k;
  bindDims(ctx, m, n, k);
  SmallVector<AffineMap> maps(inMaps);
  maps.append(outs.size(), AffineMap::get(3, 0, {m, n}, ctx));
  auto op = linalg::GenericOp::create(
      b, loc, TypeRange{}, ins, outs, maps,
      {utils::IteratorType::parallel, utils::IteratorType::parallel,
       utils::IteratorType::reduction},
      body);
  op->setAttr(kInt4PairsAttr, b.getUnitAttr());
  return op;
}
} // namespace

Operation *mlir::attn::createInt4KeyDots(OpBuilder &b, Location loc,
                                         Value packedKeys, Value queryCodes,
                                         Value scoresT) {
  MLIRContext *ctx = b.getContext();
  AffineExpr m, n, k;
  bindDims(ctx, m, n, k);
  auto nk = AffineMap::get(3, 0, {n, k}, ctx);
  return createInt4Product(
      b, loc,
      {packedKeys, strideTwoColumns(b, loc, queryCodes, 0),
       strideTwoColumns(b, loc, queryCodes, 1)},
      {AffineMap::get(3, 0, {m, k}, ctx), nk, nk}, {scoresT},
      [](OpBuilder &b, Location loc, ValueRange args) {
        Type f32 = b.getF32Type();
        auto [lo, hi] = splitInt4Codes(b, loc, args[0]);
        auto product = [&](Value x, Value y) {
          return arith::MulFOp::create(
              b, loc, arith::SIToFPOp::create(b, loc, f32, x),
              arith::SIToFPOp::create(b, loc, f32, y));
        };
        Value sum = arith::AddFOp::create(b, loc, product(lo, args[1]),
                                          product(hi, args[2]));
        linalg::YieldOp::create(
            b, loc, ValueRange{arith::AddFOp::create(b, loc, args[3], sum)});
      });
}

Operation *mlir::attn::createInt4ValueProducts(OpBuilder &b, Location loc,
                                               Value pCodesT,
                                               Value packedValues, Value out) {
  MLIRContext *ctx = b.getContext();
  AffineExpr m, n, k;
  bindDims(ctx, m, n, k);
  return createInt4Product(
      b, loc, {pCodesT, packedValues},
      {AffineMap::get(3, 0, {k, m}, ctx), AffineMap::get(3, 0, {k, n}, ctx)},
      {strideTwoColumns(b, loc, out, 0), strideTwoColumns(b, loc, out, 1)},
      [](OpBuilder &b, Location loc, ValueRange args) {
        Type f32 = b.getF32Type();
        Value p = arith::UIToFPOp::create(b, loc, f32, args[0]);
        auto [lo, hi] = splitInt4Codes(b, loc, args[1]);
        auto accumulate = [&](Value acc, Value code) -> Value {
          return arith::AddFOp::create(
              b, loc, acc,
              arith::MulFOp::create(
                  b, loc, p, arith::SIToFPOp::create(b, loc, f32, code)));
        };
        linalg::YieldOp::create(
            b, loc,
            ValueRange{accumulate(args[2], lo), accumulate(args[3], hi)});
      });
}

/// A quantized code byte as f32 (before its scale): int8 directly; fp8 by
/// moving its exponent and mantissa into an f32's bit positions and
/// rescaling by the bias difference, which is exact for normal and
/// subnormal codes alike.
Value mlir::attn::decodeKVCode(OpBuilder &b, Location loc, KVQuant kind,
                               Value code) {
  // Scalars, or vectors of codes (element-wise, with splat constants).
  auto like = [&](Type scalar) -> Type {
    if (auto v = dyn_cast<VectorType>(code.getType()))
      return v.clone(scalar);
    return scalar;
  };
  Type f32 = like(b.getF32Type()), i32 = like(b.getI32Type());
  if (kind == KVQuant::int8 || kind == KVQuant::int4)
    return arith::SIToFPOp::create(b, loc, f32, code);
  bool e4m3 = kind == KVQuant::fp8e4m3;
  auto c32 = [&](int64_t v) {
    TypedAttr attr = b.getI32IntegerAttr(int32_t(v));
    if (isa<VectorType>(i32))
      attr = DenseElementsAttr::get(cast<ShapedType>(i32),
                                    b.getI32IntegerAttr(int32_t(v)).getValue());
    return arith::ConstantOp::create(b, loc, i32, attr).getResult();
  };
  Value u = arith::ExtUIOp::create(b, loc, i32, code);
  Value mag = arith::ShLIOp::create(
      b, loc, arith::AndIOp::create(b, loc, u, c32(0x7f)),
      c32(e4m3 ? 20 : 21));
  Value sign = arith::ShLIOp::create(
      b, loc, arith::AndIOp::create(b, loc, u, c32(0x80)), c32(24));
  Value bits = arith::OrIOp::create(b, loc, mag, sign);
  Value x = arith::BitcastOp::create(b, loc, f32, bits);
  // 2^(127 - 7) for e4m3, 2^(127 - 15) for e5m2.
  FloatAttr scale = b.getF32FloatAttr(
      static_cast<float>(std::ldexp(1.0, e4m3 ? 120 : 112)));
  TypedAttr factorAttr = scale;
  if (isa<VectorType>(f32))
    factorAttr =
        DenseElementsAttr::get(cast<ShapedType>(f32), scale.getValue());
  Value factor = arith::ConstantOp::create(b, loc, f32, factorAttr);
  return arith::MulFOp::create(b, loc, x, factor);
}
