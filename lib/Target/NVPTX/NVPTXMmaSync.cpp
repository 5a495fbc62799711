//===- NVPTXMmaSync.cpp - mma.sync, ldmatrix and cp.async -----------------===//
//
// The sm_80 side of the tensor-core attention kernel (NVPTXKernel.cpp's
// top comment describes the whole kernel and the fragment layouts):
// mma.sync.m16n8k16 (and m16n8k32 s8 on K codes) per warp, operands from
// padded row-major shared tiles by ldmatrix.x4, and the K/V tiles copied
// into shared memory by cp.async, double-buffered, which the sm_90a kernel
// without TMA uses as well.
//
//===----------------------------------------------------------------------===//

#include "lib/Target/NVPTX/NVPTXKernelBuilder.h"

#include "lib/Target/NVPTX/NVPTXTarget.h"

#include "lib/Transforms/QueryCodes.h"
#include "lib/Transforms/RegionInliner.h"
#include "lib/Transforms/RowState.h"
#include "lib/Transforms/TileWalk.h"
#include "lib/Transforms/Transforms.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

#include "attn/runtime.h"

#include <cmath>

using namespace mlir;
using namespace mlir::attn;
using mlir::attn::nvptx::bitcastPair;
namespace mlir::attn::nvptx::kernel {

Value GpuAttentionBuilder::pack(OpBuilder &b, Value lo, Value hi) {
  auto pair = VectorType::get({2}, elt);
  Value v = vector::FromElementsOp::create(
      b, loc, pair,
      ValueRange{arith::TruncFOp::create(b, loc, elt, lo),
                 arith::TruncFOp::create(b, loc, elt, hi)});
  return operand(b, v);
}

/// Two consecutive elements of a shared tile row, as an mma operand.
Value GpuAttentionBuilder::loadPair(OpBuilder &b, Value mem, Value row,
                                    Value col) {
  Value v = vector::LoadOp::create(b, loc, VectorType::get({2}, elt), mem,
                                   ValueRange{row, col});
  return operand(b, v);
}

Frag GpuAttentionBuilder::mma(OpBuilder &b, ArrayRef<Value> a,
                              ArrayRef<Value> bf, const Frag &c) {
  NVVM::MMATypes type = isa<BFloat16Type>(elt) ? NVVM::MMATypes::bf16
                                               : NVVM::MMATypes::f16;
  return mmaSync(b, a, bf, c, 16, type, b.getF32Type());
}

Frag GpuAttentionBuilder::mmaSync(OpBuilder &b, ArrayRef<Value> a,
                                  ArrayRef<Value> bf, const Frag &c, int64_t k,
                                  NVVM::MMATypes type, Type accType) {
  return nvptx::mmaSync(b, loc, a, bf, c, k, type, accType);
}

/// Starts copying rows x cols of src[i0, i1, rowBase + r, c] into the
/// shared tile dst[stage] with cp.async, 16 bytes per thread and step; rows
/// at or past rowLimit (>= 1) read nothing and are zero-filled. For wgmma,
/// dst holds 16-byte chunks at (c / 8) * rows + r and consecutive threads
/// take consecutive rows, so each 8 threads fill one core matrix; for
/// mma.sync, dst is row-major with padded rows (see sharedRowElements).
void GpuAttentionBuilder::copyTile(OpBuilder &b, Value src, Value i0, Value i1,
                                   Value rowBase, int64_t rows, int64_t cols,
                                   Value rowLimit, Value dst, Value buffer,
                                   bool rowMajor, Value rowsPerSrcHead,
                                   bool keyRows) {
  // Elements per 16-byte chunk: 8 bf16/f16, 16 codes.
  int64_t perChunk =
      16 / (cast<MemRefType>(src.getType()).getElementTypeBitWidth() / 8);
  int64_t chunksPerRow = cols / perChunk;
  bool coreMatrices = wgmma && !rowMajor;
  Value tid = gpu::ThreadIdOp::create(b, loc, gpu::Dimension::x);
  Value lastRow = arith::SubIOp::create(b, loc, rowLimit, cIdx(b, 1));
  scf::ForOp::create(
      b, loc, tid, cIdx(b, rows * chunksPerRow), cIdx(b, threads), ValueRange{},
      [&](OpBuilder &b, Location, Value c, ValueRange) {
        auto [row, chunk] = tileChunk(b, c, rows, chunksPerRow, coreMatrices);
        Value col = arith::MulIOp::create(b, loc, chunk, cIdx(b, perChunk));
        // Packed heads: tile row r reads head i1 + r / n, row r % n.
        Value head = i1, srcTileRow = row;
        if (rowsPerSrcHead) {
          head = arith::AddIOp::create(
              b, loc, i1, arith::DivUIOp::create(b, loc, row, rowsPerSrcHead));
          srcTileRow = arith::RemUIOp::create(b, loc, row, rowsPerSrcHead);
        }
        Value grow = arith::AddIOp::create(b, loc, rowBase, srcTileRow);
        SmallVector<Value> at = {row, col};
        if (coreMatrices)
          at = {arith::AddIOp::create(
                    b, loc,
                    arith::MulIOp::create(b, loc, chunk, cIdx(b, rows)), row),
                cIdx(b, 0)};
        if (buffer)
          at.insert(at.begin(), buffer);
        Value inside, srcRow, outer = i0;
        if (keyRows) {
          // Through the page table / at the listed position; a slot
          // without a key reads nothing.
          KeyRow r = kvRows().keyRow(b, grow, src);
          inside = r.valid;
          srcRow = r.row;
          outer = r.outer;
        } else {
          // Past the end: a valid address, zero bytes read.
          inside = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult,
                                         grow, rowLimit);
          srcRow = arith::MinUIOp::create(b, loc, grow, lastRow);
        }
        Value srcElements = arith::SelectOp::create(
            b, loc, inside, cIdx(b, perChunk), cIdx(b, 0));
        nvgpu::DeviceAsyncCopyOp::create(
            b, loc, dst, at, src, ValueRange{outer, head, srcRow, col},
            b.getIndexAttr(perChunk), srcElements, b.getUnitAttr());
        scf::YieldOp::create(b, loc);
      });
}

/// Four 8x8 matrices of a shared tile with ldmatrix.x4 (lane l gives row
/// l % 8 of matrix l / 8 at `at`); regs[j] is this lane's pair of matrix j
/// as an mma operand.
Value GpuAttentionBuilder::ldmatrix(OpBuilder &b, Value mem, ValueRange at,
                                    bool transpose, Value regs[4]) {
  auto type = VectorType::get({4, 2}, elt);
  Value x = nvgpu::LdMatrixOp::create(b, loc, type, mem, at,
                                      b.getBoolAttr(transpose),
                                      b.getI32IntegerAttr(4));
  for (int64_t j = 0; j < 4; ++j)
    regs[j] = operand(b, vector::ExtractOp::create(b, loc, x,
                                                   ArrayRef<int64_t>{j}));
  return x;
}

/// Starts the K and V tiles at k0 into `buffer`.
void GpuAttentionBuilder::issueKeyTile(OpBuilder &b, Value k0, Value buffer) {
  if (quant) { // raw code rows; dequantized when the tile is computed
    int64_t kBytes = cast<MemRefType>(k.getType()).getShape().back();
    int64_t vBytes = cast<MemRefType>(v.getType()).getShape().back();
    // int8/fp8 codes feeding Q.K go straight into wgmma's core matrices.
    bool kRowMajor = !(codesQK && kBytes == D);
    copyTile(b, k, bIdx, hkvIdx, k0, BK, kBytes, keySlots, kCodes, buffer,
             kRowMajor, Value(), true);
    copyTile(b, v, bIdx, hkvIdx, k0, BK, vBytes, keySlots, vCodes, buffer,
             true, Value(), true);
    return;
  }
  copyTile(b, k, bIdx, hkvIdx, k0, BK, D, keySlots, kS, buffer, false, Value(),
           true);
  copyTile(b, v, bIdx, hkvIdx, k0, BK, Dv, keySlots, vS, buffer, false,
           Value(), true);
}

/// S = Q K^T on mma.sync: per 16-wide slice of D, the warp's A fragment
/// by one ldmatrix.x4, then one ldmatrix.x4 per two blocks of 8 keys.
SmallVector<Frag> GpuAttentionBuilder::qkMmaSync(OpBuilder &b) {
  Value fzero = cF32(b, 0.0);
  SmallVector<Frag> s(BK / 8, Frag{fzero, fzero, fzero, fzero});
  Value aRow = arith::AddIOp::create(b, loc, warpRow, ldRowLo);
  for (int64_t kc = 0; kc < D / 16; ++kc) {
    Value a[4];
    ldmatrix(b, qS, {aRow, add(b, ldColHi, kc * 16)}, false, a);
    for (int64_t nb = 0; nb < BK / 8; nb += 2) {
      Value bf[4];
      ldmatrix(b, kS, {stage, add(b, ldRowHi, nb * 8), add(b, ldColLo, kc * 16)},
               false, bf);
      s[nb] = mma(b, a, {bf[0], bf[1]}, s[nb]);
      s[nb + 1] = mma(b, a, {bf[2], bf[3]}, s[nb + 1]);
    }
  }
  return s;
}

/// S = Q K^T on mma.sync m16n8k32 s8: Q's codes from quantizedQuery, K's
/// B fragments (4 bytes of D of one key per register) by ldmatrix.x4 of
/// 8 keys x 16 bytes matrices from `kTile` (buffer `stage`).
SmallVector<Frag> GpuAttentionBuilder::qkCodesMmaSync(OpBuilder &b, Value k0,
                                                      Value kTile) {
  Value rowScale[2];
  SmallVector<SmallVector<Value>> a = quantizedQuery(b, k0, rowScale);
  Value zero = cI32(b, 0);
  SmallVector<Frag> acc(BK / 8, Frag{zero, zero, zero, zero});
  Value byteColLo = arith::MulIOp::create(b, loc, ldColLo, cIdx(b, 2));
  auto type = VectorType::get({4, 4}, b.getI8Type());
  for (int64_t kc = 0; kc < D / 32; ++kc)
    for (int64_t nb = 0; nb < BK / 8; nb += 2) {
      Value x = nvgpu::LdMatrixOp::create(
          b, loc, type, kTile,
          ValueRange{stage, add(b, ldRowHi, nb * 8), add(b, byteColLo, kc * 32)},
          b.getBoolAttr(false), b.getI32IntegerAttr(4));
      Value bf[4];
      for (int64_t j = 0; j < 4; ++j) {
        Value word = vector::BitCastOp::create(
            b, loc, VectorType::get({1}, b.getI32Type()),
            vector::ExtractOp::create(b, loc, x, ArrayRef<int64_t>{j}));
        bf[j] = vector::ExtractOp::create(b, loc, word, ArrayRef<int64_t>{0});
      }
      Type i32 = b.getI32Type();
      acc[nb] = mmaSync(b, a[kc], {bf[0], bf[1]}, acc[nb], 32,
                        NVVM::MMATypes::s8, i32);
      acc[nb + 1] = mmaSync(b, a[kc], {bf[2], bf[3]}, acc[nb + 1], 32,
                            NVVM::MMATypes::s8, i32);
    }
  SmallVector<Value> flat;
  for (const Frag &f : acc)
    flat.append(f.begin(), f.end());
  return scaledScores(b, flat, rowScale);
}

/// O += P V on mma.sync: P's accumulators are the A operand of a 16-key
/// slice as they are; V's B fragments (two keys per register) come from
/// row-major V by ldmatrix.x4.trans, two blocks of 8 columns at a time.
void GpuAttentionBuilder::pvMmaSync(OpBuilder &b, ArrayRef<Value> p,
                                    SmallVector<Value> &next) {
  for (int64_t kc = 0; kc < BK / 16; ++kc) {
    auto at = [&](int64_t nb, int i) { return p[nb * 4 + i]; };
    Value a[4] = {pack(b, at(2 * kc, 0), at(2 * kc, 1)),
                  pack(b, at(2 * kc, 2), at(2 * kc, 3)),
                  pack(b, at(2 * kc + 1, 0), at(2 * kc + 1, 1)),
                  pack(b, at(2 * kc + 1, 2), at(2 * kc + 1, 3))};
    for (int64_t nb = 0; nb < Dv / 8; nb += 2) {
      Value bf[4];
      ldmatrix(b, vS, {stage, add(b, ldRowLo, kc * 16), add(b, ldColHi, nb * 8)},
               true, bf);
      for (int64_t half = 0; half < 2; ++half) {
        Frag c;
        for (int i = 0; i < 4; ++i)
          c[i] = next[4 + (nb + half) * 4 + i];
        Frag d = mma(b, a, {bf[2 * half], bf[2 * half + 1]}, c);
        for (int i = 0; i < 4; ++i)
          next[4 + (nb + half) * 4 + i] = d[i];
      }
    }
  }
}

/// Double-buffered key tiles: while tile t is computed from buffer s,
/// tile t + 1 (the next one the classifier keeps) streams into 1 - s with
/// cp.async. One cp.async group per iteration (empty when there is no
/// next tile), so "all but the newest group" is always tile t's.
SmallVector<Value> GpuAttentionBuilder::asyncCopyLoop(OpBuilder &b,
                                                      ValueRange init) {
  copyTile(b, q, bIdx, hIdx, q0, BQ, D, seqQ, qS, Value(), false,
           rowsPerHead);
  auto classify = [&](OpBuilder &b, Value t) {
    return classifyTile(b, arith::MulIOp::create(b, loc, t, cIdx(b, BK)));
  };
  // The class is the same for the whole CTA, so every barrier under these
  // conditions is reached by all threads or none. A tile's staged value is
  // its buffer: 0 for the first, then alternating.
  auto stage = [&](OpBuilder &b, Value t, Value cls, ValueRange previous) {
    Value buffer = previous.empty()
                       ? cIdx(b, 0)
                       : arith::SubIOp::create(b, loc, cIdx(b, 1), previous[0])
                             .getResult();
    scf::IfOp::create(b, loc, isVisited(b, cls), [&](OpBuilder &b, Location) {
      issueKeyTile(b, arith::MulIOp::create(b, loc, t, cIdx(b, BK)), buffer);
      scf::YieldOp::create(b, loc);
    });
    NVVM::CpAsyncCommitGroupOp::create(b, loc);
    return SmallVector<Value>{buffer};
  };
  // Buffer 1 - s was last read by tile t - 1: everyone is past it.
  auto arrive = [&](OpBuilder &b, Value, Value, ValueRange) {
    gpu::BarrierOp::create(b, loc);
  };
  auto body = [&](OpBuilder &b, Value k0, Value cls, ValueRange staged,
                  ValueRange carried) {
    return emitKeyTile(b, k0, cls, staged[0], carried);
  };
  return walkKeyTilesLookingAhead(b, loc, tileBegin, numTiles, BK, init,
                                  classify, {stage, arrive, body});
}

} // namespace mlir::attn::nvptx::kernel

std::array<Value, 4> nvptx::mmaSync(OpBuilder &b, Location loc,
                                    ArrayRef<Value> a, ArrayRef<Value> bf,
                                    ArrayRef<Value> c, int64_t k,
                                    NVVM::MMATypes type, Type accType) {
  auto resultType = LLVM::LLVMStructType::getLiteral(
      b.getContext(), {accType, accType, accType, accType});
  std::optional<NVVM::MMAIntOverflow> overflow;
  if (accType.isInteger(32))
    overflow = NVVM::MMAIntOverflow::wrapped;
  auto op = NVVM::MmaOp::create(
      b, loc, resultType, a, bf, ValueRange(c), ArrayRef<int64_t>{16, 8, k},
      std::nullopt, overflow, std::array<NVVM::MMATypes, 2>{type, type},
      std::array<NVVM::MMALayout, 2>{NVVM::MMALayout::row,
                                     NVVM::MMALayout::col});
  std::array<Value, 4> d;
  for (int i = 0; i < 4; ++i)
    d[i] = LLVM::ExtractValueOp::create(b, loc, op.getResult(),
                                        ArrayRef<int64_t>{i});
  return d;
}
