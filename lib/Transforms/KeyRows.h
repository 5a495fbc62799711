//===- KeyRows.h - where a key slot's K/V row lives -----------------------===//
//
// Every target walks key slots: positions 0 .. Skv - 1, or with kv_index
// the slots of keep[b, hkv, :], each naming a position. A position's K/V
// row sits at (batch, position), or in a paged pool at (the page the
// batch's table lists, the row in that page). The CPU tiler and the GPU
// kernels find rows, the positions the regions see and the positions whose
// scales quantized codes take through these functions, so the rules that
// keep every read inside the tensors are written once:
//   - a page id is clamped into the pool: a bad table entry reads a wrong
//     page, never wild memory;
//   - a listed position outside [0, Skv) holds no key: it reads a valid
//     row and is masked.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_TRANSFORMS_KEYROWS_H
#define ATTN_TRANSFORMS_KEYROWS_H

#include "dialect/AttnOps.h"

#include "mlir/IR/Builders.h"

namespace mlir::attn {

/// A key slot's source row: (outer index: batch or page, row), and whether
/// the slot holds a key. Rows of slots without a key are valid addresses.
struct KeyRow {
  Value outer, row, valid;
};

/// The values one work item (CPU) or CTA (GPU) finds its K/V rows with.
/// Index values unless said otherwise; a target fills it once its batch,
/// kv head and key counts are known.
struct KeyRows {
  AttentionOp op;
  Location loc;
  Value batch, kvHead;
  /// Slots the key loop walks: Skv, or kv_index's slots per (b, hkv).
  Value keySlots;
  /// The batch's key count (paged: its seq_lens entry, clamped into the
  /// table's capacity), as index and as i32; a null seqKV32 casts seqKV
  /// where it is compared (the GPU kernels' form).
  Value seqKV, seqKV32;
  /// Paged: the page table [B, max pages] (i32). Null otherwise.
  Value pageTable;
  /// kv_index: keep [B, Hkv, slots] (i32 positions). Null otherwise.
  Value kvIndex;

  /// keep[batch, kvHead, slot] for a slot known to be below keySlots (an
  /// i32 position, any value; callers bound it).
  Value listedAt(OpBuilder &b, Value slot);
  /// listedAt for any slot: the slot clamped into [0, keySlots).
  Value listedPosition(OpBuilder &b, Value slot);
  /// Whether an i32 listed position names a key: it lies in [0, Skv).
  Value isListed(OpBuilder &b, Value pos32);
  /// Where position `pos` (< the table's capacity when paged) lives in
  /// `pool` (K or V): (batch, pos), or (its page from the table, clamped
  /// into the pool's pages, pos % page size).
  std::pair<Value, Value> rowAt(OpBuilder &b, Value pos, Value pool);
  /// The row of any key slot: the slot clamped into [0, keySlots), then
  /// with kv_index its listed position (row 0 when not listed), then
  /// through the page table. `valid`: slot < keySlots and, with kv_index,
  /// the listed position lies in [0, Skv).
  KeyRow keyRow(OpBuilder &b, Value slot, Value pool);
  /// The key position (i32) the regions see for a slot (the listed
  /// position for kv_index), and whether the entry exists at all.
  std::pair<Value, Value> keyPosition(OpBuilder &b, Value slot);
  /// Quantized K/V: the position whose scales a slot's codes take (its
  /// listed position for kv_index), clamped into [0, Skv).
  Value scalePosition(OpBuilder &b, Value slot);
  /// The token group of K's per-channel scales that position `pos` takes.
  Value keyScaleGroup(OpBuilder &b, Value pos);
  /// K[position pos, column d] in f32, for a key position pos < seqKV (not
  /// a slot: select's pooling, the caller, excludes kv_index), so rowAt
  /// needs no clamp: through the page table, quantized codes decoded and
  /// times K's per-channel scale. `key`, `keyScale`: the target's K and
  /// K-scale memrefs.
  Value keyElement(OpBuilder &b, Value pos, Value d, Value key,
                   Value keyScale);

private:
  Value seqKVAsI32(OpBuilder &b);
};

/// N bytes of int4 codes (vector<N x i8>, two codes a byte, low nibble
/// first) as 2N sign-extended codes, one a byte, in order.
Value unpackInt4Codes(OpBuilder &b, Location loc, Value packed);

} // namespace mlir::attn

#endif // ATTN_TRANSFORMS_KEYROWS_H
