//===- SelectBlocks.cpp - the select pre-pass, once for every target ----===//
//
// See SelectBlocks.h. The CPU tiler and the GPU pre-pass kernels run the
// same rule through SelectWork: the CPU's loops and best-first rounds, GPU
// threads striding over blocks with a cross-thread argmax and a sort in
// shared memory, all taking blocks in selectGoesAhead's order.
//
//===----------------------------------------------------------------------===//
#include "lib/Transforms/SelectBlocks.h"
#include "lib/Transforms/Transforms.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

#include <cmath>
#include <tuple>

using namespace mlir;
using namespace mlir::attn;

namespace {

/// Whether a mask keeps any entry of queries [qs, qe) x keys [ks, ke) given
/// the classifier's verdict `cls` on that block: FULL yes, EMPTY no,
/// PARTIAL scans `maskAt(q, kv)` (i1) up to the first kept entry.
Value anyEntryKept(
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

} // namespace

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

namespace {

/// mass(P) by sorting (numBlocks >= 1): the blocks' (score, key) pairs go
/// into the sort buffers, a bitonic sort orders them eligible first, then
/// by selectGoesAhead, and one walk keeps blocks in that order while the
/// softmax shares exp(s - mSafe) / total kept so far sum below P: best
/// first, so the fewest blocks that reach P.
void emitMassBySort(OpBuilder &b, Location loc, const SelectBlocks &sel,
                    Value mass, Value mSafe, Value total) {
  const SelectWork &work = sel.work;
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
  Value numBlocks = sel.numBlocks, sortScore = sel.sortScore,
        sortKey = sel.sortKey;
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
  work.forEach(b, loc, size, [&](OpBuilder &b, Value i) {
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
  work.barrier(b);
  // a goes before c: eligible first, then selectGoesAhead.
  auto before = [&](OpBuilder &b, Value sa, Value ka, Value sc, Value kc) {
    Value la = arith::AndIOp::create(b, loc, ka, late),
          lc = arith::AndIOp::create(b, loc, kc, late);
    Value byScore = selectGoesAhead(
        b, loc, sa, arith::AndIOp::create(b, loc, ka, indexBits), sc,
        arith::AndIOp::create(b, loc, kc, indexBits));
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
                         work.forEach(b, loc, size, [&](OpBuilder &b, Value i) {
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
                         work.barrier(b);
                       });
        scf::YieldOp::create(
            b, loc, ValueRange{arith::MulIOp::create(b, loc, k, cIdx(b, 2))});
      });
  // One walk takes eligible blocks in order while their shares sum below
  // P.
  work.single(b, [&](OpBuilder &b) {
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

/// mass(P) by ranking: each block counts the softmax shares of the eligible
/// blocks that go ahead of it and is kept while they sum below P (any
/// number of blocks; O(blocks^2) work, spread over the workers).
void emitMassByRank(OpBuilder &b, Location loc, const SelectBlocks &sel,
                    Value mass, Value mSafe, Value total) {
  auto cF32 = [&](OpBuilder &b, double v) {
    return arith::ConstantFloatOp::create(b, loc, b.getF32Type(),
                                          APFloat(static_cast<float>(v)))
        .getResult();
  };
  Value numBlocks = sel.numBlocks;
  sel.work.forEach(b, loc, numBlocks, [&](OpBuilder &b, Value kb) {
    Value e = sel.eligibleAt(b, kb);
    Value s = sel.scoreAt(b, kb);
    auto ahead = scf::ForOp::create(
        b, loc, arith::ConstantIndexOp::create(b, loc, 0), numBlocks,
        arith::ConstantIndexOp::create(b, loc, 1), ValueRange{cF32(b, 0.0)},
        [&](OpBuilder &b, Location, Value j, ValueRange a) {
          Value sj = sel.scoreAt(b, j);
          Value better = arith::AndIOp::create(
              b, loc, selectGoesAhead(b, loc, sj, j, s, kb),
              sel.eligibleAt(b, j));
          Value next = arith::AddFOp::create(
              b, loc, a[0],
              arith::SelectOp::create(
                  b, loc, better,
                  math::ExpOp::create(
                      b, loc, arith::SubFOp::create(b, loc, sj, mSafe)),
                  cF32(b, 0.0)));
          scf::YieldOp::create(b, loc, ValueRange{next});
        });
    Value under = arith::CmpFOp::create(
        b, loc, arith::CmpFPredicate::OLT,
        arith::DivFOp::create(b, loc, ahead.getResult(0), total), mass);
    scf::IfOp::create(b, loc, arith::AndIOp::create(b, loc, e, under),
                      [&](OpBuilder &b, Location) {
                        sel.keep(b, kb);
                        scf::YieldOp::create(b, loc);
                      });
  });
}

/// topk(K): K rounds of "keep the best open block". Each worker scans its
/// blocks in index order, taking the first open one and then strictly
/// higher scores (selectGoesAhead over rising indices); bestOfWorkers
/// picks the round's winner among the workers' candidates.
void emitTopk(OpBuilder &b, Location loc, const SelectBlocks &sel, Value arg) {
  const SelectWork &work = sel.work;
  Value numBlocks = sel.numBlocks;
  Value zero = arith::ConstantIndexOp::create(b, loc, 0);
  Value one = arith::ConstantIndexOp::create(b, loc, 1);
  Value rounds = arith::MinUIOp::create(b, loc, selectTopkCount(b, loc, arg),
                                        numBlocks);
  Value tru = arith::ConstantIntOp::create(b, loc, 1, 1);
  scf::ForOp::create(
      b, loc, zero, rounds, one, ValueRange{},
      [&](OpBuilder &b, Location, Value, ValueRange) {
        Value noScore = arith::ConstantFloatOp::create(
            b, loc, b.getF32Type(), APFloat(-INFINITY));
        auto local = scf::ForOp::create(
            b, loc, work.first, numBlocks, work.step,
            ValueRange{numBlocks, noScore},
            [&](OpBuilder &b, Location, Value kb, ValueRange best) {
              Value open = arith::AndIOp::create(
                  b, loc, sel.eligibleAt(b, kb),
                  arith::XOrIOp::create(b, loc, sel.keptAt(b, kb), tru));
              Value s = sel.scoreAt(b, kb);
              Value better = arith::OrIOp::create(
                  b, loc,
                  arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq,
                                        best[0], numBlocks),
                  arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OGT, s,
                                        best[1]));
              Value take = arith::AndIOp::create(b, loc, open, better);
              scf::YieldOp::create(
                  b, loc,
                  ValueRange{
                      arith::SelectOp::create(b, loc, take, kb, best[0]),
                      arith::SelectOp::create(b, loc, take, s, best[1])});
            });
        Value winner =
            sel.bestOfWorkers(b, local.getResult(0), local.getResult(1));
        work.single(b, [&](OpBuilder &b) {
          Value found = arith::CmpIOp::create(
              b, loc, arith::CmpIPredicate::ult, winner, numBlocks);
          scf::IfOp::create(b, loc, found, [&](OpBuilder &b, Location) {
            sel.keep(b, winner);
            scf::YieldOp::create(b, loc);
          });
        });
        work.barrier(b);
        scf::YieldOp::create(b, loc);
      });
}

/// mass(P): the softmax over the pooled scores (ineligible blocks score
/// -inf), then the fewest best blocks whose shares reach P, sorted where
/// the buffers hold the blocks, else ranked.
void emitMass(OpBuilder &b, Location loc, const SelectBlocks &sel,
              Value mass) {
  auto cF32 = [&](OpBuilder &b, double v) {
    return arith::ConstantFloatOp::create(b, loc, b.getF32Type(),
                                          APFloat(static_cast<float>(v)))
        .getResult();
  };
  Value numBlocks = sel.numBlocks;
  Value zero = arith::ConstantIndexOp::create(b, loc, 0);
  Value one = arith::ConstantIndexOp::create(b, loc, 1);
  auto reduce = [&](bool sumExp, Value m) {
    return scf::ForOp::create(
               b, loc, zero, numBlocks, one,
               ValueRange{cF32(b, sumExp ? 0.0 : -INFINITY)},
               [&](OpBuilder &b, Location, Value kb, ValueRange acc) {
                 Value s = sel.scoreAt(b, kb);
                 Value r =
                     sumExp
                         ? arith::AddFOp::create(
                               b, loc, acc[0],
                               math::ExpOp::create(
                                   b, loc, arith::SubFOp::create(b, loc, s, m)))
                               .getResult()
                         : arith::MaximumFOp::create(b, loc, acc[0], s)
                               .getResult();
                 scf::YieldOp::create(b, loc, ValueRange{r});
               })
        .getResult(0);
  };
  Value m = reduce(false, Value());
  Value mSafe = arith::SelectOp::create(
      b, loc,
      arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, m,
                            cF32(b, -INFINITY)),
      cF32(b, 0.0), m);
  Value total = reduce(true, mSafe);
  Value some =
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ugt, numBlocks, zero);
  if (!sel.sortCapacity) {
    scf::IfOp::create(b, loc, some, [&](OpBuilder &b, Location) {
      emitMassBySort(b, loc, sel, mass, mSafe, total);
      scf::YieldOp::create(b, loc);
    });
    return;
  }
  Value fits = arith::AndIOp::create(
      b, loc,
      arith::CmpIOp::create(
          b, loc, arith::CmpIPredicate::ule, numBlocks,
          arith::ConstantIndexOp::create(b, loc, *sel.sortCapacity)),
      some);
  scf::IfOp::create(
      b, loc, fits,
      [&](OpBuilder &b, Location) {
        emitMassBySort(b, loc, sel, mass, mSafe, total);
        scf::YieldOp::create(b, loc);
      },
      [&](OpBuilder &b, Location) {
        emitMassByRank(b, loc, sel, mass, mSafe, total);
        scf::YieldOp::create(b, loc);
      });
}

} // namespace

void SelectWork::forEach(
    OpBuilder &b, Location loc, Value end,
    llvm::function_ref<void(OpBuilder &, Value)> body) const {
  scf::ForOp::create(b, loc, first, end, step, ValueRange{},
                     [&](OpBuilder &b, Location, Value i, ValueRange) {
                       body(b, i);
                       scf::YieldOp::create(b, loc);
                     });
}

void attn::emitPooledRows(
    OpBuilder &b, Location loc, const SelectWork &work, int64_t D, Value s,
    Value e, llvm::function_ref<Value(OpBuilder &, Value, Value)> element,
    llvm::function_ref<void(OpBuilder &, Value, Value)> store,
    llvm::function_ref<Value(OpBuilder &, Value)> load) {
  FloatType f32 = b.getF32Type();
  auto cF32 = [&](OpBuilder &b, float v) {
    return arith::ConstantFloatOp::create(b, loc, f32, APFloat(v))
        .getResult();
  };
  Value rows = arith::UIToFPOp::create(
      b, loc, f32,
      arith::IndexCastOp::create(b, loc, b.getI64Type(),
                                 arith::SubIOp::create(b, loc, e, s)));
  Value inv = arith::DivFOp::create(b, loc, cF32(b, 1.0f), rows);
  Value columns = arith::ConstantIndexOp::create(b, loc, D);
  Value one = arith::ConstantIndexOp::create(b, loc, 1);
  if (!load) {
    work.forEach(b, loc, columns, [&](OpBuilder &b, Value d) {
      auto sum = scf::ForOp::create(
          b, loc, s, e, one, ValueRange{cF32(b, 0.0f)},
          [&](OpBuilder &b, Location, Value r, ValueRange acc) {
            scf::YieldOp::create(
                b, loc,
                ValueRange{
                    arith::AddFOp::create(b, loc, acc[0], element(b, r, d))});
          });
      store(b, d, arith::MulFOp::create(b, loc, sum.getResult(0), inv));
    });
    return;
  }
  work.forEach(b, loc, columns,
               [&](OpBuilder &b, Value d) { store(b, d, cF32(b, 0.0f)); });
  scf::ForOp::create(
      b, loc, s, e, one, ValueRange{},
      [&](OpBuilder &b, Location, Value r, ValueRange) {
        work.forEach(b, loc, columns, [&](OpBuilder &b, Value d) {
          Value acc = load(b, d);
          store(b, d, arith::AddFOp::create(b, loc, acc, element(b, r, d)));
        });
        scf::YieldOp::create(b, loc);
      });
  work.forEach(b, loc, columns, [&](OpBuilder &b, Value d) {
    Value sum = load(b, d);
    store(b, d, arith::MulFOp::create(b, loc, sum, inv));
  });
}

Value attn::selectGoesAhead(OpBuilder &b, Location loc, Value sa, Value ia,
                            Value sc, Value ic) {
  return arith::OrIOp::create(
      b, loc, arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OGT, sa, sc),
      arith::AndIOp::create(
          b, loc,
          arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, sa, sc),
          arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, ia, ic)));
}

Value attn::selectEligible(
    OpBuilder &b, Location loc, AttentionOp op, Value b32, Value h32,
    Value qs, Value qe, Value ks, Value ke,
    llvm::function_ref<Value(OpBuilder &, Region &, ValueRange)>
        inlineRegion) {
  if (!op.hasMask())
    return arith::ConstantIntOp::create(b, loc, 1, 1);
  auto toI32 = [&](OpBuilder &b, Value index) {
    return arith::IndexCastOp::create(b, loc, b.getI32Type(), index)
        .getResult();
  };
  Value one = arith::ConstantIndexOp::create(b, loc, 1);
  Value cls =
      op.hasClassify()
          ? inlineRegion(
                b, op.getClassify(),
                {b32, h32, h32, toI32(b, qs),
                 toI32(b, arith::SubIOp::create(b, loc, qe, one)),
                 toI32(b, ks),
                 toI32(b, arith::SubIOp::create(b, loc, ke, one))})
          : arith::ConstantIntOp::create(b, loc, kTilePartial, 32).getResult();
  return anyEntryKept(b, loc, cls, qs, qe, ks, ke,
                      [&](OpBuilder &b, Value q, Value kv) {
                        return inlineRegion(
                            b, op.getMask(),
                            {b32, h32, toI32(b, q), toI32(b, kv)});
                      });
}

void attn::emitSelectBlocks(OpBuilder &b, Location loc, SelectKind kind,
                            Value arg, const SelectBlocks &sel) {
  const SelectWork &work = sel.work;
  Value numBlocks = sel.numBlocks;
  int64_t N = sel.blockSize;
  auto cIdx = [&](OpBuilder &b, int64_t v) {
    return arith::ConstantIndexOp::create(b, loc, v).getResult();
  };
  auto cF32 = [&](OpBuilder &b, double v) {
    return arith::ConstantFloatOp::create(b, loc, b.getF32Type(),
                                          APFloat(static_cast<float>(v)))
        .getResult();
  };
  // Each key block's eligibility and pooled score.
  work.forEach(b, loc, numBlocks, [&](OpBuilder &b, Value kb) {
    Value ks = arith::MulIOp::create(b, loc, kb, cIdx(b, N));
    Value ke = arith::MinUIOp::create(
        b, loc, arith::AddIOp::create(b, loc, ks, cIdx(b, N)), sel.seqKV);
    Value ok = sel.eligible(b, ks, ke);
    auto score = scf::IfOp::create(
        b, loc, ok,
        [&](OpBuilder &b, Location) {
          auto dot = scf::ForOp::create(
              b, loc, cIdx(b, 0), cIdx(b, sel.D), cIdx(b, 1),
              ValueRange{cF32(b, 0.0)},
              [&](OpBuilder &b, Location, Value d, ValueRange acc) {
                Value x = arith::MulFOp::create(b, loc, sel.pooledQueryAt(b, d),
                                                sel.pooledKeyAt(b, kb, d));
                scf::YieldOp::create(
                    b, loc,
                    ValueRange{arith::AddFOp::create(b, loc, acc[0], x)});
              });
          scf::YieldOp::create(
              b, loc,
              ValueRange{arith::MulFOp::create(b, loc, dot.getResult(0),
                                               sel.scale)});
        },
        [&](OpBuilder &b, Location) {
          scf::YieldOp::create(b, loc, cF32(b, -INFINITY));
        });
    sel.record(b, kb, ok, score.getResult(0));
  });
  work.barrier(b);

  switch (kind) {
  case SelectKind::topk:
    emitTopk(b, loc, sel, arg);
    break;
  case SelectKind::mass:
    emitMass(b, loc, sel, arg);
    break;
  case SelectKind::above:
    work.forEach(b, loc, numBlocks, [&](OpBuilder &b, Value kb) {
      Value take = arith::AndIOp::create(
          b, loc, sel.eligibleAt(b, kb),
          arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OGT,
                                sel.scoreAt(b, kb), arg));
      scf::IfOp::create(b, loc, take, [&](OpBuilder &b, Location) {
        sel.keep(b, kb);
        scf::YieldOp::create(b, loc);
      });
    });
    break;
  }
  // The diagonal block (holding the block's last query in key positions)
  // is always kept.
  Value diag =
      selectDiagonalBlock(b, loc, sel.qe, sel.seqQ, sel.seqKV, N, numBlocks);
  work.single(b, [&](OpBuilder &b) {
    scf::IfOp::create(b, loc,
                      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ugt,
                                            numBlocks, cIdx(b, 0)),
                      [&](OpBuilder &b, Location) {
                        sel.keep(b, diag);
                        scf::YieldOp::create(b, loc);
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
