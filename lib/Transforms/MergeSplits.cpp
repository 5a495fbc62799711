//===- MergeSplits.cpp - the split-KV merge, written once -----------------===//
#include "lib/Transforms/MergeSplits.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

#include <cmath>

using namespace mlir;
using namespace mlir::attn;

namespace {
Value cIdx(OpBuilder &b, Location loc, int64_t v) {
  return arith::ConstantIndexOp::create(b, loc, v);
}
Value cF32(OpBuilder &b, Location loc, double v) {
  return arith::ConstantFloatOp::create(b, loc, b.getF32Type(),
                                        APFloat(static_cast<float>(v)));
}
} // namespace

MergeRow mlir::attn::emitMergeRow(OpBuilder &b, Location loc, Normalize norm,
                                  const SplitParts &parts) {
  MergeRow row;
  row.weighted = hasRowSum(norm);
  if (!row.weighted)
    return row;
  auto maxLoop = scf::ForOp::create(
      b, loc, cIdx(b, loc, 0), parts.count, cIdx(b, loc, 1),
      ValueRange{cF32(b, loc, -INFINITY)},
      [&](OpBuilder &b, Location, Value p, ValueRange acc) {
        scf::YieldOp::create(b, loc,
                             ValueRange{arith::MaximumFOp::create(
                                 b, loc, acc[0], parts.lse(b, p))});
      });
  row.maxLse = maxLoop.getResult(0);
  row.none = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ,
                                   row.maxLse, cF32(b, loc, -INFINITY));
  row.shift =
      arith::SelectOp::create(b, loc, row.none, cF32(b, loc, 0.0), row.maxLse);
  return row;
}

void mlir::attn::emitMergeColumn(
    OpBuilder &b, Location loc, const MergeRow &row, const SplitParts &parts,
    Value column, Type outElt,
    llvm::function_ref<void(OpBuilder &, Value)> storeOut,
    llvm::function_ref<void(OpBuilder &, Value)> storeLse) {
  Value result, rowLse;
  if (row.weighted) {
    // One pass over the parts sums the weights and the weighted results.
    auto sumLoop = scf::ForOp::create(
        b, loc, cIdx(b, loc, 0), parts.count, cIdx(b, loc, 1),
        ValueRange{cF32(b, loc, 0.0), cF32(b, loc, 0.0)},
        [&](OpBuilder &b, Location, Value p, ValueRange acc) {
          Value w = math::ExpOp::create(
              b, loc,
              arith::SubFOp::create(b, loc, parts.lse(b, p), row.shift));
          scf::YieldOp::create(
              b, loc,
              ValueRange{
                  arith::AddFOp::create(b, loc, acc[0], w),
                  arith::AddFOp::create(
                      b, loc, acc[1],
                      arith::MulFOp::create(b, loc, w, parts.out(b, p)))});
        });
    Value wsum = sumLoop.getResult(0);
    result = arith::SelectOp::create(
        b, loc, row.none, cF32(b, loc, 0.0),
        arith::DivFOp::create(b, loc, sumLoop.getResult(1), wsum));
    rowLse = arith::SelectOp::create(
        b, loc, row.none, cF32(b, loc, -INFINITY),
        arith::AddFOp::create(b, loc, row.maxLse,
                              math::LogOp::create(b, loc, wsum)));
  } else {
    auto sumLoop = scf::ForOp::create(
        b, loc, cIdx(b, loc, 0), parts.count, cIdx(b, loc, 1),
        ValueRange{cF32(b, loc, 0.0)},
        [&](OpBuilder &b, Location, Value p, ValueRange acc) {
          scf::YieldOp::create(b, loc,
                               ValueRange{arith::AddFOp::create(
                                   b, loc, acc[0], parts.out(b, p))});
        });
    result = sumLoop.getResult(0);
  }
  if (outElt != b.getF32Type())
    result = arith::TruncFOp::create(b, loc, outElt, result);
  storeOut(b, result);
  if (!storeLse || !row.weighted)
    return;
  Value first = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, column,
                                      cIdx(b, loc, 0));
  scf::IfOp::create(b, loc, first, [&](OpBuilder &b, Location) {
    storeLse(b, rowLse);
    scf::YieldOp::create(b, loc);
  });
}
