//===- TileWalk.cpp - key tiles by class, written once --------------------===//
#include "lib/Transforms/TileWalk.h"

#include "lib/Transforms/Transforms.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

using namespace mlir;
using namespace mlir::attn;

namespace {
Value cIdx(OpBuilder &b, Location loc, int64_t v) {
  return arith::ConstantIndexOp::create(b, loc, v);
}
Value cI32(OpBuilder &b, Location loc, int64_t v) {
  return arith::ConstantIntOp::create(b, loc, v, 32);
}
Value isClass(OpBuilder &b, Location loc, Value cls, int32_t c) {
  return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, cls,
                               cI32(b, loc, c));
}
} // namespace

Value mlir::attn::classifyBlock(OpBuilder &b, Location loc, AttentionOp op,
                                RegionInliner &regions,
                                const TileBlock &block) {
  if (!op.hasClassify())
    return cI32(b, loc, op.hasMask() ? kTilePartial : kTileFull);
  return regions.inlineRegion(b, op.getClassify(),
                              {block.batch, block.hLo, block.hHi, block.qLo,
                               block.qHi, block.kLo, block.kHi});
}

Value mlir::attn::classifyMappedTiles(OpBuilder &b, Location loc, Value map,
                                      Value batch, Value head, Value qTile,
                                      Value lo, Value hi) {
  Value one = cIdx(b, loc, 1);
  auto clampTo = [&](Value i, unsigned d) {
    Value last = arith::SubIOp::create(
        b, loc, memref::DimOp::create(b, loc, map, d), one);
    return arith::MinUIOp::create(b, loc, i, last);
  };
  Value mb = clampTo(batch, 0), mh = clampTo(head, 1);
  Value fls = arith::ConstantIntOp::create(b, loc, 0, 1);
  Value tru = arith::ConstantIntOp::create(b, loc, 1, 1);
  // (any tile kept, every tile FULL)
  auto scan = scf::ForOp::create(
      b, loc, lo, hi, one, ValueRange{fls, tru},
      [&](OpBuilder &b, Location, Value t, ValueRange acc) {
        Value c =
            memref::LoadOp::create(b, loc, map, ValueRange{mb, mh, qTile, t});
        auto eq = [&](int32_t k) {
          return arith::CmpIOp::create(
              b, loc, arith::CmpIPredicate::eq, c,
              arith::ConstantIntOp::create(b, loc, k, 8));
        };
        Value kept = arith::OrIOp::create(
            b, loc, acc[0],
            arith::XOrIOp::create(b, loc, eq(kTileEmpty),
                                  arith::ConstantIntOp::create(b, loc, 1, 1)));
        Value full = arith::AndIOp::create(b, loc, acc[1], eq(kTileFull));
        scf::YieldOp::create(b, loc, ValueRange{kept, full});
      });
  return arith::SelectOp::create(
      b, loc, scan.getResult(0),
      arith::SelectOp::create(b, loc, scan.getResult(1),
                              cI32(b, loc, kTileFull),
                              cI32(b, loc, kTilePartial)),
      cI32(b, loc, kTileEmpty));
}

Value mlir::attn::partialWhere(OpBuilder &b, Location loc, Value cls,
                               Value ragged) {
  return arith::SelectOp::create(
      b, loc,
      arith::AndIOp::create(b, loc, ragged,
                            arith::CmpIOp::create(b, loc,
                                                  arith::CmpIPredicate::eq, cls,
                                                  cI32(b, loc, kTileFull))),
      cI32(b, loc, kTilePartial), cls);
}

Value mlir::attn::isVisitedClass(OpBuilder &b, Location loc, Value cls) {
  return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ne, cls,
                               cI32(b, loc, kTileEmpty));
}

Value mlir::attn::classifyTileBefore(
    OpBuilder &b, Location loc, Value t, Value end,
    llvm::function_ref<Value(OpBuilder &, Value)> classify) {
  Value exists =
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, t, end);
  auto ifOp = scf::IfOp::create(
      b, loc, exists,
      [&](OpBuilder &b, Location) {
        scf::YieldOp::create(b, loc, classify(b, t));
      },
      [&](OpBuilder &b, Location) {
        scf::YieldOp::create(b, loc, cI32(b, loc, kTileEmpty));
      });
  return ifOp.getResult(0);
}

namespace {

/// The bisection: a stack of tile ranges in memory (the branches then need
/// no results), lower halves on top so tiles run in order. 64 entries hold
/// any range: each split leaves one entry more and halves the range.
void walkBisecting(
    OpBuilder &b, Location loc, Value begin, Value end,
    llvm::function_ref<Value(OpBuilder &, Value, Value)> classifyRange,
    llvm::function_ref<void(OpBuilder &, const TileVisit &)> visit) {
  Type idx = b.getIndexType();
  auto stackType = MemRefType::get({64}, idx);
  Value stackLo = memref::AllocaOp::create(b, loc, stackType);
  Value stackHi = memref::AllocaOp::create(b, loc, stackType);
  Value zero = cIdx(b, loc, 0), one = cIdx(b, loc, 1), two = cIdx(b, loc, 2);
  memref::StoreOp::create(b, loc, begin, stackLo, ValueRange{zero});
  memref::StoreOp::create(b, loc, end, stackHi, ValueRange{zero});
  Value haveTiles =
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ugt, end, begin);
  Value initSp = arith::SelectOp::create(b, loc, haveTiles, one, zero);
  Value spBuf = memref::AllocaOp::create(b, loc, MemRefType::get({}, idx));
  memref::StoreOp::create(b, loc, initSp, spBuf, ValueRange{});
  scf::WhileOp::create(
      b, loc, TypeRange{}, ValueRange{},
      [&](OpBuilder &b, Location, ValueRange) {
        Value sp = memref::LoadOp::create(b, loc, spBuf, ValueRange{});
        Value more =
            arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ugt, sp, zero);
        scf::ConditionOp::create(b, loc, more, ValueRange{});
      },
      [&](OpBuilder &b, Location, ValueRange) {
        Value sp = memref::LoadOp::create(b, loc, spBuf, ValueRange{});
        Value top = arith::SubIOp::create(b, loc, sp, one);
        memref::StoreOp::create(b, loc, top, spBuf, ValueRange{});
        Value lo = memref::LoadOp::create(b, loc, stackLo, ValueRange{top});
        Value hi = memref::LoadOp::create(b, loc, stackHi, ValueRange{top});
        Value cls = classifyRange(b, lo, hi);
        Value full = isClass(b, loc, cls, kTileFull),
              partial = isClass(b, loc, cls, kTilePartial);
        Value single =
            arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq,
                                  arith::SubIOp::create(b, loc, hi, lo), one);
        Value visitRange = arith::OrIOp::create(
            b, loc, full, arith::AndIOp::create(b, loc, partial, single));
        Value split = arith::AndIOp::create(
            b, loc, partial,
            arith::XOrIOp::create(b, loc, single,
                                  arith::ConstantIntOp::create(b, loc, 1, 1)));
        scf::IfOp::create(b, loc, visitRange, [&](OpBuilder &b, Location) {
          scf::ForOp::create(b, loc, lo, hi, cIdx(b, loc, 1), ValueRange{},
                             [&](OpBuilder &b, Location, Value t, ValueRange) {
                               visit(b, {t, cls, full});
                               scf::YieldOp::create(b, loc);
                             });
          scf::YieldOp::create(b, loc);
        });
        // A PARTIAL range of several tiles splits in two, lower half on top;
        // an EMPTY range is dropped.
        scf::IfOp::create(b, loc, split, [&](OpBuilder &b, Location) {
          Value mid = arith::DivUIOp::create(
              b, loc, arith::AddIOp::create(b, loc, lo, hi), two);
          Value next = arith::AddIOp::create(b, loc, top, one);
          memref::StoreOp::create(b, loc, mid, stackLo, ValueRange{top});
          memref::StoreOp::create(b, loc, hi, stackHi, ValueRange{top});
          memref::StoreOp::create(b, loc, lo, stackLo, ValueRange{next});
          memref::StoreOp::create(b, loc, mid, stackHi, ValueRange{next});
          memref::StoreOp::create(b, loc,
                                  arith::AddIOp::create(b, loc, top, two),
                                  spBuf, ValueRange{});
          scf::YieldOp::create(b, loc);
        });
        scf::YieldOp::create(b, loc, ValueRange{});
      });
}

} // namespace

void mlir::attn::walkKeyTilesBisecting(
    OpBuilder &b, Location loc, Value begin, Value end,
    llvm::function_ref<Value(OpBuilder &, Value, Value)> classifyRange,
    llvm::function_ref<void(OpBuilder &, const TileVisit &)> visit) {
  if (classifyRange) {
    walkBisecting(b, loc, begin, end, classifyRange, visit);
    return;
  }
  scf::ForOp::create(b, loc, begin, end, cIdx(b, loc, 1), ValueRange{},
                     [&](OpBuilder &b, Location, Value t, ValueRange) {
                       visit(b, {t, Value(), Value()});
                       scf::YieldOp::create(b, loc);
                     });
}

SmallVector<Value> mlir::attn::walkKeyTilesCarrying(
    OpBuilder &b, Location loc, Value begin, Value end, ValueRange init,
    llvm::function_ref<Value(OpBuilder &, Value t)> classify,
    llvm::function_ref<SmallVector<Value>(OpBuilder &, Value, Value,
                                          ValueRange)>
        body) {
  auto loop = scf::ForOp::create(
      b, loc, begin, end, cIdx(b, loc, 1), init,
      [&](OpBuilder &b, Location, Value t, ValueRange carried) {
        Value cls = classify(b, t);
        auto ifOp = scf::IfOp::create(
            b, loc, isVisitedClass(b, loc, cls),
            [&](OpBuilder &b, Location) {
              scf::YieldOp::create(b, loc, body(b, t, cls, carried));
            },
            [&](OpBuilder &b, Location) {
              scf::YieldOp::create(b, loc, carried);
            });
        scf::YieldOp::create(b, loc, ifOp.getResults());
      });
  return SmallVector<Value>(loop.getResults());
}

SmallVector<Value> mlir::attn::walkKeyTilesLookingAhead(
    OpBuilder &b, Location loc, Value begin, Value end, int64_t tileKeys,
    ValueRange init, llvm::function_ref<Value(OpBuilder &, Value t)> classify,
    const LookAheadSteps &steps) {
  Value firstCls = classifyTileBefore(b, loc, begin, end, classify);
  SmallVector<Value> loopInit = {firstCls};
  llvm::append_range(loopInit, steps.stage(b, begin, firstCls, ValueRange{}));
  size_t numStaged = loopInit.size() - 1;
  llvm::append_range(loopInit, init);
  auto loop = scf::ForOp::create(
      b, loc, begin, end, cIdx(b, loc, 1), loopInit,
      [&](OpBuilder &b, Location, Value t, ValueRange iter) {
        Value cls = iter[0];
        ValueRange staged = iter.slice(1, numStaged);
        ValueRange carried = iter.drop_front(1 + numStaged);
        if (steps.arrive)
          steps.arrive(b, t, cls, staged);
        Value nextT = arith::AddIOp::create(b, loc, t, cIdx(b, loc, 1));
        Value nextCls = classifyTileBefore(b, loc, nextT, end, classify);
        SmallVector<Value> yield = {nextCls};
        llvm::append_range(yield, steps.stage(b, nextT, nextCls, staged));
        Value k0 = arith::MulIOp::create(b, loc, t, cIdx(b, loc, tileKeys));
        auto ifOp = scf::IfOp::create(
            b, loc, isVisitedClass(b, loc, cls),
            [&](OpBuilder &b, Location) {
              scf::YieldOp::create(b, loc,
                                   steps.body(b, k0, cls, staged, carried));
            },
            [&](OpBuilder &b, Location) {
              scf::YieldOp::create(b, loc, carried);
            });
        llvm::append_range(yield, ifOp.getResults());
        scf::YieldOp::create(b, loc, yield);
      });
  return SmallVector<Value>(loop.getResults().drop_front(1 + numStaged));
}
