//===- NormalizerMath.cpp - each normalizer's pointwise math --------------===//
//
// A new normalizer adds its case to both functions here: p = f(t) and its
// adjoint (see NormalizerMath.h).
//
//===----------------------------------------------------------------------===//
#include "lib/Transforms/NormalizerMath.h"
#include "dialect/Normalizers.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "llvm/Support/ErrorHandling.h"

#include <cmath>

using namespace mlir;
using namespace mlir::attn;

namespace {
/// Mega's Laplace attention function (Ma et al., ICLR 2023) is the normal
/// CDF with mean mu = sqrt(1/2) and deviation sigma = sqrt(1/(4 pi)): p =
/// 0.5 (1 + erf(z)) with z = (t - mu) / (sigma sqrt 2) = (t - kLaplaceMean)
/// kLaplaceErfScale, and dp/dt = exp(-z^2) / (sigma sqrt(2 pi)) = sqrt 2
/// exp(-z^2).
constexpr double kLaplaceMean = 0.70710678118654752;     // sqrt(1/2)
constexpr double kLaplaceErfScale = 2.5066282746310002; // sqrt(2 pi)
} // namespace

// p = f(t): sigmoid, relu, relu2, softplus (max(t, 0) + log1p(exp(-|t|)))
// or laplace (0.5 + 0.5 erf((t - sqrt(1/2)) sqrt(2 pi))).

Value mlir::attn::normalizeScore(OpBuilder &b, Location loc, Normalize norm,
                                 Value t) {
  Type f32 = b.getF32Type();
  Value fzero = arith::ConstantFloatOp::create(b, loc, cast<FloatType>(f32),
                                               APFloat(0.0f));
  switch (norm) {
  case Normalize::sigmoid: {
    Value fone = arith::ConstantFloatOp::create(b, loc, cast<FloatType>(f32),
                                                APFloat(1.0f));
    Value e = math::ExpOp::create(b, loc, arith::NegFOp::create(b, loc, t));
    return arith::DivFOp::create(b, loc, fone,
                                 arith::AddFOp::create(b, loc, fone, e));
  }
  case Normalize::relu:
    return arith::MaximumFOp::create(b, loc, t, fzero);
  case Normalize::relu2: {
    Value r = arith::MaximumFOp::create(b, loc, t, fzero);
    return arith::MulFOp::create(b, loc, r, r);
  }
  case Normalize::laplace: { // 0.5 + 0.5 erf(z), z as kLaplaceMean says
    auto constant = [&](double v) -> Value {
      return arith::ConstantFloatOp::create(b, loc, cast<FloatType>(f32),
                                            APFloat(static_cast<float>(v)));
    };
    Value z = arith::MulFOp::create(
        b, loc, arith::SubFOp::create(b, loc, t, constant(kLaplaceMean)),
        constant(kLaplaceErfScale));
    Value half = constant(0.5);
    return math::FmaOp::create(b, loc, half, math::ErfOp::create(b, loc, z),
                               half);
  }
  default: { // softplus: max(t, 0) + log1p(exp(-|t|))
    Value pos = arith::MaximumFOp::create(b, loc, t, fzero);
    Value e = math::ExpOp::create(
        b, loc,
        arith::NegFOp::create(b, loc, math::AbsFOp::create(b, loc, t)));
    return arith::AddFOp::create(b, loc, pos, math::Log1pOp::create(b, loc, e));
  }
  }
}

// p and du: softmax p (dp - delta); softplus (dp - delta) sigmoid(u) /
// exp(lse); sigmoid dp p (1 - p); relu, relu2 dp f'(u) with f'(0) = 0;
// laplace dp sqrt 2 exp(-z^2), z the erf's argument.
std::pair<Value, Value> mlir::attn::normalizerAdjoint(OpBuilder &b,
                                                      Location loc,
                                                      Normalize norm, Value u,
                                                      Value dp, Value lse,
                                                      Value delta) {
  FloatType f32 = b.getF32Type();
  auto constant = [&](float v) -> Value {
    return arith::ConstantFloatOp::create(b, loc, f32, APFloat(v));
  };
  Value zero = constant(0.0f), one = constant(1.0f);
  auto sigmoid = [&](Value x) -> Value {
    Value e = math::ExpOp::create(b, loc, arith::NegFOp::create(b, loc, x));
    return arith::DivFOp::create(b, loc, one,
                                 arith::AddFOp::create(b, loc, one, e));
  };
  switch (norm) {
  case Normalize::softmax: {
    Value p = math::ExpOp::create(b, loc, arith::SubFOp::create(b, loc, u, lse));
    return {p, arith::MulFOp::create(b, loc, p,
                                     arith::SubFOp::create(b, loc, dp, delta))};
  }
  case Normalize::softplus: {
    // p = softplus(u) / l with l = exp(lse) the row sum: dp/du is
    // sigmoid(u) / l, and the row sum's share gives
    // du = (dp - delta) sigmoid(u) / l.
    Value invL =
        math::ExpOp::create(b, loc, arith::NegFOp::create(b, loc, lse));
    Value p =
        arith::MulFOp::create(b, loc, normalizeScore(b, loc, norm, u), invL);
    return {p, arith::MulFOp::create(
                   b, loc, arith::SubFOp::create(b, loc, dp, delta),
                   arith::MulFOp::create(b, loc, sigmoid(u), invL))};
  }
  case Normalize::sigmoid: {
    Value p = sigmoid(u);
    return {p, arith::MulFOp::create(
                   b, loc, dp,
                   arith::MulFOp::create(b, loc, p,
                                         arith::SubFOp::create(b, loc, one,
                                                               p)))};
  }
  case Normalize::relu:
  case Normalize::relu2: {
    // Derivative 0 at 0 (DSL.md).
    Value pos =
        arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OGT, u, zero);
    Value r = arith::MaximumFOp::create(b, loc, u, zero);
    bool squared = norm == Normalize::relu2;
    Value p = squared ? arith::MulFOp::create(b, loc, r, r).getResult() : r;
    Value slope = squared
                      ? arith::MulFOp::create(b, loc, constant(2.0f), r)
                            .getResult()
                      : one;
    return {p, arith::SelectOp::create(
                   b, loc, pos, arith::MulFOp::create(b, loc, dp, slope),
                   zero)};
  }
  case Normalize::laplace: {
    // dp/du is the normal density at u: sqrt 2 exp(-z^2) (kLaplaceMean).
    Value z = arith::MulFOp::create(
        b, loc,
        arith::SubFOp::create(b, loc, u,
                              constant(static_cast<float>(kLaplaceMean))),
        constant(static_cast<float>(kLaplaceErfScale)));
    Value density = arith::MulFOp::create(
        b, loc, constant(static_cast<float>(std::sqrt(2.0))),
        math::ExpOp::create(
            b, loc,
            arith::NegFOp::create(b, loc, arith::MulFOp::create(b, loc, z, z))));
    return {normalizeScore(b, loc, norm, u),
            arith::MulFOp::create(b, loc, dp, density)};
  }
  }
  llvm_unreachable("unknown normalizer");
}

EntryAdjoint mlir::attn::keptNormalizerAdjoint(OpBuilder &b, Location loc,
                                               Normalize norm, Value u,
                                               Value dp, Value lse, Value delta,
                                               Value kept) {
  FloatType f32 = b.getF32Type();
  if (hasRowSum(norm))
    kept = arith::AndIOp::create(
        b, loc, kept,
        arith::CmpFOp::create(
            b, loc, arith::CmpFPredicate::OGT, lse,
            arith::ConstantFloatOp::create(b, loc, f32, APFloat(-INFINITY))));
  auto [p, du] = normalizerAdjoint(b, loc, norm, u, dp, lse, delta);
  Value zero = arith::ConstantFloatOp::create(b, loc, f32, APFloat(0.0f));
  return {arith::SelectOp::create(b, loc, kept, p, zero),
          arith::SelectOp::create(b, loc, kept, du, zero), kept};
}
