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
//===----------------------------------------------------------------------===//
#include "lib/Transforms/Passes.h"
#include "lib/Transforms/Transforms.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Arith/Utils/Utils.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/IR/IRMapping.h"

#include <cmath>

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNTILEPASS
#include "lib/Transforms/Passes.h.inc"
} // namespace mlir::attn

using namespace mlir;
using namespace mlir::attn;

namespace {

constexpr double kLog2E = 1.4426950408889634;
constexpr double kLn2 = 0.6931471805599453;

/// Builds the loop nest for one attention op. Values are created at the
/// builder's insertion point; loop bodies use their own nested builders.
class AttentionTiler {
public:
  AttentionTiler(RewriterBase &rewriter, AttentionOp op, TileSizes sizes)
      : rw(rewriter), op(op), loc(op.getLoc()), BQ(sizes.blockQ),
        BK(sizes.blockKV), D(op.getHeadDim()), Dv(op.getValueHeadDim()),
        norm(op.getNormalize()) {
    f32 = rw.getF32Type();
    i32 = rw.getI32Type();
  }

  scf::ParallelOp build();

private:
  using BodyFn = function_ref<void(OpBuilder &, Value)>;
  using ReduceFn = function_ref<Value(OpBuilder &, Value, Value)>;

  Value cIdx(OpBuilder &b, int64_t v) {
    return arith::ConstantIndexOp::create(b, loc, v);
  }
  Value cF32(OpBuilder &b, double v) {
    return arith::ConstantFloatOp::create(b, loc, f32,
                                          APFloat(static_cast<float>(v)));
  }
  Value toI32(OpBuilder &b, Value index) {
    return arith::IndexCastOp::create(b, loc, i32, index);
  }
  Value toF32(OpBuilder &b, Value x) {
    if (x.getType() == f32)
      return x;
    return arith::ExtFOp::create(b, loc, f32, x);
  }
  Value minIdx(OpBuilder &b, Value x, Value y) {
    return arith::MinUIOp::create(b, loc, x, y);
  }
  arith::FastMathFlagsAttr fastMath(OpBuilder &b) {
    // Reassociation lets LLVM vectorize the dot products and row sums;
    // results stay within f32 rounding of the sequential order.
    return arith::FastMathFlagsAttr::get(
        b.getContext(),
        arith::FastMathFlags::reassoc | arith::FastMathFlags::contract);
  }

  void forLoop(OpBuilder &b, Value lb, Value ub, int64_t step, BodyFn body);
  void forLoop(OpBuilder &b, int64_t ub, BodyFn body) {
    forLoop(b, cIdx(b, 0), cIdx(b, ub), 1, body);
  }
  Value reduceLoop(OpBuilder &b, int64_t ub, Value init, ReduceFn body);

  Value inlineRegion(OpBuilder &b, Region &region, ValueRange args);
  Value loadCapture(OpBuilder &b, LoadOp load, IRMapping &map);

  void emitSetup(OpBuilder &b);
  void emitWorkItem(OpBuilder &b, Value bIdx, Value hIdx, Value qTile);
  void emitKeyTile(OpBuilder &b, Value k0);
  void emitScoresSoftmax(OpBuilder &b, Value i, Value k0, Value kn);
  void emitScoresPointwise(OpBuilder &b, Value i, Value k0, Value kn);
  Value emitScoreAndMask(OpBuilder &b, Value s, Value i, Value j, Value k0,
                         Value kn, Value &keep);
  void emitEpilogue(OpBuilder &b);

  RewriterBase &rw;
  AttentionOp op;
  Location loc;
  int64_t BQ, BK, D, Dv;
  Normalize norm;
  FloatType f32;
  Type i32;

  // Set up once per op.
  Value batch, headsQ, seqQ, headsKV, seqKV, group, numQTiles;
  Value sizeI32[7];
  SmallVector<Value> captureMaxIndex; // per capture, per dim: size - 1 (i32)
  Value qScale;

  // Per work item.
  Value b32, h32, bIdx, hIdx, hkvIdx, q0, qn;
  Value qTileBuf, kTBuf, vBuf, sBuf, accBuf, mBuf, lBuf;
};

void AttentionTiler::forLoop(OpBuilder &b, Value lb, Value ub, int64_t step,
                             BodyFn body) {
  scf::ForOp::create(b, loc, lb, ub, cIdx(b, step), ValueRange{},
                     [&](OpBuilder &nb, Location, Value iv, ValueRange) {
                       body(nb, iv);
                       scf::YieldOp::create(nb, loc);
                     });
}

Value AttentionTiler::reduceLoop(OpBuilder &b, int64_t ub, Value init,
                                 ReduceFn body) {
  auto loop = scf::ForOp::create(
      b, loc, cIdx(b, 0), cIdx(b, ub), cIdx(b, 1), ValueRange{init},
      [&](OpBuilder &nb, Location, Value iv, ValueRange acc) {
        scf::YieldOp::create(nb, loc, body(nb, iv, acc[0]));
      });
  return loop.getResult(0);
}

/// Captured-tensor reads clamp each index into range: DSL.md leaves an
/// out-of-range index undefined, and clamping keeps "undefined" from ever
/// meaning a crash (padded tail rows evaluate the mask past Sq and Skv).
Value AttentionTiler::loadCapture(OpBuilder &b, LoadOp load, IRMapping &map) {
  unsigned captureIdx = 0;
  for (auto [i, c] : llvm::enumerate(op.getCaptures()))
    if (c == load.getTensor())
      captureIdx = i;
  unsigned base = 0;
  for (unsigned i = 0; i < captureIdx; ++i)
    base += cast<MemRefType>(op.getCaptures()[i].getType()).getRank();
  SmallVector<Value> indices;
  Value zero = arith::ConstantIntOp::create(b, loc, 0, 32);
  for (auto [d, idx] : llvm::enumerate(load.getIndices())) {
    Value x = map.lookupOrDefault(idx);
    x = arith::MaxSIOp::create(b, loc, x, zero);
    x = arith::MinSIOp::create(b, loc, x, captureMaxIndex[base + d]);
    indices.push_back(
        arith::IndexCastOp::create(b, loc, b.getIndexType(), x));
  }
  return memref::LoadOp::create(b, load.getLoc(), load.getTensor(), indices);
}

Value AttentionTiler::inlineRegion(OpBuilder &b, Region &region,
                                   ValueRange args) {
  Block &block = region.front();
  IRMapping map;
  for (auto [arg, value] : llvm::zip(block.getArguments(), args))
    map.map(arg, value);
  for (Operation &o : block.without_terminator()) {
    if (auto dim = dyn_cast<DimOp>(o)) {
      map.map(dim.getResult(), sizeI32[static_cast<int>(dim.getSize())]);
    } else if (auto load = dyn_cast<LoadOp>(o)) {
      map.map(load.getResult(), loadCapture(b, load, map));
    } else {
      b.clone(o, map);
    }
  }
  auto yield = cast<YieldOp>(block.getTerminator());
  return map.lookupOrDefault(yield.getValues().front());
}

void AttentionTiler::emitSetup(OpBuilder &b) {
  Value q = op.getQuery(), k = op.getKey();
  batch = memref::DimOp::create(b, loc, q, 0);
  headsQ = memref::DimOp::create(b, loc, q, 1);
  seqQ = memref::DimOp::create(b, loc, q, 2);
  headsKV = memref::DimOp::create(b, loc, k, 1);
  seqKV = memref::DimOp::create(b, loc, k, 2);
  // Launches check Hq % Hkv == 0 and Hkv > 0; max() keeps the division
  // defined even for a caller that skipped the checks.
  Value safeHkv = arith::MaxUIOp::create(b, loc, headsKV, cIdx(b, 1));
  group = arith::DivUIOp::create(b, loc, headsQ, safeHkv);
  numQTiles = arith::CeilDivUIOp::create(b, loc, seqQ, cIdx(b, BQ));
  Value dims[] = {batch, headsQ, headsKV, seqQ, seqKV};
  for (int i = 0; i < 5; ++i)
    sizeI32[i] = toI32(b, dims[i]);
  sizeI32[static_cast<int>(Size::D)] =
      arith::ConstantIntOp::create(b, loc, D, 32);
  sizeI32[static_cast<int>(Size::Dv)] =
      arith::ConstantIntOp::create(b, loc, Dv, 32);
  Value one32 = arith::ConstantIntOp::create(b, loc, 1, 32);
  for (Value c : op.getCaptures()) {
    auto type = cast<MemRefType>(c.getType());
    for (int64_t d = 0; d < type.getRank(); ++d) {
      Value size = toI32(b, memref::DimOp::create(b, loc, c, d));
      captureMaxIndex.push_back(arith::SubIOp::create(b, loc, size, one32));
    }
  }

  Value scale = op.getScale()
                    ? cF32(b, op.getScale()->convertToDouble())
                    : (op.hasScaleExpr()
                           ? inlineRegion(b, op.getScaleExpr(), {})
                           : cF32(b, 1.0 / std::sqrt(double(D))));
  qScale = scale;
  if (norm == Normalize::softmax && !op.hasScore())
    qScale = arith::MulFOp::create(b, loc, scale, cF32(b, kLog2E));
}

scf::ParallelOp AttentionTiler::build() {
  OpBuilder &b = rw;
  emitSetup(b);
  Value zero = cIdx(b, 0), one = cIdx(b, 1);
  auto par = scf::ParallelOp::create(
      b, loc, ValueRange{zero, zero, zero},
      ValueRange{batch, headsQ, numQTiles}, ValueRange{one, one, one},
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
  bIdx = bI;
  hIdx = hI;
  b32 = toI32(b, bI);
  h32 = toI32(b, hI);
  hkvIdx = arith::DivUIOp::create(b, loc, hI, group);
  q0 = arith::MulIOp::create(b, loc, qTile, cIdx(b, BQ));
  qn = minIdx(b, cIdx(b, BQ), arith::SubIOp::create(b, loc, seqQ, q0));

  auto buffer = [&](ArrayRef<int64_t> shape) {
    return memref::AllocaOp::create(b, loc, MemRefType::get(shape, f32),
                                    b.getI64IntegerAttr(64));
  };
  qTileBuf = buffer({BQ, D});
  kTBuf = buffer({D, BK});
  vBuf = buffer({BK, Dv});
  sBuf = buffer({BQ, BK});
  accBuf = buffer({BQ, Dv});
  mBuf = buffer({BQ});
  lBuf = buffer({BQ});

  // Initial running max and sum: the sink logit joins the denominator as
  // one extra entry with p = exp(sink - m), i.e. m = sink, l = 1.
  Value mInit = cF32(b, -INFINITY), lInit = cF32(b, 0.0);
  if (op.hasSink()) {
    Value sink = inlineRegion(b, op.getSink(), {h32});
    mInit = arith::MulFOp::create(b, loc, sink, cF32(b, kLog2E));
    lInit = cF32(b, 1.0);
  }

  // Load the query tile, scaled; rows past Sq are zero and never stored.
  Value fzero = cF32(b, 0.0);
  forLoop(b, BQ, [&](OpBuilder &b, Value i) {
    Value valid = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, i,
                                        qn);
    Value row = arith::AddIOp::create(b, loc, q0, i);
    row = arith::SelectOp::create(b, loc, valid, row, q0);
    forLoop(b, D, [&](OpBuilder &b, Value d) {
      Value x = memref::LoadOp::create(
          b, loc, op.getQuery(), ValueRange{bIdx, hIdx, row, d});
      x = arith::MulFOp::create(b, loc, toF32(b, x), qScale);
      x = arith::SelectOp::create(b, loc, valid, x, fzero);
      memref::StoreOp::create(b, loc, x, qTileBuf, ValueRange{i, d});
    });
    memref::StoreOp::create(b, loc, mInit, mBuf, ValueRange{i});
    memref::StoreOp::create(b, loc, lInit, lBuf, ValueRange{i});
    forLoop(b, Dv, [&](OpBuilder &b, Value d) {
      memref::StoreOp::create(b, loc, fzero, accBuf, ValueRange{i, d});
    });
  });

  forLoop(b, cIdx(b, 0), seqKV, BK,
          [&](OpBuilder &b, Value k0) { emitKeyTile(b, k0); });
  emitEpilogue(b);
}

void AttentionTiler::emitKeyTile(OpBuilder &b, Value k0) {
  Value kn = minIdx(b, cIdx(b, BK), arith::SubIOp::create(b, loc, seqKV, k0));
  Value fzero = cF32(b, 0.0);
  auto fm = fastMath(b);

  // K transposed (so QK^T runs along contiguous keys) and V, converted to
  // f32; rows past Skv are zero.
  forLoop(b, BK, [&](OpBuilder &b, Value j) {
    Value valid = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, j,
                                        kn);
    Value row = arith::AddIOp::create(b, loc, k0, j);
    row = arith::SelectOp::create(b, loc, valid, row, k0);
    forLoop(b, D, [&](OpBuilder &b, Value d) {
      Value x = memref::LoadOp::create(b, loc, op.getKey(),
                                       ValueRange{bIdx, hkvIdx, row, d});
      x = arith::SelectOp::create(b, loc, valid, toF32(b, x), fzero);
      memref::StoreOp::create(b, loc, x, kTBuf, ValueRange{d, j});
    });
    forLoop(b, Dv, [&](OpBuilder &b, Value d) {
      Value x = memref::LoadOp::create(b, loc, op.getValue(),
                                       ValueRange{bIdx, hkvIdx, row, d});
      x = arith::SelectOp::create(b, loc, valid, toF32(b, x), fzero);
      memref::StoreOp::create(b, loc, x, vBuf, ValueRange{j, d});
    });
  });

  // S = Q_tile . K_tile^T
  forLoop(b, BQ, [&](OpBuilder &b, Value i) {
    forLoop(b, BK, [&](OpBuilder &b, Value j) {
      memref::StoreOp::create(b, loc, fzero, sBuf, ValueRange{i, j});
    });
    forLoop(b, D, [&](OpBuilder &b, Value d) {
      Value qd = memref::LoadOp::create(b, loc, qTileBuf, ValueRange{i, d});
      forLoop(b, BK, [&](OpBuilder &b, Value j) {
        Value kd = memref::LoadOp::create(b, loc, kTBuf, ValueRange{d, j});
        Value s = memref::LoadOp::create(b, loc, sBuf, ValueRange{i, j});
        Value prod = arith::MulFOp::create(b, loc, qd, kd, fm);
        s = arith::AddFOp::create(b, loc, s, prod, fm);
        memref::StoreOp::create(b, loc, s, sBuf, ValueRange{i, j});
      });
    });
  });

  // Scores to probabilities, row by row.
  forLoop(b, BQ, [&](OpBuilder &b, Value i) {
    if (norm == Normalize::softmax)
      emitScoresSoftmax(b, i, k0, kn);
    else
      emitScoresPointwise(b, i, k0, kn);
  });

  // acc += P . V
  forLoop(b, BQ, [&](OpBuilder &b, Value i) {
    forLoop(b, BK, [&](OpBuilder &b, Value j) {
      Value p = memref::LoadOp::create(b, loc, sBuf, ValueRange{i, j});
      forLoop(b, Dv, [&](OpBuilder &b, Value d) {
        Value vd = memref::LoadOp::create(b, loc, vBuf, ValueRange{j, d});
        Value a = memref::LoadOp::create(b, loc, accBuf, ValueRange{i, d});
        Value prod = arith::MulFOp::create(b, loc, p, vd, fm);
        a = arith::AddFOp::create(b, loc, a, prod, fm);
        memref::StoreOp::create(b, loc, a, accBuf, ValueRange{i, d});
      });
    });
  });
}

/// Applies the score region and the mask to the raw score `s` of entry
/// (i, j); returns the modified score and sets `keep`.
Value AttentionTiler::emitScoreAndMask(OpBuilder &b, Value s, Value i, Value j,
                                       Value k0, Value kn, Value &keep) {
  Value q32 = toI32(b, arith::AddIOp::create(b, loc, q0, i));
  Value kv32 = toI32(b, arith::AddIOp::create(b, loc, k0, j));
  if (op.hasScore())
    s = inlineRegion(b, op.getScore(), {s, b32, h32, q32, kv32});
  keep = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, j, kn);
  if (op.hasMask()) {
    Value m = inlineRegion(b, op.getMask(), {b32, h32, q32, kv32});
    keep = arith::AndIOp::create(b, loc, keep, m);
  }
  return s;
}

void AttentionTiler::emitScoresSoftmax(OpBuilder &b, Value i, Value k0,
                                       Value kn) {
  Value negInf = cF32(b, -INFINITY);
  Value log2e = cF32(b, kLog2E);
  auto fm = fastMath(b);
  Value rowMax = reduceLoop(b, BK, negInf, [&](OpBuilder &b, Value j,
                                               Value mx) {
    Value s = memref::LoadOp::create(b, loc, sBuf, ValueRange{i, j});
    Value keep;
    Value t = emitScoreAndMask(b, s, i, j, k0, kn, keep);
    if (op.hasScore())
      t = arith::MulFOp::create(b, loc, t, log2e);
    t = arith::SelectOp::create(b, loc, keep, t, negInf);
    memref::StoreOp::create(b, loc, t, sBuf, ValueRange{i, j});
    return arith::MaximumFOp::create(b, loc, mx, t).getResult();
  });
  Value mOld = memref::LoadOp::create(b, loc, mBuf, ValueRange{i});
  Value mNew = arith::MaximumFOp::create(b, loc, mOld, rowMax);
  // A row with nothing kept so far has m = -inf; exponentiate against 0
  // instead so that exp2(-inf - -inf) never makes a NaN.
  Value allMasked = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ,
                                          mNew, negInf);
  Value mUse = arith::SelectOp::create(b, loc, allMasked, cF32(b, 0.0), mNew);
  Value alpha = math::Exp2Op::create(
      b, loc, arith::SubFOp::create(b, loc, mOld, mUse));
  Value rowSum = reduceLoop(b, BK, cF32(b, 0.0), [&](OpBuilder &b, Value j,
                                                     Value sum) {
    Value t = memref::LoadOp::create(b, loc, sBuf, ValueRange{i, j});
    Value p = math::Exp2Op::create(b, loc,
                                   arith::SubFOp::create(b, loc, t, mUse));
    memref::StoreOp::create(b, loc, p, sBuf, ValueRange{i, j});
    return arith::AddFOp::create(b, loc, sum, p, fm).getResult();
  });
  Value l = memref::LoadOp::create(b, loc, lBuf, ValueRange{i});
  l = arith::AddFOp::create(b, loc, arith::MulFOp::create(b, loc, l, alpha),
                            rowSum);
  memref::StoreOp::create(b, loc, l, lBuf, ValueRange{i});
  memref::StoreOp::create(b, loc, mNew, mBuf, ValueRange{i});
  forLoop(b, Dv, [&](OpBuilder &b, Value d) {
    Value a = memref::LoadOp::create(b, loc, accBuf, ValueRange{i, d});
    a = arith::MulFOp::create(b, loc, a, alpha);
    memref::StoreOp::create(b, loc, a, accBuf, ValueRange{i, d});
  });
}

/// sigmoid, relu, relu2 and softplus need no running max: each probability
/// depends on its own score only.
void AttentionTiler::emitScoresPointwise(OpBuilder &b, Value i, Value k0,
                                         Value kn) {
  Value fzero = cF32(b, 0.0), fone = cF32(b, 1.0);
  auto fm = fastMath(b);
  Value rowSum = reduceLoop(b, BK, fzero, [&](OpBuilder &b, Value j,
                                              Value sum) {
    Value s = memref::LoadOp::create(b, loc, sBuf, ValueRange{i, j});
    Value keep;
    Value t = emitScoreAndMask(b, s, i, j, k0, kn, keep);
    Value p;
    switch (norm) {
    case Normalize::sigmoid: {
      Value e = math::ExpOp::create(b, loc, arith::NegFOp::create(b, loc, t));
      p = arith::DivFOp::create(b, loc, fone,
                                arith::AddFOp::create(b, loc, fone, e));
      break;
    }
    case Normalize::relu:
      p = arith::MaximumFOp::create(b, loc, t, fzero);
      break;
    case Normalize::relu2: {
      Value r = arith::MaximumFOp::create(b, loc, t, fzero);
      p = arith::MulFOp::create(b, loc, r, r);
      break;
    }
    default: { // softplus: max(t, 0) + log1p(exp(-|t|))
      Value pos = arith::MaximumFOp::create(b, loc, t, fzero);
      Value e = math::ExpOp::create(
          b, loc, arith::NegFOp::create(b, loc, math::AbsFOp::create(b, loc, t)));
      p = arith::AddFOp::create(b, loc, pos, math::Log1pOp::create(b, loc, e));
      break;
    }
    }
    p = arith::SelectOp::create(b, loc, keep, p, fzero);
    memref::StoreOp::create(b, loc, p, sBuf, ValueRange{i, j});
    return arith::AddFOp::create(b, loc, sum, p, fm).getResult();
  });
  if (norm == Normalize::softplus) {
    Value l = memref::LoadOp::create(b, loc, lBuf, ValueRange{i});
    l = arith::AddFOp::create(b, loc, l, rowSum);
    memref::StoreOp::create(b, loc, l, lBuf, ValueRange{i});
  }
}

void AttentionTiler::emitEpilogue(OpBuilder &b) {
  bool hasRowSum = norm == Normalize::softmax || norm == Normalize::softplus;
  Type outElt = cast<MemRefType>(op.getOut().getType()).getElementType();
  Value fzero = cF32(b, 0.0), negInf = cF32(b, -INFINITY);
  forLoop(b, cIdx(b, 0), qn, 1, [&](OpBuilder &b, Value i) {
    Value row = arith::AddIOp::create(b, loc, q0, i);
    Value inv, l, empty;
    if (hasRowSum) {
      // l == 0: every key masked (or underflowed); o = 0, lse = -inf.
      l = memref::LoadOp::create(b, loc, lBuf, ValueRange{i});
      empty = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, l,
                                    fzero);
      Value r = arith::DivFOp::create(b, loc, cF32(b, 1.0), l);
      inv = arith::SelectOp::create(b, loc, empty, fzero, r);
    }
    forLoop(b, Dv, [&](OpBuilder &b, Value d) {
      Value a = memref::LoadOp::create(b, loc, accBuf, ValueRange{i, d});
      if (inv)
        a = arith::MulFOp::create(b, loc, a, inv);
      if (outElt != f32)
        a = arith::TruncFOp::create(b, loc, outElt, a);
      memref::StoreOp::create(b, loc, a, op.getOut(),
                              ValueRange{bIdx, hIdx, row, d});
    });
    if (Value lse = op.getLse()) {
      Value value;
      if (norm == Normalize::softmax) {
        Value m = memref::LoadOp::create(b, loc, mBuf, ValueRange{i});
        Value log2Sum = arith::AddFOp::create(
            b, loc, m, math::Log2Op::create(b, loc, l));
        value = arith::MulFOp::create(b, loc, log2Sum, cF32(b, kLn2));
      } else {
        value = math::LogOp::create(b, loc, l);
      }
      value = arith::SelectOp::create(b, loc, empty, negInf, value);
      memref::StoreOp::create(b, loc, value, lse,
                              ValueRange{bIdx, hIdx, row});
    }
  });
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
    getOperation().walk([&](AttentionOp op) { ops.push_back(op); });
    IRRewriter rewriter(&getContext());
    for (AttentionOp op : ops) {
      rewriter.setInsertionPoint(op);
      if (failed(tileAttention(rewriter, op, TileSizes{blockQ, blockKV})))
        return signalPassFailure();
    }
  }
};

} // namespace

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
