//===- SelectBlocks.cpp - pieces of the select pre-pass every target shares ===//
//
// The CPU tiler and the GPU pre-pass kernels pick blocks differently (the
// CPU takes the best remaining block round by round; GPU threads rank their
// blocks in parallel), but must agree on which key blocks are eligible,
// where the diagonal block is, how many blocks topk(K) keeps and what a
// quantized key is.
//
//===----------------------------------------------------------------------===//
#include "lib/Transforms/Transforms.h"

#include "mlir/Dialect/Arith/IR/Arith.h"

using namespace mlir;
using namespace mlir::attn;

Value attn::anyEntryKept(
    OpBuilder &b, Location loc, Value cls, Value qs, Value qe, Value ks,
    Value ke, llvm::function_ref<Value(OpBuilder &, Value, Value)> maskAt) {
  auto cIdx = [&](int64_t v) {
    return arith::ConstantIndexOp::create(b, loc, v).getResult();
  };
  auto is = [&](int32_t c) {
    return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, cls,
                                 arith::ConstantIntOp::create(b, loc, c, 32));
  };
  Value one = cIdx(1);
  Value nk = arith::SubIOp::create(b, loc, ke, ks);
  Value total = arith::MulIOp::create(
      b, loc, arith::SubIOp::create(b, loc, qe, qs), nk);
  // A scan that runs only for PARTIAL blocks, up to the first kept entry.
  Value limit =
      arith::SelectOp::create(b, loc, is(kTilePartial), total, cIdx(0));
  Type idx = b.getIndexType(), i1 = b.getI1Type();
  Value fls = arith::ConstantIntOp::create(b, loc, 0, 1);
  Value tru = arith::ConstantIntOp::create(b, loc, 1, 1);
  auto scan = scf::WhileOp::create(
      b, loc, TypeRange{idx, i1}, ValueRange{cIdx(0), fls},
      [&](OpBuilder &b, Location, ValueRange a) {
        Value more = arith::AndIOp::create(
            b, loc,
            arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, a[0],
                                  limit),
            arith::XOrIOp::create(b, loc, a[1], tru));
        scf::ConditionOp::create(b, loc, more, a);
      },
      [&](OpBuilder &b, Location, ValueRange a) {
        Value q = arith::AddIOp::create(
            b, loc, qs, arith::DivUIOp::create(b, loc, a[0], nk));
        Value kv = arith::AddIOp::create(
            b, loc, ks, arith::RemUIOp::create(b, loc, a[0], nk));
        scf::YieldOp::create(
            b, loc,
            ValueRange{arith::AddIOp::create(b, loc, a[0], one),
                       maskAt(b, q, kv)});
      });
  return arith::OrIOp::create(b, loc, is(kTileFull), scan.getResult(1));
}

Value attn::selectDiagonalBlock(OpBuilder &b, Location loc, Value qe,
                                Value seqQ, Value seqKV, int64_t blockSize,
                                Value numBlocks) {
  // Queries sit at the end of the keys (position q + Skv - Sq); the block
  // holding the last query's position, clamped into [0, numBlocks).
  auto cIdx = [&](int64_t v) {
    return arith::ConstantIndexOp::create(b, loc, v).getResult();
  };
  Value one = cIdx(1);
  Value qeAbs = arith::AddIOp::create(b, loc, qe, seqKV);
  Value bias = arith::AddIOp::create(b, loc, seqQ, one);
  Value lastAbs = arith::SubIOp::create(
      b, loc, arith::MaxUIOp::create(b, loc, qeAbs, bias), bias);
  Value diag = arith::DivUIOp::create(b, loc, lastAbs, cIdx(blockSize));
  Value lastBlock = arith::SubIOp::create(
      b, loc, arith::MaxUIOp::create(b, loc, numBlocks, one), one);
  return arith::MinUIOp::create(b, loc, diag, lastBlock);
}

Value attn::dequantizedKeyAt(
    OpBuilder &b, Location loc, KVQuant kind, Value d, Value scale,
    llvm::function_ref<Value(OpBuilder &, Value)> load) {
  Value code;
  if (kind == KVQuant::int4) {
    Value two = arith::ConstantIndexOp::create(b, loc, 2);
    auto [lo, hi] = splitInt4Codes(
        b, loc, load(b, arith::DivUIOp::create(b, loc, d, two)));
    Value odd = arith::CmpIOp::create(
        b, loc, arith::CmpIPredicate::ne,
        arith::RemUIOp::create(b, loc, d, two),
        arith::ConstantIndexOp::create(b, loc, 0));
    code = arith::SelectOp::create(b, loc, odd, hi, lo);
  } else {
    code = load(b, d);
  }
  return arith::MulFOp::create(b, loc, decodeKVCode(b, loc, kind, code),
                               scale);
}

Value attn::selectTopkCount(OpBuilder &b, Location loc, Value arg) {
  // K clamped into [0, 1e9] before the conversion (a NaN K keeps none).
  auto c = [&](double v) {
    return arith::ConstantFloatOp::create(b, loc, b.getF32Type(),
                                          APFloat(static_cast<float>(v)))
        .getResult();
  };
  Value isNan =
      arith::CmpFOp::create(b, loc, arith::CmpFPredicate::UNO, arg, arg);
  Value clamped = arith::MaximumFOp::create(
      b, loc, arith::MinimumFOp::create(b, loc, arg, c(1e9)), c(0.0));
  clamped = arith::SelectOp::create(b, loc, isNan, c(0.0), clamped);
  return arith::IndexCastOp::create(
      b, loc, b.getIndexType(),
      arith::FPToSIOp::create(b, loc, b.getI64Type(), clamped));
}
