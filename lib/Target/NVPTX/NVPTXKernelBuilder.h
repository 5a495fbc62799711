//===- NVPTXKernelBuilder.h - the tensor-core attention kernel builder ---===//
//
// The builder of NVPTXKernel.cpp (whose top comment describes the kernel,
// its fragment layouts and its shared-memory layouts), shared by the files
// that implement it by concern: NVPTXKernel.cpp (setup, scores, softmax
// step, epilogue, entry point), NVPTXMmaSync.cpp (sm_80 mma.sync, ldmatrix
// and the cp.async tile copies), NVPTXWgmma.cpp (sm_90a wgmma and its
// shared-memory descriptors) and NVPTXTma.cpp (the TMA producer and
// consumers, mbarriers). Private to lib/Target/NVPTX.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_TARGET_NVPTX_NVPTXKERNELBUILDER_H
#define ATTN_TARGET_NVPTX_NVPTXKERNELBUILDER_H

#include "lib/Target/GPU/GpuKernel.h"
#include "lib/Target/NVPTX/NVPTXTarget.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"

#include "attn/runtime.h"

#include <array>
#include <string>
#include <utility>

namespace mlir::attn::nvptx::kernel {

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
std::pair<int32_t, int32_t> registerSplit(int64_t Dv);

/// The consumer warps of a CTA: one per 16 query rows of its tile
/// (sm_90a: one warpgroup per 64 rows).
int64_t consumerWarps(const nvptx::KernelConfig &cfg);

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
bool codesFeedQK(AttentionOp op, const nvptx::KernelConfig &cfg);

/// Whether the kernel streams Q, K and V by TMA (sm_90a; raw rows only:
/// quantized codes, pages and listed positions take cp.async).
bool usesTma(AttentionOp op, const nvptx::KernelConfig &cfg);

/// The CTAs per cluster of `op`'s kernel (KernelConfig::clusterCtas where
/// it applies, else 1).
int64_t tmaClusterCtas(AttentionOp op, const nvptx::KernelConfig &cfg);

class GpuAttentionBuilder : public gpukernel::KernelBase {
public:
  GpuAttentionBuilder(AttentionOp op, const nvptx::KernelConfig &cfg,
                      IRMapping outside)
      : KernelBase(op, std::move(outside), cfg.blockQ, cfg.blockKV),
        threads(32 * consumerWarps(cfg)), wgmma(nvptx::usesWgmma(cfg.chip)),
        tma(usesTma(op, cfg)), codesQK(codesFeedQK(op, cfg)), config(cfg) {
    clusterCtas = tmaClusterCtas(op, cfg);
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
  Value warpTileClass(OpBuilder &b, Value k0, Value cls);
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
               int64_t swizzleBytes, Value row0, Value head,
               llvm::function_ref<bool(int64_t)> issuesBox = nullptr,
               Value multicastMask = Value());
  void clusterBarrier(OpBuilder &b);
  void epilogue(OpBuilder &b, ValueRange state);
  SmallVector<Value> scores(OpBuilder &b, ArrayRef<Frag> s, Value k0,
                            bool withMask);

  // Consumer threads: 32 per 16 query rows; they all copy tiles with
  // cp.async, and the producer warp (TMA) comes after them.
  int64_t threads;
  bool wgmma, tma;
  // With TMA, the swizzle width W in bytes of the Q and K tiles (D wide)
  // and of the V tiles (Dv wide): atoms of rows x W (see NVPTXKernel.cpp's top comment).
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

} // namespace mlir::attn::nvptx::kernel

#endif // ATTN_TARGET_NVPTX_NVPTXKERNELBUILDER_H
