//===- NVPTXKernel.cpp - attn.attention as a tensor-core CUDA kernel ------===//
//
// FlashAttention-2 on tensor cores (f16/bf16 in, f32 accumulate): on sm_80
// `mma.sync.m16n8k16` per warp; on sm_90a `wgmma.mma_async.m64nNk16` per
// warpgroup (4 warps), whose accumulator and A-register layouts are the
// mma.sync ones stacked over the 4 warps, so everything between the two
// matmuls is shared:
//
//   one CTA per (BQ rows, query head(s), batch, split part) of BQ / 16
//   consumer warps, each owning 16 rows: BQ = 64 on sm_80 (4 warps); on
//   sm_90a BQ = 128, two consumer warpgroups of 64 rows sharing every
//   K/V tile, each with its own softmax state and wgmma chains (or 64,
//   one warpgroup, with --block-q 64 or where 128 rows spill registers);
//   rows are BQ queries of one head, or for short query blocks `pack`
//   query heads of one K/V head (GQA packing); on sm_90a with TMA, for
//   variants without a mask or select, clusters of two CTAs on adjacent
//   query tiles share each K/V tile by TMA multicast (half the L2 reads);
//   per key tile of the CTA's part (skipped when the classifier, which
//   sees the CTA's BQ rows, says EMPTY):
//     K and V tiles -> shared memory, double-buffered: cp.async by every
//     consumer thread (zero-fill past Skv; through the page table when
//     paged, at the listed positions for kv_index, as raw codes
//     dequantized per tile when quantized), or on sm_90a TMA boxes from a
//     producer warp (mbarrier full/empty pipeline; beside two consumer
//     warpgroups the producer's is a whole warpgroup, which hands its
//     registers to them with setmaxnreg)
//     S = Q K^T in tensor-core accumulators (16 x BK per warp); for int8
//     / int4 / fp8 codes whose token groups cover the tile, on the codes
//     themselves (s8 or e4m3/e5m2 MMAs) with Q rounded per row and tile
//     after K's group scales are folded in (codesFeedQK, quantizedQuery)
//     score/mask regions per accumulator element (the mask only on
//     PARTIAL tiles), row max across the 4 lanes sharing a row
//     (shuffles), p = exp2(t - m), O *= exp2(m_old - m)
//     O += P V, P reused from the accumulators as the A operand (on
//     sm_90a with TMA, issued together with the next tile's S so softmax
//     overlaps the tensor cores, and the two warpgroups take turns
//     issuing, so one's softmax runs under the other's matmuls)
//   o = O / l (l summed across the quad), lse = (m + log2 l) ln 2, or with
//   split-KV each part's normalized partials for the generated merge.
//
// Fragment layouts (PTX ISA, mma.m16n8k16): lane l holds rows l/4 and
// l/4 + 8 and columns 2 (l % 4) + {0, 1} (+ 8 for A's upper half) of A and
// C; B (k x n) holds k = 2 (l % 4) + {0, 1} (+ 8) of column n = l/4.
//
// wgmma reads B (and Q as A of S = Q K^T) from shared memory through
// matrix descriptors (PTX ISA "Matrix Descriptor Format" and "Shared
// Memory Matrix Layout"). With TMA, as in FlashAttention-3, each tile is
// stored in column slabs ("atoms") of rows x W bytes, W the swizzle width
// (128 bytes where the row is a multiple of it, else 64 or 32: see
// attn::detail::tmaSwizzleBytes), one TMA box each, row r's 16-byte chunk
// c at chunk c ^ (r % (W / 16)) of its W-byte line (the XOR phase taken
// from the absolute address, so atoms are 8 W-byte aligned). Q and K are
// read K-major in W-byte swizzle mode: a k16 step starts 32 bytes further
// into the row (the next atom after W bytes), 8-row groups SBO = 8 W
// apart, LBO unused; warpgroup g's Q starts 64 g rows (64 g W bytes) into
// each atom. V is read MN-major (imm-trans-b = 1): Dv along N, W bytes
// contiguous and atoms LBO = BK W apart; keys along K, rows W bytes and
// 8-key groups SBO = 8 W apart. Without TMA (cp.async) tiles keep the
// no-swizzle canonical layout: 8 rows x 16 bytes "core matrices", stored
// as 16-byte chunks indexed (column chunk) * rows + row, so K-major Q and
// K have LBO = rows * 16 and SBO = 128, and N-major V LBO = 128 and
// SBO = rows * 16. P stays in registers as the A operand of O += P V.
// Everything kept in registers is indexed statically: the per-tile code
// is fully unrolled over the fragments, and only the key-tile loop is a
// loop.
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
using namespace mlir::attn::nvptx::kernel;

// The helpers NVPTXKernelBuilder.h declares.
namespace mlir::attn::nvptx::kernel {

std::pair<int32_t, int32_t> registerSplit(int64_t Dv) {
  int32_t consumer = Dv > 128 ? 240 : 224;
  return {consumer, int32_t(3 * kLaunchRegisters - 2 * consumer)};
}

int64_t consumerWarps(const nvptx::KernelConfig &cfg) {
  return cfg.blockQ / kRowsPerWarp;
}

bool codesFeedQK(AttentionOp op, const nvptx::KernelConfig &cfg) {
  // mma.sync has fp8 only from sm_89 on; sm_80 decodes fp8 to bf16.
  return keyScalesFoldPerTile(op, cfg.blockKV) &&
         (!isFp8(*op.getKvQuant()) || nvptx::usesWgmma(cfg.chip));
}

bool usesTma(AttentionOp op, const nvptx::KernelConfig &cfg) {
  return nvptx::usesWgmma(cfg.chip) && cfg.tma && !op.getKvQuant() &&
         !op.isPaged() && !op.getKvIndex();
}

int64_t tmaClusterCtas(AttentionOp op, const nvptx::KernelConfig &cfg) {
  // A cluster's CTAs consume every shared K/V tile, so they walk the union
  // of their key tiles (KernelBase::classifyForCluster): without a mask
  // the same tiles, with one that grows with the query only the later
  // CTAs' few extra tiles (a causal diagonal's), elsewhere (windows,
  // documents: tiles kept by one CTA only at both ends) too many.
  // select's kept map is not combined across the cluster.
  if (!usesTma(op, cfg) || op.hasSelect() || !gpukernel::maskGrowsWithQuery(op))
    return 1;
  return std::max<int64_t>(cfg.clusterCtas, 1);
}

} // namespace mlir::attn::nvptx::kernel

namespace {

/// 128-byte swizzled tiles repeat their XOR pattern every 1024 bytes, and
/// TMA and wgmma take its phase from the address: with TMA every tile (and
/// so every atom, whose size is a multiple of 8 W) starts 1024-aligned.
constexpr int64_t kSwizzleAlign = 1024;

SharedLayout sharedLayout(Type elt, int64_t D, int64_t Dv, int64_t BQ,
                          int64_t BK, bool chunked, bool swizzled,
                          int64_t kCodeBytes = 0, int64_t vCodeBytes = 0,
                          bool kCodeTiles = false) {
  SharedLayout l;
  // wgmma: 16-byte chunks in core-matrix order, or (swizzled) the same
  // bytes as W-wide atoms; the views only carve the bytes.
  if (chunked) {
    l.q = {BQ * D / 8, 8};
    l.k = {2, BK * D / 8, 8};
    l.v = {2, BK * Dv / 8, 8};
  } else { // ldmatrix: rows padded by 16 bytes, so the 8 row addresses of
           // one 8x8 matrix fall in distinct bank groups
    l.q = {BQ, D + 8};
    l.k = {2, BK, D + 8};
    l.v = {2, BK, Dv + 8};
  }
  // K codes feeding Q.K leave the f16/bf16 K tile unused.
  if (kCodeTiles)
    l.k = {1, 8, 8};
  int64_t align = swizzled ? kSwizzleAlign : 128;
  auto bytes = [&](ArrayRef<int64_t> shape, int64_t elementBytes) {
    int64_t n = elementBytes;
    for (int64_t d : shape)
      n *= d;
    return (n + align - 1) / align * align;
  };
  int64_t eltBytes = elt.getIntOrFloatBitWidth() / 8;
  l.kOffset = bytes(l.q, eltBytes);
  l.vOffset = l.kOffset + bytes(l.k, eltBytes);
  l.bytes = l.vOffset + bytes(l.v, eltBytes);
  if (!kCodeBytes)
    return l;
  l.kCodes = {2, BK, kCodeBytes};
  l.vCodes = {2, BK, vCodeBytes};
  if (kCodeTiles) {
    // K codes as the int8/fp8 matmul reads them, one byte per element in
    // wgmma's core-matrix chunks or ldmatrix's padded rows: the staged
    // int8/fp8 rows themselves, or one tile that int4 rows unpack into.
    SmallVector<int64_t> mmaTile =
        chunked ? SmallVector<int64_t>{BK * D / 16, 16}
                : SmallVector<int64_t>{BK, D + 16};
    if (kCodeBytes == D)
      l.kCodes = {2, mmaTile[0], mmaTile[1]};
    else
      l.kUnpacked = {1, mmaTile[0], mmaTile[1]};
  }
  l.kCodeOffset = l.bytes;
  l.vCodeOffset = l.kCodeOffset + bytes(l.kCodes, 1);
  l.bytes = l.vCodeOffset + bytes(l.vCodes, 1);
  if (!l.kUnpacked.empty()) {
    l.kUnpackedOffset = l.bytes;
    l.bytes += bytes(l.kUnpacked, 1);
  }
  return l;
}

/// The layout of a kernel for `op` under `cfg`.
SharedLayout sharedLayoutFor(AttentionOp op, const nvptx::KernelConfig &cfg) {
  Type elt = cast<MemRefType>(op.getQuery().getType()).getElementType();
  auto rowBytes = [](Value codes) {
    return cast<MemRefType>(codes.getType()).getShape().back();
  };
  bool quantized = op.getKvQuant().has_value();
  return sharedLayout(
      elt, op.getHeadDim(), op.getValueHeadDim(), cfg.blockQ, cfg.blockKV,
      nvptx::usesWgmma(cfg.chip), usesTma(op, cfg),
      quantized ? rowBytes(op.getKey()) : 0,
      quantized ? rowBytes(op.getValue()) : 0, codesFeedQK(op, cfg));
}

} // namespace

namespace mlir::attn::nvptx::kernel {

/// Max or sum over the 4 lanes that share a row.
Value GpuAttentionBuilder::quadReduce(OpBuilder &b, Value x, bool isMax) {
  for (int32_t offset : {1, 2}) {
    Value other = gpu::ShuffleOp::create(b, loc, x, offset, 32,
                                         gpu::ShuffleMode::XOR)
                      .getShuffleResult();
    x = isMax ? arith::MaximumFOp::create(b, loc, x, other).getResult()
              : arith::AddFOp::create(b, loc, x, other).getResult();
  }
  return x;
}

/// The staged codes of `buffer` as f16/bf16 in the k/v tile's
/// buffer 0 (its matmul layout), scaled: K by its per-channel scale of
/// the row's token group, V by its per-token scale. Rows past Skv hold
/// zero codes (and read the last row's scales).
void GpuAttentionBuilder::dequantizeTile(OpBuilder &b, Value codes,
                                         Value buffer, Value k0, int64_t width,
                                         Value dst, bool key) {
  int64_t chunksPerRow = width / 8;
  bool int4 = *quant == KVQuant::int4;
  Value tid = gpu::ThreadIdOp::create(b, loc, gpu::Dimension::x);
  scf::ForOp::create(
      b, loc, tid, cIdx(b, BK * chunksPerRow), cIdx(b, threads), ValueRange{},
      [&](OpBuilder &b, Location, Value c, ValueRange) {
        auto [row, chunk] = tileChunk(b, c, BK, chunksPerRow, wgmma);
        Value col = arith::MulIOp::create(b, loc, chunk, cIdx(b, 8));
        Value pos =
            kvRows().scalePosition(b, arith::AddIOp::create(b, loc, k0, row));
        // Eight codes: eight bytes, or four bytes of two nibbles each.
        Value bytes =
            int4 ? vector::LoadOp::create(
                       b, loc, VectorType::get({4}, b.getI8Type()), codes,
                       ValueRange{buffer, row,
                                  arith::MulIOp::create(b, loc, chunk,
                                                        cIdx(b, 4))})
                 : vector::LoadOp::create(
                       b, loc, VectorType::get({8}, b.getI8Type()), codes,
                       ValueRange{buffer, row, col});
        Value tile = dequantizeChunk(b, bytes, pos, col, key);
        SmallVector<Value> at = {cIdx(b, 0), row, col};
        if (wgmma)
          at = {cIdx(b, 0),
                arith::AddIOp::create(
                    b, loc, arith::MulIOp::create(b, loc, chunk, cIdx(b, BK)),
                    row),
                cIdx(b, 0)};
        vector::StoreOp::create(b, loc, tile, dst, at);
        scf::YieldOp::create(b, loc);
      });
}

/// The normalizer's input for every accumulator element: masked entries
/// (and keys past Skv) are -inf for softmax, p = 0 otherwise.
SmallVector<Value> GpuAttentionBuilder::scores(OpBuilder &b, ArrayRef<Frag> s,
                                               Value k0, bool withMask) {
  SmallVector<Value> out;
  for (auto [nb, frag] : llvm::enumerate(s))
    for (int i = 0; i < 4; ++i) {
      Value col = arith::AddIOp::create(
          b, loc, arith::MulIOp::create(b, loc, quadCol, cIdx(b, 2)),
          cIdx(b, int64_t(nb) * 8 + i % 2));
      auto [kv32, keep] =
          kvRows().keyPosition(b, arith::AddIOp::create(b, loc, k0, col));
      out.push_back(scoreEntry(b, frag[i], hRow32[i / 2], qi32[i / 2], kv32,
                               keep, withMask));
    }
  return out;
}

/// Four consecutive elements of Q's row `row` from column `col` (a
/// multiple of 4) of the shared Q tile.
Value GpuAttentionBuilder::loadQuery4(OpBuilder &b, Value row, Value col) {
  SmallVector<Value> at = {row, col};
  if (wgmma) // 16-byte chunks: chunk col / 8 of the row, half col % 8
    at = {arith::AddIOp::create(
              b, loc,
              arith::MulIOp::create(
                  b, loc, arith::DivUIOp::create(b, loc, col, cIdx(b, 8)),
                  cIdx(b, BQ)),
              row),
          arith::RemUIOp::create(b, loc, col, cIdx(b, 8))};
  return vector::LoadOp::create(b, loc, VectorType::get({4}, elt), qS, at);
}

/// This lane's two Q rows times K's per-channel scales of the token group
/// of the tile at k0 (one group per tile: codesFeedQK), rounded to int8
/// (or e4m3 for fp8 codes) with one scale per row per tile, so that
/// S = rowScale * (Q codes . K codes). Per 32 columns of D, the four
/// registers of the m16n8k32 / wgmma k32 A fragment: rows quadRow and
/// quadRow + 8, four bytes from column 4 quadCol and from 16 past it.
SmallVector<SmallVector<Value>>
GpuAttentionBuilder::quantizedQuery(OpBuilder &b, Value k0,
                                    Value rowScale[2]) {
  Type f32 = b.getF32Type(), i32 = b.getI32Type();
  auto v4f32 = VectorType::get({4}, f32);
  bool fp8 = isFp8(*quant);
  KeyRows rows = kvRows();
  Value group = rows.keyScaleGroup(b, rows.scalePosition(b, k0));
  Value col4 = arith::MulIOp::create(b, loc, quadCol, cIdx(b, 4));
  int64_t pieces = D / 16; // 4 columns each, per row
  SmallVector<Value> x[2];
  for (int64_t piece = 0; piece < pieces; ++piece) {
    Value col = add(b, col4, piece * 16);
    Value scales = vector::LoadOp::create(b, loc, v4f32, kScale,
                                          ValueRange{bIdx, hkvIdx, group, col});
    for (int r = 0; r < 2; ++r)
      x[r].push_back(arith::MulFOp::create(
          b, loc,
          arith::ExtFOp::create(b, loc, v4f32,
                                loadQuery4(b, add(b, rowA, 8 * r), col)),
          scales));
  }
  Value inv[2];
  for (int r = 0; r < 2; ++r) {
    Value m = math::AbsFOp::create(b, loc, x[r][0]);
    for (int64_t piece = 1; piece < pieces; ++piece)
      m = arith::MaximumFOp::create(b, loc, m,
                                    math::AbsFOp::create(b, loc, x[r][piece]));
    Value amax = quadReduce(
        b,
        vector::ReductionOp::create(b, loc, vector::CombiningKind::MAXIMUMF, m),
        true);
    QueryRowScale rounding =
        queryRowScale(b, loc, amax, queryCodeLimit(*quant));
    inv[r] = rounding.inverse;
    rowScale[r] = rounding.scale;
  }
  // Four codes of a row as one A register.
  auto codes = [&](Value v, Value inverse) -> Value {
    if (!fp8) {
      Value word = vector::BitCastOp::create(
          b, loc, VectorType::get({1}, i32), int8QueryCodes(b, loc, v, inverse));
      return vector::ExtractOp::create(b, loc, word, ArrayRef<int64_t>{0});
    }
    Value y = scaleIntoCodeRange(b, loc, v, inverse);
    // cvt.rn.satfinite.e4m3x2.f32 puts its first operand in the high byte.
    auto pairAt = [&](int64_t e) -> Value {
      Value lo = vector::ExtractOp::create(b, loc, y, ArrayRef<int64_t>{e});
      Value hi = vector::ExtractOp::create(b, loc, y, ArrayRef<int64_t>{e + 1});
      Value pair = NVVM::ConvertF32x2ToF8x2Op::create(
          b, loc, b.getI16Type(), hi, lo, NVVM::FPRoundingMode::RN,
          NVVM::SaturationMode::SATFINITE, false,
          b.getType<Float8E4M3FNType>());
      return arith::ExtUIOp::create(b, loc, i32, pair);
    };
    return arith::OrIOp::create(
        b, loc, pairAt(0),
        arith::ShLIOp::create(b, loc, pairAt(2), cI32(b, 16)));
  };
  SmallVector<SmallVector<Value>> steps;
  for (int64_t piece = 0; piece < pieces; piece += 2)
    steps.push_back({codes(x[0][piece], inv[0]), codes(x[1][piece], inv[1]),
                     codes(x[0][piece + 1], inv[0]),
                     codes(x[1][piece + 1], inv[1])});
  return steps;
}

/// Integer or f32 accumulators of quantized operands as scores: times the
/// row's Q scale (K's scales are inside the Q codes).
SmallVector<Frag> GpuAttentionBuilder::scaledScores(OpBuilder &b,
                                                    ArrayRef<Value> acc,
                                                    Value rowScale[2]) {
  SmallVector<Frag> s(acc.size() / 4);
  for (size_t i = 0; i < acc.size(); ++i) {
    Value x = acc[i];
    if (!x.getType().isF32())
      x = arith::SIToFPOp::create(b, loc, b.getF32Type(), x);
    s[i / 4][i % 4] =
        arith::MulFOp::create(b, loc, x, rowScale[(i % 4) / 2]);
  }
  return s;
}

/// int4 K codes of `buffer` unpacked (sign-extended nibbles, low first)
/// to one byte each in kUnpacked's matmul layout, unscaled.
void GpuAttentionBuilder::unpackInt4Tile(OpBuilder &b, Value buffer) {
  int64_t chunksPerRow = D / 8;
  Value tid = gpu::ThreadIdOp::create(b, loc, gpu::Dimension::x);
  scf::ForOp::create(
      b, loc, tid, cIdx(b, BK * chunksPerRow), cIdx(b, threads), ValueRange{},
      [&](OpBuilder &b, Location, Value c, ValueRange) {
        auto [row, chunk] = tileChunk(b, c, BK, chunksPerRow, wgmma);
        Value packed = vector::LoadOp::create(
            b, loc, VectorType::get({4}, b.getI8Type()), kCodes,
            ValueRange{buffer, row,
                       arith::MulIOp::create(b, loc, chunk, cIdx(b, 4))});
        Value tile = unpackInt4Codes(b, loc, packed);
        Value col = arith::MulIOp::create(b, loc, chunk, cIdx(b, 8));
        SmallVector<Value> at = {cIdx(b, 0), row, col};
        if (wgmma) // 16-byte chunks: half col % 16 of chunk col / 16
          at = {cIdx(b, 0),
                arith::AddIOp::create(
                    b, loc,
                    arith::MulIOp::create(
                        b, loc,
                        arith::DivUIOp::create(b, loc, col, cIdx(b, 16)),
                        cIdx(b, BK)),
                    row),
                arith::RemUIOp::create(b, loc, col, cIdx(b, 16))};
        vector::StoreOp::create(b, loc, tile, kUnpacked, at);
        scf::YieldOp::create(b, loc);
      });
}

/// One key tile whose K and V copies are in flight in buffer `tileStage`
/// (with the next tile's behind them); `carried` is (m0, m1, l0, l1,
/// O fragments...).
SmallVector<Value> GpuAttentionBuilder::emitKeyTile(OpBuilder &b, Value k0,
                                                    Value cls,
                                                    Value tileStage,
                                                    ValueRange carried) {
  stage = tileStage;
  Value kCodeStage;
  if (!tma) {
    // All but the newest cp.async group (the next tile's) have landed.
    NVVM::CpAsyncWaitGroupOp::create(b, loc, b.getI32IntegerAttr(1));
    if (quant) {
      // Everyone's codes are in: dequantize into buffer 0, then compute
      // from it. K codes feeding Q.K stay where they are (int4 ones are
      // unpacked to bytes).
      gpu::BarrierOp::create(b, loc);
      if (!codesQK)
        dequantizeTile(b, kCodes, tileStage, k0, D, kS, true);
      else if (kUnpacked)
        unpackInt4Tile(b, tileStage);
      dequantizeTile(b, vCodes, tileStage, k0, Dv, vS, false);
      kCodeStage = kUnpacked ? cIdx(b, 0) : tileStage;
      tileStage = cIdx(b, 0);
      stage = tileStage;
    }
    if (wgmma) // generic-proxy shared writes; wgmma reads async-proxy
      fenceSharedToAsyncProxy(b);
    gpu::BarrierOp::create(b, loc);
  }

  SmallVector<Frag> s;
  if (codesQK) {
    stage = kCodeStage;
    s = wgmma ? qkCodesWgmma(b, k0)
              : qkCodesMmaSync(b, k0, kUnpacked ? kUnpacked : kCodes);
    stage = tileStage;
  } else {
    s = wgmma ? fragments(qkWgmma(b, tileStage, true)) : qkMmaSync(b);
  }
  SmallVector<Value> p;
  Value alpha[2];
  SmallVector<Value> next =
      softmaxStep(b, s, k0, cls, carried.take_front(4), p, alpha);
  next.append(carried.begin() + 4, carried.end());
  rescale(b, MutableArrayRef<Value>(next).drop_front(4), alpha);
  if (wgmma) {
    SmallVector<Value> o = pvWgmma(b, pOperands(b, p), tileStage,
                                   ValueRange(next).drop_front(4), true);
    std::copy(o.begin(), o.end(), next.begin() + 4);
  } else {
    stage = tileStage;
    pvMmaSync(b, p, next);
  }
  return next;
}

/// O *= alpha (per row; null factors for normalizers without a running max).
void GpuAttentionBuilder::rescale(OpBuilder &b, MutableArrayRef<Value> acc,
                                  Value alpha[2]) {
  if (!alpha[0])
    return;
  for (size_t i = 0; i < acc.size(); ++i)
    acc[i] = arith::MulFOp::create(b, loc, acc[i], alpha[(i % 4) / 2]);
}

/// A tile PARTIAL for the CTA's BQ rows reclassified over the 16 rows of
/// this warp: FULL where the classifier says so (both warpgroups of 64
/// rows, or the 4 warps of sm_80, straddle a causal diagonal or a window's
/// edge, but fewer of their tiles do), else PARTIAL (also where it says
/// EMPTY: the tile's entries are then all dropped by the mask); other
/// classes unchanged. Rows of one warp may span two packed heads, so the
/// block is the heads [first, last] and, across a head boundary, every
/// query of the CTA. (select's kept map and kv_index, whose keys are data,
/// keep the CTA's class.)
Value GpuAttentionBuilder::warpTileClass(OpBuilder &b, Value k0, Value cls) {
  Value partial = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, cls,
                                        cI32(b, kTilePartial));
  auto ifOp = scf::IfOp::create(
      b, loc, partial,
      [&](OpBuilder &b, Location) {
        Value first = warpRow, last = add(b, warpRow, kRowsPerWarp - 1);
        auto headOf = [&](Value row) {
          return arith::AddIOp::create(
              b, loc, hIdx, arith::DivUIOp::create(b, loc, row, rowsPerHead));
        };
        auto queryOf = [&](Value row) {
          return arith::AddIOp::create(
              b, loc, q0, arith::RemUIOp::create(b, loc, row, rowsPerHead));
        };
        Value hLo = headOf(first), hHi = headOf(last);
        Value oneHead = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq,
                                              hLo, hHi);
        Value qLo = arith::SelectOp::create(b, loc, oneHead, queryOf(first), q0);
        Value qHi = arith::SelectOp::create(
            b, loc, oneHead, queryOf(last),
            arith::SubIOp::create(
                b, loc, arith::AddIOp::create(b, loc, q0, rowsPerHead),
                cIdx(b, 1)));
        Value kLast = arith::SubIOp::create(
            b, loc, arith::MinUIOp::create(b, loc, add(b, k0, BK), seqKV),
            cIdx(b, 1));
        Value warpCls = classifyBlock(
            b, loc, op, regions,
            {b32, toI32(b, hLo), toI32(b, hHi), toI32(b, qLo),
             arith::MinSIOp::create(b, loc, toI32(b, qHi), qLast),
             toI32(b, k0), toI32(b, kLast)});
        Value ragged = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ugt,
                                             add(b, k0, BK), seqKV);
        warpCls = partialWhere(b, loc, warpCls, ragged);
        Value full = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq,
                                           warpCls, cI32(b, kTileFull));
        scf::YieldOp::create(
            b, loc,
            ValueRange{arith::SelectOp::create(b, loc, full,
                                               cI32(b, kTileFull),
                                               cI32(b, kTilePartial))
                           .getResult()});
      },
      [&](OpBuilder &b, Location) { scf::YieldOp::create(b, loc, cls); });
  return ifOp.getResult(0);
}

/// The scores of S and the online-softmax update: returns the new
/// (m0, m1, l0, l1) from `ml`, the normalized entries in `p` and, for
/// softmax, the factors O must be rescaled by in `alpha`.
SmallVector<Value> GpuAttentionBuilder::softmaxStep(
    OpBuilder &b, ArrayRef<Frag> s, Value k0, Value cls, ValueRange ml,
    SmallVector<Value> &p, Value alpha[2]) {
  // Scores, with the mask only where the classifier could not decide: for
  // the CTA's rows, or on its PARTIAL tiles for this warp's 16 rows.
  if (op.hasMask() && !keptMap && !kvIndex)
    cls = warpTileClass(b, k0, cls);
  SmallVector<Value> t =
      scoresMaskedWhereNeeded(b, cls, [&](OpBuilder &b, bool withMask) {
        return scores(b, s, k0, withMask);
      });

  SmallVector<Value> next(ml.begin(), ml.end());
  p.assign(t.size(), Value());
  // The row max across the quad's four lanes, for a running max only.
  auto rowMax = [&](int r) -> Value {
    if (!hasRunningMax(norm))
      return Value();
    Value mx = deferScale ? cF32(b, -INFINITY) : ml[r];
    for (int64_t nb = 0; nb < BK / 8; ++nb)
      for (int i = 2 * r; i < 2 * r + 2; ++i)
        mx = arith::MaximumFOp::create(b, loc, mx, t[nb * 4 + i]);
    mx = quadReduce(b, mx, true);
    // With deferScale, t is the unscaled s (or the score region's result
    // before log2(e)) and the running max stays in the scaled log2
    // domain: one FMA per entry instead of a multiply and a subtraction.
    if (deferScale)
      mx = arith::MaximumFOp::create(
          b, loc, ml[r], arith::MulFOp::create(b, loc, mx, deferredScale));
    return mx;
  };
  for (int r = 0; r < 2; ++r) {
    RowRescale row = rescaleRow(b, loc, norm, ml[r], rowMax(r), ml[2 + r],
                                deferScale);
    alpha[r] = row.alpha;
    Value l = row.l;
    for (int64_t nb = 0; nb < BK / 8; ++nb)
      for (int i = 2 * r; i < 2 * r + 2; ++i) {
        Value x = t[nb * 4 + i];
        Value e = deferScale
                      ? entryProbabilityScaled(b, loc, norm, x, deferredScale,
                                               row)
                      : entryProbability(b, loc, norm, x, row.mUse);
        p[nb * 4 + i] = e;
        l = addToRowSum(b, loc, norm, l, e);
      }
    next[r] = row.m;
    next[2 + r] = l;
  }
  return next;
}

/// Sums across the quad, o = O / l, lse; `state` is (m0, m1, l0, l1, O...).
void GpuAttentionBuilder::epilogue(OpBuilder &b, ValueRange finalState) {
  Type f32 = b.getF32Type();
  auto state = [&](int64_t i) { return finalState[i]; };
  Type outElt = cast<MemRefType>(o.getType()).getElementType();
  Value pairCol = arith::MulIOp::create(b, loc, quadCol, cIdx(b, 2));
  Value split = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ugt,
                                      parts, cIdx(b, 1));
  Value firstInQuad = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq,
                                            quadCol, cIdx(b, 0));
  for (int r = 0; r < 2; ++r) {
    Value m = state(r);
    Value l = quadReduce(b, state(2 + r), false);
    RowNormalization end = normalizeRow(b, loc, norm, l);
    // Null without a row sum, whose split parts simply add up: the merge
    // reads no lse_part then, but 0 is written there anyway; without that
    // store ptxas allocates sm_80's sigmoid kernel 96 registers and spills
    // (127 and none with it), and its key tiles shrink from 64 to 16.
    Value rowLse = mlir::attn::rowLse(b, loc, norm, m, l, end.empty);
    Value partLse = rowLse ? rowLse : cF32(b, 0.0);
    SmallVector<Value> pairs[2];
    for (int64_t nb = 0; nb < Dv / 8; ++nb)
      for (int e = 0; e < 2; ++e) {
        Value x = state(4 + nb * 4 + 2 * r + e);
        pairs[e].push_back(
            end.inv ? arith::MulFOp::create(b, loc, x, end.inv).getResult()
                    : x);
      }
    auto store = [&](OpBuilder &b, Type type, Value mem, ValueRange at0,
                     int64_t nb) {
      Value x0 = pairs[0][nb], x1 = pairs[1][nb];
      if (type != f32) {
        x0 = arith::TruncFOp::create(b, loc, type, x0);
        x1 = arith::TruncFOp::create(b, loc, type, x1);
      }
      Value pair = vector::FromElementsOp::create(
          b, loc, VectorType::get({2}, type), ValueRange{x0, x1});
      SmallVector<Value> at(at0.begin(), at0.end());
      at.push_back(add(b, pairCol, nb * 8));
      // One store per pair: the runtime requires o's data and row strides
      // aligned to two elements (checkGpuLayout), and the split-KV scratch
      // is the runtime's own allocation.
      vector::StoreOp::create(
          b, loc, pair, mem, at, /*nontemporal=*/false,
          llvm::Align(2 * type.getIntOrFloatBitWidth() / 8));
    };
    Value inside = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult,
                                         qiIdx[r], seqQ);
    scf::IfOp::create(b, loc, inside, [&](OpBuilder &b, Location) {
      scf::IfOp::create(
          b, loc, split,
          [&](OpBuilder &b, Location) {
            // This part's normalized O and log-sum, combined by the merge
            // kernel.
            for (int64_t nb = 0; nb < Dv / 8; ++nb)
              store(b, f32, oPart, {part, bIdx, hRow[r], qiIdx[r]}, nb);
            scf::IfOp::create(b, loc, firstInQuad,
                              [&](OpBuilder &b, Location) {
                                memref::StoreOp::create(
                                    b, loc, partLse, lsePart,
                                    ValueRange{part, bIdx, hRow[r], qiIdx[r]});
                                scf::YieldOp::create(b, loc);
                              });
            scf::YieldOp::create(b, loc);
          },
          [&](OpBuilder &b, Location) {
            for (int64_t nb = 0; nb < Dv / 8; ++nb)
              store(b, outElt, o, {bIdx, hRow[r], qiIdx[r]}, nb);
            if (lse && rowLse)
              scf::IfOp::create(b, loc, firstInQuad,
                                [&](OpBuilder &b, Location) {
                                  memref::StoreOp::create(
                                      b, loc, rowLse, lse,
                                      ValueRange{bIdx, hRow[r], qiIdx[r]});
                                  scf::YieldOp::create(b, loc);
                                });
            scf::YieldOp::create(b, loc);
          });
      scf::YieldOp::create(b, loc);
    });
  }
}

void GpuAttentionBuilder::emit(OpBuilder &b, gpu::GPUFuncOp func) {
  // After the split-KV arguments, with TMA, the tensor maps.
  setUp(b, func, tma ? 3 : 0);
  deferScale = scaleFoldsIntoExp || logitScaleDefers;
  // Q, then two buffers each of K and V, carved from dynamic shared memory
  // (80 KiB for D = 128 on sm_90a: past the 48 KiB of static shared).
  layout = sharedLayoutFor(op, config);
  auto smem = gpu::AddressSpaceAttr::get(b.getContext(),
                                         gpu::AddressSpace::Workgroup);
  dynamicShared = gpu::DynamicSharedMemoryOp::create(
      b, loc, MemRefType::get({ShapedType::kDynamic}, b.getI8Type(),
                              MemRefLayoutAttrInterface{}, smem));
  auto view = [&](int64_t offset, ArrayRef<int64_t> shape) {
    return memref::ViewOp::create(
        b, loc, MemRefType::get(shape, elt, MemRefLayoutAttrInterface{}, smem),
        dynamicShared, cIdx(b, offset), ValueRange{});
  };
  qS = view(0, layout.q);
  kS = view(layout.kOffset, layout.k);
  vS = view(layout.vOffset, layout.v);
  if (quant) {
    auto codeView = [&](int64_t offset, ArrayRef<int64_t> shape) {
      return memref::ViewOp::create(
          b, loc,
          MemRefType::get(shape, b.getI8Type(), MemRefLayoutAttrInterface{},
                          smem),
          dynamicShared, cIdx(b, offset), ValueRange{});
    };
    kCodes = codeView(layout.kCodeOffset, layout.kCodes);
    vCodes = codeView(layout.vCodeOffset, layout.vCodes);
    if (!layout.kUnpacked.empty())
      kUnpacked = codeView(layout.kUnpackedOffset, layout.kUnpacked);
  }

  Value tid = gpu::ThreadIdOp::create(b, loc, gpu::Dimension::x);
  Value warp = arith::DivUIOp::create(b, loc, tid, cIdx(b, 32));
  lane = arith::RemUIOp::create(b, loc, tid, cIdx(b, 32));
  quadRow = arith::DivUIOp::create(b, loc, lane, cIdx(b, 4));
  quadCol = arith::RemUIOp::create(b, loc, lane, cIdx(b, 4));
  warpRow = arith::MulIOp::create(b, loc, warp, cIdx(b, kRowsPerWarp));
  {
    Value matrix = arith::DivUIOp::create(b, loc, lane, cIdx(b, 8));
    Value row = arith::RemUIOp::create(b, loc, lane, cIdx(b, 8));
    Value lowBit = arith::RemUIOp::create(b, loc, matrix, cIdx(b, 2));
    Value highBit = arith::DivUIOp::create(b, loc, matrix, cIdx(b, 2));
    ldColLo = arith::MulIOp::create(b, loc, lowBit, cIdx(b, 8));
    ldColHi = arith::MulIOp::create(b, loc, highBit, cIdx(b, 8));
    ldRowLo = arith::AddIOp::create(b, loc, row, ldColLo);
    ldRowHi = arith::AddIOp::create(b, loc, row, ldColHi);
  }
  rowA = arith::AddIOp::create(b, loc, warpRow, quadRow);
  for (int r = 0; r < 2; ++r) {
    Value row = add(b, rowA, 8 * r);
    qiIdx[r] = arith::AddIOp::create(
        b, loc, q0, arith::RemUIOp::create(b, loc, row, rowsPerHead));
    hRow[r] = arith::AddIOp::create(
        b, loc, hIdx, arith::DivUIOp::create(b, loc, row, rowsPerHead));
    qi32[r] = toI32(b, qiIdx[r]);
    hRow32[r] = toI32(b, hRow[r]);
  }

  if (wgmma) {
    // Warpgroup g reads Q rows 64 g .. 64 g + 63: in each chunk column
    // (BQ rows x 16 bytes) or atom (BQ rows x W) they start 64 g rows in.
    Value group = arith::IndexCastUIOp::create(
        b, loc, b.getI64Type(),
        arith::DivUIOp::create(b, loc, warp, cIdx(b, kWarpsPerGroup)));
    qAddr = arith::AddIOp::create(
        b, loc, sharedAddress(b, qS),
        arith::MulIOp::create(
            b, loc, group,
            arith::ConstantIntOp::create(
                b, loc, kRowsPerGroup * (tma ? qkSwizzle : 16), 64)));
    kAddr = sharedAddress(b, kS);
    vAddr = sharedAddress(b, vS);
    if (codesQK)
      kCodeAddr = sharedAddress(b, kUnpacked ? kUnpacked : kCodes);
  }

  // Running max and (per-lane partial) sum of both rows; a sink logit is
  // one extra entry with p = exp(sink - m): m = sink, l = 1, counted once
  // per quad (and only by part 0 under split-KV).
  // The sink's share of l is counted once per row: in part 0, by the
  // quad's first lane (the epilogue sums l over the quad).
  Value sinkCounts;
  if (op.hasSink())
    sinkCounts = arith::AndIOp::create(
        b, loc,
        arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, quadCol,
                              cIdx(b, 0)),
        arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, part,
                              cIdx(b, 0)));
  Value lInit[2];
  for (int r = 0; r < 2; ++r)
    lInit[r] = initialRowSum(b, loc, op.hasSink(), sinkCounts);
  // Packed rows differ in head, so each row has its own sink.
  SmallVector<Value> init = {sinkMax(b, hRow32[0]), sinkMax(b, hRow32[1]),
                             lInit[0], lInit[1]};
  init.append(Dv / 8 * 4, cF32(b, 0.0));
  if (tma)
    tmaPipeline(b, init, func.getArguments().take_back(3));
  else
    epilogue(b, asyncCopyLoop(b, init));
  gpu::ReturnOp::create(b, loc);
}

} // namespace mlir::attn::nvptx::kernel

bool mlir::attn::nvptx::usesWgmma(StringRef chip) { return chip == "sm_90a"; }

Value mlir::attn::nvptx::bitcastPair(OpBuilder &b, Value pair) {
  Location loc = pair.getLoc();
  Value word = vector::BitCastOp::create(
      b, loc, VectorType::get({1}, b.getI32Type()), pair);
  return vector::ExtractOp::create(b, loc, word, ArrayRef<int64_t>{0});
}

FailureOr<nvptx::KernelInfo>
mlir::attn::nvptx::buildGpuKernel(ModuleOp gpuModuleHost, AttentionOp op,
                                  StringRef name, const KernelConfig &cfg,
                                  std::string &error) {
  if (failed(gpukernel::checkSupported(op, "tensor cores", error)))
    return failure();
  MLIRContext *ctx = op.getContext();
  ctx->loadDialect<gpu::GPUDialect, NVVM::NVVMDialect, nvgpu::NVGPUDialect,
                   LLVM::LLVMDialect,
                   vector::VectorDialect, scf::SCFDialect, math::MathDialect,
                   memref::MemRefDialect, arith::ArithDialect>();
  OpBuilder b(ctx);
  Location loc = op.getLoc();
  gpuModuleHost->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                         b.getUnitAttr());
  b.setInsertionPointToEnd(gpuModuleHost.getBody());
  auto gpuModule = gpu::GPUModuleOp::create(b, loc, "attn_gpu");
  if (gpuModule.getBodyRegion().empty())
    gpuModule.getBodyRegion().emplaceBlock();
  b.setInsertionPointToStart(&gpuModule.getBodyRegion().front());

  KernelConfig config = cfg;
  if (config.blockQ != kRowsPerGroup &&
      !(usesWgmma(config.chip) && config.blockQ == 2 * kRowsPerGroup)) {
    error = "internal: query tiles of " + std::to_string(config.blockQ) +
            " rows on " + config.chip;
    return failure();
  }
  bool tma = usesTma(op, config);
  gpukernel::KernelSignature signature = gpukernel::kernelSignature(op);
  if (tma) // q, k, v tensor maps, typed in the body (tensorMapView)
    signature.types.append(3, LLVM::LLVMPointerType::get(ctx));
  // With TMA, one more warp produces; beside two consumer warpgroups, a
  // whole warpgroup (see registerSplit).
  int64_t consumers = 32 * consumerWarps(config);
  int32_t threads =
      int32_t(consumers + (!tma                              ? 0
                           : consumers > kWarpsPerGroup * 32 ? 128
                                                             : 32));
  IRMapping outside;
  gpu::GPUFuncOp func = gpukernel::createKernelFunc(
      b, op, name, signature.types, signature.opValues, threads, outside);
  func->setAttr("nvvm.maxntid", b.getDenseI32ArrayAttr({threads, 1, 1}));
  if (tma)
    func->setAttr(nvptx::kTensorMapArgsAttr, b.getI32IntegerAttr(3));
  int64_t cluster = tmaClusterCtas(op, config);
  if (cluster > 8) {
    error = "internal: clusters of " + std::to_string(cluster) +
            " CTAs (8 at most)";
    return failure();
  }
  if (cluster > 1) // .reqnctapercluster: cuLaunchKernel launches clusters
    func->setAttr(NVVM::NVVMDialect::getClusterDimAttrName(),
                  b.getDenseI32ArrayAttr({int32_t(cluster), 1, 1}));

  if (func.getBody().empty()) {
    error = "internal: gpu.func without a body";
    return failure();
  }
  OpBuilder body(ctx);
  body.setInsertionPointToStart(&func.getBody().front());
  GpuAttentionBuilder builder(op, config, outside);
  builder.emit(body, func);

  gpu::GPUFuncOp merge =
      gpukernel::buildMergeKernel(b, op, (name + "_merge").str());
  merge->setAttr("nvvm.maxntid",
                 b.getDenseI32ArrayAttr({int32_t(gpukernel::kMergeThreads), 1, 1}));

  KernelInfo info;
  if (op.hasSelect()) {
    // (The pre-pass takes the kernel's arguments without the tensor maps.)
    auto [pool, select] = gpukernel::buildSelectKernels(
        b, op, name, gpukernel::kernelSignature(op));
    for (gpu::GPUFuncOp f : {pool, select})
      f->setAttr("nvvm.maxntid",
                 b.getDenseI32ArrayAttr(
                     {int32_t(gpukernel::kSelectThreads), 1, 1}));
    info.selectPoolName = pool.getName().str();
    info.selectName = select.getName().str();
  }
  info.name = name.str();
  info.mergeName = (name + "_merge").str();
  info.blockThreads = threads;
  info.rowsPerBlock = config.blockQ;
  if (tma && config.shareRegisters && consumers > kWarpsPerGroup * 32)
    info.launchRegisters = kLaunchRegisters;
  info.tensorMaps = tma;
  info.clusterCtas = cluster;
  info.blockKV = config.blockKV;
  info.sharedBytes = sharedLayoutFor(op, config).bytes;
  return info;
}
