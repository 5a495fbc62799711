//===- TileWalk.h - key tiles by class, written once ----------------------===//
//
// A work item (CPU) or CTA (GPU) walks its key tiles and skips the EMPTY
// ones, runs FULL ones without the mask and PARTIAL ones with it. What a
// tile's class is (the op's classify region, the tile_classes map, the
// tile reaching past the last key) and how the walk goes are here; the
// targets pass in what a tile does (callbacks) and pick the walk:
// - walkKeyTilesBisecting (the CPU): a stack of tile ranges, EMPTY ranges
//   dropped whole, FULL ones visited whole, PARTIAL ones halved until
//   single tiles, so a mostly empty or mostly full item classifies few
//   ranges; its state lives in memory;
// - walkKeyTilesCarrying (the GPUs): one tile at a time, its state carried
//   in registers;
// - walkKeyTilesLookingAhead (the GPU loops that fetch tile t + 1 while
//   tile t is computed: cp.async double buffers on sm_80, registers on
//   AMDGPU): the same, with the next tile's class and what it staged
//   (a buffer index, its rows) carried too; the target says how a tile is
//   staged and what each iteration does before the next one is.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_TRANSFORMS_TILEWALK_H
#define ATTN_TRANSFORMS_TILEWALK_H

#include "dialect/AttnOps.h"
#include "lib/Transforms/RegionInliner.h"

#include "mlir/IR/Builders.h"

namespace mlir::attn {

/// A block of (query, key) entries as the classify region sees it (i32,
/// inclusive bounds): batch, query heads [hLo, hHi], query positions
/// [qLo, qHi], keys [kLo, kHi].
struct TileBlock {
  Value batch, hLo, hHi, qLo, qHi, kLo, kHi;
};

/// The class (i32 TileClass) of `block`: the op's classify region, or
/// without one PARTIAL where the op has a mask (it is evaluated per entry)
/// and FULL where it has none.
Value classifyBlock(OpBuilder &b, Location loc, AttentionOp op,
                    RegionInliner &regions, const TileBlock &block);

/// The class of key tiles [lo, hi) of query tile `qTile` from a
/// tile_classes map [B, H, query tiles, key tiles] (i8; one batch or head
/// broadcasts over them): EMPTY if all are, FULL if all are, else PARTIAL.
Value classifyMappedTiles(OpBuilder &b, Location loc, Value map, Value batch,
                          Value head, Value qTile, Value lo, Value hi);

/// `cls`, with FULL made PARTIAL where `ragged` (i1: the tile reaches past
/// the last key, whose keys only PARTIAL tiles check exist).
Value partialWhere(OpBuilder &b, Location loc, Value cls, Value ragged);

/// Whether a tile of class `cls` is visited (not EMPTY).
Value isVisitedClass(OpBuilder &b, Location loc, Value cls);

/// The class of tile `t` from `classify`, EMPTY when t >= end (a pipelined
/// walk's look at the tile after the last).
Value classifyTileBefore(
    OpBuilder &b, Location loc, Value t, Value end,
    llvm::function_ref<Value(OpBuilder &, Value)> classify);

/// A visited key tile: its index, class, and whether it is FULL (i1);
/// cls and full are null for a walk without classes.
struct TileVisit {
  Value tile, cls, full;
};

/// The bisection: calls `visit` on every key tile of [begin, end) that is
/// not EMPTY, in order, with `classifyRange(b, lo, hi)` the class of tiles
/// [lo, hi). With a null classifyRange (nothing to classify) every tile is
/// visited, one loop, no classes.
void walkKeyTilesBisecting(
    OpBuilder &b, Location loc, Value begin, Value end,
    llvm::function_ref<Value(OpBuilder &, Value lo, Value hi)> classifyRange,
    llvm::function_ref<void(OpBuilder &, const TileVisit &)> visit);

/// The linear walk with loop-carried values: for t in [begin, end),
/// `body(b, t, cls, carried)` gives the next carried values on tiles
/// `classify` does not call EMPTY; past EMPTY ones they pass unchanged.
/// Returns the final values.
SmallVector<Value> walkKeyTilesCarrying(
    OpBuilder &b, Location loc, Value begin, Value end, ValueRange init,
    llvm::function_ref<Value(OpBuilder &, Value t)> classify,
    llvm::function_ref<SmallVector<Value>(OpBuilder &, Value t, Value cls,
                                          ValueRange carried)>
        body);

/// What a look-ahead walk does with its tiles (walkKeyTilesLookingAhead).
/// `staged` are the values staging a tile gives (a buffer index, registers
/// holding its rows), carried from the iteration that staged the tile to
/// the one that computes it.
struct LookAheadSteps {
  /// Stages tile t of class `cls` (EMPTY when t is past the end or the
  /// classifier drops it: then nothing should be fetched, but the values
  /// must still be given) and gives its staged values; `previous` are the
  /// tile before's, empty for the first tile.
  llvm::function_ref<SmallVector<Value>(OpBuilder &, Value t, Value cls,
                                        ValueRange previous)>
      stage;
  /// Each iteration's first step, on tile t's class and staged values,
  /// before tile t + 1 is staged (a barrier; rows moved from registers to
  /// shared memory). May be null.
  llvm::function_ref<void(OpBuilder &, Value t, Value cls, ValueRange staged)>
      arrive;
  /// Tile t, not EMPTY, whose first key is k0: the next carried values.
  llvm::function_ref<SmallVector<Value>(OpBuilder &, Value k0, Value cls,
                                        ValueRange staged, ValueRange carried)>
      body;
};

/// The linear walk one tile ahead, over key tiles of `tileKeys` keys:
/// stages tile `begin`, then for t in [begin, end): arrive on t, classify
/// and stage t + 1 (EMPTY past `end`), then `body` on t unless EMPTY (the
/// carried values pass unchanged past EMPTY tiles). `classify(b, t)` is
/// the class of a tile t < end; the walk asks it only for those. Body's
/// k0 = t * tileKeys is computed before the tile's branch, not in it (in
/// it, sm_80's PTX kept 30 more 64-bit registers). Returns the final
/// carried values.
SmallVector<Value> walkKeyTilesLookingAhead(
    OpBuilder &b, Location loc, Value begin, Value end, int64_t tileKeys,
    ValueRange init, llvm::function_ref<Value(OpBuilder &, Value t)> classify,
    const LookAheadSteps &steps);

} // namespace mlir::attn

#endif // ATTN_TRANSFORMS_TILEWALK_H
