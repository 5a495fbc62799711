//===- attn/runtime.h - launching attnc kernels (attnrt) ------------------===//
//
// attnrt links no LLVM or MLIR: an application that only runs kernels
// (AOT bundles, or kernels handed over by attn::Jit) needs this header only.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_RUNTIME_H
#define ATTN_RUNTIME_H

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace attn {

/// Element types of tensors crossing the API. i8, f8e4m3 and f8e5m2 hold
/// quantized K/V codes (int8 and int4 codes are i8; int4 packs two per
/// byte, low nibble first).
enum class DType { f32, f16, bf16, i32, i8, f8e4m3, f8e5m2 };
const char *dtypeName(DType t);
size_t dtypeSize(DType t);
std::optional<DType> parseDType(const std::string &name);

/// A view of caller memory: pointer, element type, shape and strides (in
/// elements). Empty strides mean contiguous row-major.
struct TensorRef {
  void *data = nullptr;
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;

  TensorRef() = default;
  TensorRef(void *data, DType dtype, std::vector<int64_t> shape,
            std::vector<int64_t> strides = {})
      : data(data), dtype(dtype), shape(std::move(shape)),
        strides(std::move(strides)) {}

  /// Elements of the view; an attn::Error when the count does not fit in
  /// int64.
  int64_t numel() const;
  /// Strides in elements, computing row-major ones when none were given
  /// (saturating at INT64_MAX where they do not fit).
  std::vector<int64_t> effectiveStrides() const;
  bool isContiguous() const;
};

/// A launch error. `argument()` names what was wrong ("q", "k", "window",
/// "doc", ...) or is empty for errors that are not about one argument.
class Error : public std::runtime_error {
public:
  Error(std::string argument, const std::string &message)
      : std::runtime_error(argument.empty() ? message
                                            : argument + ": " + message),
        arg(std::move(argument)) {}
  const std::string &argument() const { return arg; }

private:
  std::string arg;
};

/// A runtime param value or a captured tensor, passed by name at launch.
class Arg {
public:
  enum class Kind { Int, Float, Tensor };
  Arg(int v) : kind_(Kind::Int), i_(v) {}
  Arg(int64_t v) : kind_(Kind::Int), i_(v) {}
  Arg(float v) : kind_(Kind::Float), f_(v) {}
  Arg(double v) : kind_(Kind::Float), f_(v) {}
  Arg(TensorRef t) : kind_(Kind::Tensor), t_(std::move(t)) {}

  Kind kind() const { return kind_; }
  int64_t asInt() const { return i_; }
  double asFloat() const { return kind_ == Kind::Int ? double(i_) : f_; }
  const TensorRef &tensor() const { return t_; }

private:
  Kind kind_;
  int64_t i_ = 0;
  double f_ = 0;
  TensorRef t_;
};
using Params = std::vector<std::pair<std::string, Arg>>;

/// The fixed tensors of a launch (DSL.md conventions).
struct Tensors {
  TensorRef q, k, v, o;
  std::optional<TensorRef> lse;
  /// Quantized K/V (KernelInfo::kvDtype): k_scale [B, Hkv, ceil(Skv/G), D]
  /// per channel for each group of G tokens, v_scale [B, Hkv, Skv] per
  /// token, both f32; x = code * scale.
  std::optional<TensorRef> kScale = {}, vScale = {};
  /// Paged K/V (KernelInfo::pageSize P): k and v are pools
  /// [pages, Hkv, P, D]; page_table [B, max_pages] i32 names the page of
  /// positions [i*P, (i+1)*P) of batch b, seq_lens [B] i32 its length
  /// (Skv of batch b; at most max_pages * P, which is the Skv captured
  /// tensors and scales are sized by).
  std::optional<TensorRef> pageTable = {}, seqLens = {};
};


/// What a compiled kernel expects; stored as JSON in bundles.
struct ParamInfo {
  std::string name;
  DType type = DType::i32; // i32 or f32
  std::optional<double> defaultValue;
};
struct CaptureInfo {
  std::string name;
  DType dtype = DType::i32;
  /// Each dimension as written in the source and in reverse Polish
  /// notation over sizes, params and integers ("Skv 64 /").
  std::vector<std::string> dimText;
  std::vector<std::string> dimRpn;
};
struct KernelInfo {
  std::string name;
  std::string target = "cpu";
  DType dtype = DType::f32;
  DType outDType = DType::f32;
  int64_t headDim = 0;
  int64_t valueHeadDim = 0;
  bool lse = false;
  std::string normalize = "softmax";
  int64_t blockQ = 0;
  int64_t blockKV = 0;
  std::vector<ParamInfo> params;
  std::vector<CaptureInfo> captures;
  std::string compilerVersion;
  /// A masked variant's kernel comes with a block-map function.
  bool hasBlockMap = false;
  /// With `select`, the rule's block size: every launch first builds the
  /// block map (the select pre-pass), unless one is given.
  int64_t selectBlock = 0;
  /// Query rows per work item of the CPU's select pre-pass (0: selectBlock,
  /// as bundles before this field have it).
  int64_t selectRowsPerItem = 0;
  /// Work (and block maps) run over rows that pack the query heads sharing
  /// a kv head: [B][Hkv][ceil(Hq/Hkv * Sq / blockQ)]. Otherwise (select)
  /// per query head: [B][Hq][ceil(Sq / blockQ)].
  bool packedHeads = true;
  /// Split-KV parts: 0 picks per launch (more parts when there are fewer
  /// work items than threads, as in decode), N caps the parts at N.
  int64_t splitKv = 0;
  /// Quantized K/V ("same" when K/V share q's dtype): codes in k and v,
  /// scales in Tensors::kScale/vScale with K groups of kvGroup tokens.
  std::string kvDtype = "same";
  int64_t kvGroup = 0;
  /// > 0: k and v are page pools read through Tensors::pageTable/seqLens.
  int64_t pageSize = 0;
  /// CPU kernels loaded from a bundle: the CPU the binary attnrt picked was
  /// compiled for ("x86-64-v3", "sapphirerapids"; a bundle may hold several,
  /// see attnc compile --cpu). Empty for JIT and GPU kernels.
  std::string cpu;
  /// The kernel has a backward entry (Kernel::backward): compiled with
  /// Options::backward / `attnc compile --backward`. CPU kernels only.
  bool backward = false;
  /// The backward sums dQ while walking key tiles (attn-tile-backward's
  /// ordered-dq): its first phase takes the f32 scratch dq_accum
  /// [B, Hq, Sq, D] and the i32 progress [B, Hkv, key tiles, 16], zeroed,
  /// and its items must be handed out one at a time in order; its f32
  /// params' gradient buffers hold one slot per item (summed in item
  /// order). Variants whose score or scale reads an f32 captured tensor
  /// recompute S and dP for dQ in the second phase instead.
  bool backwardOrderedDq = false;
};

/// Quantizes K or V [B, Hkv, S, D] (f32, f16 or bf16) into `kind`'s codes
/// (KernelInfo::kvDtype: int8, fp8e4m3, fp8e5m2 or int4) in the layout
/// kernels read: symmetric, scale = amax / max code (127, 448, 57344, 7),
/// per channel over groups of `group` tokens for keys (scale
/// [B, Hkv, ceil(S/group), D]) and per token for values (scale
/// [B, Hkv, S]). `codes` is [B, Hkv, S, D] (int4: D/2) of the code dtype.
void quantizeKeys(const TensorRef &k, const std::string &kind, int64_t group,
                  const TensorRef &codes, const TensorRef &scale);
void quantizeValues(const TensorRef &v, const std::string &kind,
                    const TensorRef &codes, const TensorRef &scale);
/// The dtype of `kind`'s codes, and how many codes share a byte (int4: 2).
DType codeDType(const std::string &kind);
int64_t codesPerElement(const std::string &kind);

/// K/V in the layout a kernel reads (its KernelInfo's kvDtype and
/// pageSize), built on the host from contiguous K [B, Hkv, S, D] and
/// V [B, Hkv, S, Dv]: quantized with quantizeKeys/quantizeValues, and/or
/// copied into a pool of pages in a random (seeded) order with the page
/// table and lengths to match. What `attnc run --kv-dtype/--paged` uses;
/// tests and benchmarks use it to check those paths on the same inputs.
class KVCache {
public:
  /// `seqLens` (paged only): each batch's length, at most S; empty means S
  /// for every batch.
  static KVCache build(const KernelInfo &info, const TensorRef &k,
                       const TensorRef &v, uint64_t seed = 1,
                       const std::vector<int32_t> &seqLens = {});
  /// Points t.k, t.v and the scale and page tensors at this cache.
  void bind(Tensors &t) const;

  KVCache() = default;
  KVCache(KVCache &&) = default; // the views keep pointing at the data
  KVCache &operator=(KVCache &&) = default;
  KVCache(const KVCache &) = delete;
  KVCache &operator=(const KVCache &) = delete;

private:
  bool quantized = false, paged = false;
  std::vector<uint8_t> kData, vData;
  std::vector<float> kScale, vScale;
  std::vector<int32_t> pageTable, seqLens;
  TensorRef kRef, vRef, kScaleRef, vScaleRef, pageTableRef, seqLensRef;
};

/// Which (query tile, key tile) blocks a launch computes: the kernel's own
/// classification of its mask. 0 EMPTY (skipped), 1 PARTIAL (mask
/// evaluated), 2 FULL (no mask evaluation). With packed heads (see
/// KernelInfo::packedHeads) `heads` counts kv heads and a query tile holds
/// rows of all the query heads of a group (head-major, then position).
struct BlockMap {
  enum : uint8_t { Empty = 0, Partial = 1, Full = 2 };
  int64_t batch = 0, heads = 0, queryTiles = 0, keyTiles = 0;
  int64_t blockQ = 0, blockKV = 0;
  std::vector<uint8_t> classes; // [batch][heads][queryTiles][keyTiles]

  uint8_t at(int64_t b, int64_t h, int64_t qt, int64_t kt) const {
    return classes[((b * heads + h) * queryTiles + qt) * keyTiles + kt];
  }
  /// Fraction of blocks computed (not EMPTY).
  double density() const;
  /// Blocks computed, counting partial ones too.
  int64_t computedBlocks() const;
  /// One (b, h) as text: a row per query tile, '#' FULL, '+' PARTIAL,
  /// '.' EMPTY.
  std::string str(int64_t b = 0, int64_t h = 0) const;
};

/// Where Kernel::backward writes the gradients of L = sum(o * dO).
/// dq, dk and dv are required, with q's, k's and v's shapes and dtypes
/// (any strides with a contiguous innermost dimension); they are
/// overwritten. `named` holds, by name, the gradients wanted of the
/// variant's f32 params (a [1] f32 tensor each) and f32 captured tensors
/// (f32, the capture's shape, any strides); each is optional, is
/// overwritten, and one not asked for is computed into scratch memory and
/// dropped. Names of i32 params or of non-f32 tensors are errors.
struct Gradients {
  TensorRef dq, dk, dv;
  std::vector<std::pair<std::string, TensorRef>> named = {};
};

namespace detail {
struct KernelState;
struct ModuleState;
}

/// A launchable kernel. Cheap to copy; copies share the compiled code.
class Kernel {
public:
  Kernel() = default;
  explicit Kernel(std::shared_ptr<const detail::KernelState> state)
      : state(std::move(state)) {}

  const KernelInfo &info() const;
  explicit operator bool() const { return state != nullptr; }

  /// Validates every argument, then runs. On any mismatch throws
  /// attn::Error naming the argument, before anything is written.
  void launch(const Tensors &tensors, const Params &params = {},
              void *stream = nullptr) const;

  /// Launches with a block map built earlier by blockMap() for the same
  /// mask and shapes (reused, e.g., across layers): the kernel reads the
  /// classes instead of deriving them. Its batch and head counts may be 1
  /// to broadcast. A map that does not fit is an attn::Error naming
  /// "block_map".
  void launch(const Tensors &tensors, const Params &params,
              const BlockMap &map, void *stream = nullptr) const;

  /// The gradients of L = sum(o * dO) (DSL.md "Backward") for a kernel
  /// compiled with backward (KernelInfo::backward). `tensors` are the
  /// forward's q, k, v and its output o, with lse (as the forward wrote
  /// it) for softmax and softplus, and none for other normalizers; dO has
  /// o's shape and dtype; `params` are the forward's. Like launch(), a GPU
  /// kernel takes device memory (tensors, captures, dO and every
  /// gradient) and queues its kernels on `stream`; where param or
  /// captured-tensor gradients are asked for, the call waits for them (the
  /// per-thread partial sums are added on the host, in a fixed order).
  /// Validates every argument (an attn::Error naming it) before anything
  /// is written. Deterministic: the same inputs give bit-identical
  /// gradients for any thread count (docs/runtime.md "Backward").
  void backward(const Tensors &tensors, const TensorRef &dO,
                const Gradients &grads, const Params &params = {},
                void *stream = nullptr) const;

  /// backward() on host memory for every target, as launchHost(): a GPU
  /// kernel's inputs are copied to device memory, and its gradients back
  /// once it has finished. For CPU kernels this is backward().
  void backwardHost(const Tensors &tensors, const TensorRef &dO,
                    const Gradients &grads, const Params &params = {}) const;

  /// launch() on host memory for every target: a GPU kernel gets its
  /// tensors (q, k, v, o, lse, the K/V scales and pages, and captured
  /// tensors in `params`) copied into device memory of its runtime (the
  /// CUDA driver or HIP, or the simulator chosen by useGpuSimulator), runs
  /// on the default stream, and o and lse are copied back once it has
  /// finished; the device copies are freed. For CPU kernels this is
  /// launch(). Arguments are validated before anything is allocated, and
  /// the outputs are written only when the kernel succeeded.
  void launchHost(const Tensors &tensors, const Params &params = {}) const;

  /// The blocks a launch with these arguments computes; validates like
  /// launch() but writes nothing to `tensors`.
  BlockMap blockMap(const Tensors &tensors, const Params &params = {}) const;

  /// Builds now the code that launches with Hq query heads, Hkv K/V heads
  /// and Sq queries need. A JIT-compiled CPU kernel builds its code for
  /// the two classes of launch (more than 16 rows per K/V head, Hq / Hkv *
  /// Sq, or at most 16: decode) at the first launch of each, unless
  /// prepared; other kernels are complete and this does nothing. Throws
  /// what compiling throws.
  void prepare(int64_t queryHeads, int64_t kvHeads, int64_t queryLen) const;

private:
  void runBackwardOn(const Tensors &tensors, const TensorRef &dO,
                     const Gradients &grads, const Params &params,
                     void *stream, bool host) const;
  std::shared_ptr<const detail::KernelState> state;
};

/// Runs this process's GPU kernels on functional simulators instead of
/// GPUs: sm_* kernels then open `cudaLibrary` (a library exporting the
/// CUDA driver API, such as attnc's lib/libattnsim_cuda.so) instead of
/// libcuda.so.1, and gfx* kernels `hipLibrary` (the HIP runtime API)
/// instead of libamdhip64. An empty path keeps that vendor's real runtime;
/// two empty paths go back to the GPUs. Launches that start after the
/// call use the new choice (switch while no GPU launch is in flight: each
/// runtime has its own device memory). Without a call, the environment
/// variables ATTN_GPU_SIMULATOR (CUDA) and ATTN_GPU_SIMULATOR_HIP are read
/// at the first GPU launch. Nothing else selects a simulator. A library
/// that cannot be opened is an attn::Error naming "target", with its path,
/// at the first launch that needs it.
void useGpuSimulator(const std::string &cudaLibrary,
                     const std::string &hipLibrary = "");

/// An AOT bundle (`.attnpkg`, written by `attnc compile`) loaded into this
/// process. Kernels taken from it stay valid after the Module is gone.
class Module {
public:
  Module() = default;
  /// Loads a bundle; throws attn::Error("bundle", ...) when the file is
  /// missing, not a bundle, corrupt, from an incompatible compiler, or
  /// built for a CPU this machine cannot run, and attn::Error("manifest",
  /// ...) naming the field when its manifest does not read.
  static Module load(const std::string &path);

  /// The kernel of a variant; throws attn::Error naming it when absent.
  Kernel kernel(const std::string &name) const;
  std::vector<std::string> kernelNames() const;

private:
  std::shared_ptr<const detail::ModuleState> state;
};

namespace detail {
/// Packed entry point of a CPU kernel: `void f(void **args)` where args
/// point at the expanded memref descriptors, params, captures and the
/// [begin, end) range of work items, in that order.
using CpuEntry = void (*)(void **);

/// A compiled GPU kernel: its binary for `chip` (an NVIDIA cubin, or for
/// gfx* chips an AMDGPU code object), for NVIDIA its PTX (which the driver
/// compiles for other GPUs), and its launch geometry: a grid of
/// (ceil(Sq / rowsPerBlock), Hq, B) blocks of blockThreads threads.
struct GpuCode {
  std::string chip, entry, binary, ptx;
  int64_t blockThreads = 0, rowsPerBlock = 0, sharedBytes = 0;
  /// The kernel takes TMA tensor maps of q, k and v after its arguments
  /// (boxes of rowsPerBlock or blockKV rows, detail::tmaSwizzleBytes wide).
  bool tensorMaps = false;
  int64_t blockKV = 0;
  /// CTAs per thread-block cluster along x (the kernel's
  /// .reqnctapercluster): the launch rounds its query tiles up to a
  /// multiple of it. 1 without clusters.
  int64_t clusterCtas = 1;
  /// Split-KV: combines the parts' partial results (see GpuKernel.h).
  std::string mergeEntry;
  /// select: the pre-pass (pool the keys, then choose the kept blocks)
  /// launched before the kernel; empty without select.
  std::string selectPoolEntry, selectEntry;
  /// Kernels compiled with backward (KernelInfo::backward): dk and
  /// dv over (ceil(Skv / backwardKvRows), Hkv, B), then dq over
  /// (ceil(Sq / backwardQRows), Hq, B); empty otherwise.
  std::string backwardKvEntry, backwardQEntry;
  int64_t backwardKvThreads = 0, backwardKvRows = 0;
  int64_t backwardQThreads = 0, backwardQRows = 0;
  /// The backward kernels take one flat f32 buffer per f32 param and f32
  /// captured tensor after dv (a slab per thread, summed by the runtime):
  /// the gradients of params and captured tensors. False for code that
  /// predates the flag.
  bool backwardGradients = false;
};

/// Builds a kernel around GPU code, launched through the CUDA driver
/// (libcuda.so.1) for sm_* chips or the HIP runtime (libamdhip64) for gfx*
/// chips, opened at the first launch.
Kernel makeGpuKernel(KernelInfo info, GpuCode code);

/// How a GPU launch covers its work: `pack` GQA query heads per CTA (for
/// short query blocks, a power of two dividing Hq / Hkv with pack x Sq <=
/// rowsPerBlock), `parts` split-KV parts (an explicit request up to one key
/// tile each, or auto: two CTAs per multiprocessor, each part keeping two
/// or more key tiles, at most 64) and query tiles of rowsPerBlock / pack.
struct GpuGrid {
  int64_t pack = 1, parts = 1, queryTiles = 0;
};
GpuGrid planGpuGrid(int64_t batch, int64_t heads, int64_t kvHeads,
                    int64_t seqQ, int64_t seqKV, int64_t blockKV,
                    int64_t rowsPerBlock, int64_t requestedParts,
                    int64_t multiprocessors);

Kernel makeCpuKernel(KernelInfo info, CpuEntry entry,
                     std::shared_ptr<void> owner,
                     CpuEntry blockMapEntry = nullptr,
                     CpuEntry mergeEntry = nullptr,
                     CpuEntry backwardEntry = nullptr);

/// Classes of CPU launch a kernel's code can be built for (see
/// Kernel::prepare): Many runs any launch, Few only launches with at most
/// kFewRows rows per work item's K/V head (and leaves the wide tiles out).
enum class CpuRows { Many = 0, Few = 1 };
inline constexpr int64_t kFewRows = 16;

/// The entries of CPU code and what keeps them loaded.
struct CpuCode {
  CpuEntry entry = nullptr, blockMap = nullptr, merge = nullptr;
  std::shared_ptr<void> owner;
  /// The backward entry (KernelInfo::backward), else null.
  CpuEntry backward = nullptr;
};

/// A CPU kernel whose code for each class of launch is made by `build` the
/// first time a launch (or prepare) needs it. A build that throws is
/// retried by the next launch.
Kernel makeLazyCpuKernel(KernelInfo info,
                         std::function<CpuCode(CpuRows)> build);

/// Evaluates a reverse-Polish dimension expression.
int64_t evalDimRpn(const std::string &rpn, const int64_t sizes[7],
                   const KernelInfo &info, const Params &params);

/// Threads used for CPU launches (ATTN_NUM_THREADS, else the core count).
unsigned cpuThreadCount();

/// Replaces the CPU launches' thread pool by one of `threads` threads (0:
/// cpuThreadCount() again). For tests and benchmarks that compare thread
/// counts in one process; call it while no CPU launch is in flight.
void setCpuThreadCount(unsigned threads);

/// 64-bit FNV-1a, the checksum of bundle and cache payloads.
uint64_t checksum(const void *data, size_t size);

/// CPU features a bundle may require, and whether this machine has each.
const std::vector<std::pair<std::string, bool>> &hostCpuFeatures();

/// The swizzle (bytes) of the shared-memory tiles an sm_90a TMA kernel
/// stages rows of `rowBytes` in, which its tensor maps must match: the
/// widest of 128, 64 and 32 bytes dividing a row (head dims are multiples
/// of 16, so 2-byte rows are multiples of 32 bytes). Each TMA box is that
/// many bytes of rowsPerBlock or blockKV rows, with CU_TENSOR_MAP_SWIZZLE_
/// of the same width: a 128-element bf16 row takes two boxes, an 80-element
/// one five 32-byte boxes.
inline constexpr int64_t tmaSwizzleBytes(int64_t rowBytes) {
  return rowBytes % 128 == 0 ? 128 : rowBytes % 64 == 0 ? 64 : 32;
}

/// Bundle layout: magic, format, manifest size, manifest JSON, payloads.
inline constexpr char kBundleMagic[8] = {'A', 'T', 'T', 'N', 'P', 'K', 'G', '1'};
// 2: sm_90a TMA kernels take their tensor maps by value (grid-constant
// parameters); a format-1 kernel expects pointers to them.
// 3: CPU kernels may list fallback binaries (a bundle compiled for several
// CPUs), of which the loader picks one; a format-2 reader would load (and
// check the features of) every payload. attnc writes format 3 only for
// such bundles, so a single-CPU bundle still loads in a format-2 attnrt.
// 4: sm_90a TMA kernels stage Q, K and V swizzled (tmaSwizzleBytes), so
// their tensor maps differ from the 16-byte-wide unswizzled boxes of older
// kernels; a format-2/3 bundle with tensor maps is refused. attnc writes
// format 4 only for bundles with such kernels.
// 5: sm_90a TMA kernels may run in thread-block clusters (cluster_ctas),
// whose query tiles the launch rounds up; a format-4 attnrt would launch
// an incomplete cluster. attnc writes format 5 only for such kernels.
inline constexpr uint32_t kBundleFormat = 5;
/// The first format with clustered kernels.
inline constexpr uint32_t kClusterBundleFormat = 5;
/// The first format whose TMA kernels read tmaSwizzleBytes-wide boxes.
inline constexpr uint32_t kSwizzledTmaBundleFormat = 4;
/// The oldest format this attnrt reads.
inline constexpr uint32_t kOldestBundleFormat = 2;
} // namespace detail

} // namespace attn

#endif // ATTN_RUNTIME_H
