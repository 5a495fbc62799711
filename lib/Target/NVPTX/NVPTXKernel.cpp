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
//   query heads of one K/V head (GQA packing);
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
#include "lib/Target/NVPTX/NVPTXTarget.h"

#include "lib/Transforms/QueryCodes.h"
#include "lib/Transforms/RegionInliner.h"
#include "lib/Transforms/TileWalk.h"
#include "lib/Transforms/RowState.h"
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

namespace {

constexpr int64_t kRowsPerWarp = 16;
/// Warps per warpgroup, and the query rows of one warpgroup's wgmma (m64).
constexpr int64_t kWarpsPerGroup = 4;
constexpr int64_t kRowsPerGroup = kWarpsPerGroup * kRowsPerWarp;

/// With two consumer warpgroups, the TMA kernel's producer is a warpgroup
/// too: 384 threads, at most 168 registers each at launch (each SM
/// quadrant holds 3 of the 12 warps: 65536 / 4 / 3 / 32 = 170). As in
/// FlashAttention-3, setmaxnreg then moves registers from the producer's
/// warpgroup to the consumers' within the CTA's pool of 384 x 168:
/// 2 x 128 x consumer + 128 x producer <= 384 x 168. The consumers' share
/// follows their accumulators (Dv / 2 f32 of O per thread); the producer
/// keeps enough for the classifier it runs per key tile.
constexpr int64_t kLaunchRegisters = 168;
std::pair<int32_t, int32_t> registerSplit(int64_t Dv) {
  int32_t consumer = Dv > 128 ? 240 : 224;
  return {consumer, int32_t(3 * kLaunchRegisters - 2 * consumer)};
}

/// The consumer warps of a CTA: one per 16 query rows of its tile
/// (sm_90a: one warpgroup per 64 rows).
int64_t consumerWarps(const nvptx::KernelConfig &cfg) {
  return cfg.blockQ / kRowsPerWarp;
}

/// One accumulator fragment: the 4 f32 a lane holds of a 16 x 8 tile.
using Frag = std::array<Value, 4>;

/// The operand types of a wgmma chain: the PTX shape-and-types suffix
/// after the N size ("k16.f32.bf16.bf16"); integer ones accumulate in s32
/// and take no scale or transpose immediates, fp8 ones no transpose
/// (8-bit operands are K-major only).
struct WgmmaForm {
  std::string kAndTypes;
  bool integer = false;
  bool fp8 = false;
};

/// Q and two buffers each of K and V in dynamic shared memory: memref
/// shapes and 128-byte aligned byte offsets.
struct SharedLayout {
  SmallVector<int64_t> q, k, v;
  int64_t kOffset = 0, vOffset = 0, bytes = 0;
  // Quantized K/V: two buffers of raw code rows each, dequantized into
  // the k/v tiles (buffer 0) before the matmuls.
  SmallVector<int64_t> kCodes, vCodes;
  int64_t kCodeOffset = 0, vCodeOffset = 0;
  // int4 K codes feeding int8 Q.K: one tile of them unpacked to bytes.
  SmallVector<int64_t> kUnpacked;
  int64_t kUnpackedOffset = 0;
};

/// Whether Q.K runs on the K codes themselves (int8 tensor cores, and
/// fp8 ones with wgmma) instead of dequantized f16/bf16 tiles: K's scales
/// fold into Q per key tile, so every key of a tile must share one token
/// group (no kv_index, whose rows sit anywhere, and groups that are whole
/// multiples of the tile). int4 codes are unpacked to int8 in shared memory.
bool codesFeedQK(AttentionOp op, const nvptx::KernelConfig &cfg) {
  // mma.sync has fp8 only from sm_89 on; sm_80 decodes fp8 to bf16.
  return keyScalesFoldPerTile(op, cfg.blockKV) &&
         (!isFp8(*op.getKvQuant()) || nvptx::usesWgmma(cfg.chip));
}

/// Whether the kernel streams Q, K and V by TMA (sm_90a; raw rows only:
/// quantized codes, pages and listed positions take cp.async).
bool usesTma(AttentionOp op, const nvptx::KernelConfig &cfg) {
  return nvptx::usesWgmma(cfg.chip) && cfg.tma && !op.getKvQuant() &&
         !op.isPaged() && !op.getKvIndex();
}

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

class GpuAttentionBuilder : public gpukernel::KernelBase {
public:
  GpuAttentionBuilder(AttentionOp op, const nvptx::KernelConfig &cfg,
                      IRMapping outside)
      : KernelBase(op, std::move(outside), cfg.blockQ, cfg.blockKV),
        threads(32 * consumerWarps(cfg)), wgmma(nvptx::usesWgmma(cfg.chip)),
        tma(usesTma(op, cfg)), codesQK(codesFeedQK(op, cfg)), config(cfg) {
    if (tma) {
      qkSwizzle = ::attn::detail::tmaSwizzleBytes(D * elementBytes());
      vSwizzle = ::attn::detail::tmaSwizzleBytes(Dv * elementBytes());
    }
  }

  void emit(OpBuilder &b, gpu::GPUFuncOp func);

private:
  /// Orders this thread's generic-proxy shared-memory accesses before
  /// later async-proxy ones (wgmma operand reads, TMA transactions).
  void fenceSharedToAsyncProxy(OpBuilder &b) {
    NVVM::FenceProxyOp::create(
        b, loc,
        NVVM::ProxyKindAttr::get(b.getContext(), NVVM::ProxyKind::async_shared),
        NVVM::SharedSpaceAttr::get(b.getContext(),
                                   NVVM::SharedSpace::shared_cta));
  }
  Value pack(OpBuilder &b, Value lo, Value hi);
  /// A pair of f16 is an mma operand as is; a pair of bf16 goes as i32.
  Value operand(OpBuilder &b, Value pair) {
    return isa<BFloat16Type>(elt) ? bitcastPair(b, pair) : pair;
  }
  Value loadPair(OpBuilder &b, Value mem, Value row, Value col);
  Frag mma(OpBuilder &b, ArrayRef<Value> a, ArrayRef<Value> bf,
           const Frag &c);
  Value quadReduce(OpBuilder &b, Value x, bool isMax);
  void copyTile(OpBuilder &b, Value src, Value i0, Value i1, Value rowBase,
                int64_t rows, int64_t cols, Value rowLimit, Value dst,
                Value buffer, bool rowMajor = false,
                Value rowsPerSrcHead = Value(), bool keyRows = false);
  void dequantizeTile(OpBuilder &b, Value codes, Value buffer, Value k0,
                      int64_t width, Value dst, bool key);
  /// The (row, 16-byte chunk) a thread handles at step `c` of a tile copy:
  /// consecutive threads take consecutive rows of one chunk column in the
  /// core-matrix order (each 8 fill one core matrix), else consecutive
  /// chunks of a row.
  std::pair<Value, Value> tileChunk(OpBuilder &b, Value c, int64_t rows,
                                    int64_t chunksPerRow, bool coreMatrices) {
    if (coreMatrices)
      return {arith::RemUIOp::create(b, loc, c, cIdx(b, rows)),
              arith::DivUIOp::create(b, loc, c, cIdx(b, rows))};
    return {arith::DivUIOp::create(b, loc, c, cIdx(b, chunksPerRow)),
            arith::RemUIOp::create(b, loc, c, cIdx(b, chunksPerRow))};
  }
  Value ldmatrix(OpBuilder &b, Value mem, ValueRange at, bool transpose,
                 Value regs[4]);
  void issueKeyTile(OpBuilder &b, Value k0, Value buffer);
  Value sharedAddress(OpBuilder &b, Value mem);
  Value stageAddress(OpBuilder &b, Value base, int64_t tileBytes);
  int64_t elementBytes() const { return 2; } // f16 and bf16
  Value descriptor(OpBuilder &b, Value base, int64_t offset, int64_t lbo,
                   int64_t sbo, int64_t swizzleBytes = 0);
  SmallVector<Value> warpgroupMma(OpBuilder &b, int64_t n, ValueRange acc,
                                  ArrayRef<SmallVector<Value>> aPerStep,
                                  ArrayRef<Value> bPerStep, bool transB,
                                  bool wait, const WgmmaForm *form = nullptr);
  // Q.K on K's int8/fp8 codes (codesQK).
  SmallVector<SmallVector<Value>> quantizedQuery(OpBuilder &b, Value k0,
                                                 Value rowScale[2]);
  Value loadQuery4(OpBuilder &b, Value row, Value col);
  /// mma.sync m16n8k`k` with `type` operands and accumulators.
  Frag mmaSync(OpBuilder &b, ArrayRef<Value> a, ArrayRef<Value> bf,
               const Frag &c, int64_t k, NVVM::MMATypes type, Type accType);
  SmallVector<Frag> qkCodesMmaSync(OpBuilder &b, Value k0, Value kTile);
  SmallVector<Frag> qkCodesWgmma(OpBuilder &b, Value k0);
  SmallVector<Frag> scaledScores(OpBuilder &b, ArrayRef<Value> acc,
                                 Value rowScale[2]);
  void unpackInt4Tile(OpBuilder &b, Value buffer);
  SmallVector<Value> waitWarpgroup(OpBuilder &b, ValueRange pending,
                                   int64_t groups);
  SmallVector<Frag> qkMmaSync(OpBuilder &b);
  void pvMmaSync(OpBuilder &b, ArrayRef<Value> p, SmallVector<Value> &next);
  SmallVector<Value> qkWgmma(OpBuilder &b, Value buffer, bool wait);
  SmallVector<SmallVector<Value>> pOperands(OpBuilder &b, ArrayRef<Value> p);
  SmallVector<Value> pvWgmma(OpBuilder &b, ArrayRef<SmallVector<Value>> a,
                             Value buffer, ValueRange acc, bool wait);
  SmallVector<Value> softmaxStep(OpBuilder &b, ArrayRef<Frag> s, Value k0,
                                 Value cls, ValueRange ml,
                                 SmallVector<Value> &p, Value alpha[2]);
  void rescale(OpBuilder &b, MutableArrayRef<Value> acc, Value alpha[2]);
  SmallVector<Value> tmaConsumer(OpBuilder &b, Value barriers,
                                 ValueRange init);
  static SmallVector<Frag> fragments(ArrayRef<Value> acc);
  Value bufferOf(OpBuilder &b, Value n);
  Value useParity(OpBuilder &b, Value n, bool previousUse);
  SmallVector<Value> emitKeyTile(OpBuilder &b, Value k0, Value cls,
                                 Value tileStage, ValueRange carried);
  SmallVector<Value> asyncCopyLoop(OpBuilder &b, ValueRange init);
  void tmaPipeline(OpBuilder &b, ValueRange init, ValueRange tensorMaps);
  void tmaLoad(OpBuilder &b, Value map, Value barriers, int64_t barrier,
               int64_t smemOffset, int64_t rows, int64_t cols,
               int64_t swizzleBytes, Value row0, Value head);
  void epilogue(OpBuilder &b, ValueRange state);
  SmallVector<Value> scores(OpBuilder &b, ArrayRef<Frag> s, Value k0,
                            bool withMask);

  // Consumer threads: 32 per 16 query rows; they all copy tiles with
  // cp.async, and the producer warp (TMA) comes after them.
  int64_t threads;
  bool wgmma, tma;
  // With TMA, the swizzle width W in bytes of the Q and K tiles (D wide)
  // and of the V tiles (Dv wide): atoms of rows x W (see the top comment).
  int64_t qkSwizzle = 0, vSwizzle = 0;
  // Q.K runs on K's codes (int8 or fp8 tensor cores; see codesFeedQK).
  bool codesQK;
  nvptx::KernelConfig config;
  Value dynamicShared;
  SharedLayout layout;
  // Quantized K/V: codes staged raw, dequantized per tile (V, and K unless
  // codesQK); int4 K codes unpacked to bytes for int8 Q.K.
  Value kCodes, vCodes, kUnpacked;
  Value kCodeAddr; // wgmma descriptors of the K codes
  Value qiIdx[2];
  Value qS, kS, vS;
  // Shared-window addresses for wgmma descriptors: this warpgroup's 64 Q
  // rows, the K and V tiles.
  Value qAddr, kAddr, vAddr;
  Value stage;               // the K/V buffer of the tile being computed
  // ldmatrix row/column offsets of this lane: row l % 8 (+ 8) of matrix
  // l / 8, whose low or high bit picks the second row or column block.
  Value warpRow, ldRowLo, ldRowHi, ldColLo, ldColHi;
  Value lane, quadRow, quadCol, rowA;
  Value qi32[2]; // the two query rows of this lane
  Value hRow[2], hRow32[2];
};

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
  Frag d;
  for (int i = 0; i < 4; ++i)
    d[i] = LLVM::ExtractValueOp::create(b, loc, op.getResult(),
                                        ArrayRef<int64_t>{i});
  return d;
}

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

/// The shared-window address of a workgroup buffer, as i64.
Value GpuAttentionBuilder::sharedAddress(OpBuilder &b, Value mem) {
  Value index = memref::ExtractAlignedPointerAsIndexOp::create(b, loc, mem);
  return arith::IndexCastUIOp::create(b, loc, b.getI64Type(), index);
}

/// base + stage * tileBytes: the buffer of the tile being computed.
Value GpuAttentionBuilder::stageAddress(OpBuilder &b, Value base,
                                        int64_t tileBytes) {
  Value offset = arith::MulIOp::create(
      b, loc, arith::IndexCastUIOp::create(b, loc, b.getI64Type(), stage),
      arith::ConstantIntOp::create(b, loc, tileBytes, 64));
  return arith::AddIOp::create(b, loc, base, offset);
}

/// A wgmma matrix descriptor (PTX ISA "Matrix Descriptor Format"): start
/// address, leading and stride byte offsets, each >> 4, base offset 0
/// (every swizzled tile is 8 W-aligned), and in bits 62-63 the layout:
/// 0 no swizzle, 1 128-byte, 2 64-byte, 3 32-byte swizzle.
Value GpuAttentionBuilder::descriptor(OpBuilder &b, Value base, int64_t offset,
                                      int64_t lbo, int64_t sbo,
                                      int64_t swizzleBytes) {
  auto c64 = [&](int64_t v) {
    return arith::ConstantIntOp::create(b, loc, v, 64).getResult();
  };
  Value addr = arith::AddIOp::create(b, loc, base, c64(offset));
  Value start = arith::ShRUIOp::create(
      b, loc, arith::AndIOp::create(b, loc, addr, c64(0x3FFFF)), c64(4));
  uint64_t mode = swizzleBytes == 128  ? 1
                  : swizzleBytes == 64 ? 2
                  : swizzleBytes == 32 ? 3
                                       : 0;
  uint64_t fields =
      uint64_t(lbo >> 4) << 16 | uint64_t(sbo >> 4) << 32 | mode << 62;
  return arith::OrIOp::create(b, loc, start, c64(int64_t(fields)));
}

/// acc = sum over steps of A_s B_s on one warpgroup, as one asm statement:
/// wgmma.fence, the wgmma.mma_async chain, commit and (with `wait`) wait.
/// Accumulators are pending between mma_async and wait_group, so no
/// compiler-visible code may touch them in between: without `wait` the
/// results may only be handed to waitWarpgroup. A is a descriptor (one
/// i64) or four i32 registers per step.
SmallVector<Value>
GpuAttentionBuilder::warpgroupMma(OpBuilder &b, int64_t n, ValueRange acc,
                                  ArrayRef<SmallVector<Value>> aPerStep,
                                  ArrayRef<Value> bPerStep, bool transB,
                                  bool wait, const WgmmaForm *form) {
  int64_t nAcc = int64_t(acc.size()); // n / 2 per thread
  std::string type = isa<BFloat16Type>(elt) ? "bf16" : "f16";
  WgmmaForm half{"k16.f32." + type + "." + type};
  if (!form)
    form = &half;
  std::string text, constraints;
  llvm::raw_string_ostream asmText(text), cons(constraints);
  SmallVector<Value> operands(acc.begin(), acc.end());
  for (int64_t i = 0; i < nAcc; ++i)
    cons << (i ? "," : "") << (form->integer ? "=r" : "=f");
  for (int64_t i = 0; i < nAcc; ++i)
    cons << "," << i;
  int64_t next = 2 * nAcc;
  operands.push_back(cI32(b, 1));
  cons << ",r";
  int64_t scaleOperand = next++;
  asmText << "{\n.reg .pred p;\nsetp.ne.b32 p, $" << scaleOperand
          << ", 0;\nwgmma.fence.sync.aligned;\n";
  for (size_t step = 0; step < bPerStep.size(); ++step) {
    asmText << "wgmma.mma_async.sync.aligned.m64n" << n << form->kAndTypes
            << " {";
    for (int64_t i = 0; i < nAcc; ++i)
      asmText << (i ? ", " : "") << "$" << i;
    asmText << "}, ";
    const SmallVector<Value> &a = aPerStep[step];
    if (a.size() == 1) {
      operands.push_back(a[0]);
      cons << ",l";
      asmText << "$" << next++;
    } else {
      asmText << "{";
      for (size_t i = 0; i < a.size(); ++i) {
        operands.push_back(a[i]);
        cons << ",r";
        asmText << (i ? ", " : "") << "$" << next++;
      }
      asmText << "}";
    }
    operands.push_back(bPerStep[step]);
    cons << ",l";
    asmText << ", $" << next++ << ", p";
    if (!form->integer)
      asmText << ", 1, 1"; // imm-scale-a, imm-scale-b
    if (!form->integer && !form->fp8) {
      if (a.size() == 1)
        asmText << ", 0"; // imm-trans-a: K-major
      asmText << ", " << (transB ? 1 : 0);
    }
    asmText << ";\n";
  }
  asmText << "wgmma.commit_group.sync.aligned;\n";
  if (wait)
    asmText << "wgmma.wait_group.sync.aligned 0;\n";
  asmText << "}";
  Type accType = form->integer ? Type(b.getI32Type()) : Type(b.getF32Type());
  auto resultType = LLVM::LLVMStructType::getLiteral(
      b.getContext(), SmallVector<Type>(nAcc, accType));
  auto inlineAsm = LLVM::InlineAsmOp::create(
      b, loc, resultType, operands, text, constraints,
      /*has_side_effects=*/true, /*is_align_stack=*/false,
      LLVM::tailcallkind::TailCallKind::None,
      LLVM::AsmDialectAttr::get(b.getContext(), LLVM::AsmDialect::AD_ATT),
      ArrayAttr());
  SmallVector<Value> out;
  for (int64_t i = 0; i < nAcc; ++i)
    out.push_back(LLVM::ExtractValueOp::create(b, loc, inlineAsm.getRes(),
                                               ArrayRef<int64_t>{i}));
  return out;
}

/// Waits until at most `groups` wgmma groups are in flight; `pending` (the
/// accumulators of the groups that must be done) pass through the asm
/// statement, so their uses cannot move above the wait.
SmallVector<Value> GpuAttentionBuilder::waitWarpgroup(OpBuilder &b,
                                                      ValueRange pending,
                                                      int64_t groups) {
  std::string constraints;
  llvm::raw_string_ostream cons(constraints);
  for (size_t i = 0; i < pending.size(); ++i)
    cons << (i ? "," : "") << "=f";
  for (size_t i = 0; i < pending.size(); ++i)
    cons << "," << i;
  auto resultType = LLVM::LLVMStructType::getLiteral(
      b.getContext(), SmallVector<Type>(pending.size(), b.getF32Type()));
  auto inlineAsm = LLVM::InlineAsmOp::create(
      b, loc, resultType, pending,
      "wgmma.wait_group.sync.aligned " + std::to_string(groups) + ";",
      constraints, /*has_side_effects=*/true, /*is_align_stack=*/false,
      LLVM::tailcallkind::TailCallKind::None,
      LLVM::AsmDialectAttr::get(b.getContext(), LLVM::AsmDialect::AD_ATT),
      ArrayAttr());
  SmallVector<Value> out;
  for (size_t i = 0; i < pending.size(); ++i)
    out.push_back(LLVM::ExtractValueOp::create(
        b, loc, inlineAsm.getRes(), ArrayRef<int64_t>{int64_t(i)}));
  return out;
}

SmallVector<Frag> GpuAttentionBuilder::fragments(ArrayRef<Value> acc) {
  SmallVector<Frag> s(acc.size() / 4);
  for (size_t nb = 0; nb < s.size(); ++nb)
    for (int i = 0; i < 4; ++i)
      s[nb][i] = acc[nb * 4 + i];
  return s;
}

/// S = Q K^T for the key tile in `buffer`, both operands through
/// descriptors, one k16 step per 16 columns of D.
SmallVector<Value> GpuAttentionBuilder::qkWgmma(OpBuilder &b, Value buffer,
                                                bool wait) {
  stage = buffer;
  SmallVector<Value> acc(BK / 2, cF32(b, 0.0));
  SmallVector<SmallVector<Value>> aSteps;
  SmallVector<Value> bSteps;
  Value kBase = stageAddress(b, kAddr, BK * D * elementBytes());
  for (int64_t kc = 0; kc < D / 16; ++kc) {
    if (tma) {
      // K-major, swizzled: step kc's 32 bytes are in atom kc * 32 / W, that
      // far into its rows. LBO is unused here; 16 bytes (1) as the ISA
      // assumes.
      int64_t w = qkSwizzle, atom = kc * 32 / w, within = kc * 32 % w;
      aSteps.push_back(
          {descriptor(b, qAddr, atom * BQ * w + within, 16, 8 * w, w)});
      bSteps.push_back(
          descriptor(b, kBase, atom * BK * w + within, 16, 8 * w, w));
      continue;
    }
    aSteps.push_back({descriptor(b, qAddr, 2 * kc * BQ * 16, BQ * 16, 128)});
    bSteps.push_back(descriptor(b, kBase, 2 * kc * BK * 16, BK * 16, 128));
  }
  return warpgroupMma(b, BK, acc, aSteps, bSteps, false, wait);
}

/// P's accumulators as the register A operand of each 16-key step of
/// O += P V, as they are (the accumulator and A layouts agree).
SmallVector<SmallVector<Value>>
GpuAttentionBuilder::pOperands(OpBuilder &b, ArrayRef<Value> p) {
  auto reg = [&](Value lo, Value hi) {
    Value pair = pack(b, lo, hi);
    return isa<VectorType>(pair.getType()) ? bitcastPair(b, pair) : pair;
  };
  SmallVector<SmallVector<Value>> a;
  for (int64_t kc = 0; kc < BK / 16; ++kc) {
    auto at = [&](int64_t nb, int i) { return p[nb * 4 + i]; };
    a.push_back({reg(at(2 * kc, 0), at(2 * kc, 1)),
                 reg(at(2 * kc, 2), at(2 * kc, 3)),
                 reg(at(2 * kc + 1, 0), at(2 * kc + 1, 1)),
                 reg(at(2 * kc + 1, 2), at(2 * kc + 1, 3))});
  }
  return a;
}

/// acc += P V for the V tile in `buffer`, read N-major from shared memory.
SmallVector<Value>
GpuAttentionBuilder::pvWgmma(OpBuilder &b, ArrayRef<SmallVector<Value>> a,
                             Value buffer, ValueRange acc, bool wait) {
  stage = buffer;
  SmallVector<Value> bSteps;
  Value vBase = stageAddress(b, vAddr, BK * Dv * elementBytes());
  for (int64_t kc = 0; kc < BK / 16; ++kc) {
    if (tma) {
      // MN-major, swizzled: keys kc * 16.. are rows of every atom; atoms
      // (W bytes of Dv each) BK W apart, 8-key groups 8 W apart.
      int64_t w = vSwizzle;
      bSteps.push_back(descriptor(b, vBase, kc * 16 * w, BK * w, 8 * w, w));
      continue;
    }
    bSteps.push_back(descriptor(b, vBase, kc * 256, 128, BK * 16));
  }
  return warpgroupMma(b, Dv, acc, a, bSteps, true, wait);
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

/// S = Q K^T on wgmma k32 with Q's int8/e4m3 codes in registers and K's
/// codes (buffer `stage`) through descriptors: K-major core matrices of
/// 8 keys x 16 bytes, as for f16/bf16 K, 32 bytes of D per step.
SmallVector<Frag> GpuAttentionBuilder::qkCodesWgmma(OpBuilder &b, Value k0) {
  Value rowScale[2];
  SmallVector<SmallVector<Value>> a = quantizedQuery(b, k0, rowScale);
  WgmmaForm form;
  if (*quant == KVQuant::int8 || *quant == KVQuant::int4) {
    form = {"k32.s32.s8.s8", true, false};
  } else {
    form = {std::string("k32.f32.e4m3.") +
                (*quant == KVQuant::fp8e4m3 ? "e4m3" : "e5m2"),
            false, true};
  }
  Value zero = form.integer ? cI32(b, 0) : cF32(b, 0.0);
  SmallVector<Value> acc(BK / 2, zero);
  SmallVector<Value> bSteps;
  Value kBase = stageAddress(b, kCodeAddr, BK * D);
  for (int64_t kc = 0; kc < D / 32; ++kc)
    bSteps.push_back(descriptor(b, kBase, 2 * kc * BK * 16, BK * 16, 128));
  SmallVector<Value> out =
      warpgroupMma(b, BK, acc, a, bSteps, false, true, &form);
  return scaledScores(b, out, rowScale);
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

/// The scores of S and the online-softmax update: returns the new
/// (m0, m1, l0, l1) from `ml`, the normalized entries in `p` and, for
/// softmax, the factors O must be rescaled by in `alpha`.
SmallVector<Value> GpuAttentionBuilder::softmaxStep(
    OpBuilder &b, ArrayRef<Frag> s, Value k0, Value cls, ValueRange ml,
    SmallVector<Value> &p, Value alpha[2]) {
  // Scores, with the mask only where the classifier could not decide.
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
    // With deferScale, t is the unscaled s and the running max stays in
    // the scaled log2 domain: one FMA per entry instead of a multiply and
    // a subtraction.
    if (deferScale)
      mx = arith::MaximumFOp::create(b, loc, ml[r],
                                     arith::MulFOp::create(b, loc, mx, sScale));
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
                      ? entryProbabilityScaled(b, loc, norm, x, sScale, row)
                      : entryProbability(b, loc, norm, x, row.mUse);
        p[nb * 4 + i] = e;
        l = addToRowSum(b, loc, norm, l, e);
      }
    next[r] = row.m;
    next[2 + r] = l;
  }
  return next;
}

/// Double-buffered key tiles: while tile t is computed from buffer s,
/// tile t + 1 (the next one the classifier keeps) streams into 1 - s with
/// cp.async. One cp.async group per iteration (empty when there is no
/// next tile), so "all but the newest group" is always tile t's.
SmallVector<Value> GpuAttentionBuilder::asyncCopyLoop(OpBuilder &b,
                                                      ValueRange init) {
  // The class is the same for the whole CTA, so every barrier under these
  // conditions is reached by all threads or none.
  auto prefetch = [&](OpBuilder &b, Value t, Value cls, Value buffer) {
    scf::IfOp::create(b, loc, isVisited(b, cls), [&](OpBuilder &b, Location) {
      issueKeyTile(b, arith::MulIOp::create(b, loc, t, cIdx(b, BK)), buffer);
      scf::YieldOp::create(b, loc);
    });
    NVVM::CpAsyncCommitGroupOp::create(b, loc);
  };
  copyTile(b, q, bIdx, hIdx, q0, BQ, D, seqQ, qS, Value(), false,
           rowsPerHead);
  Value firstCls = classifyAt(b, tileBegin);
  prefetch(b, tileBegin, firstCls, cIdx(b, 0));

  SmallVector<Value> loopInit = {firstCls, cIdx(b, 0)};
  loopInit.append(init.begin(), init.end());
  auto loop = scf::ForOp::create(
      b, loc, tileBegin, numTiles, cIdx(b, 1), loopInit,
      [&](OpBuilder &b, Location, Value tIdx, ValueRange iter) {
        Value cls = iter[0], buffer = iter[1];
        ValueRange carried = iter.drop_front(2);
        // Buffer 1 - s was last read by tile t - 1: everyone is past it.
        gpu::BarrierOp::create(b, loc);
        Value nextT = add(b, tIdx, 1);
        Value nextCls = classifyAt(b, nextT);
        Value other = arith::SubIOp::create(b, loc, cIdx(b, 1), buffer);
        prefetch(b, nextT, nextCls, other);
        Value k0 = arith::MulIOp::create(b, loc, tIdx, cIdx(b, BK));
        auto ifOp = scf::IfOp::create(
            b, loc, isVisited(b, cls),
            [&](OpBuilder &b, Location) {
              scf::YieldOp::create(b, loc,
                                   emitKeyTile(b, k0, cls, buffer, carried));
            },
            [&](OpBuilder &b, Location) {
              scf::YieldOp::create(b, loc, carried);
            });
        SmallVector<Value> yield = {nextCls, other};
        yield.append(ifOp.getResults().begin(), ifOp.getResults().end());
        scf::YieldOp::create(b, loc, yield);
      });
  return SmallVector<Value>(loop.getResults().drop_front(2));
}

/// The buffer of the n-th kept tile.
Value GpuAttentionBuilder::bufferOf(OpBuilder &b, Value n) {
  return arith::RemUIOp::create(b, loc, n, cIdx(b, 2));
}

/// The phase parity that completes when the n-th kept tile's buffer is
/// full (its (n / 2)-th use), or, with previousUse, when the use before it
/// released the buffer; a fresh barrier counts that one as complete.
Value GpuAttentionBuilder::useParity(OpBuilder &b, Value n, bool previousUse) {
  Value use = arith::DivUIOp::create(b, loc, n, cIdx(b, 2));
  Value bit = arith::RemUIOp::create(b, loc, use, cIdx(b, 2));
  Value parity = arith::IndexCastUIOp::create(b, loc, b.getI1Type(), bit);
  if (!previousUse)
    return parity;
  return arith::XOrIOp::create(b, loc, parity,
                               arith::ConstantIntOp::create(b, loc, 1, 1));
}

/// Each consumer warpgroup of the TMA kernel, software-pipelined as in
/// FlashAttention-3: while tile j's softmax runs on the CUDA cores, the
/// tensor cores compute O += P_{j-1} V_{j-1}, issued together with
/// S_j = Q K_j^T. Per kept tile j: wait for its buffer; issue S_j and
/// P_{j-1} V_{j-1} (two wgmma groups); wait for S_j only; softmax; wait
/// for O; release tile j-1's buffer; rescale O. The first kept tile is
/// peeled (it has no previous P) and the last P V drains after the loop,
/// so no pending accumulator ever meets a branch.
///
/// With two consumer warpgroups the issues ping-pong (FlashAttention-3's
/// warp scheduler barriers): each warpgroup issues its wgmma groups only
/// in its turn, between bar.sync on its own named barrier and bar.arrive
/// on the other's (256 threads each: its 128 syncing, the other's 128
/// arriving), so one warpgroup's softmax runs while the other's matmuls
/// occupy the tensor cores instead of both contending at once. Warpgroup
/// 1 hands warpgroup 0 the first turn; both walk the same kept tiles, so
/// their turns pair up, and warpgroup 0 takes one last turn after its loop
/// that consumes warpgroup 1's final hand-over (no arrival outlives the
/// CTA, also when no tile is kept).
SmallVector<Value> GpuAttentionBuilder::tmaConsumer(OpBuilder &b,
                                                    Value barriers,
                                                    ValueRange init) {
  Value ticks = cIdx(b, 10000000);
  bool pingPong = threads == 2 * kWarpsPerGroup * 32;
  // Named barriers 1 and 2 (0 is the CTA barrier): warpgroup g's turn,
  // as inline asm with immediate ids (one branch per warpgroup): the NVVM
  // ops take the id in a register, for which ptxas reserves all 16
  // barriers.
  auto namedBarrier = [&](OpBuilder &b, int32_t id, bool arrive) {
    LLVM::InlineAsmOp::create(
        b, loc, TypeRange(), ValueRange(),
        std::string(arrive ? "bar.arrive " : "bar.sync ") +
            std::to_string(id) + ", " + std::to_string(threads) + ";",
        "", /*has_side_effects=*/true, /*is_align_stack=*/false,
        LLVM::tailcallkind::TailCallKind::None,
        LLVM::AsmDialectAttr::get(b.getContext(), LLVM::AsmDialect::AD_ATT),
        ArrayAttr());
  };
  Value isFirst;
  if (pingPong) {
    Value tid = gpu::ThreadIdOp::create(b, loc, gpu::Dimension::x);
    isFirst = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, tid,
                                    cIdx(b, kWarpsPerGroup * 32));
  }
  // The turn of warpgroup 0 (first) or 1 with sync, or with arrive the
  // other one's.
  auto turnBarrier = [&](OpBuilder &b, bool arrive) {
    if (!pingPong)
      return;
    auto emit = [&](int32_t id) {
      return [&, id](OpBuilder &b, Location) {
        namedBarrier(b, id, arrive);
        scf::YieldOp::create(b, loc);
      };
    };
    scf::IfOp::create(b, loc, isFirst, emit(arrive ? 2 : 1),
                      emit(arrive ? 1 : 2));
  };
  auto awaitTurn = [&](OpBuilder &b) { turnBarrier(b, false); };
  auto passTurn = [&](OpBuilder &b) { turnBarrier(b, true); };
  if (pingPong) // warpgroup 1 hands warpgroup 0 the first turn
    scf::IfOp::create(b, loc, isFirst, [&](OpBuilder &b, Location) {
      scf::YieldOp::create(b, loc);
    }, [&](OpBuilder &b, Location) {
      namedBarrier(b, 1, true);
      scf::YieldOp::create(b, loc);
    });
  auto waitFull = [&](OpBuilder &b, Value n) {
    Value buffer = bufferOf(b, n);
    nvgpu::MBarrierTryWaitParityOp::create(b, loc, barriers,
                                           useParity(b, n, false), ticks,
                                           add(b, buffer, 1));
    return buffer;
  };
  auto release = [&](OpBuilder &b, Value buffer) {
    nvgpu::MBarrierArriveOp::create(
        b, loc, nvgpu::MBarrierTokenType::get(b.getContext()), barriers,
        add(b, buffer, 3));
  };
  auto flatten = [](ArrayRef<SmallVector<Value>> steps) {
    SmallVector<Value> flat;
    for (const SmallVector<Value> &step : steps)
      flat.append(step.begin(), step.end());
    return flat;
  };
  auto regroup = [](ValueRange flat) {
    SmallVector<SmallVector<Value>> steps;
    for (size_t i = 0; i < flat.size(); i += 4)
      steps.push_back(SmallVector<Value>(flat.begin() + i,
                                         flat.begin() + i + 4));
    return steps;
  };
  int64_t numP = BK / 16 * 4;
  ValueRange initMl = init.take_front(4), initO = init.drop_front(4);

  // Q has landed.
  nvgpu::MBarrierTryWaitParityOp::create(
      b, loc, barriers, arith::ConstantIntOp::create(b, loc, 0, 1), ticks,
      cIdx(b, 0));
  // The first kept tile (numTiles when there is none).
  auto find = scf::WhileOp::create(
      b, loc, TypeRange{b.getIndexType()}, ValueRange{tileBegin},
      [&](OpBuilder &b, Location, ValueRange args) {
        Value t = args[0];
        Value inRange = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult,
                                              t, numTiles);
        Value skipped = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq,
                                              classifyAt(b, t),
                                              cI32(b, kTileEmpty));
        scf::ConditionOp::create(
            b, loc, arith::AndIOp::create(b, loc, inRange, skipped), t);
      },
      [&](OpBuilder &b, Location, ValueRange args) {
        scf::YieldOp::create(b, loc, add(b, args[0], 1));
      });
  Value t0 = find.getResult(0);
  Value any =
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, t0, numTiles);
  auto top = scf::IfOp::create(
      b, loc, any,
      [&](OpBuilder &b, Location) {
        Value first = waitFull(b, cIdx(b, 0));
        Value k0 = arith::MulIOp::create(b, loc, t0, cIdx(b, BK));
        SmallVector<Value> p;
        Value alpha[2];
        awaitTurn(b);
        SmallVector<Value> s0 = qkWgmma(b, first, !pingPong);
        if (pingPong) {
          passTurn(b);
          s0 = waitWarpgroup(b, s0, 0);
        }
        SmallVector<Value> ml = softmaxStep(b, fragments(s0), k0,
                                            classifyAt(b, t0), initMl, p,
                                            alpha);
        // O is still zero: nothing to rescale.
        SmallVector<Value> loopInit = {cIdx(b, 1), first};
        loopInit.append(ml);
        loopInit.append(flatten(pOperands(b, p)));
        loopInit.append(initO.begin(), initO.end());
        SmallVector<Value> final = walkKeyTilesCarrying(
            b, loc, add(b, t0, 1), numTiles, loopInit,
            [&](OpBuilder &b, Value t) { return classifyAt(b, t); },
            [&](OpBuilder &b, Value t, Value cls,
                ValueRange it) -> SmallVector<Value> {
              Value n = it[0], previous = it[1];
              ValueRange ml = it.slice(2, 4), pRegs = it.slice(6, numP),
                         o = it.drop_front(6 + numP);
              Value buffer = waitFull(b, n);
              awaitTurn(b);
              SmallVector<Value> sPending = qkWgmma(b, buffer, false);
              SmallVector<Value> oPending =
                  pvWgmma(b, regroup(pRegs), previous, o, false);
              passTurn(b);
              SmallVector<Value> sReady = waitWarpgroup(b, sPending, 1);
              SmallVector<Value> p;
              Value alpha[2];
              SmallVector<Value> nextMl =
                  softmaxStep(b, fragments(sReady),
                              arith::MulIOp::create(b, loc, t, cIdx(b, BK)),
                              cls, ml, p, alpha);
              SmallVector<Value> nextO = waitWarpgroup(b, oPending, 0);
              // Packed only now: the carried P registers are still
              // being read by the P V in flight until the wait.
              SmallVector<Value> nextP = flatten(pOperands(b, p));
              release(b, previous);
              rescale(b, nextO, alpha);
              SmallVector<Value> yield = {add(b, n, 1), buffer};
              yield.append(nextMl);
              yield.append(nextP);
              yield.append(nextO);
              return yield;
            });
        // The last tile's P V.
        ValueRange done = final;
        Value last = done[1];
        SmallVector<Value> o = pvWgmma(b, regroup(done.slice(6, numP)), last,
                                       done.drop_front(6 + numP), true);
        release(b, last);
        SmallVector<Value> result(done.slice(2, 4));
        result.append(o);
        scf::YieldOp::create(b, loc, result);
      },
      [&](OpBuilder &b, Location) { scf::YieldOp::create(b, loc, init); });
  if (pingPong) {
    // Warpgroup 1's last hand-over (its first one when no tile is kept).
    scf::IfOp::create(b, loc, isFirst, [&](OpBuilder &b, Location) {
      namedBarrier(b, 1, false);
      scf::YieldOp::create(b, loc);
    });
  }
  return SmallVector<Value>(top.getResults());
}

/// rows x cols of a [B, H, S, cols] tensor (rows from row0, zero past S)
/// into dynamic shared memory at smemOffset (8 W-aligned) as atoms of rows
/// x W bytes: one TMA box of rows x W / 2 elements per atom, which the
/// TMA unit stores swizzled (see the top comment), as the wgmma
/// descriptors read it.
void GpuAttentionBuilder::tmaLoad(OpBuilder &b, Value map, Value barriers,
                                  int64_t barrier, int64_t smemOffset,
                                  int64_t rows, int64_t cols,
                                  int64_t swizzleBytes, Value row0,
                                  Value head) {
  auto smem = gpu::AddressSpaceAttr::get(b.getContext(),
                                         gpu::AddressSpace::Workgroup);
  int64_t boxCols = swizzleBytes / elementBytes();
  // The map is 4-D ([B, H, S, D]); its box is 1 x 1 x rows x W / 2.
  auto boxType = MemRefType::get({1, 1, rows, boxCols}, elt,
                                 MemRefLayoutAttrInterface{}, smem);
  for (int64_t a = 0; a < cols / boxCols; ++a) {
    Value dst = memref::ViewOp::create(
        b, loc, boxType, dynamicShared,
        cIdx(b, smemOffset + a * rows * swizzleBytes), ValueRange{});
    // Coordinates innermost first: column, row, head, batch.
    nvgpu::TmaAsyncLoadOp::create(
        b, loc, dst, barriers, map,
        ValueRange{cIdx(b, a * boxCols), row0, head, bIdx}, cIdx(b, barrier),
        Value(), Value());
  }
}

/// sm_90a with TMA: warp specialization. The consumer warpgroups (threads
/// 0 .. threads - 1: one or two warpgroups) compute, each on its own 64
/// rows; the first thread after them is the producer, streaming K/V tiles
/// by TMA into two buffers that both warpgroups read. mbarriers: 0 = Q
/// landed, 1 + s = buffer s full (its TMA bytes arrived), 3 + s = buffer s
/// empty (every consumer thread is done with it). The n-th kept tile uses
/// buffer n % 2 for the (n / 2)-th time, so its full phase has parity
/// (n / 2) % 2, and the producer refilling it waits for the previous use's
/// empty phase (the opposite parity; a fresh barrier passes that wait at
/// once). Both sides walk the same tiles, the classifier skipping EMPTY
/// ones.
void GpuAttentionBuilder::tmaPipeline(OpBuilder &b, ValueRange init,
                                      ValueRange tensorMaps) {
  // The kernel takes plain pointers (a gpu.func signature cannot carry
  // nvgpu types through the NVVM lowering); the casts fold away once
  // nvgpu is lowered to the same pointers.
  auto mapOf = [&](Value pointer, int64_t rows, int64_t swizzleBytes) {
    auto smem = gpu::AddressSpaceAttr::get(b.getContext(),
                                           gpu::AddressSpace::Workgroup);
    nvgpu::TensorMapSwizzleKind swizzle =
        swizzleBytes == 128  ? nvgpu::TensorMapSwizzleKind::SWIZZLE_128B
        : swizzleBytes == 64 ? nvgpu::TensorMapSwizzleKind::SWIZZLE_64B
                             : nvgpu::TensorMapSwizzleKind::SWIZZLE_32B;
    Type type = nvgpu::TensorMapDescriptorType::get(
        b.getContext(),
        MemRefType::get({1, 1, rows, swizzleBytes / elementBytes()}, elt,
                        MemRefLayoutAttrInterface{}, smem),
        swizzle,
        nvgpu::TensorMapL2PromoKind::L2PROMO_128B,
        nvgpu::TensorMapOOBKind::OOB_ZERO,
        nvgpu::TensorMapInterleaveKind::INTERLEAVE_NONE);
    return UnrealizedConversionCastOp::create(b, loc, type, pointer)
        .getResult(0);
  };
  Value qMap = mapOf(tensorMaps[0], BQ, qkSwizzle),
        kMap = mapOf(tensorMaps[1], BK, qkSwizzle),
        vMap = mapOf(tensorMaps[2], BK, vSwizzle);
  auto smem = gpu::AddressSpaceAttr::get(b.getContext(),
                                         gpu::AddressSpace::Workgroup);
  auto groupType = nvgpu::MBarrierGroupType::get(b.getContext(), smem, 5);
  Value barriers = nvgpu::MBarrierCreateOp::create(b, loc, groupType);
  Value tid = gpu::ThreadIdOp::create(b, loc, gpu::Dimension::x);
  Value first = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, tid,
                                      cIdx(b, 0));
  scf::IfOp::create(b, loc, first, [&](OpBuilder &b, Location) {
    for (int64_t i = 0; i < 5; ++i)
      nvgpu::MBarrierInitOp::create(
          b, loc, barriers, cIdx(b, i < 3 ? 1 : threads), cIdx(b, i), Value());
    // The TMA unit (async proxy) completes transactions on these barriers.
    fenceSharedToAsyncProxy(b);
    scf::YieldOp::create(b, loc);
  });
  gpu::BarrierOp::create(b, loc); // the only CTA-wide barrier
  Value ticks = cIdx(b, 10000000);
  int64_t kvBytes = BK * (D + Dv) * elementBytes();
  int64_t kTile = BK * D * elementBytes(), vTile = BK * Dv * elementBytes();
  Value consumer = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, tid,
                                         cIdx(b, threads));
  // Two consumer warpgroups: the producer's is a whole warpgroup, which
  // hands registers to them (setmaxnreg, executed by whole warpgroups).
  bool shareRegisters = config.shareRegisters && threads > kWarpsPerGroup * 32;
  auto [consumerRegisters, producerRegisters] = registerSplit(Dv);
  scf::IfOp::create(
      b, loc, consumer,
      [&](OpBuilder &b, Location) {
        if (shareRegisters)
          NVVM::SetMaxRegisterOp::create(b, loc, consumerRegisters,
                                         NVVM::SetMaxRegisterAction::increase);
        epilogue(b, tmaConsumer(b, barriers, init));
        scf::YieldOp::create(b, loc);
      },
      [&](OpBuilder &b, Location) {
        if (shareRegisters)
          NVVM::SetMaxRegisterOp::create(b, loc, producerRegisters,
                                         NVVM::SetMaxRegisterAction::decrease);
        Value producer = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq,
                                               tid, cIdx(b, threads));
        scf::IfOp::create(b, loc, producer, [&](OpBuilder &b, Location) {
          // The maps are grid-constant kernel parameters (kTensorMapArgsAttr):
          // written before the launch, so no tensor-map proxy fence.
          nvgpu::MBarrierArriveExpectTxOp::create(
              b, loc, barriers, cIdx(b, BQ * D * elementBytes()), cIdx(b, 0),
              Value());
          tmaLoad(b, qMap, barriers, 0, 0, BQ, D, qkSwizzle, q0, hIdx);
          // (The count of tiles issued, which picks buffers and parities.)
          walkKeyTilesCarrying(
              b, loc, tileBegin, numTiles, ValueRange{cIdx(b, 0)},
              [&](OpBuilder &b, Value t) { return classifyAt(b, t); },
              [&](OpBuilder &b, Value t, Value cls,
                  ValueRange iter) -> SmallVector<Value> {
                Value n = iter[0];
                Value buffer = bufferOf(b, n);
                nvgpu::MBarrierTryWaitParityOp::create(
                    b, loc, barriers, useParity(b, n, true), ticks,
                    add(b, buffer, 3));
                Value full = add(b, buffer, 1);
                nvgpu::MBarrierArriveExpectTxOp::create(
                    b, loc, barriers, cIdx(b, kvBytes), full, Value());
                Value k0 = arith::MulIOp::create(b, loc, t, cIdx(b, BK));
                // Buffer offsets depend on the buffer: two branches
                // keep every view's offset static.
                for (int64_t which = 0; which < 2; ++which) {
                  Value isThis = arith::CmpIOp::create(
                      b, loc, arith::CmpIPredicate::eq, buffer, cIdx(b, which));
                  scf::IfOp::create(b, loc, isThis,
                                    [&](OpBuilder &b, Location) {
                                      tmaLoad(b, kMap, barriers, 1 + which,
                                              layout.kOffset + which * kTile,
                                              BK, D, qkSwizzle, k0, hkvIdx);
                                      tmaLoad(b, vMap, barriers, 1 + which,
                                              layout.vOffset + which * vTile,
                                              BK, Dv, vSwizzle, k0, hkvIdx);
                                      scf::YieldOp::create(b, loc);
                                    });
                }
                return {add(b, n, 1)};
              });
          scf::YieldOp::create(b, loc);
        });
        scf::YieldOp::create(b, loc);
      });
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
  deferScale = scaleFoldsIntoExp;
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

} // namespace

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
  info.blockKV = config.blockKV;
  info.sharedBytes = sharedLayoutFor(op, config).bytes;
  return info;
}
