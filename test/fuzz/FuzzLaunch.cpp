//===- FuzzLaunch.cpp - libFuzzer: launch validation ----------------------===//
//
// Random shapes, strides, offsets, dtypes, params and page tables against
// CPU kernels compiled once at start-up. Every buffer is allocated to
// exactly the bytes its view spans plus guard bands filled with a canary
// (and ASan's redzones beyond). The contract checked:
//   - a launch either throws attn::Error or runs;
//   - a refused launch writes nothing (every output byte keeps its canary);
//   - an accepted launch touches no byte outside the output views (guard
//     bands and the gaps between strided elements keep their canary), and
//     leaves the inputs unchanged;
//   - a view whose byte extent does not fit in 64 bits is always refused.
// Views whose extent fits but exceeds what this target allocates are not
// launched: the runtime cannot know a buffer's size, so only the checks it
// can make are tested.
//
//===----------------------------------------------------------------------===//
#include "test/fuzz/FuzzSupport.h"

#include "attn/jit.h"
#include "attn/runtime.h"

#include <fuzzer/FuzzedDataProvider.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace {

using attn::DType;
using attn::TensorRef;

constexpr uint8_t kCanary = 0xA5;
constexpr size_t kGuard = 64;
constexpr unsigned __int128 kMaxAllocation = 1 << 20;

struct KernelCase {
  const char *source;
  attn::Options options;
};

// Captured tensors and a param; lse; Dv != D.
const char *kDocuments = R"(
variant docs {
  tensor qdoc: i32[B, Sq];
  tensor kdoc: i32[B, Skv];
  tensor bias: f32[Hq];
  param shift: f32 = 0.0;
  param window: i32;
  score(s, b, h, q, kv) = s + bias[h] + shift;
  mask(b, h, q, kv) = qdoc[b, q] == kdoc[b, kv] && kv <= q + (Skv - Sq) &&
                      q + (Skv - Sq) - kv < window;
}
)";
const char *kDense = "variant dense { }\n";

std::vector<attn::Kernel> &kernels() {
  static std::vector<attn::Kernel> compiled = [] {
    attn::Jit jit;
    std::vector<attn::Kernel> k;
    attn::Options docs;
    docs.headDim = 32;
    docs.valueHeadDim = 16;
    docs.lse = true;
    k.push_back(jit.compile(kDocuments, docs));
    attn::Options half;
    half.headDim = 32;
    half.dtype = "f16";
    k.push_back(jit.compile(kDense, half));
    attn::Options paged;
    paged.headDim = 32;
    paged.kvDtype = "int8";
    paged.kvGroup = 16;
    paged.paged = 8;
    k.push_back(jit.compile(kDense, paged));
    return k;
  }();
  return compiled;
}

/// A buffer holding one view: guard bands around exactly the bytes the view
/// spans, the rest of those bytes canary too until filled.
struct Buffer {
  std::string name;
  TensorRef view;
  std::unique_ptr<uint8_t[]> storage;
  size_t bytes = 0;      // guard + span + guard
  size_t spanBegin = 0;  // offset of the lowest byte the view spans
  std::vector<uint8_t> element; // per storage byte: 1 if an element's byte
  std::vector<uint8_t> before;  // contents before the launch
};

/// The byte extent of a view in 128-bit arithmetic (elements * strides can
/// pass 2^64 here without wrapping). nullopt for an empty view.
std::optional<unsigned __int128> spanOf(const TensorRef &t) {
  unsigned __int128 last = 0;
  for (size_t d = 0; d < t.shape.size(); ++d) {
    if (t.shape[d] <= 0)
      return std::nullopt;
    last += static_cast<unsigned __int128>(t.shape[d] - 1) *
            static_cast<unsigned __int128>(t.strides[d]);
  }
  return (last + 1) * attn::dtypeSize(t.dtype);
}

/// a * b + c, saturating: sizes here may be chosen near 2^62.
int64_t satMulAdd(int64_t a, int64_t b, int64_t c = 0) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r) || __builtin_add_overflow(r, c, &r))
    return INT64_MAX;
  return r;
}

/// Outcome counts, printed at exit with ATTN_FUZZ_STATS=1: checks that
/// enough launches are accepted for the guard-band checks to mean much.
struct Stats {
  uint64_t accepted = 0, refused = 0, notLaunchable = 0;
  ~Stats() {
    if (std::getenv("ATTN_FUZZ_STATS"))
      std::fprintf(stderr, "fuzz_launch: %llu accepted, %llu refused, %llu "
                   "too large to allocate\n",
                   (unsigned long long)accepted, (unsigned long long)refused,
                   (unsigned long long)notLaunchable);
  }
} stats;

class Fuzz {
public:
  Fuzz(const uint8_t *data, size_t size)
      : in(data, size), input(reinterpret_cast<const char *>(data), size) {}

  void run();

private:
  int64_t size(int64_t typical) {
    // Mostly the consistent size: a launch needs every one of them right.
    switch (in.ConsumeIntegralInRange<int>(0, 47)) {
    case 0:
      return 0;
    case 1:
      return in.ConsumeIntegralInRange<int64_t>(-4, 3);
    case 2:
      return int64_t(1) << in.ConsumeIntegralInRange<int>(20, 62);
    default:
      return typical;
    }
  }
  /// A view of `shape` (perturbed now and then) with contiguous strides,
  /// or padded, zero, huge or negative ones.
  Buffer &view(const std::string &name, DType dtype,
               std::vector<int64_t> shape);
  void fill(Buffer &b, bool isIndex, int64_t indexRange);
  bool outputsUntouched() const;
  bool guardsAndGapsIntact() const;
  bool inputsUnchanged() const;

  FuzzedDataProvider in;
  std::string input;
  std::vector<Buffer> buffers; // deque-like: never resized after views
  bool unallocatable = false;  // some view spans more than we allocate
  bool overflowing = false;    // some view's extent passes 2^63
  std::vector<std::string> outputs;
  std::string aliased; // a buffer o was pointed into: its gaps may change
};

Buffer &Fuzz::view(const std::string &name, DType dtype,
                   std::vector<int64_t> shape) {
  Buffer b;
  b.name = name;
  if (in.ConsumeIntegralInRange<int>(0, 31) == 0)
    dtype = static_cast<DType>(in.ConsumeIntegralInRange<int>(0, 6));
  if (in.ConsumeIntegralInRange<int>(0, 31) == 0 && !shape.empty())
    shape.pop_back();
  std::vector<int64_t> strides(shape.size());
  int64_t running = 1;
  int style = in.ConsumeIntegralInRange<int>(0, 15);
  for (size_t d = shape.size(); d-- > 0;) {
    strides[d] = running;
    if (style == 1 && d + 1 < shape.size())
      strides[d] = satMulAdd(strides[d], 1,
                             in.ConsumeIntegralInRange<int64_t>(0, 9)); // padded rows
    if (style == 2)
      strides[d] = in.ConsumeIntegralInRange<int64_t>(-2, 70); // anything
    if (style == 3 && in.ConsumeBool())
      strides[d] = int64_t(1) << in.ConsumeIntegralInRange<int>(30, 62);
    int64_t extent = std::max<int64_t>(shape[d], 1);
    running = (__builtin_mul_overflow(strides[d], extent, &running) ||
               running < 0)
                  ? INT64_MAX / 2
                  : running;
  }
  b.view = TensorRef(nullptr, dtype, shape, strides);
  bool negative = false;
  for (int64_t s : strides)
    negative |= s < 0;
  unsigned __int128 count = 1;
  for (int64_t extent : shape)
    count = extent <= 0 ? 0
            : count > (unsigned __int128)INT64_MAX ? count
                                                     : count * extent;
  if (count > (unsigned __int128)INT64_MAX)
    overflowing = true;
  std::optional<unsigned __int128> span;
  if (!negative && count <= kMaxAllocation)
    span = spanOf(b.view);
  else if (count > kMaxAllocation)
    unallocatable = true;
  if (span && *span > (unsigned __int128)INT64_MAX)
    overflowing = true;
  size_t spanBytes = 0;
  if (span && *span <= kMaxAllocation)
    spanBytes = static_cast<size_t>(*span);
  else if (span || negative)
    unallocatable = true;
  // Offsets that break alignment now and then.
  size_t misalign = in.ConsumeIntegralInRange<int>(0, 15) == 0
                        ? in.ConsumeIntegralInRange<size_t>(1, 3)
                        : 0;
  b.bytes = 2 * kGuard + spanBytes + misalign;
  b.storage.reset(new uint8_t[b.bytes]);
  std::memset(b.storage.get(), kCanary, b.bytes);
  b.spanBegin = kGuard + misalign;
  b.view.data = b.storage.get() + b.spanBegin;
  b.element.assign(b.bytes, 0);
  if (spanBytes) {
    // Mark each element's bytes (views here hold at most 2^20 bytes).
    size_t elemSize = attn::dtypeSize(b.view.dtype);
    size_t rank = shape.size();
    std::vector<int64_t> index(rank, 0);
    for (;;) {
      size_t offset = 0;
      for (size_t d = 0; d < rank; ++d)
        offset += index[d] * strides[d];
      for (size_t i = 0; i < elemSize; ++i)
        b.element[b.spanBegin + offset * elemSize + i] = 1;
      size_t d = rank;
      while (d > 0 && ++index[d - 1] == shape[d - 1])
        index[--d] = 0;
      if (d == 0)
        break;
    }
  }
  buffers.push_back(std::move(b));
  return buffers.back();
}

void Fuzz::fill(Buffer &b, bool isIndex, int64_t indexRange) {
  size_t elemSize = attn::dtypeSize(b.view.dtype);
  for (size_t i = b.spanBegin; i + elemSize <= b.bytes - kGuard;
       i += elemSize) {
    if (!b.element[i])
      continue;
    uint8_t *p = b.storage.get() + i;
    if (isIndex && b.view.dtype == DType::i32) {
      int32_t v = in.ConsumeIntegralInRange<int>(0, 31) == 0
                      ? in.ConsumeIntegral<int32_t>()
                      : int32_t(in.ConsumeIntegralInRange<int64_t>(
                            0, std::max<int64_t>(indexRange - 1, 0)));
      std::memcpy(p, &v, 4);
    } else if (b.view.dtype == DType::f32) {
      float v = float(in.ConsumeIntegralInRange<int>(-64, 64)) / 32.0f;
      std::memcpy(p, &v, 4);
    } else {
      // Small finite bit patterns for 16- and 8-bit types.
      for (size_t j = 0; j < elemSize; ++j)
        p[j] = j + 1 == elemSize ? in.ConsumeIntegralInRange<uint8_t>(0x30, 0x3c)
                                 : in.ConsumeIntegral<uint8_t>();
    }
  }
  b.before.assign(b.storage.get(), b.storage.get() + b.bytes);
}

bool Fuzz::outputsUntouched() const {
  for (const Buffer &b : buffers)
    for (const std::string &o : outputs)
      if (b.name == o &&
          std::memcmp(b.before.data(), b.storage.get(), b.bytes) != 0)
        return false;
  return true;
}

bool Fuzz::guardsAndGapsIntact() const {
  for (const Buffer &b : buffers)
    for (size_t i = 0; i < b.bytes; ++i) {
      bool guard = i < b.spanBegin || i >= b.bytes - kGuard;
      if (!b.element[i] && (guard || b.name != aliased) &&
          b.storage[i] != b.before[i])
        return false;
    }
  return true;
}

bool Fuzz::inputsUnchanged() const {
  for (const Buffer &b : buffers) {
    bool isOutput = false;
    for (const std::string &o : outputs)
      isOutput |= b.name == o;
    if (!isOutput &&
        std::memcmp(b.before.data(), b.storage.get(), b.bytes) != 0)
      return false;
  }
  return true;
}

void Fuzz::run() {
  std::vector<attn::Kernel> &all = kernels();
  int which = in.ConsumeIntegralInRange<int>(0, int(all.size()) - 1);
  const attn::Kernel &kernel = all[which];
  const attn::KernelInfo &info = kernel.info();
  buffers.reserve(16);

  int64_t B = size(in.ConsumeIntegralInRange<int64_t>(1, 2));
  int64_t Hkv = size(in.ConsumeIntegralInRange<int64_t>(1, 2));
  int64_t Hq = size(satMulAdd(Hkv, in.ConsumeIntegralInRange<int64_t>(1, 3)));
  int64_t Sq = size(in.ConsumeIntegralInRange<int64_t>(1, 40));
  int64_t Skv = size(in.ConsumeIntegralInRange<int64_t>(1, 40));
  int64_t D = size(info.headDim), Dv = size(info.valueHeadDim);
  DType dt = info.dtype;

  attn::Tensors t;
  t.q = view("q", dt, {B, Hq, Sq, D}).view;
  int64_t P = info.pageSize;
  if (info.pageSize > 0) {
    int64_t maxPages = size(satMulAdd(Skv, 1, P - 1) / P);
    int64_t pages = size(satMulAdd(B, maxPages, 1));
    DType code = attn::codeDType(info.kvDtype);
    t.k = view("k", code, {pages, Hkv, P, D}).view;
    t.v = view("v", code, {pages, Hkv, P, Dv}).view;
    t.pageTable = view("page_table", DType::i32, {B, maxPages}).view;
    t.seqLens = view("seq_lens", DType::i32, {B}).view;
    Skv = satMulAdd(maxPages, P);
    t.kScale = view("k_scale", DType::f32,
                    {B, Hkv, satMulAdd(Skv, 1, info.kvGroup - 1) / info.kvGroup,
                     D})
                   .view;
    t.vScale = view("v_scale", DType::f32, {B, Hkv, Skv}).view;
  } else {
    t.k = view("k", dt, {B, Hkv, Skv, D}).view;
    t.v = view("v", dt, {B, Hkv, Skv, Dv}).view;
  }
  t.o = view("o", info.outDType, {B, Hq, Sq, Dv}).view;
  outputs.push_back("o");
  if (info.lse || in.ConsumeIntegralInRange<int>(0, 15) == 0) {
    t.lse = view("lse", DType::f32, {B, Hq, Sq}).view;
    outputs.push_back("lse");
  }
  attn::Params params;
  std::vector<std::pair<std::string, std::vector<int64_t>>> captures;
  for (const attn::CaptureInfo &c : info.captures) {
    std::vector<int64_t> shape;
    for (const std::string &d : c.dimText)
      shape.push_back(d == "B" ? B : d == "Hq" ? Hq : d == "Sq" ? Sq : Skv);
    Buffer &b = view(c.name, c.dtype, shape);
    params.emplace_back(c.name, b.view);
  }
  for (const attn::ParamInfo &p : info.params) {
    if (p.defaultValue && in.ConsumeBool())
      continue;
    if (in.ConsumeIntegralInRange<int>(0, 15) == 0)
      params.emplace_back(p.name, in.ConsumeFloatingPoint<double>());
    else
      params.emplace_back(p.name, in.ConsumeIntegralInRange<int>(-3, 50));
  }
  if (in.ConsumeIntegralInRange<int>(0, 31) == 0)
    params.emplace_back("no_such_param", 1);
  if (in.ConsumeIntegralInRange<int>(0, 31) == 0 && !params.empty())
    params.push_back(params.front());
  if (in.ConsumeIntegralInRange<int>(0, 31) == 0) {
    // o over another buffer that is at least as large (as a caller passing
    // the same memory twice would): only refused where the views overlap
    // in a way the kernel cannot handle.
    Buffer &o = buffers[in.ConsumeIntegralInRange<size_t>(0, buffers.size() - 1)];
    Buffer *own = nullptr;
    for (Buffer &b : buffers)
      if (b.name == "o")
        own = &b;
    if (own && &o != own && o.bytes - o.spanBegin >= own->bytes - own->spanBegin) {
      t.o.data = o.view.data;
      outputs.push_back(o.name);
      aliased = o.name;
    }
  }

  for (Buffer &b : buffers) {
    bool isIndex = b.name == "page_table" || b.name == "seq_lens" ||
                   b.name == "qdoc" || b.name == "kdoc";
    int64_t range = b.name == "page_table"
                        ? (t.k.shape.empty() ? 1 : t.k.shape[0])
                    : b.name == "seq_lens" ? satMulAdd(Skv, 1, 1)
                                           : 3;
    fill(b, isIndex, range);
  }
  if (unallocatable && !overflowing) {
    ++stats.notLaunchable; // valid-looking views bigger than our buffers
    return;
  }

  bool accepted = false;
  try {
    kernel.launch(t, params);
    accepted = true;
    ++stats.accepted;
  } catch (const attn::Error &) {
    ++stats.refused;
  } catch (const std::exception &e) {
    attn::fuzz::finding("launch",
                        std::string("unexpected exception: ") + e.what(),
                        input);
  }
  if (accepted && overflowing)
    attn::fuzz::finding("launch",
                        "accepted a view whose extent passes 2^63 bytes",
                        input);
  if (!accepted && !outputsUntouched())
    attn::fuzz::finding("launch", "a refused launch wrote its outputs",
                        input);
  if (!guardsAndGapsIntact())
    attn::fuzz::finding("launch",
                        "bytes outside the output views were written", input);
  if (!inputsUnchanged())
    attn::fuzz::finding("launch", "an input was modified", input);
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
  // A JIT cache shared across runs keeps start-up at a few seconds.
  setenv("ATTN_NUM_THREADS", "1", 0);
  kernels();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  Fuzz(data, size).run();
  return 0;
}
