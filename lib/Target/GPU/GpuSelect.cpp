//===- GpuSelect.cpp - select's pre-pass kernels on GPUs ------------------===//
//
// select's pre-pass as two GPU kernels that both backends launch before
// the attention kernel (see buildSelectKernels in GpuKernel.h): the pool
// kernel's mean key per key block, then per query block the rule of
// SelectBlocks.h over the kernel's scratch maps.
//
//===----------------------------------------------------------------------===//
#include "lib/Target/GPU/GpuKernel.h"

#include "lib/Transforms/SelectBlocks.h"
#include "lib/Transforms/Transforms.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

using namespace mlir;
using namespace mlir::attn;
using namespace mlir::attn::gpukernel;

namespace {

/// mass(P) sorts up to this many key blocks per query block in shared
/// memory (32 KiB: a score and a key each); more fall back to ranking.
constexpr int64_t kSortBlocks = 4096;

/// How the pre-pass kernels spread work: threads stride over blocks and
/// columns (for (i = tid; i < end; i += blockDim.x), so the kernels also
/// run right with one thread: see driver::compileSelectPrePassForHost),
/// block-wide barriers between phases, thread 0 for the serial parts.
SelectWork threadWork(OpBuilder &b, Location loc) {
  SelectWork work;
  Value tid = gpu::ThreadIdOp::create(b, loc, gpu::Dimension::x);
  work.first = tid;
  work.step = gpu::BlockDimOp::create(b, loc, gpu::Dimension::x);
  work.barrier = [loc](OpBuilder &b) { gpu::BarrierOp::create(b, loc); };
  work.single = [loc, tid](OpBuilder &b,
                           llvm::function_ref<void(OpBuilder &)> body) {
    scf::IfOp::create(
        b, loc,
        arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, tid,
                              arith::ConstantIndexOp::create(b, loc, 0)),
        [&](OpBuilder &b, Location) {
          body(b);
          scf::YieldOp::create(b, loc);
        });
  };
  return work;
}

Value toF32(OpBuilder &b, Location loc, Value x) {
  return x.getType().isF32()
             ? x
             : arith::ExtFOp::create(b, loc, b.getF32Type(), x).getResult();
}

/// The per-query-block kernel of the pre-pass (see buildSelectKernels): the
/// rule of SelectBlocks.h over the kernel's scratch maps, the pooled query
/// in shared memory.
class SelectKernelBuilder : public KernelBase {
public:
  SelectKernelBuilder(AttentionOp op, IRMapping outside)
      : KernelBase(op, std::move(outside), *op.getSelectBlock(),
                   *op.getSelectBlock()) {}

  void emit(OpBuilder &b, gpu::GPUFuncOp func) {
    setUp(b, func, /*extraArgs=*/3);
    unsigned inputs = func.getFunctionType().getNumInputs();
    Value pooledK = func.getArgument(inputs - 3);
    Value scores = func.getArgument(inputs - 2);
    Value eligibleMap = func.getArgument(inputs - 1);
    Value pooledQ = func.getWorkgroupAttributions().front();
    int64_t N = BQ;
    SelectWork work = threadWork(b, loc);
    Value qb = gpu::BlockIdOp::create(b, loc, gpu::Dimension::x);
    Value qs = arith::MulIOp::create(b, loc, qb, cIdx(b, N));
    Value qe = arith::MinUIOp::create(b, loc, add(b, qs, N), seqQ);
    emitPooledRows(
        b, loc, work, D, qs, qe,
        [&](OpBuilder &b, Value r, Value d) {
          return toF32(b, loc,
                       memref::LoadOp::create(b, loc, q,
                                              ValueRange{bIdx, hIdx, r, d}));
        },
        [&](OpBuilder &b, Value d, Value mean) {
          memref::StoreOp::create(b, loc, mean, pooledQ, ValueRange{d});
        });
    work.barrier(b);

    auto at = [&](OpBuilder &b, Value map, Value kb) {
      return memref::LoadOp::create(b, loc, map,
                                    ValueRange{bIdx, hIdx, qb, kb})
          .getResult();
    };
    auto store = [&](OpBuilder &b, Value x, Value map, Value kb) {
      memref::StoreOp::create(b, loc, x, map, ValueRange{bIdx, hIdx, qb, kb});
    };
    auto flagAt = [&](OpBuilder &b, Value map, Value kb) {
      return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ne,
                                   at(b, map, kb),
                                   arith::ConstantIntOp::create(b, loc, 0, 8))
          .getResult();
    };
    SelectBlocks sel;
    sel.work = work;
    sel.blockSize = N;
    sel.D = D;
    sel.qs = qs;
    sel.qe = qe;
    sel.seqQ = seqQ;
    sel.seqKV = seqKV;
    sel.numBlocks = arith::CeilDivUIOp::create(b, loc, seqKV, cIdx(b, N));
    sel.scale = scale;
    sel.eligible = [&](OpBuilder &b, Value ks, Value ke) {
      return selectEligible(
          b, loc, op, b32, h32, qs, qe, ks, ke,
          [&](OpBuilder &b, Region &region, ValueRange args) {
            return regions.inlineRegion(b, region, args);
          });
    };
    sel.pooledQueryAt = [&](OpBuilder &b, Value d) -> Value {
      return memref::LoadOp::create(b, loc, pooledQ, ValueRange{d});
    };
    sel.pooledKeyAt = [&](OpBuilder &b, Value kb, Value d) -> Value {
      return memref::LoadOp::create(b, loc, pooledK,
                                    ValueRange{bIdx, hkvIdx, kb, d});
    };
    sel.record = [&](OpBuilder &b, Value kb, Value ok, Value score) {
      Type i8 = b.getI8Type();
      store(b, score, scores, kb);
      store(b, arith::ExtUIOp::create(b, loc, i8, ok), eligibleMap, kb);
      store(b, arith::ConstantIntOp::create(b, loc, 0, 8), keptMap, kb);
    };
    sel.eligibleAt = [&](OpBuilder &b, Value kb) {
      return flagAt(b, eligibleMap, kb);
    };
    sel.scoreAt = [&](OpBuilder &b, Value kb) { return at(b, scores, kb); };
    sel.keptAt = [&](OpBuilder &b, Value kb) { return flagAt(b, keptMap, kb); };
    sel.keep = [&](OpBuilder &b, Value kb) {
      store(b, arith::ConstantIntOp::create(b, loc, 1, 8), keptMap, kb);
    };
    SelectKind kind = *op.getSelect();
    if (kind == SelectKind::topk) {
      sel.bestOfWorkers = [&](OpBuilder &b, Value kb, Value score) {
        return bestOfThreads(b, func, work.first, sel.numBlocks, kb, score);
      };
    }
    if (kind == SelectKind::mass) {
      sel.sortScore = func.getWorkgroupAttributions()[1];
      sel.sortKey = func.getWorkgroupAttributions()[2];
      sel.sortCapacity = kSortBlocks;
    }
    Value arg = regions.inlineRegion(b, op.getSelectArg(), {});
    emitSelectBlocks(b, loc, kind, arg, sel);
  }

private:
  /// topk's round winner: each thread's candidate (index, numBlocks for
  /// none; score) into shared memory, then a tree of selectGoesAhead
  /// halving them until thread 0 holds the best. O(log threads) steps.
  Value bestOfThreads(OpBuilder &b, gpu::GPUFuncOp func, Value tid,
                      Value numBlocks, Value kb, Value score) {
    Value bestScore = func.getWorkgroupAttributions()[1];
    Value bestIndex = func.getWorkgroupAttributions()[2];
    Value threads = gpu::BlockDimOp::create(b, loc, gpu::Dimension::x);
    Value none = toI32(b, numBlocks);
    auto is = [&](OpBuilder &b, arith::CmpIPredicate p, Value x, Value y) {
      return arith::CmpIOp::create(b, loc, p, x, y).getResult();
    };
    memref::StoreOp::create(b, loc, toI32(b, kb), bestIndex, ValueRange{tid});
    memref::StoreOp::create(b, loc, score, bestScore, ValueRange{tid});
    gpu::BarrierOp::create(b, loc);
    forEachHalving(
        b, loc, arith::DivUIOp::create(b, loc, threads, cIdx(b, 2)),
        [&](OpBuilder &b, Value stride) {
          scf::IfOp::create(
              b, loc, is(b, arith::CmpIPredicate::ult, tid, stride),
              [&](OpBuilder &b, Location) {
                Value other = arith::AddIOp::create(b, loc, tid, stride);
                auto load = [&](Value buf, Value i) {
                  return memref::LoadOp::create(b, loc, buf, ValueRange{i})
                      .getResult();
                };
                Value ia = load(bestIndex, tid), sa = load(bestScore, tid);
                Value ic = load(bestIndex, other), sc = load(bestScore, other);
                Value wins = arith::AndIOp::create(
                    b, loc, is(b, arith::CmpIPredicate::ne, ic, none),
                    arith::OrIOp::create(
                        b, loc, is(b, arith::CmpIPredicate::eq, ia, none),
                        selectGoesAhead(b, loc, sc, ic, sa, ia)));
                memref::StoreOp::create(
                    b, loc, arith::SelectOp::create(b, loc, wins, ic, ia),
                    bestIndex, ValueRange{tid});
                memref::StoreOp::create(
                    b, loc, arith::SelectOp::create(b, loc, wins, sc, sa),
                    bestScore, ValueRange{tid});
                scf::YieldOp::create(b, loc);
              });
          gpu::BarrierOp::create(b, loc);
        });
    // (Read before the round's closing barrier; the next round's stores
    // come after it.)
    Value winner =
        memref::LoadOp::create(b, loc, bestIndex, ValueRange{cIdx(b, 0)});
    return arith::IndexCastOp::create(b, loc, b.getIndexType(), winner);
  }
};

/// The pool kernel of the pre-pass: grid (key blocks, Hkv, B), each block's
/// mean key, read through the page table and decoded (codes times K's
/// scales) as the CPU tiler's pre-pass reads it.
class PoolKernelBuilder : public KernelBase {
public:
  PoolKernelBuilder(AttentionOp op, IRMapping outside)
      : KernelBase(op, std::move(outside), *op.getSelectBlock(),
                   *op.getSelectBlock()) {}

  void emit(OpBuilder &b, gpu::GPUFuncOp func) {
    setUp(b, func, /*extraArgs=*/1);
    Value pooled =
        func.getArgument(func.getFunctionType().getNumInputs() - 1);
    // Here blockIdx.y is the K/V head.
    hkvIdx = gpu::BlockIdOp::create(b, loc, gpu::Dimension::y);
    int64_t N = BK;
    Value kb = gpu::BlockIdOp::create(b, loc, gpu::Dimension::x);
    SelectWork work = threadWork(b, loc);
    Value ks = arith::MulIOp::create(b, loc, kb, cIdx(b, N));
    Value ke = arith::MinUIOp::create(b, loc, add(b, ks, N), seqKV);
    // (Paged: blocks past this batch's length are never read.)
    Value some =
        arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, ks, ke);
    scf::IfOp::create(b, loc, some, [&](OpBuilder &b, Location) {
      emitPooledRows(
          b, loc, work, D, ks, ke,
          [&](OpBuilder &b, Value r, Value d) {
            return kvRows().keyElement(b, r, d, k, kScale);
          },
          [&](OpBuilder &b, Value d, Value mean) {
            memref::StoreOp::create(b, loc, mean, pooled,
                                    ValueRange{bIdx, hkvIdx, kb, d});
          });
      scf::YieldOp::create(b, loc);
    });
  }
};

} // namespace

std::pair<gpu::GPUFuncOp, gpu::GPUFuncOp>
gpukernel::buildSelectKernels(OpBuilder &b, AttentionOp op, StringRef name,
                              const KernelSignature &signature) {
  Location loc = op.getLoc();
  MLIRContext *ctx = op.getContext();
  int64_t D = op.getHeadDim();
  int64_t dyn = ShapedType::kDynamic;
  Type f32 = b.getF32Type();
  auto pooledType = MemRefType::get({dyn, dyn, dyn, D}, f32);
  auto threads = int32_t(kSelectThreads);

  // pool(<the kernel's arguments>, pooled_k): grid (key blocks, Hkv, B).
  SmallVector<Type> poolTypes(signature.types);
  poolTypes.push_back(pooledType);
  IRMapping poolMapping;
  gpu::GPUFuncOp pool =
      createKernelFunc(b, op, (name + "_select_pool").str(), poolTypes,
                       signature.opValues, threads, poolMapping);
  {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(&pool.getBody().front());
    PoolKernelBuilder(op, poolMapping).emit(b, pool);
    gpu::ReturnOp::create(b, loc);
  }

  // select(<the kernel's arguments>, pooled_k, scores, eligible): grid
  // (query blocks, Hq, B).
  SmallVector<Type> types(signature.types);
  types.push_back(pooledType);
  types.push_back(MemRefType::get({dyn, dyn, dyn, dyn}, f32));
  types.push_back(MemRefType::get({dyn, dyn, dyn, dyn}, b.getI8Type()));
  IRMapping selectMapping;
  gpu::GPUFuncOp select =
      createKernelFunc(b, op, (name + "_select").str(), types,
                       signature.opValues, threads, selectMapping);
  auto workgroup = gpu::AddressSpaceAttr::get(ctx, gpu::AddressSpace::Workgroup);
  select.addWorkgroupAttribution(
      MemRefType::get({D}, f32, MemRefLayoutAttrInterface{}, workgroup), loc);
  if (*op.getSelect() != SelectKind::above) {
    // topk's per-thread candidates, or mass's sort: (score, key).
    int64_t n = *op.getSelect() == SelectKind::topk ? kSelectThreads
                                                    : kSortBlocks;
    select.addWorkgroupAttribution(
        MemRefType::get({n}, f32, MemRefLayoutAttrInterface{}, workgroup),
        loc);
    select.addWorkgroupAttribution(
        MemRefType::get({n}, b.getI32Type(), MemRefLayoutAttrInterface{},
                        workgroup),
        loc);
  }
  {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(&select.getBody().front());
    SelectKernelBuilder(op, selectMapping).emit(b, select);
    gpu::ReturnOp::create(b, loc);
  }
  return {pool, select};
}
