//===- KeyRows.cpp - where a key slot's K/V row lives ---------------------===//
#include "lib/Transforms/KeyRows.h"
#include "lib/Transforms/Transforms.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

using namespace mlir;
using namespace mlir::attn;

namespace {
Value cIdx(OpBuilder &b, Location loc, int64_t v) {
  return arith::ConstantIndexOp::create(b, loc, v);
}
Value cI32(OpBuilder &b, Location loc, int64_t v) {
  return arith::ConstantIntOp::create(b, loc, v, 32);
}
Value toI32(OpBuilder &b, Location loc, Value index) {
  return arith::IndexCastOp::create(b, loc, b.getI32Type(), index);
}
Value toIndex(OpBuilder &b, Location loc, Value i32) {
  return arith::IndexCastOp::create(b, loc, b.getIndexType(), i32);
}
/// max(n, 1) - 1: the last of n slots, 0 when there are none.
Value lastOf(OpBuilder &b, Location loc, Value n) {
  return arith::SubIOp::create(
      b, loc, arith::MaxUIOp::create(b, loc, n, cIdx(b, loc, 1)),
      cIdx(b, loc, 1));
}
} // namespace

Value KeyRows::seqKVAsI32(OpBuilder &b) {
  return seqKV32 ? seqKV32 : toI32(b, loc, seqKV);
}

Value KeyRows::listedAt(OpBuilder &b, Value slot) {
  return memref::LoadOp::create(b, loc, kvIndex,
                                ValueRange{batch, kvHead, slot});
}

Value KeyRows::listedPosition(OpBuilder &b, Value slot) {
  return listedAt(
      b, arith::MinUIOp::create(b, loc, slot, lastOf(b, loc, keySlots)));
}

Value KeyRows::isListed(OpBuilder &b, Value pos32) {
  return arith::AndIOp::create(
      b, loc,
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::sge, pos32,
                            cI32(b, loc, 0)),
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt, pos32,
                            seqKVAsI32(b)));
}

std::pair<Value, Value> KeyRows::rowAt(OpBuilder &b, Value pos, Value pool) {
  if (!pageTable)
    return {batch, pos};
  Value P = cIdx(b, loc, *op.getPageSize());
  Value page32 = memref::LoadOp::create(
      b, loc, pageTable,
      ValueRange{batch, arith::DivUIOp::create(b, loc, pos, P)});
  Value lastPage = toI32(
      b, loc,
      arith::SubIOp::create(b, loc, memref::DimOp::create(b, loc, pool, 0),
                            cIdx(b, loc, 1)));
  page32 = arith::MinSIOp::create(
      b, loc, arith::MaxSIOp::create(b, loc, page32, cI32(b, loc, 0)),
      lastPage);
  return {toIndex(b, loc, page32), arith::RemUIOp::create(b, loc, pos, P)};
}

KeyRow KeyRows::keyRow(OpBuilder &b, Value slot, Value pool) {
  KeyRow r;
  r.valid =
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, slot, keySlots);
  r.row = arith::MinUIOp::create(b, loc, slot, lastOf(b, loc, keySlots));
  if (kvIndex) {
    Value pos32 = listedPosition(b, r.row);
    Value listed = isListed(b, pos32);
    r.valid = arith::AndIOp::create(b, loc, r.valid, listed);
    r.row = toIndex(
        b, loc,
        arith::SelectOp::create(b, loc, listed, pos32, cI32(b, loc, 0)));
  }
  std::tie(r.outer, r.row) = rowAt(b, r.row, pool);
  return r;
}

std::pair<Value, Value> KeyRows::keyPosition(OpBuilder &b, Value slot) {
  Value kv32 = toI32(b, loc, slot);
  Value inSlots;
  if (kvIndex) {
    inSlots = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, slot,
                                    keySlots);
    kv32 = listedPosition(b, slot);
  }
  Value keep = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt, kv32,
                                     seqKVAsI32(b));
  if (kvIndex)
    keep = arith::AndIOp::create(
        b, loc, arith::AndIOp::create(b, loc, keep, inSlots),
        arith::CmpIOp::create(b, loc, arith::CmpIPredicate::sge, kv32,
                              cI32(b, loc, 0)));
  return {kv32, keep};
}

Value KeyRows::scalePosition(OpBuilder &b, Value slot) {
  Value lastRow = arith::SubIOp::create(b, loc, seqKV, cIdx(b, loc, 1));
  if (!kvIndex)
    return arith::MinUIOp::create(b, loc, slot, lastRow);
  Value safe = arith::MinUIOp::create(
      b, loc, slot, arith::SubIOp::create(b, loc, keySlots, cIdx(b, loc, 1)));
  Value pos32 =
      arith::MaxSIOp::create(b, loc, listedPosition(b, safe), cI32(b, loc, 0));
  return arith::MinUIOp::create(b, loc, toIndex(b, loc, pos32), lastRow);
}

Value KeyRows::keyScaleGroup(OpBuilder &b, Value pos) {
  return arith::DivUIOp::create(b, loc, pos, cIdx(b, loc, *op.getKvGroup()));
}

Value KeyRows::keyElement(OpBuilder &b, Value pos, Value d, Value key,
                          Value keyScale) {
  auto [outer, row] = rowAt(b, pos, key);
  auto loadAt = [&](OpBuilder &b, Value col) -> Value {
    return memref::LoadOp::create(b, loc, key,
                                  ValueRange{outer, kvHead, row, col});
  };
  auto quant = op.getKvQuant();
  if (!quant) {
    Value x = loadAt(b, d);
    return x.getType().isF32()
               ? x
               : arith::ExtFOp::create(b, loc, b.getF32Type(), x).getResult();
  }
  Value group = keyScaleGroup(b, pos);
  return dequantizedKeyAt(
      b, loc, *quant, d,
      memref::LoadOp::create(b, loc, keyScale,
                             ValueRange{batch, kvHead, group, d}),
      loadAt);
}

Value mlir::attn::unpackInt4Codes(OpBuilder &b, Location loc, Value packed) {
  // Both nibbles of every byte at once, then interleaved low, high.
  auto [lo, hi] = splitInt4Codes(b, loc, packed);
  int64_t n = cast<VectorType>(packed.getType()).getNumElements();
  SmallVector<int64_t> order;
  for (int64_t i = 0; i < n; ++i)
    order.append({i, n + i});
  return vector::ShuffleOp::create(b, loc, lo, hi, order);
}
