//===- KVCodes.cpp - quantized K/V code decoding and int4 products --------===//
//
// The K/V code helpers of Transforms.h: a code byte as f32 before its
// scale (decodeKVCode), int4 nibbles split out of their bytes
// (splitInt4Codes), and the linalg products on packed int4 operands
// (createInt4KeyDots, createInt4ValueProducts).
//
//===----------------------------------------------------------------------===//

#include "lib/Transforms/Transforms.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

using namespace mlir;
using namespace mlir::attn;

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
