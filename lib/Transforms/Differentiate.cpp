//===- Differentiate.cpp - adjoints of a variant's regions ----------------===//
//
// Reverse-mode differentiation of the straight-line `score`, `sink` and
// `scale_expr` regions of attn.attention. Each adjoint region recomputes
// the primal values (a copy of the region's ops), then walks the copy
// backwards from the yielded value, whose adjoint is the block argument
// `g`, accumulating every f32 value's adjoint from its users: the adjoint
// of `s` is yielded; those of f32 params and of f32 captured-tensor reads
// go to `attn.accumulate_grad`. Integer and boolean values (indices,
// masks, comparisons) carry no gradient.
//
// Where an op is not differentiable at a point the rule is a documented
// choice (docs/backward.md), the same as the float64 reference's: min/max
// split a tie evenly (so clamp passes half at its bounds), abs has
// derivative 0 at 0, floor/ceil/round (and sign, int()) have derivative 0,
// select passes the gradient to the chosen operand only.
//
//===----------------------------------------------------------------------===//
#include "lib/Transforms/Passes.h"
#include "lib/Transforms/Transforms.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/IR/IRMapping.h"
#include "llvm/ADT/TypeSwitch.h"

#include <numbers>

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNDIFFERENTIATEPASS
#include "lib/Transforms/Passes.h.inc"
} // namespace mlir::attn

using namespace mlir;
using namespace mlir::attn;

namespace {

/// Builds one adjoint region: block arguments are the primal region's plus
/// `g`; `yieldsInputGradient` makes it yield the adjoint of the primal
/// block's first argument (score's `s`).
class AdjointBuilder {
public:
  AdjointBuilder(AttentionOp op, Region &primal, Region &adjoint)
      : op(op), primal(primal), adjoint(adjoint), loc(op.getLoc()),
        b(op.getContext()) {}

  LogicalResult build(bool yieldsInputGradient) {
    Block &from = primal.front();
    SmallVector<Type> argTypes(from.getArgumentTypes());
    argTypes.push_back(b.getF32Type());
    SmallVector<Location> argLocs(argTypes.size(), loc);
    Block *to = b.createBlock(&adjoint, {}, argTypes, argLocs);
    IRMapping map;
    for (auto [x, y] : llvm::zip(from.getArguments(), to->getArguments()))
      map.map(x, y);
    // The forward sweep: the primal values the adjoints need.
    for (Operation &o : from.without_terminator())
      b.clone(o, map);
    auto yield = cast<YieldOp>(from.getTerminator());
    Value result = map.lookupOrDefault(yield.getValues().front());
    addAdjoint(result, to->getArguments().back());

    // The reverse sweep, users before definitions.
    SmallVector<Operation *> forward;
    for (Operation &o : *to)
      forward.push_back(&o);
    for (Operation *o : llvm::reverse(forward))
      if (failed(propagate(o)))
        return failure();

    // Params (defined above) collect what their uses contributed.
    for (Value param : op.getParams())
      if (Value a = adjoints.lookup(param))
        AccumulateGradOp::create(b, loc, a, param, ValueRange{});
    SmallVector<Value> yielded;
    if (yieldsInputGradient) {
      Value a = adjoints.lookup(to->getArgument(0));
      yielded.push_back(a ? a : constant(0.0));
    }
    YieldOp::create(b, loc, yielded);
    eraseDeadOps(*to);
    return success();
  }

private:
  Value constant(double v) {
    return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(float(v)));
  }
  Value mul(Value x, Value y) { return arith::MulFOp::create(b, loc, x, y); }
  Value div(Value x, Value y) { return arith::DivFOp::create(b, loc, x, y); }
  Value neg(Value x) { return arith::NegFOp::create(b, loc, x); }
  Value select(Value c, Value x, Value y) {
    return arith::SelectOp::create(b, loc, c, x, y);
  }
  Value cmp(arith::CmpFPredicate p, Value x, Value y) {
    return arith::CmpFOp::create(b, loc, p, x, y);
  }

  /// Only f32 values carry gradients; others (integers, i1, f16 reads of
  /// captures that are not f32) stop the propagation.
  void addAdjoint(Value x, Value contribution) {
    if (!x.getType().isF32())
      return;
    Value &slot = adjoints[x];
    slot = slot ? arith::AddFOp::create(b, loc, slot, contribution).getResult()
                : contribution;
  }

  /// The weight a tie-splitting min/max passes to `x` against `y`: 1 where
  /// `x` is chosen (`wins`), 1/2 on a tie, 0 otherwise.
  Value tieWeight(Value x, Value y, arith::CmpFPredicate wins) {
    return select(cmp(wins, x, y), constant(1.0),
                  select(cmp(arith::CmpFPredicate::OEQ, x, y), constant(0.5),
                         constant(0.0)));
  }

  /// Adds g * local to x's adjoint, and nothing where g is 0: a branch
  /// `select` did not take, or an entry the normalizer zeroed, passes no
  /// gradient even where its local derivative is infinite or NaN (sqrt or
  /// log of a negative or zero value), as in the float64 reference.
  void addChain(Value x, Value g, Value local) {
    if (!x.getType().isF32())
      return;
    Value zero = constant(0.0);
    addAdjoint(x, select(cmp(arith::CmpFPredicate::OEQ, g, zero), zero,
                         mul(g, local)));
  }

  LogicalResult propagate(Operation *o) {
    if (o->getNumResults() != 1)
      return success();
    Value y = o->getResult(0);
    Value g = adjoints.lookup(y);
    if (!g) // not on a path to the result, or not a float
      return success();
    auto operand = [&](unsigned i) { return o->getOperand(i); };
    Value one = constant(1.0);
    return llvm::TypeSwitch<Operation *, LogicalResult>(o)
        .Case([&](arith::AddFOp) {
          addAdjoint(operand(0), g);
          addAdjoint(operand(1), g);
          return success();
        })
        .Case([&](arith::SubFOp) {
          addAdjoint(operand(0), g);
          addAdjoint(operand(1), neg(g));
          return success();
        })
        .Case([&](arith::MulFOp) {
          addChain(operand(0), g, operand(1));
          addChain(operand(1), g, operand(0));
          return success();
        })
        .Case([&](arith::DivFOp) {
          // d(x / z) = dx / z - (x / z) dz / z
          addChain(operand(0), g, div(one, operand(1)));
          addChain(operand(1), g, neg(div(y, operand(1))));
          return success();
        })
        .Case([&](arith::NegFOp) {
          addAdjoint(operand(0), neg(g));
          return success();
        })
        .Case<arith::MaximumFOp, arith::MaxNumFOp, arith::MinimumFOp,
              arith::MinNumFOp>([&](Operation *minMax) {
          bool isMax = isa<arith::MaximumFOp, arith::MaxNumFOp>(minMax);
          Value w = tieWeight(operand(0), operand(1),
                              isMax ? arith::CmpFPredicate::OGT
                                    : arith::CmpFPredicate::OLT);
          addChain(operand(0), g, w);
          addChain(operand(1), g, arith::SubFOp::create(b, loc, one, w));
          return success();
        })
        .Case([&](arith::SelectOp s) {
          Value zero = constant(0.0);
          addAdjoint(s.getTrueValue(), select(s.getCondition(), g, zero));
          addAdjoint(s.getFalseValue(), select(s.getCondition(), zero, g));
          return success();
        })
        .Case([&](math::ExpOp) {
          addChain(operand(0), g, y);
          return success();
        })
        .Case([&](math::Exp2Op) {
          addChain(operand(0), g, mul(y, constant(std::numbers::ln2)));
          return success();
        })
        .Case([&](math::LogOp) {
          addChain(operand(0), g, div(one, operand(0)));
          return success();
        })
        .Case([&](math::Log2Op) {
          addChain(operand(0), g,
                   div(one, mul(operand(0), constant(std::numbers::ln2))));
          return success();
        })
        .Case([&](math::Log1pOp) {
          addChain(operand(0), g,
                   div(one, arith::AddFOp::create(b, loc, operand(0), one)));
          return success();
        })
        .Case([&](math::SqrtOp) {
          addChain(operand(0), g, div(constant(0.5), y));
          return success();
        })
        .Case([&](math::RsqrtOp) {
          // d x^-1/2 = -1/2 x^-3/2 = -1/2 y^3
          addChain(operand(0), g, mul(constant(-0.5), mul(y, mul(y, y))));
          return success();
        })
        .Case([&](math::TanhOp) {
          addChain(operand(0), g, arith::SubFOp::create(b, loc, one, mul(y, y)));
          return success();
        })
        .Case([&](math::AbsFOp) {
          Value x = operand(0), zero = constant(0.0);
          addChain(x, g,
                   select(cmp(arith::CmpFPredicate::OGT, x, zero), one,
                          select(cmp(arith::CmpFPredicate::OLT, x, zero),
                                 constant(-1.0), zero)));
          return success();
        })
        .Case<math::FloorOp, math::CeilOp, math::RoundOp, math::RoundEvenOp,
              math::TruncOp>([](Operation *) { return success(); })
        // i32 -> f32 (the DSL's float(i)): no gradient reaches integers.
        .Case<arith::SIToFPOp, arith::UIToFPOp, arith::ExtFOp>(
            [](Operation *) { return success(); })
        .Case([&](LoadOp load) {
          AccumulateGradOp::create(b, loc, g, load.getTensor(),
                                   load.getIndices());
          return success();
        })
        .Case([&](arith::ConstantOp) { return success(); })
        .Default([&](Operation *other) {
          return op.emitOpError()
                 << "cannot differentiate '" << other->getName()
                 << "' in a region (no derivative rule)";
        });
  }

  /// Drops the forward sweep's values no adjoint needed.
  static void eraseDeadOps(Block &block) {
    bool changed = true;
    while (changed) {
      changed = false;
      for (Operation &o : llvm::make_early_inc_range(llvm::reverse(block)))
        if (isOpTriviallyDead(&o)) {
          o.erase();
          changed = true;
        }
    }
  }

  AttentionOp op;
  Region &primal;
  Region &adjoint;
  Location loc;
  OpBuilder b;
  llvm::DenseMap<Value, Value> adjoints;
};

struct AttnDifferentiatePass final
    : mlir::attn::impl::AttnDifferentiatePassBase<AttnDifferentiatePass> {
  void runOnOperation() override {
    WalkResult result = getOperation()->walk([&](AttentionOp op) {
      return failed(differentiate(op)) ? WalkResult::interrupt()
                                       : WalkResult::advance();
    });
    if (result.wasInterrupted())
      signalPassFailure();
  }
};

} // namespace

LogicalResult mlir::attn::differentiate(AttentionOp op) {
  if (op.isDifferentiated())
    return success();
  struct Job {
    Region &primal, &adjoint;
    bool yieldsInputGradient;
  };
  for (Job job : {Job{op.getScore(), op.getScoreGrad(), true},
                  Job{op.getSink(), op.getSinkGrad(), false},
                  Job{op.getScaleExpr(), op.getScaleGrad(), false}}) {
    if (job.primal.empty())
      continue;
    if (failed(AdjointBuilder(op, job.primal, job.adjoint)
                   .build(job.yieldsInputGradient))) {
      op.getScoreGrad().getBlocks().clear();
      op.getSinkGrad().getBlocks().clear();
      op.getScaleGrad().getBlocks().clear();
      return failure();
    }
  }
  return success();
}
