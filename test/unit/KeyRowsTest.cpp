//===- KeyRowsTest.cpp - the shared K/V row lookup and query codes --------===//
//
// Builds the shared emitters (lib/Transforms/KeyRows.h, QueryCodes.h) on
// constant inputs in a function, folds it, and checks the constants it
// returns: the clamping rules of the row lookup and the rounding of a
// query row to codes. (The paths that read the page table or kv_index are
// covered end to end by the numerics and simulator tests.)
//
//===----------------------------------------------------------------------===//
#include "lib/Transforms/KeyRows.h"
#include "lib/Transforms/QueryCodes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Matchers.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

#include <gtest/gtest.h>

#include <functional>

using namespace mlir;
using namespace mlir::attn;

namespace {

class SharedEmitters : public ::testing::Test {
protected:
  SharedEmitters() {
    ctx.loadDialect<arith::ArithDialect, func::FuncDialect, math::MathDialect,
                    memref::MemRefDialect, vector::VectorDialect>();
  }

  /// The values `body` returns, folded to constants (integers as int64,
  /// floats as double; an element of a vector by index).
  std::vector<double>
  fold(std::function<SmallVector<Value>(OpBuilder &, Location)> body) {
    Location loc = UnknownLoc::get(&ctx);
    OpBuilder b(&ctx);
    module = ModuleOp::create(loc);
    b.setInsertionPointToEnd(module->getBody());
    auto func = func::FuncOp::create(b, loc, "f", b.getFunctionType({}, {}));
    b.setInsertionPointToStart(func.addEntryBlock());
    SmallVector<Value> results = body(b, loc);
    SmallVector<Type> types;
    for (Value v : results)
      types.push_back(v.getType());
    func.setType(b.getFunctionType({}, types));
    func::ReturnOp::create(b, loc, results);
    // Folding only: canonical forms (a shuffle becoming vector.interleave)
    // need not fold further.
    RewritePatternSet patterns(&ctx);
    EXPECT_TRUE(succeeded(applyPatternsGreedily(func, std::move(patterns))));
    std::vector<double> out;
    auto ret = cast<func::ReturnOp>(func.getBody().front().getTerminator());
    for (Value v : ret.getOperands()) {
      Attribute attr;
      if (!matchPattern(v, m_Constant(&attr))) {
        std::string text;
        llvm::raw_string_ostream os(text);
        os << v;
        ADD_FAILURE() << "not folded: " << text;
        out.push_back(NAN);
        continue;
      }
      if (auto dense = dyn_cast<DenseElementsAttr>(attr)) {
        if (isa<FloatType>(dense.getElementType()))
          for (APFloat x : dense.getValues<APFloat>())
            out.push_back(x.convertToDouble());
        else
          for (APInt x : dense.getValues<APInt>())
            out.push_back(double(x.getSExtValue()));
      } else if (auto f = dyn_cast<FloatAttr>(attr)) {
        out.push_back(f.getValueAsDouble());
      } else {
        out.push_back(
            double(cast<IntegerAttr>(attr).getValue().getSExtValue()));
      }
    }
    return out;
  }

  MLIRContext ctx;
  OwningOpRef<ModuleOp> module;
};

Value f32(OpBuilder &b, Location loc, float x) {
  return arith::ConstantFloatOp::create(b, loc, b.getF32Type(), APFloat(x));
}
Value index(OpBuilder &b, Location loc, int64_t x) {
  return arith::ConstantIndexOp::create(b, loc, x);
}
Value i32(OpBuilder &b, Location loc, int64_t x) {
  return arith::ConstantIntOp::create(b, loc, x, 32);
}
/// Index results as i32, so they fold to integer constants of one kind.
Value asI32(OpBuilder &b, Location loc, Value x) {
  return arith::IndexCastOp::create(b, loc, b.getI32Type(), x);
}
Value asI32FromI1(OpBuilder &b, Location loc, Value x) {
  return arith::ExtUIOp::create(b, loc, b.getI32Type(), x);
}

TEST_F(SharedEmitters, QueryCodeLimits) {
  EXPECT_EQ(queryCodeLimit(KVQuant::int8), 127.0);
  EXPECT_EQ(queryCodeLimit(KVQuant::int4), 127.0);
  EXPECT_EQ(queryCodeLimit(KVQuant::fp8e4m3), 448.0);
  EXPECT_EQ(queryCodeLimit(KVQuant::fp8e5m2), 448.0);
  EXPECT_EQ(queryCodeLimit(KVQuant::fp8e4m3, /*fnuz=*/true), 240.0);
}

TEST_F(SharedEmitters, Int8CodesRoundToNearestEven) {
  // amax 254: inverse 0.5, so x = 1, 3, 5, -3 sit exactly between codes.
  std::vector<double> got = fold([&](OpBuilder &b, Location loc) {
    QueryRowScale s = queryRowScale(b, loc, f32(b, loc, 254.0f), 127.0);
    SmallVector<Value> out = {s.inverse, s.scale};
    for (float x : {1.0f, 3.0f, 5.0f, -3.0f, 254.0f, -254.0f})
      out.push_back(int8QueryCodes(b, loc, f32(b, loc, x), s.inverse));
    return out;
  });
  std::vector<double> want = {0.5, 2.0, 0, 2, 2, -2, 127, -127};
  EXPECT_EQ(got, want);
}

TEST_F(SharedEmitters, Int8CodesOfVectors) {
  std::vector<double> got = fold([&](OpBuilder &b, Location loc) {
    QueryRowScale s = queryRowScale(b, loc, f32(b, loc, 2.0f), 127.0);
    auto type = VectorType::get({2}, b.getF32Type());
    Value x = arith::ConstantOp::create(
        b, loc, type,
        DenseElementsAttr::get(type, ArrayRef<float>{1.0f, -0.5f}));
    return SmallVector<Value>{int8QueryCodes(b, loc, x, s.inverse)};
  });
  // 1 * 63.5 = 63.5 -> 64 (even); -0.5 * 63.5 = -31.75 -> -32.
  std::vector<double> want = {64, -32};
  EXPECT_EQ(got, want);
}

TEST_F(SharedEmitters, ZeroRowGivesZeroCodesAndScale) {
  std::vector<double> got = fold([&](OpBuilder &b, Location loc) {
    QueryRowScale s = queryRowScale(b, loc, f32(b, loc, 0.0f), 448.0);
    return SmallVector<Value>{
        s.inverse, s.scale,
        scaleIntoCodeRange(b, loc, f32(b, loc, 0.0f), s.inverse),
        int8QueryCodes(b, loc, f32(b, loc, 0.0f), s.inverse)};
  });
  std::vector<double> want = {0, 0, 0, 0};
  EXPECT_EQ(got, want);
}

TEST_F(SharedEmitters, E4m3RangeAndScale) {
  std::vector<double> got = fold([&](OpBuilder &b, Location loc) {
    QueryRowScale s = queryRowScale(b, loc, f32(b, loc, 4.0f), 448.0);
    return SmallVector<Value>{
        s.scale, scaleIntoCodeRange(b, loc, f32(b, loc, -4.0f), s.inverse),
        scaleIntoCodeRange(b, loc, f32(b, loc, 1.0f), s.inverse)};
  });
  std::vector<double> want = {4.0f / 448.0f, -448, 112};
  EXPECT_EQ(got, want);
}

// Contiguous K/V (no table, no kv_index): a slot past the key slots holds
// no key and reads the last row; with no slots at all, row 0.
TEST_F(SharedEmitters, SlotsPastTheEndReadTheLastRow) {
  std::vector<double> got = fold([&](OpBuilder &b, Location loc) {
    SmallVector<Value> out;
    for (int64_t slots : {3, 0}) {
      KeyRows rows{AttentionOp(),
                   loc,
                   index(b, loc, 7),
                   index(b, loc, 1),
                   index(b, loc, slots),
                   index(b, loc, slots),
                   i32(b, loc, slots),
                   Value(),
                   Value()};
      for (int64_t slot : {1, 5}) {
        KeyRow r = rows.keyRow(b, index(b, loc, slot), Value());
        out.append({asI32(b, loc, r.outer), asI32(b, loc, r.row),
                    asI32FromI1(b, loc, r.valid)});
      }
    }
    return out;
  });
  std::vector<double> want = {7, 1, 1, 7, 2, 0, 7, 0, 0, 7, 0, 0};
  EXPECT_EQ(got, want);
}

TEST_F(SharedEmitters, PositionsAndScalePositions) {
  std::vector<double> got = fold([&](OpBuilder &b, Location loc) {
    KeyRows rows{AttentionOp(),
                 loc,
                 index(b, loc, 0),
                 index(b, loc, 0),
                 index(b, loc, 10),
                 index(b, loc, 10),
                 i32(b, loc, 10),
                 Value(),
                 Value()};
    SmallVector<Value> out;
    for (int64_t slot : {4, 12}) {
      auto [kv32, keep] = rows.keyPosition(b, index(b, loc, slot));
      out.append({kv32, asI32FromI1(b, loc, keep),
                  asI32(b, loc, rows.scalePosition(b, index(b, loc, slot)))});
    }
    for (int64_t pos : {-1, 0, 9, 10})
      out.push_back(asI32FromI1(b, loc, rows.isListed(b, i32(b, loc, pos))));
    return out;
  });
  // Slot 12 of 10: position 12, no key, scales of the last row (9).
  std::vector<double> want = {4, 1, 4, 12, 0, 9, 0, 1, 1, 0};
  EXPECT_EQ(got, want);
}

TEST_F(SharedEmitters, UnpackInt4CodesInterleavesNibbles) {
  std::vector<double> got = fold([&](OpBuilder &b, Location loc) {
    auto type = VectorType::get({2}, b.getI8Type());
    // 0x7f: low 15 -> -1, high 7; 0x8a: low 10 -> -6, high -8.
    Value packed = arith::ConstantOp::create(
        b, loc, type,
        DenseElementsAttr::get(type, ArrayRef<int8_t>{0x7f, int8_t(0x8a)}));
    return SmallVector<Value>{unpackInt4Codes(b, loc, packed)};
  });
  std::vector<double> want = {-1, 7, -6, -8};
  EXPECT_EQ(got, want);
}

} // namespace
