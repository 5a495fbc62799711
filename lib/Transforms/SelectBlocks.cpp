//===- SelectBlocks.cpp - pieces of the select pre-pass every target shares
//===//
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
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"

#include <cmath>
#include <tuple>

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
  Value total =
      arith::MulIOp::create(b, loc, arith::SubIOp::create(b, loc, qe, qs), nk);
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
    auto [lo, hi] =
        splitInt4Codes(b, loc, load(b, arith::DivUIOp::create(b, loc, d, two)));
    Value odd =
        arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ne,
                              arith::RemUIOp::create(b, loc, d, two),
                              arith::ConstantIndexOp::create(b, loc, 0));
    code = arith::SelectOp::create(b, loc, odd, hi, lo);
  } else {
    code = load(b, d);
  }
  return arith::MulFOp::create(b, loc, decodeKVCode(b, loc, kind, code), scale);
}

void attn::emitMassSelection(OpBuilder &b, Location loc,
                             const MassSelection &sel) {
  auto cIdx = [&](OpBuilder &b, int64_t v) {
    return arith::ConstantIndexOp::create(b, loc, v).getResult();
  };
  auto cI32 = [&](OpBuilder &b, int64_t v) {
    return arith::ConstantIntOp::create(b, loc, v, 32).getResult();
  };
  auto cF32 = [&](OpBuilder &b, double v) {
    return arith::ConstantFloatOp::create(b, loc, b.getF32Type(),
                                          APFloat(static_cast<float>(v)))
        .getResult();
  };
  auto toI32 = [&](OpBuilder &b, Value index) {
    return arith::IndexCastOp::create(b, loc, b.getI32Type(), index)
        .getResult();
  };
  Value numBlocks = sel.numBlocks, mass = sel.mass, mSafe = sel.mSafe,
        total = sel.total, sortScore = sel.sortScore, sortKey = sel.sortKey;
  auto is = [&](OpBuilder &b, arith::CmpIPredicate p, Value x, Value y) {
    return arith::CmpIOp::create(b, loc, p, x, y).getResult();
  };
  // Keys: (1 << 30 for ineligible blocks and padding) | block index.
  Value late = cI32(b, 1 << 30), indexBits = cI32(b, (1 << 30) - 1);
  auto loadAt = [&](OpBuilder &b, Value buf, Value i) {
    return memref::LoadOp::create(b, loc, buf, ValueRange{i}).getResult();
  };
  // The sort's size: the next power of two.
  Value size =
      scf::WhileOp::create(
          b, loc, TypeRange{b.getIndexType()}, ValueRange{cIdx(b, 1)},
          [&](OpBuilder &b, Location, ValueRange a) {
            scf::ConditionOp::create(
                b, loc, is(b, arith::CmpIPredicate::ult, a[0], numBlocks), a);
          },
          [&](OpBuilder &b, Location, ValueRange a) {
            scf::YieldOp::create(
                b, loc,
                ValueRange{arith::MulIOp::create(b, loc, a[0], cIdx(b, 2))});
          })
          .getResult(0);
  sel.forEach(b, size, [&](OpBuilder &b, Value i) {
    Value real = is(b, arith::CmpIPredicate::ult, i, numBlocks);
    Value safe = arith::MinUIOp::create(
        b, loc, i,
        arith::SubIOp::create(
            b, loc, arith::MaxUIOp::create(b, loc, numBlocks, cIdx(b, 1)),
            cIdx(b, 1)));
    Value e = arith::AndIOp::create(b, loc, real, sel.eligibleAt(b, safe));
    Value s = arith::SelectOp::create(b, loc, e, sel.scoreAt(b, safe),
                                      cF32(b, -INFINITY));
    Value key = arith::OrIOp::create(
        b, loc, toI32(b, i),
        arith::SelectOp::create(b, loc, e, cI32(b, 0), late));
    memref::StoreOp::create(b, loc, s, sortScore, ValueRange{i});
    memref::StoreOp::create(b, loc, key, sortKey, ValueRange{i});
  });
  sel.barrier(b);
  // a goes before c: eligible first, then the higher score, then the
  // lower index.
  auto before = [&](OpBuilder &b, Value sa, Value ka, Value sc, Value kc) {
    Value la = arith::AndIOp::create(b, loc, ka, late),
          lc = arith::AndIOp::create(b, loc, kc, late);
    Value byScore = arith::OrIOp::create(
        b, loc,
        arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OGT, sa, sc),
        arith::AndIOp::create(
            b, loc,
            arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, sa, sc),
            is(b, arith::CmpIPredicate::ult,
               arith::AndIOp::create(b, loc, ka, indexBits),
               arith::AndIOp::create(b, loc, kc, indexBits))));
    return arith::OrIOp::create(
               b, loc, is(b, arith::CmpIPredicate::ult, la, lc),
               arith::AndIOp::create(
                   b, loc, is(b, arith::CmpIPredicate::eq, la, lc), byScore))
        .getResult();
  };
  // Bitonic: for k = 2, 4, ..., size; for j = k / 2, ..., 1.
  scf::WhileOp::create(
      b, loc, TypeRange{b.getIndexType()}, ValueRange{cIdx(b, 2)},
      [&](OpBuilder &b, Location, ValueRange a) {
        scf::ConditionOp::create(
            b, loc, is(b, arith::CmpIPredicate::ule, a[0], size), a);
      },
      [&](OpBuilder &b, Location, ValueRange a) {
        Value k = a[0];
        forEachHalving(b, loc, arith::DivUIOp::create(b, loc, k, cIdx(b, 2)),
                       [&](OpBuilder &b, Value j) {
                         sel.forEach(b, size, [&](OpBuilder &b, Value i) {
                           Value l = arith::XOrIOp::create(b, loc, i, j);
                           scf::IfOp::create(
                               b, loc, is(b, arith::CmpIPredicate::ugt, l, i),
                               [&](OpBuilder &b, Location) {
                                 Value si = loadAt(b, sortScore, i),
                                       ki = loadAt(b, sortKey, i);
                                 Value sl = loadAt(b, sortScore, l),
                                       kl = loadAt(b, sortKey, l);
                                 Value up =
                                     is(b, arith::CmpIPredicate::eq,
                                        arith::AndIOp::create(b, loc, i, k),
                                        cIdx(b, 0));
                                 // Up: l's entry goes first if it is before
                                 // i's; down: the other way round.
                                 Value swap = arith::SelectOp::create(
                                     b, loc, up, before(b, sl, kl, si, ki),
                                     before(b, si, ki, sl, kl));
                                 scf::IfOp::create(
                                     b, loc, swap, [&](OpBuilder &b, Location) {
                                       for (auto [buf, x, y] :
                                            {std::tuple{sortScore, si, sl},
                                             std::tuple{sortKey, ki, kl}}) {
                                         memref::StoreOp::create(b, loc, y, buf,
                                                                 ValueRange{i});
                                         memref::StoreOp::create(b, loc, x, buf,
                                                                 ValueRange{l});
                                       }
                                       scf::YieldOp::create(b, loc);
                                     });
                                 scf::YieldOp::create(b, loc);
                               });
                         });
                         sel.barrier(b);
                       });
        scf::YieldOp::create(
            b, loc, ValueRange{arith::MulIOp::create(b, loc, k, cIdx(b, 2))});
      });
  // One walk takes eligible blocks in order while their shares sum below
  // P.
  sel.single(b, [&](OpBuilder &b) {
    scf::WhileOp::create(
        b, loc, TypeRange{b.getIndexType(), b.getF32Type()},
        ValueRange{cIdx(b, 0), cF32(b, 0.0)},
        [&](OpBuilder &b, Location, ValueRange a) {
          Value inRange = is(b, arith::CmpIPredicate::ult, a[0], numBlocks);
          Value p = arith::MinUIOp::create(
              b, loc, a[0],
              arith::SubIOp::create(
                  b, loc, arith::MaxUIOp::create(b, loc, numBlocks, cIdx(b, 1)),
                  cIdx(b, 1)));
          Value eligibleHere =
              is(b, arith::CmpIPredicate::eq,
                 arith::AndIOp::create(b, loc, loadAt(b, sortKey, p), late),
                 cI32(b, 0));
          Value more = arith::AndIOp::create(
              b, loc, arith::AndIOp::create(b, loc, inRange, eligibleHere),
              arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OLT, a[1],
                                    mass));
          scf::ConditionOp::create(b, loc, more, a);
        },
        [&](OpBuilder &b, Location, ValueRange a) {
          Value kb = arith::IndexCastOp::create(
              b, loc, b.getIndexType(),
              arith::AndIOp::create(b, loc, loadAt(b, sortKey, a[0]),
                                    indexBits));
          sel.keep(b, kb);
          Value share = arith::DivFOp::create(
              b, loc,
              math::ExpOp::create(
                  b, loc,
                  arith::SubFOp::create(b, loc, loadAt(b, sortScore, a[0]),
                                        mSafe)),
              total);
          scf::YieldOp::create(
              b, loc,
              ValueRange{arith::AddIOp::create(b, loc, a[0], cIdx(b, 1)),
                         arith::AddFOp::create(b, loc, a[1], share)});
        });
  });
}

void attn::forEachHalving(OpBuilder &b, Location loc, Value start,
                          llvm::function_ref<void(OpBuilder &, Value)> body) {
  Type idx = b.getIndexType();
  Value zero = arith::ConstantIndexOp::create(b, loc, 0);
  Value two = arith::ConstantIndexOp::create(b, loc, 2);
  scf::WhileOp::create(
      b, loc, TypeRange{idx}, ValueRange{start},
      [&](OpBuilder &b, Location, ValueRange a) {
        scf::ConditionOp::create(
            b, loc,
            arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ugt, a[0],
                                  zero),
            a);
      },
      [&](OpBuilder &b, Location, ValueRange a) {
        body(b, a[0]);
        scf::YieldOp::create(
            b, loc, ValueRange{arith::DivUIOp::create(b, loc, a[0], two)});
      });
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
