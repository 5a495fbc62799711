//===- AttentionTiler.h - the CPU tiler of attn.attention -------*- C++ -*-===//
//
// The builder of the online-softmax loop nest (TileAttention.cpp's top
// comment describes it), shared by the files that implement it by
// concern: TileAttention.cpp (the pass, work items, the key loop, scores
// and softmax, the epilogue) and TileDecode.cpp (the in-place and
// decode-shaped tile paths: direct tiles, row groups, query code rows,
// rounded probabilities, narrow row widths). Private to lib/Transforms.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_TRANSFORMS_ATTENTIONTILER_H
#define ATTN_TRANSFORMS_ATTENTIONTILER_H

#include "lib/Transforms/KeyRows.h"
#include "lib/Transforms/LoopBuilder.h"
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

namespace mlir::attn::tiler {

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
    SmallVector<OpFoldResult> offsets = {outer, hkvIdx, row0,
                                         b.getIndexAttr(0)};
    return memref::SubViewOp::create(
        b, loc, cacheRowsType(cache, offsets, rows, width), cache, offsets,
        rowsSizes(b, rows, width),
        SmallVector<OpFoldResult>(4, b.getIndexAttr(1)));
  }
  /// The sizes of a [rows, width] view of a 4-D cache.
  static SmallVector<OpFoldResult> rowsSizes(Builder &b, int64_t rows,
                                             int64_t width) {
    return {b.getIndexAttr(1), b.getIndexAttr(1), b.getIndexAttr(rows),
            b.getIndexAttr(width)};
  }
  /// The type of a [rows, width] view of `cache` at `offsets`.
  static MemRefType cacheRowsType(Value cache, ArrayRef<OpFoldResult> offsets,
                                  int64_t rows, int64_t width) {
    Builder b(cache.getContext());
    return cast<MemRefType>(memref::SubViewOp::inferRankReducedResultType(
        {rows, width}, cast<MemRefType>(cache.getType()), offsets,
        rowsSizes(b, rows, width),
        SmallVector<OpFoldResult>(4, b.getIndexAttr(1))));
  }
  /// The type cacheRows gives (`anyIndex` stands in for its dynamic
  /// offsets).
  MemRefType cacheRowsType(Value cache, Value anyIndex, int64_t rows,
                           int64_t width) {
    Builder b(cache.getContext());
    return cacheRowsType(
        cache, {anyIndex, anyIndex, anyIndex, b.getIndexAttr(0)}, rows,
        width);
  }
  /// The partial last key tile's K and V rows (k0 .. k0 + kn) copied as
  /// they are in the cache (its dtype, codes packed) into rawKBuf and
  /// rawVBuf, the rows past kn zero.
  void emitRawKeyRows(OpBuilder &b, Value k0, Value kn);
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
  // Decode's partial last key tile runs the in-place tile's code on its
  // rows copied raw (rawKBuf, rawVBuf: the cache's dtype, zero past the
  // last key), rather than on a second, staged f32 copy of the tile's
  // code; false where a cache's row views cannot take that buffer.
  bool rawPartialTile = false;
  Value rawKBuf, rawVBuf;
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

} // namespace mlir::attn::tiler

#endif // ATTN_TRANSFORMS_ATTENTIONTILER_H
