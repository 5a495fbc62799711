//===- ClassifyMask.cpp - the mask in interval arithmetic -----------------===//
//
// Abstract values (all emitted as IR, evaluated at run time per block):
//   i32  -> [lo, hi] as i64, widened to the full i32 range whenever a bound
//           leaves it (the concrete value may have wrapped);
//   i1   -> (mayTrue, mayFalse);
//   f32  -> [lo, hi]; comparisons decide only on finite bounds.
// Every transfer function over-approximates, so FULL and EMPTY are proofs.
//
//===----------------------------------------------------------------------===//
#include "lib/Transforms/Passes.h"
#include "lib/Transforms/Transforms.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/IRMapping.h"

#include <cmath>
#include <limits>

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNCLASSIFYMASKPASS
#include "lib/Transforms/Passes.h.inc"
} // namespace mlir::attn

using namespace mlir;
using namespace mlir::attn;

namespace {

enum class Kind { Int, Bool, Float };

struct Abs {
  Kind kind;
  Value lo, hi; // Bool: lo = may be true, hi = may be false
};

/// Reads of a captured tensor over a range of one index are bounded by a
/// loop over the range (min and max of the tensor there); longer ranges are
/// left unknown and get split by the kernel's bisection first.
constexpr int64_t kMaxRangeRead = 16384;

class Interpreter {
public:
  Interpreter(OpBuilder &b, Location loc) : b(b), loc(loc) {
    i64 = b.getI64Type();
    f32 = b.getF32Type();
  }

  // Constants and conversions.
  Value c64(int64_t v) { return arith::ConstantIntOp::create(b, loc, v, 64); }
  Value cBool(bool v) { return arith::ConstantIntOp::create(b, loc, v, 1); }
  Value cF32(double v) {
    return arith::ConstantFloatOp::create(b, loc, cast<FloatType>(f32),
                                          APFloat(static_cast<float>(v)));
  }
  Value sext(Value v32) { return arith::ExtSIOp::create(b, loc, i64, v32); }

  Abs pointInt(Value v32) {
    Value v = sext(v32);
    return {Kind::Int, v, v};
  }
  Abs pointFloat(Value v) { return {Kind::Float, v, v}; }
  Abs pointBool(Value v) {
    return {Kind::Bool, v, arith::XOrIOp::create(b, loc, v, cBool(true))};
  }
  Abs topInt() {
    return {Kind::Int, c64(std::numeric_limits<int32_t>::min()),
            c64(std::numeric_limits<int32_t>::max())};
  }
  Abs topBool() { return {Kind::Bool, cBool(true), cBool(true)}; }
  Abs topFloat() { return {Kind::Float, cF32(-INFINITY), cF32(INFINITY)}; }
  Abs top(Type t) {
    if (t.isInteger(1))
      return topBool();
    if (t.isInteger(32))
      return topInt();
    return topFloat();
  }

  /// An i64 range that left i32 may have wrapped: widen to all of i32.
  Abs intRange(Value lo, Value hi) {
    Value out = orI(cmp(arith::CmpIPredicate::slt, lo,
                        c64(std::numeric_limits<int32_t>::min())),
                    cmp(arith::CmpIPredicate::sgt, hi,
                        c64(std::numeric_limits<int32_t>::max())));
    Abs t = topInt();
    return {Kind::Int, sel(out, t.lo, lo), sel(out, t.hi, hi)};
  }

  // Small helpers.
  Value cmp(arith::CmpIPredicate p, Value x, Value y) {
    return arith::CmpIOp::create(b, loc, p, x, y);
  }
  Value cmpf(arith::CmpFPredicate p, Value x, Value y) {
    return arith::CmpFOp::create(b, loc, p, x, y);
  }
  Value sel(Value c, Value x, Value y) {
    return arith::SelectOp::create(b, loc, c, x, y);
  }
  Value andI(Value x, Value y) { return arith::AndIOp::create(b, loc, x, y); }
  Value orI(Value x, Value y) { return arith::OrIOp::create(b, loc, x, y); }
  Value notI(Value x) { return arith::XOrIOp::create(b, loc, x, cBool(true)); }
  Value minS(Value x, Value y) { return arith::MinSIOp::create(b, loc, x, y); }
  Value maxS(Value x, Value y) { return arith::MaxSIOp::create(b, loc, x, y); }
  Value minF(Value x, Value y) {
    return arith::MinimumFOp::create(b, loc, x, y);
  }
  Value maxF(Value x, Value y) {
    return arith::MaximumFOp::create(b, loc, x, y);
  }
  Value isPoint(const Abs &a) {
    return cmp(arith::CmpIPredicate::eq, a.lo, a.hi);
  }
  Value finite(Value x) {
    return cmpf(arith::CmpFPredicate::OLT, math::AbsFOp::create(b, loc, x),
                cF32(INFINITY));
  }

  // Integer transfer functions.
  Abs add(Abs x, Abs y) {
    return intRange(arith::AddIOp::create(b, loc, x.lo, y.lo),
                    arith::AddIOp::create(b, loc, x.hi, y.hi));
  }
  Abs sub(Abs x, Abs y) {
    return intRange(arith::SubIOp::create(b, loc, x.lo, y.hi),
                    arith::SubIOp::create(b, loc, x.hi, y.lo));
  }
  Abs corners(Abs x, Abs y, function_ref<Value(Value, Value)> f) {
    Value p1 = f(x.lo, y.lo), p2 = f(x.lo, y.hi), p3 = f(x.hi, y.lo),
          p4 = f(x.hi, y.hi);
    return intRange(minS(minS(p1, p2), minS(p3, p4)),
                    maxS(maxS(p1, p2), maxS(p3, p4)));
  }
  Abs mul(Abs x, Abs y) {
    return corners(x, y, [&](Value a, Value c) -> Value {
      return arith::MulIOp::create(b, loc, a, c);
    });
  }
  /// Floor division is monotone in each operand on a divisor range that
  /// excludes 0, so the corners bound it; a range holding 0 may give 0 or
  /// anything large: unknown.
  Abs floorDiv(Abs x, Abs y) {
    Value zero = c64(0);
    Value noZero = orI(cmp(arith::CmpIPredicate::sgt, y.lo, zero),
                       cmp(arith::CmpIPredicate::slt, y.hi, zero));
    Abs r = corners(x, y, [&](Value a, Value d) -> Value {
      Value safe = sel(cmp(arith::CmpIPredicate::eq, d, zero), c64(1), d);
      return arith::FloorDivSIOp::create(b, loc, a, safe);
    });
    Abs t = topInt();
    // A divisor of exactly 0 gives exactly 0.
    Value isZero = andI(cmp(arith::CmpIPredicate::eq, y.lo, zero),
                        cmp(arith::CmpIPredicate::eq, y.hi, zero));
    Value lo = sel(noZero, r.lo, sel(isZero, zero, t.lo));
    Value hi = sel(noZero, r.hi, sel(isZero, zero, t.hi));
    return {Kind::Int, lo, hi};
  }
  /// Floor modulo by a divisor c: exact when the dividend range stays
  /// within one period, else the whole residue range.
  Abs floorMod(Abs x, Abs y) {
    Value zero = c64(0), one = c64(1);
    Value pos = cmp(arith::CmpIPredicate::sgt, y.lo, zero);
    Value neg = cmp(arith::CmpIPredicate::slt, y.hi, zero);
    Value point = isPoint(y);
    Value c = sel(cmp(arith::CmpIPredicate::eq, y.lo, zero), one, y.lo);
    Value qlo = arith::FloorDivSIOp::create(b, loc, x.lo, c);
    Value qhi = arith::FloorDivSIOp::create(b, loc, x.hi, c);
    Value samePeriod = andI(point, cmp(arith::CmpIPredicate::eq, qlo, qhi));
    Value mlo = arith::SubIOp::create(b, loc, x.lo,
                                      arith::MulIOp::create(b, loc, qlo, c));
    Value mhi = arith::SubIOp::create(b, loc, x.hi,
                                      arith::MulIOp::create(b, loc, qhi, c));
    // Residues of a positive divisor range [1, d] lie in [0, d - 1]; of a
    // negative one [d, -1] in [d + 1, 0].
    Value posLo = zero, posHi = arith::SubIOp::create(b, loc, y.hi, one);
    Value negLo = arith::AddIOp::create(b, loc, y.lo, one), negHi = zero;
    Abs t = topInt();
    Value zeroDivisor = andI(point, cmp(arith::CmpIPredicate::eq, y.lo, zero));
    Value lo = sel(samePeriod, mlo,
                   sel(pos, posLo, sel(neg, negLo, t.lo)));
    Value hi = sel(samePeriod, mhi,
                   sel(pos, posHi, sel(neg, negHi, t.hi)));
    // x % 0 == x.
    lo = sel(zeroDivisor, x.lo, lo);
    hi = sel(zeroDivisor, x.hi, hi);
    return {Kind::Int, lo, hi};
  }
  Abs absI(Abs x) {
    Value zero = c64(0);
    Value nonNeg = cmp(arith::CmpIPredicate::sge, x.lo, zero);
    Value nonPos = cmp(arith::CmpIPredicate::sle, x.hi, zero);
    Value negLo = arith::SubIOp::create(b, loc, zero, x.hi);
    Value negHi = arith::SubIOp::create(b, loc, zero, x.lo);
    Value lo = sel(nonNeg, x.lo, sel(nonPos, negLo, zero));
    Value hi = sel(nonNeg, x.hi, sel(nonPos, negHi, maxS(negHi, x.hi)));
    return intRange(lo, hi);
  }
  Abs cmpInt(arith::CmpIPredicate p, Abs x, Abs y) {
    using P = arith::CmpIPredicate;
    Value mayT, mayF;
    switch (p) {
    case P::slt:
      mayT = cmp(P::slt, x.lo, y.hi);
      mayF = cmp(P::sge, x.hi, y.lo);
      break;
    case P::sle:
      mayT = cmp(P::sle, x.lo, y.hi);
      mayF = cmp(P::sgt, x.hi, y.lo);
      break;
    case P::sgt:
      return cmpInt(P::slt, y, x);
    case P::sge:
      return cmpInt(P::sle, y, x);
    case P::eq:
    case P::ne: {
      Value overlap = andI(cmp(P::sle, x.lo, y.hi), cmp(P::sle, y.lo, x.hi));
      Value same = andI(andI(isPoint(x), isPoint(y)),
                        cmp(P::eq, x.lo, y.lo));
      mayT = overlap;
      mayF = notI(same);
      if (p == P::ne)
        std::swap(mayT, mayF);
      break;
    }
    default:
      return topBool();
    }
    return {Kind::Bool, mayT, mayF};
  }
  Abs cmpBool(arith::CmpIPredicate p, Abs x, Abs y) {
    Value bothT = andI(x.lo, y.lo), bothF = andI(x.hi, y.hi);
    Value mixed = orI(andI(x.lo, y.hi), andI(x.hi, y.lo));
    if (p == arith::CmpIPredicate::eq)
      return {Kind::Bool, orI(bothT, bothF), mixed};
    if (p == arith::CmpIPredicate::ne)
      return {Kind::Bool, mixed, orI(bothT, bothF)};
    return topBool();
  }

  // Boolean transfer functions.
  Abs andB(Abs x, Abs y) {
    return {Kind::Bool, andI(x.lo, y.lo), orI(x.hi, y.hi)};
  }
  Abs orB(Abs x, Abs y) {
    return {Kind::Bool, orI(x.lo, y.lo), andI(x.hi, y.hi)};
  }
  Abs xorB(Abs x, Abs y) {
    return {Kind::Bool, orI(andI(x.lo, y.hi), andI(x.hi, y.lo)),
            orI(andI(x.lo, y.lo), andI(x.hi, y.hi))};
  }
  Abs select(Abs c, Abs x, Abs y) {
    Value onlyT = andI(c.lo, notI(c.hi)), onlyF = andI(c.hi, notI(c.lo));
    Value lo, hi;
    switch (x.kind) {
    case Kind::Bool:
      lo = orI(x.lo, y.lo);
      hi = orI(x.hi, y.hi);
      break;
    case Kind::Int:
      lo = minS(x.lo, y.lo);
      hi = maxS(x.hi, y.hi);
      break;
    case Kind::Float:
      lo = minF(x.lo, y.lo);
      hi = maxF(x.hi, y.hi);
      break;
    }
    return {x.kind, sel(onlyT, x.lo, sel(onlyF, y.lo, lo)),
            sel(onlyT, x.hi, sel(onlyF, y.hi, hi))};
  }

  // Float transfer functions.
  Abs cornersF(Abs x, Abs y, function_ref<Value(Value, Value)> f) {
    Value p1 = f(x.lo, y.lo), p2 = f(x.lo, y.hi), p3 = f(x.hi, y.lo),
          p4 = f(x.hi, y.hi);
    return {Kind::Float, minF(minF(p1, p2), minF(p3, p4)),
            maxF(maxF(p1, p2), maxF(p3, p4))};
  }
  Abs cmpFloat(arith::CmpFPredicate p, Abs x, Abs y) {
    using P = arith::CmpFPredicate;
    Value decided = andI(andI(finite(x.lo), finite(x.hi)),
                         andI(finite(y.lo), finite(y.hi)));
    Value mayT, mayF;
    switch (p) {
    case P::OLT:
      mayT = cmpf(P::OLT, x.lo, y.hi);
      mayF = cmpf(P::OGE, x.hi, y.lo);
      break;
    case P::OLE:
      mayT = cmpf(P::OLE, x.lo, y.hi);
      mayF = cmpf(P::OGT, x.hi, y.lo);
      break;
    case P::OGT:
      return cmpFloat(P::OLT, y, x);
    case P::OGE:
      return cmpFloat(P::OLE, y, x);
    case P::OEQ:
    case P::UNE: {
      Value overlap =
          andI(cmpf(P::OLE, x.lo, y.hi), cmpf(P::OLE, y.lo, x.hi));
      Value same = andI(andI(cmpf(P::OEQ, x.lo, x.hi), cmpf(P::OEQ, y.lo, y.hi)),
                        cmpf(P::OEQ, x.lo, y.lo));
      mayT = overlap;
      mayF = notI(same);
      if (p == P::UNE)
        std::swap(mayT, mayF);
      break;
    }
    default:
      return topBool();
    }
    // Infinite or NaN bounds decide nothing.
    return {Kind::Bool, orI(mayT, notI(decided)), orI(mayF, notI(decided))};
  }

  OpBuilder &b;
  Location loc;
  Type i64, f32;
};

/// Bounds of `load` over the block. Exact indices read one element; a
/// single varying index reads the range it spans (min and max); anything
/// else is unknown. Reads clamp indices like the kernels do.
Abs readCapture(RewriterBase &rewriter, Interpreter &I, LoadOp load,
                function_ref<Abs(Value)> lookup,
                const DenseSet<Value> &varies) {
  Location loc = I.loc;
  Value tensor = load.getTensor();
  Type elt = cast<MemRefType>(tensor.getType()).getElementType();
  Type valueType = elt.isInteger(32) ? elt : I.f32;
  auto toIndex = [&](Value v64) {
    return arith::IndexCastOp::create(rewriter, loc, rewriter.getIndexType(),
                                      v64);
  };
  auto widen = [&](Value x) -> Value {
    if (isa<FloatType>(x.getType()) && !x.getType().isF32())
      return arith::ExtFOp::create(rewriter, loc, I.f32, x);
    return x;
  };
  auto asAbs = [&](Value lo, Value hi) -> Abs {
    if (valueType.isInteger(32))
      return {Kind::Int, I.sext(lo), I.sext(hi)};
    return {Kind::Float, lo, hi};
  };
  // Clamped index bounds per dimension, and which index varies.
  SmallVector<Value> lo, hi;
  Value exact = I.cBool(true);
  int rangeDim = -1, rangeCount = 0;
  for (auto [d, index] : llvm::enumerate(load.getIndices())) {
    Abs a = lookup(index);
    Value dim = I.sext(arith::IndexCastOp::create(
        rewriter, loc, rewriter.getI32Type(),
        memref::DimOp::create(rewriter, loc, tensor, d)));
    Value last = arith::SubIOp::create(rewriter, loc, dim, I.c64(1));
    lo.push_back(I.minS(I.maxS(a.lo, I.c64(0)), last));
    hi.push_back(I.minS(I.maxS(a.hi, I.c64(0)), last));
    if (varies.contains(index)) {
      rangeDim = static_cast<int>(d);
      ++rangeCount;
    } else {
      exact = I.andI(exact, I.isPoint(a));
    }
  }
  Abs t = I.top(valueType);
  if (rangeCount > 1)
    return t;
  SmallVector<Value> at;
  for (Value v : lo)
    at.push_back(toIndex(v));
  if (rangeCount == 0) {
    Value x = widen(memref::LoadOp::create(rewriter, loc, tensor, at));
    Abs p = asAbs(x, x);
    return {p.kind, I.sel(exact, p.lo, t.lo), I.sel(exact, p.hi, t.hi)};
  }
  // min/max over the range of the varying index, when it is short enough.
  Value length = arith::SubIOp::create(rewriter, loc, hi[rangeDim],
                                       lo[rangeDim]);
  Value shortRange = I.cmp(arith::CmpIPredicate::slt, length,
                           I.c64(kMaxRangeRead));
  Value first = widen(memref::LoadOp::create(rewriter, loc, tensor, at));
  Value begin = arith::AddIOp::create(rewriter, loc, toIndex(lo[rangeDim]),
                                      arith::ConstantIndexOp::create(rewriter,
                                                                     loc, 1));
  Value end = arith::AddIOp::create(
      rewriter, loc,
      toIndex(I.sel(shortRange, hi[rangeDim], lo[rangeDim])),
      arith::ConstantIndexOp::create(rewriter, loc, 1));
  auto loop = scf::ForOp::create(
      rewriter, loc, begin, end,
      arith::ConstantIndexOp::create(rewriter, loc, 1),
      ValueRange{first, first},
      [&](OpBuilder &b, Location, Value i, ValueRange acc) {
        SmallVector<Value> idx = at;
        idx[rangeDim] = i;
        Value x = widen(memref::LoadOp::create(b, loc, tensor, idx));
        Value mn, mx;
        if (valueType.isInteger(32)) {
          mn = arith::MinSIOp::create(b, loc, acc[0], x);
          mx = arith::MaxSIOp::create(b, loc, acc[1], x);
        } else {
          mn = arith::MinimumFOp::create(b, loc, acc[0], x);
          mx = arith::MaximumFOp::create(b, loc, acc[1], x);
        }
        scf::YieldOp::create(b, loc, ValueRange{mn, mx});
      });
  Abs r = asAbs(loop.getResult(0), loop.getResult(1));
  Value ok = I.andI(exact, shortRange);
  return {r.kind, I.sel(ok, r.lo, t.lo), I.sel(ok, r.hi, t.hi)};
}

} // namespace

LogicalResult mlir::attn::buildMaskClassifier(RewriterBase &rewriter,
                                              AttentionOp op) {
  // kv_index positions are data: every tile evaluates the mask.
  if (!op.hasMask() || op.hasClassify() || op.getKvIndex())
    return success();
  Block &mask = op.getMask().front();
  OpBuilder::InsertionGuard guard(rewriter);
  Type i32 = rewriter.getI32Type();
  SmallVector<Location> locs(7, op.getLoc());
  Block *body = rewriter.createBlock(&op.getClassify(), {},
                                     {i32, i32, i32, i32, i32, i32, i32},
                                     locs);
  rewriter.setInsertionPointToStart(body);
  Interpreter I(rewriter, op.getLoc());
  DenseMap<Value, Abs> env;
  // Mask values that depend on q or kv (known statically); everything else
  // is a function of b, h, params and sizes, hence exact per block.
  DenseSet<Value> varies;
  varies.insert(mask.getArgument(1)); // a tile may span query heads
  varies.insert(mask.getArgument(2));
  varies.insert(mask.getArgument(3));
  for (Operation &o : mask.without_terminator())
    for (Value operand : o.getOperands())
      if (varies.contains(operand) && o.getNumResults() == 1)
        varies.insert(o.getResult(0));

  // Region arguments: b is exact; h, q and kv are the block's ranges (h
  // spans several heads when a tile packs a GQA group).
  env[mask.getArgument(0)] = I.pointInt(body->getArgument(0));
  env[mask.getArgument(1)] = {Kind::Int, I.sext(body->getArgument(1)),
                              I.sext(body->getArgument(2))};
  env[mask.getArgument(2)] = {Kind::Int, I.sext(body->getArgument(3)),
                              I.sext(body->getArgument(4))};
  env[mask.getArgument(3)] = {Kind::Int, I.sext(body->getArgument(5)),
                              I.sext(body->getArgument(6))};

  auto lookup = [&](Value v) -> Abs {
    auto it = env.find(v);
    if (it != env.end())
      return it->second;
    // Params (defined above) are exact.
    if (v.getType().isInteger(32))
      return env[v] = I.pointInt(v);
    if (v.getType().isF32())
      return env[v] = I.pointFloat(v);
    if (v.getType().isInteger(1))
      return env[v] = I.pointBool(v);
    return I.top(v.getType());
  };

  for (Operation &o : mask.without_terminator()) {
    I.loc = o.getLoc();
    if (o.getNumResults() != 1)
      return op.emitOpError("unexpected op in mask: ") << o.getName();
    Value result = o.getResult(0);
    Type rt = result.getType();
    Abs out = I.top(rt);
    auto arg = [&](unsigned i) { return lookup(o.getOperand(i)); };

    if (auto c = dyn_cast<arith::ConstantOp>(o)) {
      Value copy = rewriter.clone(o)->getResult(0);
      if (rt.isInteger(32))
        out = I.pointInt(copy);
      else if (rt.isInteger(1))
        out = I.pointBool(copy);
      else if (rt.isF32())
        out = I.pointFloat(copy);
    } else if (isa<DimOp>(o)) {
      out = I.pointInt(rewriter.clone(o)->getResult(0));
    } else if (auto load = dyn_cast<LoadOp>(o)) {
      out = readCapture(rewriter, I, load, lookup, varies);
    } else if (isa<arith::AddIOp>(o) && rt.isInteger(32)) {
      out = I.add(arg(0), arg(1));
    } else if (isa<arith::SubIOp>(o) && rt.isInteger(32)) {
      out = I.sub(arg(0), arg(1));
    } else if (isa<arith::MulIOp>(o) && rt.isInteger(32)) {
      out = I.mul(arg(0), arg(1));
    } else if (isa<FloorDivOp>(o)) {
      out = I.floorDiv(arg(0), arg(1));
    } else if (isa<FloorModOp>(o)) {
      out = I.floorMod(arg(0), arg(1));
    } else if (isa<arith::MinSIOp>(o)) {
      Abs x = arg(0), y = arg(1);
      out = {Kind::Int, I.minS(x.lo, y.lo), I.minS(x.hi, y.hi)};
    } else if (isa<arith::MaxSIOp>(o)) {
      Abs x = arg(0), y = arg(1);
      out = {Kind::Int, I.maxS(x.lo, y.lo), I.maxS(x.hi, y.hi)};
    } else if (isa<math::AbsIOp>(o)) {
      out = I.absI(arg(0));
    } else if (auto c = dyn_cast<arith::CmpIOp>(o)) {
      Type ot = c.getLhs().getType();
      if (ot.isInteger(32))
        out = I.cmpInt(c.getPredicate(), arg(0), arg(1));
      else if (ot.isInteger(1))
        out = I.cmpBool(c.getPredicate(), arg(0), arg(1));
    } else if (isa<arith::AndIOp>(o) && rt.isInteger(1)) {
      out = I.andB(arg(0), arg(1));
    } else if (isa<arith::OrIOp>(o) && rt.isInteger(1)) {
      out = I.orB(arg(0), arg(1));
    } else if (isa<arith::XOrIOp>(o) && rt.isInteger(1)) {
      out = I.xorB(arg(0), arg(1));
    } else if (isa<arith::SelectOp>(o)) {
      out = I.select(arg(0), arg(1), arg(2));
    } else if (isa<arith::ExtUIOp>(o) && rt.isInteger(32)) {
      // bool -> 0/1 (sign()).
      Abs x = arg(0);
      out = {Kind::Int,
             I.sel(x.hi, I.c64(0), I.c64(1)), I.sel(x.lo, I.c64(1), I.c64(0))};
    } else if (isa<arith::SIToFPOp>(o) && rt.isF32()) {
      Abs x = arg(0);
      out = {Kind::Float, arith::SIToFPOp::create(rewriter, I.loc, I.f32, x.lo),
             arith::SIToFPOp::create(rewriter, I.loc, I.f32, x.hi)};
    } else if (isa<arith::FPToSIOp>(o) && rt.isInteger(32)) {
      // Clamp the bounds first: the interval code must never convert an
      // out-of-range float itself.
      Abs x = arg(0);
      auto conv = [&](Value f) {
        Value ok = I.cmpf(arith::CmpFPredicate::ORD, f, f);
        Value cl = I.minF(I.maxF(f, I.cF32(-2147483648.0)),
                          I.cF32(2147483520.0));
        cl = I.sel(ok, cl, I.cF32(0.0));
        return arith::ExtSIOp::create(
            rewriter, I.loc, I.i64,
            arith::FPToSIOp::create(rewriter, I.loc, i32, cl));
      };
      Value nan = I.orI(I.cmpf(arith::CmpFPredicate::UNO, x.lo, x.lo),
                        I.cmpf(arith::CmpFPredicate::UNO, x.hi, x.hi));
      Abs t = I.topInt();
      out = {Kind::Int, I.sel(nan, t.lo, conv(x.lo)),
             I.sel(nan, t.hi, conv(x.hi))};
    } else if (isa<arith::AddFOp>(o)) {
      Abs x = arg(0), y = arg(1);
      out = {Kind::Float, arith::AddFOp::create(rewriter, I.loc, x.lo, y.lo),
             arith::AddFOp::create(rewriter, I.loc, x.hi, y.hi)};
    } else if (isa<arith::SubFOp>(o)) {
      Abs x = arg(0), y = arg(1);
      out = {Kind::Float, arith::SubFOp::create(rewriter, I.loc, x.lo, y.hi),
             arith::SubFOp::create(rewriter, I.loc, x.hi, y.lo)};
    } else if (isa<arith::MulFOp>(o)) {
      out = I.cornersF(arg(0), arg(1), [&](Value a, Value c) -> Value {
        return arith::MulFOp::create(rewriter, I.loc, a, c);
      });
    } else if (isa<arith::DivFOp>(o)) {
      Abs y = arg(1);
      Value noZero = I.orI(I.cmpf(arith::CmpFPredicate::OGT, y.lo, I.cF32(0)),
                           I.cmpf(arith::CmpFPredicate::OLT, y.hi, I.cF32(0)));
      Abs r = I.cornersF(arg(0), y, [&](Value a, Value c) -> Value {
        return arith::DivFOp::create(rewriter, I.loc, a, c);
      });
      Abs t = I.topFloat();
      out = {Kind::Float, I.sel(noZero, r.lo, t.lo), I.sel(noZero, r.hi, t.hi)};
    } else if (isa<arith::NegFOp>(o)) {
      Abs x = arg(0);
      out = {Kind::Float, arith::NegFOp::create(rewriter, I.loc, x.hi),
             arith::NegFOp::create(rewriter, I.loc, x.lo)};
    } else if (isa<arith::MinimumFOp>(o)) {
      Abs x = arg(0), y = arg(1);
      out = {Kind::Float, I.minF(x.lo, y.lo), I.minF(x.hi, y.hi)};
    } else if (isa<arith::MaximumFOp>(o)) {
      Abs x = arg(0), y = arg(1);
      out = {Kind::Float, I.maxF(x.lo, y.lo), I.maxF(x.hi, y.hi)};
    } else if (isa<arith::ExtFOp>(o) && rt.isF32()) {
      // An f16/bf16 capture read: readCapture's bounds are f32 already.
      Abs x = arg(0);
      auto widen = [&](Value v) -> Value {
        return v.getType().isF32()
                   ? v
                   : arith::ExtFOp::create(rewriter, I.loc, rt, v).getResult();
      };
      out = {Kind::Float, widen(x.lo), widen(x.hi)};
    } else if (isa<math::FloorOp, math::CeilOp, math::ExpOp, math::Exp2Op,
                   math::LogOp, math::Log2Op, math::SqrtOp, math::TanhOp>(o) &&
               rt.isF32()) {
      // Monotone non-decreasing: apply to both bounds.
      Abs x = arg(0);
      IRMapping lo, hi;
      lo.map(o.getOperand(0), x.lo);
      hi.map(o.getOperand(0), x.hi);
      out = {Kind::Float, rewriter.clone(o, lo)->getResult(0),
             rewriter.clone(o, hi)->getResult(0)};
    } else if (auto c = dyn_cast<arith::CmpFOp>(o)) {
      out = I.cmpFloat(c.getPredicate(), arg(0), arg(1));
    }
    // Anything else stays unknown (the top set above): sound, just coarse.
    env[result] = out;
  }

  auto yield = cast<YieldOp>(mask.getTerminator());
  Abs keep = lookup(yield.getValues().front());
  I.loc = op.getLoc();
  Value cls = I.sel(I.notI(keep.lo),
                    arith::ConstantIntOp::create(rewriter, I.loc, kTileEmpty, 32),
                    I.sel(I.notI(keep.hi),
                          arith::ConstantIntOp::create(rewriter, I.loc,
                                                       kTileFull, 32),
                          arith::ConstantIntOp::create(rewriter, I.loc,
                                                       kTilePartial, 32)));
  YieldOp::create(rewriter, I.loc, cls);
  return success();
}

namespace {
struct AttnClassifyMaskPass final
    : mlir::attn::impl::AttnClassifyMaskPassBase<AttnClassifyMaskPass> {
  void runOnOperation() override {
    IRRewriter rewriter(&getContext());
    WalkResult r = getOperation().walk([&](AttentionOp op) {
      if (failed(buildMaskClassifier(rewriter, op)))
        return WalkResult::interrupt();
      return WalkResult::advance();
    });
    if (r.wasInterrupted())
      signalPassFailure();
  }
};
} // namespace
