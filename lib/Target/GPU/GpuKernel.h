//===- GpuKernel.h - what NVIDIA and AMD attention kernels share ----------===//
//
// Both GPU backends build one `gpu.func` per variant with the same operand
// list, the same grid (query tiles x split parts, query heads / GQA pack,
// batch) and the same per-CTA bookkeeping: problem sizes for the regions,
// the paged or kv_index key rows, the classifier's verdict per key tile,
// the scale, and the per-entry score/mask/normalizer code. They differ in
// how tiles reach the matrix units and in the fragment layouts, which the
// backends own.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_TARGET_GPU_GPUKERNEL_H
#define ATTN_TARGET_GPU_GPUKERNEL_H

#include "dialect/AttnOps.h"
#include "lib/Transforms/KeyRows.h"
#include "lib/Transforms/RegionInliner.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/PassManager.h"

#include <string>

namespace mlir::attn::gpukernel {

/// Launch geometry of a generated kernel: grid (ceil(Sq / rowsPerBlock) x
/// parts, Hq / pack, B) of blockThreads threads, sharedBytes of dynamic
/// shared memory.
struct KernelInfo {
  std::string name;
  std::string mergeName; // split-KV: combines the parts' results
  int64_t blockThreads = 0;
  int64_t rowsPerBlock = 0;
  int64_t sharedBytes = 0;
  /// The kernel takes three more arguments: pointers to TMA tensor maps
  /// (CUtensorMap, in device memory) of q, k and v, as 4-D [B, H, S, D]
  /// tensors with boxes of 8 columns x rowsPerBlock (q) or blockKV (k, v)
  /// rows, no swizzle, zero fill.
  bool tensorMaps = false;
  int64_t blockKV = 0;
  /// CTAs per thread-block cluster along x (the kernel's
  /// .reqnctapercluster): the launch rounds its query tiles up to a
  /// multiple (see KernelBase::clusterCtas). 1 without clusters.
  int64_t clusterCtas = 1;
  /// setmaxnreg: the kernel hands registers between its warpgroups within
  /// the pool it is launched with, which holds enough only if ptxas gives
  /// it this many registers a thread (the launch bound's maximum); with
  /// fewer, setmaxnreg.inc would wait forever. 0 without setmaxnreg.
  int64_t launchRegisters = 0;
  /// select: the pre-pass kernels launched before this one (see
  /// buildSelectKernels).
  std::string selectPoolName, selectName;
  /// Compiled with backward: the two backward kernels (see
  /// nvptx::buildGpuBackwardKernels, rocm::buildGpuBackwardKernels), their
  /// threads and rows per CTA.
  std::string backwardKvName, backwardQName;
  int64_t backwardKvThreads = 0, backwardKvRows = 0;
  int64_t backwardQThreads = 0, backwardQRows = 0;
  /// The backward kernels take the param/capture gradient buffers
  /// (gpukernel::appendGradientBuffers) after dv.
  bool backwardGradients = false;
};

/// Threads per block of the split-KV merge kernel.
constexpr int64_t kMergeThreads = 128;
/// Threads per block of the select pre-pass kernels.
constexpr int64_t kSelectThreads = 128;

/// The kernel's operands: the op's values (q, k, v, o, [lse], params,
/// captures, [k/v scales], [page table, seq lens]), with select the kept
/// map [B, Hq, ceil(Sq / N), ceil(Skv / N)] (i8, nonzero = kept) of its
/// N-token blocks, then the split-KV partials o_part [parts, B, Hq, Sq, Dv]
/// and lse_part [parts, B, Hq, Sq] (f32), the part count and the GQA pack
/// (i32).
struct KernelSignature {
  SmallVector<Value> opValues;
  SmallVector<Type> types;
};
KernelSignature kernelSignature(AttentionOp op);

/// What neither GPU backend compiles (f32 inputs, head dims that are not
/// multiples of 16 up to 256): fails with `error`.
LogicalResult checkSupported(AttentionOp op, StringRef units,
                             std::string &error);

/// Whether `op`'s mask (true without one) keeps, for every key, a set of
/// queries closed upwards: a row keeps every key an earlier row keeps, as
/// with causal, prefix-LM and sink masks, not with windows or documents.
/// Read syntactically (and, or and comparisons of sums of the positions);
/// false where unsure. Clusters of CTAs on adjacent query tiles, which
/// walk the union of their key tiles, waste little on such masks.
bool maskGrowsWithQuery(AttentionOp op);

/// `gpu.func @name(types) kernel` of `threads` threads at b's insertion
/// point, with `outside` mapping signature.opValues to its arguments.
gpu::GPUFuncOp createKernelFunc(OpBuilder &b, AttentionOp op, StringRef name,
                                ArrayRef<Type> types, ArrayRef<Value> opValues,
                                int32_t threads, IRMapping &outside);

/// The split-KV merge kernel `name(o_part, lse_part, o, [lse])`: o (and
/// lse) from the parts' normalized partial results, one thread per (query,
/// column) of a (head, batch) in a grid of (ceil(Sq Dv / kMergeThreads),
/// Hq, B).
gpu::GPUFuncOp buildMergeKernel(OpBuilder &b, AttentionOp op, StringRef name);

/// select's pre-pass, two kernels of kSelectThreads threads launched before
/// the attention kernel:
/// - `pool(<the attention kernel's arguments>, pooled_k)`: mean of each
///   N-key block (through the page table; codes decoded times K's scales),
///   pooled_k [B, Hkv, ceil(Skv / N), D] (f32); grid (ceil(Skv / N), Hkv,
///   B).
/// - `select(<the attention kernel's arguments>, pooled_k, scores,
///   eligible)`: per query block (grid (ceil(Sq / N), Hq, B)) pools the queries, scores the key
///   blocks the mask leaves non-empty (scores and eligible are scratch
///   shaped like the kept map, f32 and i8) and writes the kept map: the
///   rule's blocks plus the diagonal block, by the rule the CPU tiler runs
///   (lib/Transforms/SelectBlocks.h), threads striding over blocks.
/// Both take the arguments with a part count and pack of 1. Returns (pool,
/// select).
std::pair<gpu::GPUFuncOp, gpu::GPUFuncOp>
buildSelectKernels(OpBuilder &b, AttentionOp op, StringRef name,
                   const KernelSignature &signature);

/// Scalar f32 exp, tanh and sigmoid on the hardware's exp2 and
/// reciprocal instead of MLIR's polynomials (about 20 instructions each,
/// plus an IEEE division for tanh and sigmoid): per score entry these were
/// most of softcap's and sigmoid's instructions (issue 19). `rcp` names the
/// f32 approximate-reciprocal intrinsic (1 ulp); exp2 becomes the chip's
/// in prepareMath, which must run after this.
///   exp(x) = 2^(x log2 e), exp(-x) = 2^(x (-log2 e)) (the product's
///     rounding adds |x| 2^-24 relative);
///   tanh(x) = 1 - 2 / (1 + 2^(2 log2(e) x)), absolute error about 2^-22:
///     inside the 2^-21 the numerics tests allow a transcendental, and
///     times a softcap's cap (30-50) far inside the 2e-4 bounds on o and
///     lse (+-inf give +-1: 2^y is inf or 0). tanh(a / c) multiplies a by
///     2 log2(e) / c, divided once where c is defined (a param or a
///     constant: once per kernel), instead of per entry;
///   1 / (1 + 2^y) (sigmoid, as the frontend and the sigmoid normalizer
///     spell it): the approximate reciprocal instead of an IEEE one.
void lowerExpTanhSigmoid(ModuleOp host, StringRef rcp);

/// The chip-specific spellings of the math the kernels use without a
/// device library: f32 intrinsics for exp2, log2 and rsqrt (the hardware's
/// approximate instructions); everything else becomes LLVM intrinsics or
/// MLIR's polynomial approximations.
struct MathIntrinsics {
  const char *exp2, *log2, *rsqrt;
};
LogicalResult prepareMath(ModuleOp host, const MathIntrinsics &intrinsics);

/// blockDim.x of every kernel with a known block size as that constant
/// (the pre-pass strides loops by it; ROCDL would otherwise read it through
/// a device-library call).
void foldKnownBlockDims(ModuleOp host);

/// Runs `pm` (ending in gpu-module-to-binary) on `host` and returns the
/// one object it produced (PTX text, a code object, assembly); `what`
/// names the lowering in errors.
FailureOr<std::string> runToBinary(PassManager &pm, ModuleOp host,
                                   StringRef what, std::string &error);

/// Per-CTA state and helpers shared by the backends' kernel builders.
class KernelBase {
protected:
  KernelBase(AttentionOp op, IRMapping outside, int64_t rowsPerBlock,
             int64_t blockKV);

  Value cIdx(OpBuilder &b, int64_t v);
  Value cI32(OpBuilder &b, int64_t v);
  Value cF32(OpBuilder &b, double v);
  Value toI32(OpBuilder &b, Value index);
  Value add(OpBuilder &b, Value x, int64_t c);

  /// Reads the operands (q ... lse, split-KV partials, parts, pack; the
  /// trailing `extraArgs` arguments are the backend's) and the CTA's place
  /// in the grid; sets the sizes the regions see, the paged/kv_index key
  /// slots, the CTA's key tiles and query range, and the score scale.
  void setUp(OpBuilder &b, gpu::GPUFuncOp func, int64_t extraArgs);

  /// The classifier's verdict on the key tile at k0 (FULL without a mask,
  /// PARTIAL with a mask but no classifier), with select combined with the
  /// kept map: EMPTY when no block under the tile is kept, PARTIAL when
  /// some are not.
  Value classifyTile(OpBuilder &b, Value k0);
  /// select: `cls` of the tile of query rows [qLo, qHi] of `head` and keys
  /// [kLo, kHi] (index values, inclusive) combined with the kept map:
  /// EMPTY when no N-token block under the tile is kept, PARTIAL when some
  /// are not. Tiles of any size: they need not align with the blocks.
  Value classifyKept(OpBuilder &b, Value cls, Value head, Value qLo,
                     Value qHi, Value kLo, Value kHi);
  /// In a cluster (clusterCtas > 1, a mask): `cls` of the key tile
  /// [k0, kLast] for this CTA's rows widened to the cluster's walk: EMPTY
  /// only when every CTA of the cluster leaves the tile out, else PARTIAL
  /// where this CTA keeps none of it.
  Value classifyForCluster(OpBuilder &b, Value cls, Value k0, Value kLast);
  /// The class of key tile `t`, EMPTY past the last tile.
  Value classifyAt(OpBuilder &b, Value t);
  Value isVisited(OpBuilder &b, Value cls);
  /// The CTA's K/V row lookup (paged rows, kv_index positions, the
  /// positions scales are read at), from its current batch and kv head.
  KeyRows kvRows();

  /// The normalizer's input for one score entry s = q.k of query row
  /// (head32, q32) and key position kv32: scaled, through the score
  /// region, masked (withMask; `keep` says whether the key exists, checked
  /// only withMask or with kv_index): -inf for softmax, p = 0 otherwise
  /// where dropped.
  Value scoreEntry(OpBuilder &b, Value s, Value head32, Value q32, Value kv32,
                   Value keep, bool withMask);

  /// select: whether the kept map keeps the block of (head32, q32, kv32)
  /// (any i32 positions; clamped into the map).
  Value keptAt(OpBuilder &b, Value head32, Value q32, Value kv32);

  /// A tile's normalizer inputs from `scores(b, withMask)`, the mask,
  /// select's kept map and whether keys exist evaluated only where the
  /// classifier said PARTIAL (the tile reaching past Skv always is).
  SmallVector<Value> scoresMaskedWhereNeeded(
      OpBuilder &b, Value cls,
      llvm::function_ref<SmallVector<Value>(OpBuilder &, bool)> scores);

  /// N codes of a K or V row at `pos`, columns col .. col + N - 1, as
  /// f16/bf16 times their scales (K's per-channel scales of the position's
  /// group, V's per-token scale): `codes` is vector<N x i8>, or for int4
  /// vector<N/2 x i8> of nibble pairs (low first).
  Value dequantizeChunk(OpBuilder &b, Value codes, Value pos, Value col,
                        bool key);

  /// The running max a row of query head head32 starts with
  /// (initialRowMax, lib/Transforms/RowState.h): the sink logit in part 0,
  /// -inf elsewhere and without a sink.
  Value sinkMax(OpBuilder &b, Value head32);

  AttentionOp op;
  Location loc;
  RegionInliner regions;
  IRMapping outside;
  int64_t D, Dv, BQ, BK;
  Normalize norm;
  Type elt;
  Value q, k, v, o, lse;
  Value oPart, lsePart, parts, part;
  // GQA packing: the CTA's BQ rows are `pack` query heads of one K/V head
  // (hIdx ...) x rowsPerHead queries, row r = head (r / rowsPerHead),
  // query q0 + r % rowsPerHead; without packing pack = 1.
  Value packedHeads, rowsPerHead;
  Value bIdx, hIdx, hkvIdx, b32, h32, hLast32;
  Value seqQ, seqKV, keySlots, q0, qLast, sScale;
  // The scale as the variant gives it (sScale may carry log2(e)).
  Value scale;
  // Softmax without a score region whose scale is a positive constant (or
  // the default 1/sqrt(D)): the row max of s * sScale is sScale times that
  // of s, so a target may ask scoreEntry for unscaled scores and fold the
  // scale into one FMA per entry, exp2(s * sScale - m) (see
  // FlashAttention-3's softmax). With a score region, softmax's log2(e)
  // (toNormalizerDomain) folds into that FMA the same way: the region's
  // result is the deferred score, deferredScale = log2(e). Targets opt in
  // through deferScale (where scaleFoldsIntoExp or logitScaleDefers).
  bool scaleFoldsIntoExp = false;
  bool logitScaleDefers = false;
  bool deferScale = false;
  // What a deferred score is multiplied by in the exponent: sScale, or
  // log2(e) after a score region.
  Value deferredScale;
  // select: the kept map of N-token blocks.
  Value keptMap;
  // This CTA's key tiles [tileBegin, numTiles): all of them, or its part's
  // share under split-KV.
  Value tileBegin, numTiles;
  // Paged K/V: k/v are page pools [pages, Hkv, P, D], rows found through
  // the batch's page table; seqKV is the batch's own length.
  Value pageTable, seqLens;
  // kv_index: key tiles run over the slots of keep[b, hkv, :].
  Value kvIndex;
  // Quantized K/V: k/v hold codes (i8), scaled per channel and token group
  // (kScale) and per token (vScale).
  std::optional<KVQuant> quant;
  Value kScale, vScale;
  // CTAs per cluster along x (a target sets it before setUp): the CTAs of
  // one cluster take adjacent query tiles of the same split part, so that
  // they walk the same key tiles (see setUp).
  int64_t clusterCtas = 1;
  // The query tile of the cluster's first CTA (with clusterCtas > 1).
  Value clusterFirstTile;
};

} // namespace mlir::attn::gpukernel

#endif // ATTN_TARGET_GPU_GPUKERNEL_H
