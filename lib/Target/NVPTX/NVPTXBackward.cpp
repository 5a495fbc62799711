//===- NVPTXBackward.cpp - attn.attention's backward as CUDA kernels ------===//
//
// The two deterministic phases of docs/backward.md as two kernels per
// variant, each output element written by one thread (no atomics):
//
//   <entry>_bwd_kv, grid (ceil(Skv / 64), Hkv, B): 4 warps, each owning 16
//   key rows, accumulate dK and dV in mma.sync.m16n8k16 fragments over the
//   query heads of the GQA group and the query tiles (16 rows) the
//   classifier keeps for (head, query tile, key tile). Per tile the CTA
//   stages the rows' lse and delta = rowsum(dO * O), Q and dO in shared
//   memory (K and V are staged once), then S^T = K Q^T and dP^T = V dO^T,
//   the per-entry code on the accumulators, and dV += P^T dO, dK += dS^T Q
//   with P^T and dS^T reused from the accumulators as A operands.
//   <entry>_bwd_q, grid (ceil(Sq / 64), Hq, B): 4 warps of 16 query rows,
//   Q and dO rows held as A operands; per kept key tile (32 keys, 16 past
//   D = 64) S = Q K^T, dP = dO V^T, the per-entry code, dQ += dS K.
//
// Per entry, as the CPU backward: s = q . k, t = s * scale, u = score(t),
// kept by the bounds and (PARTIAL tiles only) the mask, p and du from the
// forward's lse through normalizerAdjoint, dt = score_grad(t, .., du),
// dS = dt * scale; rows whose lse is -inf have no mass and give
// p = du = 0. sm_90a runs the same mma.sync code.
//
// Gradients of f32 params and captured tensors without atomics: each
// thread has a slab of its own in one flat f32 buffer per such param or
// tensor (slot = linear CTA x threads + thread), to which bwd_kv adds its
// entries' score_grad and scale_grad accumulations and bwd_q its rows'
// sink-logit gradients, in the thread's fixed order; the runtime sums the
// slabs in slot order.
//
// Head dims past 128 (whose accumulators do not fit in registers) take a
// scalar version: one thread per key or query row, f32 accumulators in
// shared memory, FMAs over q, k, v, o and dO read from global memory.
//
//===----------------------------------------------------------------------===//
#include "lib/Target/NVPTX/NVPTXTarget.h"

#include "lib/Target/GPU/GpuBackward.h"

#include "dialect/Normalizers.h"
#include "lib/Transforms/Transforms.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Arith/Utils/Utils.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

#include <cmath>

using namespace mlir;
using namespace mlir::attn;

namespace {

//===----------------------------------------------------------------------===//
// Tensor cores: mma.sync.m16n8k16
//===----------------------------------------------------------------------===//

/// One accumulator fragment: the 4 f32 a lane holds of a 16 x 8 tile.
using Frag = std::array<Value, 4>;

/// The two kernels on tensor cores: 4 warps of 16 rows each (key rows in
/// bwd_kv, query rows in bwd_q), the other side in tiles of `other`; the
/// set-up, classifier and per-entry math are the shared BackwardBase's
/// (lib/Target/GPU/GpuBackward.h), as are the scalar kernels of head dims
/// past 128.
/// Fragment layouts (PTX ISA, mma.m16n8k16): lane l holds rows l/4 and
/// l/4 + 8 and columns 2 (l % 4) + {0, 1} (+ 8 for A's upper half) of A and
/// C; B (k x n) holds k = 2 (l % 4) + {0, 1} (+ 8) of column n = l/4. An
/// accumulator (C) pair of 16-column halves is an A operand as is, which
/// is how P^T and dS^T (bwd_kv) and dS (bwd_q) feed the second products
/// without leaving registers. bwd_kv reads its operands from shared memory
/// (K and V staged once, Q and dO per query tile); bwd_q holds its Q and
/// dO rows as A operands and reads K and V from global memory (L1 serves
/// the reuse in this version).
class MmaBackwardBuilder : public gpukernel::BackwardBase {
public:
  MmaBackwardBuilder(AttentionOp op, IRMapping outside, int64_t other,
                     std::optional<size_t> firstGradArg)
      : BackwardBase(op, std::move(outside), 64, 128), other(other),
        firstGradArg(firstGradArg) {}
  void emitKeyKernel(OpBuilder &b, gpu::GPUFuncOp func);
  void emitQueryKernel(OpBuilder &b, gpu::GPUFuncOp func);

private:
  Value operand(OpBuilder &b, Value pair) {
    return isa<BFloat16Type>(elt) ? nvptx::bitcastPair(b, pair) : pair;
  }
  Value pack(OpBuilder &b, Value lo, Value hi) {
    auto pair = VectorType::get({2}, elt);
    return operand(b, vector::FromElementsOp::create(
                          b, loc, pair,
                          ValueRange{arith::TruncFOp::create(b, loc, elt, lo),
                                     arith::TruncFOp::create(b, loc, elt, hi)}));
  }
  /// mem[prefix..., row, col .. col + 1] as an operand register.
  Value loadPair(OpBuilder &b, Value mem, ValueRange prefix, Value row,
                 Value col) {
    SmallVector<Value> at(prefix);
    at.append({row, col});
    return operand(b, vector::LoadOp::create(
                          b, loc, VectorType::get({2}, elt), mem, at));
  }
  /// mem[prefix..., row .. row + 1, col] as an operand register.
  Value loadColumnPair(OpBuilder &b, Value mem, ValueRange prefix, Value row,
                       Value col, Value limit) {
    Value x[2];
    for (int i = 0; i < 2; ++i) {
      SmallVector<Value> at(prefix);
      at.append({clampRow(b, add(b, row, i), limit), col});
      x[i] = memref::LoadOp::create(b, loc, mem, at);
    }
    return operand(b, vector::FromElementsOp::create(
                          b, loc, VectorType::get({2}, elt), ValueRange{x[0], x[1]}));
  }
  Value clampRow(OpBuilder &b, Value row, Value limit) {
    return minU(b, row, lastBelow(b, limit));
  }
  /// The A operand of rows [r0, r0 + 16) (clamped below `limit`) and
  /// columns [c0, c0 + 16) of a row-major mem.
  SmallVector<Value> loadA(OpBuilder &b, Value mem, ValueRange prefix,
                           Value r0, int64_t c0, Value limit) {
    Value lo = clampRow(b, arith::AddIOp::create(b, loc, r0, quadRow), limit);
    Value hi = clampRow(
        b, arith::AddIOp::create(b, loc, r0, add(b, quadRow, 8)), limit);
    Value col = add(b, quadCol, c0);
    return {loadPair(b, mem, prefix, lo, col), loadPair(b, mem, prefix, hi, col),
            loadPair(b, mem, prefix, lo, add(b, col, 8)),
            loadPair(b, mem, prefix, hi, add(b, col, 8))};
  }
  /// The B operand (k x n = 16 x 8) whose column n is memory row n0 + n
  /// (clamped below `limit`), k the columns [c0, c0 + 16).
  SmallVector<Value> loadBFromRows(OpBuilder &b, Value mem, ValueRange prefix,
                                   Value n0, int64_t c0, Value limit) {
    Value row = clampRow(b, arith::AddIOp::create(b, loc, n0, quadRow), limit);
    Value col = add(b, quadCol, c0);
    return {loadPair(b, mem, prefix, row, col),
            loadPair(b, mem, prefix, row, add(b, col, 8))};
  }
  /// The B operand whose k is memory rows [k0, k0 + 16) (clamped) and n
  /// the columns [c0, c0 + 8).
  SmallVector<Value> loadBFromColumns(OpBuilder &b, Value mem,
                                      ValueRange prefix, Value k0, int64_t c0,
                                      Value limit) {
    Value row = arith::AddIOp::create(b, loc, k0, quadCol);
    Value col = add(b, quadRow, c0);
    return {loadColumnPair(b, mem, prefix, row, col, limit),
            loadColumnPair(b, mem, prefix, add(b, row, 8), col, limit)};
  }
  /// Accumulator fragments j and j + 1 (16 columns) as an A operand.
  SmallVector<Value> aFromAcc(OpBuilder &b, ArrayRef<Value> flat, int64_t j) {
    auto at = [&](int64_t f, int i) { return flat[4 * f + i]; };
    return {pack(b, at(j, 0), at(j, 1)), pack(b, at(j, 2), at(j, 3)),
            pack(b, at(j + 1, 0), at(j + 1, 1)),
            pack(b, at(j + 1, 2), at(j + 1, 3))};
  }
  Frag mma(OpBuilder &b, ArrayRef<Value> a, ArrayRef<Value> bf, const Frag &c) {
    NVVM::MMATypes type = isa<BFloat16Type>(elt) ? NVVM::MMATypes::bf16
                                                 : NVVM::MMATypes::f16;
    return nvptx::mmaSync(b, loc, a, bf, c, 16, type, b.getF32Type());
  }
  /// acc (flat fragments) += A_k . B_k over the steps, n fragments wide.
  void accumulate(OpBuilder &b, SmallVector<Value> &flat, ArrayRef<Value> a,
                  ArrayRef<Value> bf, int64_t frag) {
    Frag c = {flat[4 * frag], flat[4 * frag + 1], flat[4 * frag + 2],
              flat[4 * frag + 3]};
    Frag d = mma(b, a, bf, c);
    for (int i = 0; i < 4; ++i)
      flat[4 * frag + i] = d[i];
  }
  SmallVector<Value> zeros(OpBuilder &b, int64_t frags) {
    return SmallVector<Value>(4 * frags, cF32(b, 0.0));
  }
  void setUpLanes(OpBuilder &b) {
    lane = arith::RemUIOp::create(b, loc, tid, cIdx(b, 32));
    warpRow = arith::MulIOp::create(
        b, loc, arith::DivUIOp::create(b, loc, tid, cIdx(b, 32)), cIdx(b, 16));
    quadRow = arith::DivUIOp::create(b, loc, lane, cIdx(b, 4));
    quadCol = arith::MulIOp::create(
        b, loc, arith::RemUIOp::create(b, loc, lane, cIdx(b, 4)), cIdx(b, 2));
  }
  /// scf.for carrying `init`; body returns the next values.
  SmallVector<Value>
  forCarry(OpBuilder &b, Value lb, Value ub, ValueRange init,
           function_ref<SmallVector<Value>(OpBuilder &, Value, ValueRange)>
               body) {
    auto loop = scf::ForOp::create(
        b, loc, lb, ub, cIdx(b, 1), init,
        [&](OpBuilder &nb, Location, Value iv, ValueRange carried) {
          scf::YieldOp::create(nb, loc, body(nb, iv, carried));
        });
    return SmallVector<Value>(loop.getResults());
  }
  /// scf.if yielding then(b) or `otherwise`.
  SmallVector<Value>
  ifYield(OpBuilder &b, Value cond, ValueRange otherwise,
          function_ref<SmallVector<Value>(OpBuilder &)> then) {
    auto ifOp = scf::IfOp::create(b, loc, TypeRange(otherwise), cond,
                                  /*withElseRegion=*/true);
    OpBuilder tb = ifOp.getThenBodyBuilder();
    scf::YieldOp::create(tb, loc, then(tb));
    OpBuilder eb = ifOp.getElseBodyBuilder();
    scf::YieldOp::create(eb, loc, otherwise);
    return SmallVector<Value>(ifOp.getResults());
  }
  /// The per-entry code over one tile's S and dP fragments (flat, row r
  /// of the 16 = lane's quadRow (+ 8), column 8 j + quadCol (+ 1)):
  /// returns (p..., ds...) flattened alike. `at(i, j, e)` gives the
  /// entry's (h32, q32, kv32, valid, rowLse, delta).
  using EntryAt = function_ref<std::array<Value, 6>(OpBuilder &, int, int64_t,
                                                    int)>;
  SmallVector<Value> entries(OpBuilder &b, Value cls, ArrayRef<Value> s,
                             ArrayRef<Value> dp, EntryAt at) {
    auto body = [&](OpBuilder &b, bool withMask) {
      SmallVector<Value> p(s.size()), ds(s.size());
      for (size_t f = 0; f < s.size() / 4; ++f)
        for (int e = 0; e < 4; ++e) {
          auto [h32, q32, kv32, valid, rowLse, delta] =
              at(b, e / 2, int64_t(f), e % 2);
          auto [pe, dse] = entry(b, s[4 * f + e], dp[4 * f + e], rowLse, delta,
                                 h32, q32, kv32, valid, withMask);
          p[4 * f + e] = pe;
          ds[4 * f + e] = dse;
        }
      SmallVector<Value> out(p);
      out.append(ds);
      return out;
    };
    if (!hasPartialTiles())
      return body(b, false);
    Value full = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, cls,
                                       cI32(b, kTileFull));
    SmallVector<Type> types(2 * s.size(), b.getF32Type());
    auto ifOp = scf::IfOp::create(b, loc, types, full, /*withElseRegion=*/true);
    OpBuilder tb = ifOp.getThenBodyBuilder();
    scf::YieldOp::create(tb, loc, body(tb, false));
    OpBuilder eb = ifOp.getElseBodyBuilder();
    scf::YieldOp::create(eb, loc, body(eb, true));
    return SmallVector<Value>(ifOp.getResults());
  }
  /// Stores fragments (rows r0 + quadRow (+ 8), columns 8 n + quadCol (+ 1))
  /// to out[prefix..., row, col] as elt where the row is below `limit`.
  void storeFrags(OpBuilder &b, ArrayRef<Value> flat, Value out,
                  ValueRange prefix, Value r0, Value limit) {
    for (int half = 0; half < 2; ++half) {
      Value row = arith::AddIOp::create(b, loc, r0, add(b, quadRow, 8 * half));
      auto ifOp = scf::IfOp::create(b, loc, TypeRange{}, ult(b, row, limit),
                                    /*withElseRegion=*/false);
      OpBuilder tb = ifOp.getThenBodyBuilder();
      for (size_t f = 0; f < flat.size() / 4; ++f)
        for (int e = 0; e < 2; ++e) {
          SmallVector<Value> at(prefix);
          at.append({row, add(tb, quadCol, int64_t(8 * f + e))});
          memref::StoreOp::create(
              tb, loc,
              arith::TruncFOp::create(tb, loc, elt, flat[4 * f + 2 * half + e]),
              out, at);
        }
    }
  }

  int64_t other;
  std::optional<size_t> firstGradArg;
  Value lane, warpRow, quadRow, quadCol;
};

void MmaBackwardBuilder::emitKeyKernel(OpBuilder &b, gpu::GPUFuncOp func) {
  Value lseRows = sharedBuffer(func, {other});
  Value deltaRows = sharedBuffer(func, {other});
  Type eltType = cast<MemRefType>(op.getQuery().getType()).getElementType();
  // The CTA's K and V rows, read as A operands once per query tile: from
  // shared memory (behind the tile's barriers) they are not hoisted into
  // registers for the whole kernel, which leaves those to dK and dV.
  Value kS = sharedBuffer(func, {rows, D}, eltType);
  Value vS = sharedBuffer(func, {rows, Dv}, eltType);
  // The query tile's Q and dO rows (B operands of all four products).
  Value qS = sharedBuffer(func, {other, D}, eltType);
  Value doS = sharedBuffer(func, {other, Dv}, eltType);
  setUpBackward(b);
  if (firstGradArg)
    setUpGradients(b, func, *firstGradArg, /*keyPhase=*/true);
  setUpLanes(b);
  Value zero = cF32(b, 0.0);
  Value kTile = gpu::BlockIdOp::create(b, loc, gpu::Dimension::x);
  Value hkv = gpu::BlockIdOp::create(b, loc, gpu::Dimension::y);
  Value k0 = arith::MulIOp::create(b, loc, kTile, cIdx(b, rows));
  Value kHi = lastBelow(b, minU(b, add(b, k0, rows), seqKV));
  Value kw = arith::AddIOp::create(b, loc, k0, warpRow); // the warp's rows
  for (auto [src, dst, width] : {std::tuple{k, kS, D}, std::tuple{v, vS, Dv}})
    forLoop(b, tid, cIdx(b, rows * width), cIdx(b, threads),
            [&](OpBuilder &b, Value i) {
              Value r = arith::DivUIOp::create(b, loc, i, cIdx(b, width));
              Value c = arith::RemUIOp::create(b, loc, i, cIdx(b, width));
              Value row = clampRow(b, arith::AddIOp::create(b, loc, k0, r),
                                   seqKV);
              memref::StoreOp::create(
                  b, loc,
                  memref::LoadOp::create(b, loc, src,
                                         ValueRange{bIdx, hkv, row, c}),
                  dst, ValueRange{r, c});
            });
  Value keyPos[2], keyValid[2];
  for (int r = 0; r < 2; ++r) {
    keyPos[r] = arith::AddIOp::create(b, loc, kw, add(b, quadRow, 8 * r));
    keyValid[r] = ult(b, keyPos[r], seqKV);
  }
  Value h0 = arith::MulIOp::create(b, loc, hkv, group);
  Value numQTiles = arith::CeilDivUIOp::create(b, loc, seqQ, cIdx(b, other));
  int64_t dFrags = D / 8, dvFrags = Dv / 8, sFrags = other / 8;
  SmallVector<Value> init = zeros(b, dFrags + dvFrags);
  SmallVector<Value> acc = forCarry(
      b, h0, arith::AddIOp::create(b, loc, h0, group), init,
      [&](OpBuilder &b, Value h, ValueRange carried) {
        Value h32 = toI32(b, h);
        return forCarry(
            b, cIdx(b, 0), numQTiles, carried,
            [&](OpBuilder &b, Value qTile, ValueRange carried) {
              Value q0 = arith::MulIOp::create(b, loc, qTile, cIdx(b, other));
              Value qEnd = minU(b, add(b, q0, other), seqQ);
              Value cls = classify(b, h32, q0, lastBelow(b, qEnd), k0, kHi);
              return ifYield(b, notEmpty(b, cls), carried, [&](OpBuilder &b) {
                // The previous tile's rows are read by every thread before
                // they are replaced.
                gpu::BarrierOp::create(b, loc);
                Value count = arith::SubIOp::create(b, loc, qEnd, q0);
                forLoop(b, tid, count, cIdx(b, threads),
                        [&](OpBuilder &b, Value r) {
                          Value qpos = arith::AddIOp::create(b, loc, q0, r);
                          Value rowLse =
                              lse ? memref::LoadOp::create(
                                        b, loc, lse, ValueRange{bIdx, h, qpos})
                                        .getResult()
                                  : zero;
                          memref::StoreOp::create(b, loc, rowLse, lseRows,
                                                  ValueRange{r});
                          Value delta = dot(b, dO, {bIdx, h, qpos}, o,
                                            {bIdx, h, qpos}, Dv);
                          memref::StoreOp::create(b, loc, delta, deltaRows,
                                                  ValueRange{r});
                        });
                for (auto [src, dst, width] :
                     {std::tuple{q, qS, D}, std::tuple{dO, doS, Dv}})
                  forLoop(b, tid, cIdx(b, other * width), cIdx(b, threads),
                          [&](OpBuilder &b, Value i) {
                            Value r =
                                arith::DivUIOp::create(b, loc, i, cIdx(b, width));
                            Value c =
                                arith::RemUIOp::create(b, loc, i, cIdx(b, width));
                            Value row = clampRow(
                                b, arith::AddIOp::create(b, loc, q0, r), seqQ);
                            memref::StoreOp::create(
                                b, loc,
                                memref::LoadOp::create(
                                    b, loc, src, ValueRange{bIdx, h, row, c}),
                                dst, ValueRange{r, c});
                          });
                gpu::BarrierOp::create(b, loc);
                Value tileRows = cIdx(b, other);
                // S^T = K Q^T and dP^T = V dO^T for the warp's 16 keys.
                SmallVector<Value> s = zeros(b, sFrags), dp = zeros(b, sFrags);
                for (auto [a, bm, width, out] :
                     {std::tuple{kS, qS, D, &s}, std::tuple{vS, doS, Dv, &dp}})
                  for (int64_t kc = 0; kc < width / 16; ++kc) {
                    SmallVector<Value> af = loadA(b, a, {}, warpRow, 16 * kc,
                                                  cIdx(b, rows));
                    for (int64_t j = 0; j < sFrags; ++j)
                      accumulate(b, *out, af,
                                 loadBFromRows(b, bm, {}, cIdx(b, 8 * j),
                                               16 * kc, tileRows),
                                 j);
                  }
                SmallVector<Value> pds = entries(
                    b, cls, s, dp,
                    [&](OpBuilder &b, int r, int64_t j, int e)
                        -> std::array<Value, 6> {
                      Value col = add(b, quadCol, 8 * j + e);
                      Value qpos = arith::AddIOp::create(b, loc, q0, col);
                      Value valid = arith::AndIOp::create(
                          b, loc, keyValid[r], ult(b, qpos, seqQ));
                      // Columns past the tile's rows read a valid slot.
                      Value slot = minU(b, col, cIdx(b, other - 1));
                      return {h32, toI32(b, qpos), toI32(b, keyPos[r]), valid,
                              memref::LoadOp::create(b, loc, lseRows,
                                                     ValueRange{slot}),
                              memref::LoadOp::create(b, loc, deltaRows,
                                                     ValueRange{slot})};
                    });
                ArrayRef<Value> p = ArrayRef<Value>(pds).take_front(s.size());
                ArrayRef<Value> ds = ArrayRef<Value>(pds).drop_front(s.size());
                SmallVector<Value> next(carried);
                SmallVector<Value> dk(next.begin(), next.begin() + 4 * dFrags);
                SmallVector<Value> dv(next.begin() + 4 * dFrags, next.end());
                // dV += P^T dO, dK += dS^T Q.
                for (int64_t kc = 0; kc < other / 16; ++kc) {
                  Value qk = cIdx(b, 16 * kc);
                  SmallVector<Value> ap = aFromAcc(b, p, 2 * kc);
                  for (int64_t n = 0; n < dvFrags; ++n)
                    accumulate(b, dv, ap,
                               loadBFromColumns(b, doS, {}, qk, 8 * n,
                                                tileRows),
                               n);
                  SmallVector<Value> ad = aFromAcc(b, ds, 2 * kc);
                  for (int64_t n = 0; n < dFrags; ++n)
                    accumulate(b, dk, ad,
                               loadBFromColumns(b, qS, {}, qk, 8 * n,
                                                tileRows),
                               n);
                }
                SmallVector<Value> out(dk);
                out.append(dv);
                return out;
              });
            });
      });
  ArrayRef<Value> all(acc);
  storeFrags(b, all.take_front(4 * dFrags), dk, {bIdx, hkv}, kw, seqKV);
  storeFrags(b, all.drop_front(4 * dFrags), dv, {bIdx, hkv}, kw, seqKV);
}

void MmaBackwardBuilder::emitQueryKernel(OpBuilder &b, gpu::GPUFuncOp func) {
  setUpBackward(b);
  if (firstGradArg)
    setUpGradients(b, func, *firstGradArg, /*keyPhase=*/false);
  setUpLanes(b);
  Value zero = cF32(b, 0.0);
  Value qTile = gpu::BlockIdOp::create(b, loc, gpu::Dimension::x);
  Value h = gpu::BlockIdOp::create(b, loc, gpu::Dimension::y);
  Value h32 = toI32(b, h);
  Value hkv = arith::DivUIOp::create(
      b, loc, h, arith::MaxUIOp::create(b, loc, group, cIdx(b, 1)));
  Value q0 = arith::MulIOp::create(b, loc, qTile, cIdx(b, rows));
  Value qHi = lastBelow(b, minU(b, add(b, q0, rows), seqQ));
  Value qw = arith::AddIOp::create(b, loc, q0, warpRow);
  Value qPos[2], qValid[2], rowLse[2], delta[2], q32[2];
  for (int r = 0; r < 2; ++r) {
    qPos[r] = arith::AddIOp::create(b, loc, qw, add(b, quadRow, 8 * r));
    qValid[r] = ult(b, qPos[r], seqQ);
    q32[r] = toI32(b, qPos[r]);
    Value safe = clampRow(b, qPos[r], seqQ);
    rowLse[r] = lse ? memref::LoadOp::create(b, loc, lse,
                                             ValueRange{bIdx, h, safe})
                          .getResult()
                    : zero;
    delta[r] = dot(b, dO, {bIdx, h, safe}, o, {bIdx, h, safe}, Dv);
  }
  // The warp's Q and dO rows as A operands, for every key tile.
  SmallVector<SmallVector<Value>> aq, ado;
  for (int64_t kc = 0; kc < D / 16; ++kc)
    aq.push_back(loadA(b, q, {bIdx, h}, qw, 16 * kc, seqQ));
  for (int64_t kc = 0; kc < Dv / 16; ++kc)
    ado.push_back(loadA(b, dO, {bIdx, h}, qw, 16 * kc, seqQ));
  int64_t dFrags = D / 8, sFrags = other / 8;
  Value numKTiles = arith::CeilDivUIOp::create(b, loc, seqKV, cIdx(b, other));
  SmallVector<Value> acc = forCarry(
      b, cIdx(b, 0), numKTiles, zeros(b, dFrags),
      [&](OpBuilder &b, Value kTile, ValueRange carried) {
        Value k0 = arith::MulIOp::create(b, loc, kTile, cIdx(b, other));
        Value kEnd = minU(b, add(b, k0, other), seqKV);
        Value cls = classify(b, h32, q0, qHi, k0, lastBelow(b, kEnd));
        return ifYield(b, notEmpty(b, cls), carried, [&](OpBuilder &b) {
          // S = Q K^T and dP = dO V^T for the warp's 16 queries.
          SmallVector<Value> s = zeros(b, sFrags), dp = zeros(b, sFrags);
          for (auto [as, bm, out] :
               {std::tuple{&aq, k, &s}, std::tuple{&ado, v, &dp}})
            for (size_t kc = 0; kc < as->size(); ++kc)
              for (int64_t j = 0; j < sFrags; ++j)
                accumulate(b, *out, (*as)[kc],
                           loadBFromRows(b, bm, {bIdx, hkv}, add(b, k0, 8 * j),
                                         16 * int64_t(kc), seqKV),
                           j);
          SmallVector<Value> pds = entries(
              b, cls, s, dp,
              [&](OpBuilder &b, int r, int64_t j, int e)
                  -> std::array<Value, 6> {
                Value kpos = arith::AddIOp::create(
                    b, loc, k0, add(b, quadCol, 8 * j + e));
                Value valid =
                    arith::AndIOp::create(b, loc, qValid[r], ult(b, kpos, seqKV));
                return {h32, q32[r], toI32(b, kpos), valid, rowLse[r],
                        delta[r]};
              });
          ArrayRef<Value> ds = ArrayRef<Value>(pds).drop_front(s.size());
          // dQ += dS K.
          SmallVector<Value> dq(carried);
          for (int64_t kc = 0; kc < other / 16; ++kc) {
            SmallVector<Value> a = aFromAcc(b, ds, 2 * kc);
            for (int64_t n = 0; n < dFrags; ++n)
              accumulate(b, dq, a,
                         loadBFromColumns(b, k, {bIdx, hkv},
                                          add(b, k0, 16 * kc), 8 * n, seqKV),
                         n);
          }
          return dq;
        });
      });
  storeFrags(b, acc, dq, {bIdx, h}, qw, seqQ);
  // One lane of each quad adds its two rows' sink-logit gradients.
  Value first = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq,
                                      quadCol, cIdx(b, 0));
  for (int r = 0; r < 2; ++r)
    emitSinkGradient(b, h32, rowLse[r], delta[r],
                     arith::AndIOp::create(b, loc, first, qValid[r]));
}

} // namespace

FailureOr<nvptx::BackwardKernels>
mlir::attn::nvptx::buildGpuBackwardKernels(ModuleOp host, AttentionOp op,
                                           StringRef name,
                                           const KernelConfig &cfg,
                                           std::string &error) {
  FailureOr<gpu::GPUModuleOp> gpuModule =
      gpukernel::prepareBackwardBuild(host, op, "tensor cores", error);
  if (failed(gpuModule))
    return failure();
  MLIRContext *ctx = op.getContext();
  OpBuilder b(ctx);
  b.setInsertionPointToEnd(&gpuModule->getBodyRegion().front());

  gpukernel::KernelSignature signature = gpukernel::backwardSignature(op);
  SmallVector<Value> opValues = signature.opValues;
  SmallVector<Type> types = signature.types;
  // Then the gradients of f32 params and captured tensors: a slab per
  // thread, summed by the runtime in slot order.
  size_t firstGradArg = gpukernel::appendGradientBuffers(op, types);

  BackwardKernels out;
  // appendGradientBuffers above: always.
  out.gradientBuffers = true;
  for (int phase = 0; phase < 2; ++phase) {
    // Scalar kernels: rows whose f32 accumulators fit 40 KiB of static
    // shared memory.
    int64_t rows = gpukernel::backwardRows(
        phase == 0 ? op.getHeadDim() + op.getValueHeadDim() : op.getHeadDim(),
        40 * 1024);
    // Tensor cores up to head dims of 128 (the accumulators of dK and dV,
    // or dQ, and one tile's S and dP stay in registers); scalar FMAs
    // beyond.
    bool tensorCores = !cfg.scalarBackward && op.getHeadDim() <= 128 &&
                       op.getValueHeadDim() <= 128;
    int64_t widest = std::max(op.getHeadDim(), op.getValueHeadDim());
    // The other side's tile: small, so that S, dP, P and dS of one tile
    // (and the per-entry code unrolled over them) leave the registers to
    // the accumulators.
    int64_t other = phase == 0 || widest > 64 ? 16 : 32;
    if (tensorCores)
      rows = 64;
    // The scalar kernels' accumulators are [threads, width]: one thread per
    // row, even where rows (16, past D + Dv = 320) leave half a warp idle;
    // rounding up to a warp would double them past the 48 KiB of static
    // shared memory (ptxas refused bwd_kv at D = Dv = 256).
    int32_t threads = tensorCores ? 128 : int32_t(rows);
    std::string fname = (name + (phase == 0 ? "_bwd_kv" : "_bwd_q")).str();
    IRMapping outside;
    gpu::GPUFuncOp func = gpukernel::createKernelFunc(
        b, op, fname, types, opValues, threads, outside);
    func->setAttr("nvvm.maxntid", b.getDenseI32ArrayAttr({threads, 1, 1}));
    OpBuilder body(ctx);
    body.setInsertionPointToStart(&func.getBody().front());
    if (tensorCores) {
      MmaBackwardBuilder builder(op, outside, other, firstGradArg);
      if (phase == 0)
        builder.emitKeyKernel(body, func);
      else
        builder.emitQueryKernel(body, func);
    } else {
      gpukernel::emitSimtBackward(body, func, op, outside, phase, rows,
                                  threads, firstGradArg);
    }
    gpu::ReturnOp::create(body, op.getLoc());
    BackwardKernel &k = phase == 0 ? out.keys : out.queries;
    k.name = fname;
    k.threads = threads;
    k.rows = rows;
  }
  return out;
}
