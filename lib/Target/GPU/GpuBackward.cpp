//===- GpuBackward.cpp - attn.attention's backward as SIMT GPU kernels ----===//
//
// The two deterministic phases of docs/backward.md as two kernels per
// variant, each output element written by one thread (no atomics), built
// from gpu/scf/arith/memref/math ops only so that every GPU target lowers
// the same kernels (the targets add their function attributes):
//
//   <entry>_bwd_kv, grid (ceil(Skv / rows), Hkv, B): thread t owns key row
//   k0 + t and accumulates its dK and dV rows (f32, shared memory) over the
//   query heads of its GQA group and the query tiles the classifier keeps
//   for (head, query tile, key tile); per query tile the CTA first stages
//   each row's lse and delta = rowsum(dO * O) in shared memory.
//   <entry>_bwd_q, grid (ceil(Sq / rows), Hq, B): thread t owns query row
//   q0 + t and accumulates its dQ row over the kept key tiles.
//
// Per entry, as the CPU backward: s = q . k, t = s * scale, u = score(t),
// kept by the bounds and (PARTIAL tiles only) the mask, p and du from the
// forward's lse through normalizerAdjoint, dt = score_grad(t, .., du) (its
// accumulate_grads, the gradients of f32 params and captured tensors, go to
// the thread's slabs of the gradient buffers where the target asks for them,
// and are dropped otherwise), dS = dt * scale; rows whose lse is -inf have
// no mass and give p = du = 0.
//
// Scalar f32 FMAs per thread, q, k, v, o and dO read from global memory
// (the caches serve the reuse): the functional version every target can
// run; matrix-unit versions replace the entry loops with the same
// per-entry code.
//
//===----------------------------------------------------------------------===//
#include "lib/Target/GPU/GpuBackward.h"

#include "dialect/Normalizers.h"
#include "lib/Transforms/TileWalk.h"
#include "lib/Transforms/Transforms.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Arith/Utils/Utils.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

#include <cmath>

using namespace mlir;
using namespace mlir::attn;
using namespace mlir::attn::gpukernel;

namespace {

/// The tile the other side is classified in.
constexpr int64_t kOtherTile = 64;

class BackwardBuilder : public BackwardBase {
public:
  BackwardBuilder(AttentionOp op, IRMapping outside, int64_t rows,
                  int64_t threads, std::optional<size_t> firstGradArg)
      : BackwardBase(op, std::move(outside), rows, threads),
        firstGradArg(firstGradArg) {}

  void emitKeyKernel(OpBuilder &b, gpu::GPUFuncOp func);
  void emitQueryKernel(OpBuilder &b, gpu::GPUFuncOp func);

private:
  std::optional<size_t> firstGradArg;
};

} // namespace

void BackwardBase::setUpBackward(OpBuilder &b) {
  q = outside.lookup(op.getQuery());
  k = outside.lookup(op.getKey());
  v = outside.lookup(op.getValue());
  o = outside.lookup(op.getOut());
  lse = op.getLse() ? outside.lookup(op.getLse()) : Value();
  dO = outside.lookup(op.getGradOut());
  dq = outside.lookup(op.getGradQuery());
  dk = outside.lookup(op.getGradKey());
  dv = outside.lookup(op.getGradValue());
  // select: the kept map the forward's pre-pass writes, the argument after
  // dv (backwardSignature).
  if (op.hasSelect()) {
    auto dvArg = cast<BlockArgument>(dv);
    keptMap = dvArg.getOwner()->getArgument(dvArg.getArgNumber() + 1);
  }
  elt = cast<MemRefType>(q.getType()).getElementType();
  Value batch = memref::DimOp::create(b, loc, q, 0);
  headsQ = memref::DimOp::create(b, loc, q, 1);
  seqQ = memref::DimOp::create(b, loc, q, 2);
  headsKV = memref::DimOp::create(b, loc, k, 1);
  seqKV = memref::DimOp::create(b, loc, k, 2);
  // Launches check Hq % Hkv == 0 and Hkv > 0; max() keeps the division
  // defined regardless.
  group = arith::DivUIOp::create(
      b, loc, headsQ, arith::MaxUIOp::create(b, loc, headsKV, cIdx(b, 1)));
  Value dims[] = {batch, headsQ, headsKV, seqQ, seqKV};
  for (int i = 0; i < 5; ++i)
    regions.sizes[i] = toI32(b, dims[i]);
  regions.sizes[static_cast<int>(Size::D)] = cI32(b, D);
  regions.sizes[static_cast<int>(Size::Dv)] = cI32(b, Dv);
  regions.computeCaptureBounds(b, loc);
  scale = op.getScale() ? cF32(b, op.getScale()->convertToDouble())
          : op.hasScaleExpr()
              ? regions.inlineRegion(b, op.getScaleExpr(), {})
              : cF32(b, 1.0 / std::sqrt(double(D)));
  tid = gpu::ThreadIdOp::create(b, loc, gpu::Dimension::x);
  bIdx = gpu::BlockIdOp::create(b, loc, gpu::Dimension::z);
  b32 = toI32(b, bIdx);
}

Value BackwardBase::sharedBuffer(gpu::GPUFuncOp func, ArrayRef<int64_t> shape,
                                 Type type) {
  MLIRContext *ctx = func.getContext();
  auto space =
      gpu::AddressSpaceAttr::get(ctx, gpu::GPUDialect::getWorkgroupAddressSpace());
  return func.addWorkgroupAttribution(
      MemRefType::get(shape, type ? type : Float32Type::get(ctx),
                      MemRefLayoutAttrInterface(), space),
      loc);
}

Value BackwardBase::dot(OpBuilder &b, Value a, ValueRange ai, Value c,
                        ValueRange ci, int64_t n) {
  Value zero = cF32(b, 0.0);
  auto loop = scf::ForOp::create(
      b, loc, cIdx(b, 0), cIdx(b, n), cIdx(b, 1), ValueRange{zero},
      [&](OpBuilder &b, Location, Value d, ValueRange acc) {
        SmallVector<Value> ia(ai), ic(ci);
        ia.push_back(d);
        ic.push_back(d);
        Value x = toF32(b, memref::LoadOp::create(b, loc, a, ia));
        Value y = toF32(b, memref::LoadOp::create(b, loc, c, ic));
        Value sum = math::FmaOp::create(b, loc, x, y, acc[0]);
        scf::YieldOp::create(b, loc, sum);
      });
  return loop.getResult(0);
}

void BackwardBase::axpy(OpBuilder &b, Value dst, Value row, Value x,
                           Value src, ValueRange si, int64_t n) {
  forLoop(b, cIdx(b, 0), cIdx(b, n), [&](OpBuilder &b, Value d) {
    SmallVector<Value> is(si);
    is.push_back(d);
    Value y = toF32(b, memref::LoadOp::create(b, loc, src, is));
    Value acc = memref::LoadOp::create(b, loc, dst, ValueRange{row, d});
    memref::StoreOp::create(b, loc, math::FmaOp::create(b, loc, x, y, acc),
                            dst, ValueRange{row, d});
  });
}

Value BackwardBase::classify(OpBuilder &b, Value h32, Value qLo, Value qHi,
                                Value kLo, Value kHi) {
  Value cls = classifyBlock(b, loc, op, regions,
                            {b32, h32, h32, toI32(b, qLo), toI32(b, qHi),
                             toI32(b, kLo), toI32(b, kHi)});
  if (!keptMap)
    return cls;
  // select's choices, constants of the backward: the forward's blocks.
  return classifyKept(b, cls,
                      arith::IndexCastOp::create(b, loc, b.getIndexType(), h32),
                      qLo, qHi, kLo, kHi);
}

Value BackwardBase::notEmpty(OpBuilder &b, Value cls) {
  return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ne, cls,
                               cI32(b, kTileEmpty));
}

void BackwardBase::byClass(OpBuilder &b, Value cls,
                              function_ref<void(OpBuilder &, bool)> body) {
  if (!hasPartialTiles()) {
    body(b, false);
    return;
  }
  Value full = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, cls,
                                     cI32(b, kTileFull));
  auto ifOp = scf::IfOp::create(b, loc, TypeRange{}, full,
                                /*withElseRegion=*/true);
  OpBuilder tb = ifOp.getThenBodyBuilder();
  body(tb, false);
  OpBuilder eb = ifOp.getElseBodyBuilder();
  body(eb, true);
}

std::pair<Value, Value>
BackwardBase::entry(OpBuilder &b, Value s, Value dp, Value rowLse,
                       Value delta, Value h32, Value q32, Value kv32,
                       Value valid, bool withMask) {
  Value zero = cF32(b, 0.0);
  Value t = arith::MulFOp::create(b, loc, s, scale);
  Value u = op.hasScore() ? regions.inlineRegion(b, op.getScore(),
                                                 {t, b32, h32, q32, kv32})
                          : t;
  Value kept = valid;
  if (withMask && op.hasMask())
    kept = arith::AndIOp::create(
        b, loc, kept,
        regions.inlineRegion(b, op.getMask(), {b32, h32, q32, kv32}));
  if (withMask && keptMap)
    kept = arith::AndIOp::create(b, loc, kept, keptAt(b, h32, q32, kv32));
  EntryAdjoint entry =
      keptNormalizerAdjoint(b, loc, norm, u, dp, rowLse, delta, kept);
  Value p = entry.p, du = entry.du;
  kept = entry.kept;
  // bwd_kv adds score_grad's and scale_grad's accumulations to this
  // thread's slots; bwd_q recomputes the entries bwd_kv accounted for.
  if (phase0)
    regions.gradientOf = slotViews;
  Value dt = op.hasScore()
                 ? regions.inlineRegion(b, op.getScoreGrad(),
                                        {t, b32, h32, q32, kv32, du})
                 : du;
  if (phase0 && op.hasScaleExpr()) {
    // dL/dscale = sum dt * (q . k); the scale's adjoint is linear in it,
    // so each entry passes its own share.
    Value g = arith::SelectOp::create(
        b, loc, kept, arith::MulFOp::create(b, loc, dt, s), zero);
    regions.inlineRegion(b, op.getScaleGrad(), {g});
  }
  regions.gradientOf.clear();
  Value ds = arith::SelectOp::create(
      b, loc, kept, arith::MulFOp::create(b, loc, dt, scale), zero);
  return {p, ds};
}

void BackwardBase::setUpGradients(OpBuilder &b, gpu::GPUFuncOp func,
                                     size_t firstGradArg, bool keyPhase) {
  phase0 = keyPhase;
  ValueRange args = func.getArguments();
  size_t next = firstGradArg;
  if (next >= func.getFunctionType().getNumInputs())
    return;
  // The thread's slot: (linear CTA) x threads + thread; its slab of each
  // buffer is slot x elements .. + elements. The grid is the launch's
  // (ceil(S / rows), heads, B) of this phase, from the operands' sizes
  // (AMD's grid_dim would call the device library).
  Value seq = keyPhase ? seqKV : seqQ;
  Value gridDims[2] = {
      arith::DivUIOp::create(
          b, loc, arith::AddIOp::create(b, loc, seq, cIdx(b, rows - 1)),
          cIdx(b, rows)),
      keyPhase ? headsKV : headsQ};
  Value linear = gpu::BlockIdOp::create(b, loc, gpu::Dimension::z);
  for (auto [grid, id] : {std::pair{gridDims[1], gpu::Dimension::y},
                          std::pair{gridDims[0], gpu::Dimension::x}})
    linear = arith::AddIOp::create(
        b, loc, arith::MulIOp::create(b, loc, linear, grid),
        gpu::BlockIdOp::create(b, loc, id));
  slot = arith::AddIOp::create(
      b, loc, arith::MulIOp::create(b, loc, linear, cIdx(b, threads)), tid);
  MLIRContext *ctx = b.getContext();
  auto view = [&](Value buffer, ArrayRef<OpFoldResult> sizes) {
    // Row-major strides over `sizes`, offset slot x elements.
    int64_t rank = int64_t(sizes.size());
    SmallVector<OpFoldResult> strides(rank);
    Value stride = cIdx(b, 1);
    for (int64_t d = rank - 1; d >= 0; --d) {
      strides[d] = stride;
      stride = arith::MulIOp::create(
          b, loc, stride, getValueOrCreateConstantIndexOp(b, loc, sizes[d]));
    }
    Value offset = arith::MulIOp::create(b, loc, slot, stride);
    auto type = MemRefType::get(
        SmallVector<int64_t>(rank, ShapedType::kDynamic), b.getF32Type(),
        StridedLayoutAttr::get(ctx, ShapedType::kDynamic,
                               SmallVector<int64_t>(rank, ShapedType::kDynamic)));
    return memref::ReinterpretCastOp::create(b, loc, type, buffer,
                                             OpFoldResult(offset), sizes,
                                             strides)
        .getResult();
  };
  for (Value p : op.getParams())
    if (p.getType().isF32())
      slotViews[p] = view(args[next++], {OpFoldResult(cIdx(b, 1))});
  for (Value c : op.getCaptures())
    if (cast<MemRefType>(c.getType()).getElementType().isF32()) {
      Value cap = outside.lookup(c);
      SmallVector<OpFoldResult> sizes;
      for (int64_t d = 0; d < cast<MemRefType>(c.getType()).getRank(); ++d)
        sizes.push_back(
            memref::DimOp::create(b, loc, cap, d).getResult());
      slotViews[c] = view(args[next++], sizes);
    }
}

void BackwardBase::emitSinkGradient(OpBuilder &b, Value h32, Value rowLse,
                                       Value delta, Value valid) {
  if (!op.hasSink() || slotViews.empty())
    return;
  // The sink is one more softmax entry with no value row: its logit's
  // gradient is p_sink (0 - delta).
  auto ifOp = scf::IfOp::create(b, loc, TypeRange{}, valid,
                                /*withElseRegion=*/false);
  OpBuilder tb = ifOp.getThenBodyBuilder();
  Value sink = regions.inlineRegion(tb, op.getSink(), {h32});
  Value pSink = math::ExpOp::create(
      tb, loc, arith::SubFOp::create(tb, loc, sink, rowLse));
  Value g = arith::NegFOp::create(
      tb, loc, arith::MulFOp::create(tb, loc, pSink, delta));
  regions.gradientOf = slotViews;
  regions.inlineRegion(tb, op.getSinkGrad(), {h32, g});
  regions.gradientOf.clear();
}

void BackwardBuilder::emitKeyKernel(OpBuilder &b, gpu::GPUFuncOp func) {
  Value dkAcc = sharedBuffer(func, {threads, D});
  Value dvAcc = sharedBuffer(func, {threads, Dv});
  Value lseRows = sharedBuffer(func, {kOtherTile});
  Value deltaRows = sharedBuffer(func, {kOtherTile});
  setUpBackward(b);
  if (firstGradArg)
    setUpGradients(b, func, *firstGradArg, /*keyPhase=*/true);
  Value zero = cF32(b, 0.0);
  Value kTile = gpu::BlockIdOp::create(b, loc, gpu::Dimension::x);
  Value hkv = gpu::BlockIdOp::create(b, loc, gpu::Dimension::y);
  Value k0 = arith::MulIOp::create(b, loc, kTile, cIdx(b, rows));
  Value kpos = arith::AddIOp::create(b, loc, k0, tid);
  Value keyValid = arith::AndIOp::create(b, loc, ult(b, tid, cIdx(b, rows)),
                                         ult(b, kpos, seqKV));
  Value kSafe = minU(b, kpos, lastBelow(b, seqKV));
  Value kv32 = toI32(b, kpos);
  Value kHi = lastBelow(b, minU(b, add(b, k0, rows), seqKV));
  for (auto [acc, width] : {std::pair{dkAcc, D}, std::pair{dvAcc, Dv}})
    forLoop(b, cIdx(b, 0), cIdx(b, width), [&](OpBuilder &b, Value d) {
      memref::StoreOp::create(b, loc, zero, acc, ValueRange{tid, d});
    });
  Value h0 = arith::MulIOp::create(b, loc, hkv, group);
  Value numQTiles = arith::CeilDivUIOp::create(b, loc, seqQ,
                                               cIdx(b, kOtherTile));
  forLoop(b, h0, arith::AddIOp::create(b, loc, h0, group),
          [&](OpBuilder &b, Value h) {
    Value h32 = toI32(b, h);
    forLoop(b, cIdx(b, 0), numQTiles, [&](OpBuilder &b, Value qTile) {
      Value q0 = arith::MulIOp::create(b, loc, qTile, cIdx(b, kOtherTile));
      Value qEnd = minU(b, add(b, q0, kOtherTile), seqQ);
      Value cls = classify(b, h32, q0, lastBelow(b, qEnd), k0, kHi);
      auto ifKept = scf::IfOp::create(b, loc, TypeRange{}, notEmpty(b, cls),
                                      /*withElseRegion=*/false);
      OpBuilder tb = ifKept.getThenBodyBuilder();
      // The previous tile's rows are read by every thread before they are
      // replaced.
      gpu::BarrierOp::create(tb, loc);
      Value count = arith::SubIOp::create(tb, loc, qEnd, q0);
      forLoop(tb, tid, count, cIdx(tb, threads), [&](OpBuilder &b, Value r) {
        Value qpos = arith::AddIOp::create(b, loc, q0, r);
        Value rowLse = lse ? memref::LoadOp::create(b, loc, lse,
                                                    ValueRange{bIdx, h, qpos})
                                 .getResult()
                           : zero;
        memref::StoreOp::create(b, loc, rowLse, lseRows, ValueRange{r});
        Value delta = dot(b, dO, {bIdx, h, qpos}, o, {bIdx, h, qpos}, Dv);
        memref::StoreOp::create(b, loc, delta, deltaRows, ValueRange{r});
      });
      gpu::BarrierOp::create(tb, loc);
      byClass(tb, cls, [&](OpBuilder &b, bool withMask) {
        forLoop(b, cIdx(b, 0), count, [&](OpBuilder &b, Value i) {
          Value qpos = arith::AddIOp::create(b, loc, q0, i);
          Value s = dot(b, q, {bIdx, h, qpos}, k, {bIdx, hkv, kSafe}, D);
          Value dp = dot(b, dO, {bIdx, h, qpos}, v, {bIdx, hkv, kSafe}, Dv);
          Value rowLse = memref::LoadOp::create(b, loc, lseRows, ValueRange{i});
          Value delta = memref::LoadOp::create(b, loc, deltaRows, ValueRange{i});
          auto [p, ds] = entry(b, s, dp, rowLse, delta, h32, toI32(b, qpos),
                               kv32, keyValid, withMask);
          axpy(b, dvAcc, tid, p, dO, {bIdx, h, qpos}, Dv);
          axpy(b, dkAcc, tid, ds, q, {bIdx, h, qpos}, D);
        });
      });
    });
  });
  auto ifValid = scf::IfOp::create(b, loc, TypeRange{}, keyValid,
                                   /*withElseRegion=*/false);
  OpBuilder tb = ifValid.getThenBodyBuilder();
  for (auto [acc, out, width] :
       {std::tuple{dkAcc, dk, D}, std::tuple{dvAcc, dv, Dv}})
    forLoop(tb, cIdx(tb, 0), cIdx(tb, width), [&](OpBuilder &b, Value d) {
      Value x = memref::LoadOp::create(b, loc, acc, ValueRange{tid, d});
      memref::StoreOp::create(b, loc, arith::TruncFOp::create(b, loc, elt, x),
                              out, ValueRange{bIdx, hkv, kpos, d});
    });
}

void BackwardBuilder::emitQueryKernel(OpBuilder &b, gpu::GPUFuncOp func) {
  Value dqAcc = sharedBuffer(func, {threads, D});
  setUpBackward(b);
  if (firstGradArg)
    setUpGradients(b, func, *firstGradArg, /*keyPhase=*/false);
  Value zero = cF32(b, 0.0);
  Value qTile = gpu::BlockIdOp::create(b, loc, gpu::Dimension::x);
  Value h = gpu::BlockIdOp::create(b, loc, gpu::Dimension::y);
  Value h32 = toI32(b, h);
  Value hkv = arith::DivUIOp::create(
      b, loc, h, arith::MaxUIOp::create(b, loc, group, cIdx(b, 1)));
  Value q0 = arith::MulIOp::create(b, loc, qTile, cIdx(b, rows));
  Value qpos = arith::AddIOp::create(b, loc, q0, tid);
  Value qValid = arith::AndIOp::create(b, loc, ult(b, tid, cIdx(b, rows)),
                                       ult(b, qpos, seqQ));
  Value qSafe = minU(b, qpos, lastBelow(b, seqQ));
  Value q32 = toI32(b, qpos);
  Value qHi = lastBelow(b, minU(b, add(b, q0, rows), seqQ));
  Value rowLse =
      lse ? memref::LoadOp::create(b, loc, lse, ValueRange{bIdx, h, qSafe})
                .getResult()
          : zero;
  Value delta = dot(b, dO, {bIdx, h, qSafe}, o, {bIdx, h, qSafe}, Dv);
  forLoop(b, cIdx(b, 0), cIdx(b, D), [&](OpBuilder &b, Value d) {
    memref::StoreOp::create(b, loc, zero, dqAcc, ValueRange{tid, d});
  });
  Value numKTiles =
      arith::CeilDivUIOp::create(b, loc, seqKV, cIdx(b, kOtherTile));
  forLoop(b, cIdx(b, 0), numKTiles, [&](OpBuilder &b, Value kTile) {
    Value k0 = arith::MulIOp::create(b, loc, kTile, cIdx(b, kOtherTile));
    Value kEnd = minU(b, add(b, k0, kOtherTile), seqKV);
    Value cls = classify(b, h32, q0, qHi, k0, lastBelow(b, kEnd));
    auto ifKept = scf::IfOp::create(b, loc, TypeRange{}, notEmpty(b, cls),
                                    /*withElseRegion=*/false);
    OpBuilder tb = ifKept.getThenBodyBuilder();
    byClass(tb, cls, [&](OpBuilder &b, bool withMask) {
      forLoop(b, k0, kEnd, [&](OpBuilder &b, Value kpos) {
        Value s = dot(b, q, {bIdx, h, qSafe}, k, {bIdx, hkv, kpos}, D);
        Value dp = dot(b, dO, {bIdx, h, qSafe}, v, {bIdx, hkv, kpos}, Dv);
        auto [p, ds] = entry(b, s, dp, rowLse, delta, h32, q32,
                             toI32(b, kpos), qValid, withMask);
        (void)p;
        axpy(b, dqAcc, tid, ds, k, {bIdx, hkv, kpos}, D);
      });
    });
  });
  emitSinkGradient(b, h32, rowLse, delta, qValid);
  auto ifValid = scf::IfOp::create(b, loc, TypeRange{}, qValid,
                                   /*withElseRegion=*/false);
  OpBuilder tb = ifValid.getThenBodyBuilder();
  forLoop(tb, cIdx(tb, 0), cIdx(tb, D), [&](OpBuilder &b, Value d) {
    Value x = memref::LoadOp::create(b, loc, dqAcc, ValueRange{tid, d});
    memref::StoreOp::create(b, loc, arith::TruncFOp::create(b, loc, elt, x),
                            dq, ValueRange{bIdx, h, qpos, d});
  });
}

int64_t gpukernel::backwardRows(int64_t width, int64_t budget) {
  return width * 4 * 64 <= budget ? 64 : width * 4 * 32 <= budget ? 32 : 16;
}

void gpukernel::emitSimtBackward(OpBuilder &b, gpu::GPUFuncOp func,
                                 AttentionOp op, const IRMapping &outside,
                                 int phase, int64_t rows, int64_t threads,
                                 std::optional<size_t> firstGradArg) {
  BackwardBuilder builder(op, outside, rows, threads, firstGradArg);
  if (phase == 0)
    builder.emitKeyKernel(b, func);
  else
    builder.emitQueryKernel(b, func);
}

size_t gpukernel::appendGradientBuffers(AttentionOp op,
                                        SmallVector<Type> &types) {
  size_t first = types.size();
  auto flat = MemRefType::get({ShapedType::kDynamic},
                              Float32Type::get(op.getContext()));
  for (Value p : op.getParams())
    if (p.getType().isF32())
      types.push_back(flat);
  for (Value c : op.getCaptures())
    if (cast<MemRefType>(c.getType()).getElementType().isF32())
      types.push_back(flat);
  return first;
}

KernelSignature gpukernel::backwardSignature(AttentionOp op) {
  KernelSignature s;
  s.opValues = {op.getQuery(), op.getKey(), op.getValue(), op.getOut()};
  if (op.getLse())
    s.opValues.push_back(op.getLse());
  s.opValues.append(op.getParams().begin(), op.getParams().end());
  s.opValues.append(op.getCaptures().begin(), op.getCaptures().end());
  s.opValues.append({op.getGradOut(), op.getGradQuery(), op.getGradKey(),
                     op.getGradValue()});
  for (Value v : s.opValues)
    s.types.push_back(v.getType());
  // select: the forward pre-pass's kept map of N-token blocks (the GPU
  // kernels read it as the forward does, not the CPU's tile classes).
  if (op.hasSelect()) {
    int64_t dyn = ShapedType::kDynamic;
    s.types.push_back(MemRefType::get({dyn, dyn, dyn, dyn},
                                      IntegerType::get(op.getContext(), 8)));
  }
  return s;
}

FailureOr<gpu::GPUModuleOp>
gpukernel::prepareBackwardBuild(ModuleOp host, AttentionOp op, StringRef units,
                                std::string &error) {
  if (!op.isBackward()) {
    error = "internal: expected a backward attention op";
    return failure();
  }
  if (failed(checkSupported(op, units, error)))
    return failure();
  if (failed(differentiate(op))) {
    error = "differentiating the variant failed";
    return failure();
  }
  gpu::GPUModuleOp gpuModule;
  host.walk([&](gpu::GPUModuleOp m) {
    if (m.getName() == "attn_gpu")
      gpuModule = m;
  });
  if (!gpuModule) {
    error = "internal: build the forward kernel before the backward's";
    return failure();
  }
  return gpuModule;
}

FailureOr<BackwardKernels> gpukernel::buildBackwardKernels(
    ModuleOp host, AttentionOp op, StringRef name, const BackwardConfig &cfg,
    std::string &error) {
  FailureOr<gpu::GPUModuleOp> gpuModule =
      prepareBackwardBuild(host, op, cfg.units, error);
  if (failed(gpuModule))
    return failure();
  MLIRContext *ctx = op.getContext();
  OpBuilder b(ctx);
  b.setInsertionPointToEnd(&gpuModule->getBodyRegion().front());

  KernelSignature signature = backwardSignature(op);
  // Then, where the target asks for them, the gradients of f32 params and
  // captured tensors: a slab per thread, summed by the runtime in slot
  // order.
  std::optional<size_t> firstGradArg;
  if (cfg.gradients)
    firstGradArg = appendGradientBuffers(op, signature.types);

  BackwardKernels out;
  out.gradientBuffers = cfg.gradients;
  for (int phase = 0; phase < 2; ++phase) {
    int64_t width = phase == 0 ? op.getHeadDim() + op.getValueHeadDim()
                               : op.getHeadDim();
    int64_t rows = backwardRows(width, cfg.accumulatorBytes);
    int32_t threads = int32_t(std::max<int64_t>(rows, cfg.minThreads));
    std::string fname = (name + (phase == 0 ? "_bwd_kv" : "_bwd_q")).str();
    IRMapping outside;
    gpu::GPUFuncOp func =
        createKernelFunc(b, op, fname, signature.types,
                         signature.opValues, threads, outside);
    if (cfg.decorate)
      cfg.decorate(func, threads);
    OpBuilder body(ctx);
    body.setInsertionPointToStart(&func.getBody().front());
    emitSimtBackward(body, func, op, outside, phase, rows, threads,
                     firstGradArg);
    gpu::ReturnOp::create(body, op.getLoc());
    BackwardKernel &k = phase == 0 ? out.keys : out.queries;
    k.name = fname;
    k.threads = threads;
    k.rows = rows;
  }
  return out;
}
