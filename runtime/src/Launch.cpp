//===- Launch.cpp - argument validation and the CPU launcher --------------===//
#include "attn/runtime.h"

#include "GpuFunction.h"
#include "ThreadPool.h"
#include "attn/IntMath.h"
#include "runtime/support/Normalizers.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <mutex>
#include <sstream>
#include <tuple>

namespace attn {
namespace detail {

struct KernelState {
  KernelInfo info;
  CpuEntry cpuEntry = nullptr;
  CpuEntry blockMapEntry = nullptr;
  CpuEntry mergeEntry = nullptr;
  CpuEntry backwardEntry = nullptr;
  std::shared_ptr<void> owner;
  std::shared_ptr<GpuFunction> gpu; // GPU targets
  // Lazy CPU kernels (JIT): code per class of launch, built at first use.
  std::function<CpuCode(CpuRows)> buildRows;
  mutable std::mutex rowsMutex;
  mutable CpuCode rowsCode[2];
};

} // namespace detail

namespace {

constexpr int64_t kI32Max = std::numeric_limits<int32_t>::max();

enum SizeIdx { kB, kHq, kHkv, kSq, kSkv, kD, kDv };
const char *kSizeNames[] = {"B", "Hq", "Hkv", "Sq", "Skv", "D", "Dv"};

std::string shapeString(const std::vector<int64_t> &shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i)
    os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

/// The product of sizes derived from a launch's shapes (scratch buffers,
/// block maps, work items); an error naming `name` when it does not fit.
int64_t checkedProduct(const std::string &name,
                       std::initializer_list<int64_t> factors,
                       const char *what) {
  int64_t n = 1;
  for (int64_t f : factors)
    if (__builtin_mul_overflow(n, f, &n))
      throw Error(name, std::string(what) + " has more elements than fit in "
                                            "64 bits");
  return n;
}

/// The bytes [lo, hi) a view can touch (empty views touch nothing) and the
/// bytes its elements alone occupy: every extent and offset computed from a
/// caller's shape and strides goes through here, in checked arithmetic, so
/// that a view whose addresses do not fit is an error naming it rather than
/// a wrapped range that passes the overlap checks.
struct Span {
  uintptr_t lo = 0, hi = 0;
  uint64_t dense = 0; // numel * element size
  /// Bytes the view spans beyond its elements (gaps between rows).
  uint64_t gaps() const { return (hi - lo) - dense; }
};

Span checkedSpan(const std::string &name, const TensorRef &t) {
  auto unfit = [&](const char *what) {
    return Error(name, std::string(what) + " (shape " + shapeString(t.shape) +
                           ", strides " +
                           shapeString(t.effectiveStrides()) + ")");
  };
  int64_t numel = 1;
  for (int64_t d : t.shape) {
    if (d < 0)
      throw Error(name, "negative size in shape " + shapeString(t.shape));
    if (__builtin_mul_overflow(numel, d, &numel))
      throw unfit("has more elements than fit in 64 bits");
  }
  if (numel == 0)
    return {};
  std::vector<int64_t> s = t.effectiveStrides();
  int64_t last = 0; // offset of the last element, in elements
  for (size_t i = 0; i < t.shape.size(); ++i) {
    int64_t step;
    if (s[i] < 0)
      throw Error(name, "negative strides are not supported, got " +
                            shapeString(s));
    if (__builtin_mul_overflow(t.shape[i] - 1, s[i], &step) ||
        __builtin_add_overflow(last, step, &last))
      throw unfit("its last element lies at an offset that does not fit in "
                  "64 bits");
  }
  int64_t size = static_cast<int64_t>(dtypeSize(t.dtype)), bytes, dense;
  if (__builtin_add_overflow(last, 1, &bytes) ||
      __builtin_mul_overflow(bytes, size, &bytes) ||
      __builtin_mul_overflow(numel, size, &dense))
    throw unfit("its elements span a byte range that does not fit in 64 "
                "bits");
  Span span;
  span.lo = reinterpret_cast<uintptr_t>(t.data);
  if (__builtin_add_overflow(span.lo, static_cast<uintptr_t>(bytes), &span.hi))
    throw unfit("its elements run past the end of the address space");
  span.dense = static_cast<uint64_t>(dense);
  return span;
}

/// Byte range [lo, hi) of a view that checkedSpan accepted.
std::pair<uintptr_t, uintptr_t> byteRange(const TensorRef &t) {
  Span s = checkedSpan("", t);
  return {s.lo, s.hi};
}

/// Of two overlapping views, the one to blame: the view with the larger
/// gaps between its rows, whose strides are the likelier to reach past its
/// own buffer into the other's (a huge head stride of k reaching o); on a
/// tie, the first (the output). Views that do not overlap give nullptr.
const char *overlapCulprit(const char *aName, const TensorRef &a,
                           const char *bName, const TensorRef &b) {
  Span sa = checkedSpan(aName, a), sb = checkedSpan(bName, b);
  if (!(sa.lo < sb.hi && sb.lo < sa.hi))
    return nullptr;
  return sb.gaps() > sa.gaps() ? bName : aName;
}

/// Throws when `view` (an output, or a tensor that must not alias one)
/// overlaps `other`: `message` naming `name`, or, when `other` is the
/// culprit, an error naming `other` whose strides reach into `name`.
void expectApart(const char *name, const TensorRef &view,
                 const char *otherName, const TensorRef &other,
                 const std::string &message) {
  const char *culprit = overlapCulprit(name, view, otherName, other);
  if (!culprit)
    return;
  if (culprit == name)
    throw Error(name, message);
  Span s = checkedSpan(otherName, other);
  throw Error(otherName,
              "with shape " + shapeString(other.shape) + " and strides " +
                  shapeString(other.effectiveStrides()) +
                  " its elements span " + std::to_string(s.hi - s.lo) +
                  " bytes and reach into " + name +
                  "; check its strides (a view must stay inside its own "
                  "buffer)");
}

/// An output view must not write one element twice (stride 0, or strides
/// that interleave rows). Takes a view checkedSpan accepted.
bool selfOverlapping(const TensorRef &t) {
  if (t.numel() == 0)
    return false;
  std::vector<int64_t> s = t.effectiveStrides();
  std::vector<size_t> order;
  for (size_t i = 0; i < t.shape.size(); ++i)
    if (t.shape[i] > 1)
      order.push_back(i);
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return s[a] < s[b]; });
  int64_t extent = 1;
  for (size_t i : order) {
    if (s[i] < extent)
      return true;
    // Past INT64_MAX no later (larger) stride of an accepted view can
    // clear the extent: saturate.
    if (__builtin_mul_overflow(s[i], t.shape[i], &extent))
      extent = INT64_MAX;
  }
  return false;
}

/// Rank, dtype, sizes, strides and pointer checks shared by q, k, v, o, lse.
void checkView(const std::string &name, const TensorRef &t, DType dtype,
               const std::vector<const char *> &dimNames) {
  if (t.shape.size() != dimNames.size()) {
    std::string dims;
    for (size_t i = 0; i < dimNames.size(); ++i)
      dims += std::string(i ? ", " : "") + dimNames[i];
    throw Error(name, "expected " + std::to_string(dimNames.size()) +
                          " dimensions [" + dims + "], got " +
                          std::to_string(t.shape.size()) + " " +
                          shapeString(t.shape));
  }
  if (t.dtype != dtype)
    throw Error(name, std::string("expected dtype ") + dtypeName(dtype) +
                          ", got " + dtypeName(t.dtype));
  for (size_t i = 0; i < t.shape.size(); ++i) {
    if (t.shape[i] < 0)
      throw Error(name, "negative size in shape " + shapeString(t.shape));
    if (t.shape[i] > kI32Max)
      throw Error(name, std::string("size of ") + dimNames[i] +
                            " exceeds 2^31 - 1");
  }
  if (!t.strides.empty() && t.strides.size() != t.shape.size())
    throw Error(name, "expected " + std::to_string(t.shape.size()) +
                          " strides, got " + std::to_string(t.strides.size()));
  std::vector<int64_t> s = t.effectiveStrides();
  for (int64_t x : s)
    if (x < 0)
      throw Error(name, "negative strides are not supported, got " +
                            shapeString(s));
  if (t.shape.back() > 1 && s.back() != 1)
    throw Error(name, "the innermost dimension must be contiguous (stride "
                      "1), got stride " + std::to_string(s.back()));
  Span span = checkedSpan(name, t);
  if (span.hi > span.lo) {
    if (!t.data)
      throw Error(name, "null data pointer");
    if (reinterpret_cast<uintptr_t>(t.data) % dtypeSize(t.dtype) != 0)
      throw Error(name, "data pointer is not aligned to " +
                            std::to_string(dtypeSize(t.dtype)) + " bytes");
  }
}

void expectSize(const std::string &name, const TensorRef &t, size_t dim,
                const char *dimName, int64_t expected, const char *source) {
  if (t.shape[dim] != expected)
    throw Error(name, std::string("dimension ") + std::to_string(dim) + " (" +
                          dimName + ") is " + std::to_string(t.shape[dim]) +
                          ", expected " + std::to_string(expected) + " " +
                          source);
}

size_t editDistance(const std::string &a, const std::string &b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j)
    prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1,
                         prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

/// A launch after validation: everything the backend needs.
struct LaunchPlan {
  int64_t sizes[7] = {};
  std::vector<double> paramValues; // in KernelInfo::params order
  std::vector<TensorRef> captures; // in KernelInfo::captures order
};

const Arg *findArg(const Params &params, const std::string &name) {
  for (const auto &[n, a] : params)
    if (n == name)
      return &a;
  return nullptr;
}

/// Paged K/V: the page table and lengths, read on the host so that a bad
/// entry is an error naming it rather than a read of someone else's page.
/// Sets Skv to the table's capacity.
void validatePages(const KernelInfo &info, const Tensors &t, int64_t *sz) {
  if (!t.pageTable || !t.seqLens)
    throw Error(t.pageTable ? "seq_lens" : "page_table",
                "the kernel reads paged K/V (--paged " +
                    std::to_string(info.pageSize) +
                    "); pass page_table [B, max_pages] and seq_lens [B] "
                    "(i32)");
  checkView("page_table", *t.pageTable, DType::i32, {"B", "max_pages"});
  checkView("seq_lens", *t.seqLens, DType::i32, {"B"});
  expectSize("page_table", *t.pageTable, 0, "B", sz[kB], "(B from q)");
  expectSize("seq_lens", *t.seqLens, 0, "B", sz[kB], "(B from q)");
  expectSize("k", t.k, 2, "P", info.pageSize, "(the kernel's --paged)");
  int64_t maxPages = t.pageTable->shape[1];
  int64_t capacity = maxPages * info.pageSize;
  if (capacity > kI32Max)
    throw Error("page_table", "max_pages * P exceeds 2^31 - 1");
  sz[kSkv] = capacity;
  // GPU tables live in device memory: the kernel clamps lengths and pages
  // instead (a bad entry reads a wrong page, never wild memory).
  if (info.target != "cpu")
    return;
  int64_t pages = t.k.shape[0];
  std::vector<int64_t> ts = t.pageTable->effectiveStrides();
  int64_t ls = t.seqLens->effectiveStrides()[0];
  for (int64_t b = 0; b < sz[kB]; ++b) {
    int32_t len = static_cast<const int32_t *>(t.seqLens->data)[b * ls];
    if (len < 0 || len > capacity)
      throw Error("seq_lens", "entry " + std::to_string(b) + " is " +
                                  std::to_string(len) + "; expected 0.." +
                                  std::to_string(capacity) +
                                  " (max_pages * P)");
    for (int64_t i = 0; i < (len + info.pageSize - 1) / info.pageSize; ++i) {
      int32_t page = static_cast<const int32_t *>(
          t.pageTable->data)[b * ts[0] + i * ts[1]];
      if (page < 0 || page >= pages)
        throw Error("page_table",
                    "entry [" + std::to_string(b) + ", " + std::to_string(i) +
                        "] is " + std::to_string(page) +
                        "; expected a page of k and v, 0.." +
                        std::to_string(pages - 1));
    }
  }
}

/// Quantized K/V: the scales, by the logical (unpaged) shape.
void validateScales(const KernelInfo &info, const Tensors &t,
                    const int64_t *sz) {
  bool quant = info.kvDtype != "same";
  for (auto [name, scale] :
       {std::pair{"k_scale", &t.kScale}, std::pair{"v_scale", &t.vScale}}) {
    if (quant && !*scale)
      throw Error(name, "the kernel reads " + info.kvDtype +
                            " K/V codes; pass k_scale [B, Hkv, ceil(Skv/" +
                            std::to_string(info.kvGroup) +
                            "), D] and v_scale [B, Hkv, Skv] (f32)");
    if (!quant && *scale)
      throw Error(name, "the kernel reads unquantized K/V (--kv-dtype same)");
  }
  if (!quant)
    return;
  checkView("k_scale", *t.kScale, DType::f32, {"B", "Hkv", "groups", "D"});
  checkView("v_scale", *t.vScale, DType::f32, {"B", "Hkv", "Skv"});
  int64_t groups = (sz[kSkv] + info.kvGroup - 1) / info.kvGroup;
  expectSize("k_scale", *t.kScale, 0, "B", sz[kB], "(B from q)");
  expectSize("k_scale", *t.kScale, 1, "Hkv", sz[kHkv], "(Hkv from k)");
  expectSize("k_scale", *t.kScale, 2, "groups", groups,
             ("(ceil(Skv / " + std::to_string(info.kvGroup) + "))").c_str());
  expectSize("k_scale", *t.kScale, 3, "D", info.headDim, "(the head dim)");
  expectSize("v_scale", *t.vScale, 0, "B", sz[kB], "(B from q)");
  expectSize("v_scale", *t.vScale, 1, "Hkv", sz[kHkv], "(Hkv from k)");
  expectSize("v_scale", *t.vScale, 2, "Skv", sz[kSkv], "(Skv)");
}

LaunchPlan validate(const KernelInfo &info, const Tensors &t,
                    const Params &params) {
  LaunchPlan plan;
  bool quant = info.kvDtype != "same";
  bool paged = info.pageSize > 0;
  DType kvType = quant ? codeDType(info.kvDtype) : info.dtype;
  int64_t pack = quant ? codesPerElement(info.kvDtype) : 1;
  const char *rows = paged ? "pages" : "B";
  const char *slots = paged ? "P" : "Skv";
  checkView("q", t.q, info.dtype, {"B", "Hq", "Sq", "D"});
  checkView("k", t.k, kvType, {rows, "Hkv", slots, pack > 1 ? "D/2" : "D"});
  checkView("v", t.v, kvType, {rows, "Hkv", slots, pack > 1 ? "Dv/2" : "Dv"});
  checkView("o", t.o, info.outDType, {"B", "Hq", "Sq", "Dv"});
  int64_t *sz = plan.sizes;
  sz[kB] = t.q.shape[0];
  sz[kHq] = t.q.shape[1];
  sz[kSq] = t.q.shape[2];
  sz[kHkv] = t.k.shape[1];
  sz[kSkv] = t.k.shape[2];
  sz[kD] = info.headDim;
  sz[kDv] = info.valueHeadDim;
  expectSize("q", t.q, 3, "D", info.headDim, "(the kernel's --head-dim)");
  if (paged) {
    validatePages(info, t, sz);
  } else {
    if (t.pageTable || t.seqLens)
      throw Error(t.pageTable ? "page_table" : "seq_lens",
                  "the kernel reads contiguous K/V (compiled without "
                  "--paged)");
    expectSize("k", t.k, 0, "B", sz[kB], "(B from q)");
  }
  expectSize("k", t.k, 3, pack > 1 ? "D/2" : "D", info.headDim / pack,
             "(the kernel's --head-dim)");
  if (sz[kHkv] == 0 && sz[kHq] > 0)
    throw Error("k", "Hkv is 0 but q has " + std::to_string(sz[kHq]) +
                         " heads");
  if (sz[kHkv] > 0 && sz[kHq] % sz[kHkv] != 0)
    throw Error("k", "Hq = " + std::to_string(sz[kHq]) +
                         " (from q) is not a multiple of Hkv = " +
                         std::to_string(sz[kHkv]));
  expectSize("v", t.v, 0, rows, t.k.shape[0], "(from k)");
  expectSize("v", t.v, 1, "Hkv", sz[kHkv], "(Hkv from k)");
  expectSize("v", t.v, 2, slots, t.k.shape[2], "(from k)");
  expectSize("v", t.v, 3, pack > 1 ? "Dv/2" : "Dv", info.valueHeadDim / pack,
             "(the kernel's --v-head-dim)");
  validateScales(info, t, sz);
  expectSize("o", t.o, 0, "B", sz[kB], "(B from q)");
  expectSize("o", t.o, 1, "Hq", sz[kHq], "(Hq from q)");
  expectSize("o", t.o, 2, "Sq", sz[kSq], "(Sq from q)");
  expectSize("o", t.o, 3, "Dv", info.valueHeadDim,
             "(the kernel's --v-head-dim)");
  if (selfOverlapping(t.o))
    throw Error("o", "its strides make elements overlap; the output needs "
                     "one element per index");
  for (auto [name, input] : {std::pair{"k", &t.k}, std::pair{"v", &t.v}})
    expectApart("o", t.o, name, *input,
                "overlaps k or v; the output must not alias them");
  // Writing o in place of q is safe only as the very same view: each work
  // item reads its q rows before it writes the same o rows.
  bool sameView = t.o.data == t.q.data && t.o.dtype == t.q.dtype &&
                  t.o.effectiveStrides() == t.q.effectiveStrides() &&
                  info.headDim == info.valueHeadDim;
  if (!sameView)
    expectApart("o", t.o, "q", t.q,
                "partially overlaps q; pass a separate output or exactly "
                "q's view");
  if (info.lse && !t.lse)
    throw Error("lse", "the kernel was compiled with lse; pass an lse "
                       "tensor [B, Hq, Sq] f32");
  if (!info.lse && t.lse)
    throw Error("lse", "the kernel was compiled without lse (--lse)");
  if (t.lse) {
    checkView("lse", *t.lse, DType::f32, {"B", "Hq", "Sq"});
    expectSize("lse", *t.lse, 0, "B", sz[kB], "(B from q)");
    expectSize("lse", *t.lse, 1, "Hq", sz[kHq], "(Hq from q)");
    expectSize("lse", *t.lse, 2, "Sq", sz[kSq], "(Sq from q)");
    if (selfOverlapping(*t.lse))
      throw Error("lse", "its strides make elements overlap");
    for (auto [name, other] : {std::pair{"o", &t.o}, std::pair{"k", &t.k},
                               std::pair{"v", &t.v}, std::pair{"q", &t.q}})
      expectApart("lse", *t.lse, name, *other,
                  "overlaps another tensor of the launch");
  }
  for (auto [name, extra] :
       {std::pair{"k_scale", &t.kScale}, std::pair{"v_scale", &t.vScale},
        std::pair{"page_table", &t.pageTable},
        std::pair{"seq_lens", &t.seqLens}})
    if (*extra) {
      expectApart(name, **extra, "o", t.o, "overlaps an output of the launch");
      if (t.lse)
        expectApart(name, **extra, "lse", *t.lse,
                    "overlaps an output of the launch");
    }

  // Names the caller passed must all exist, each once.
  for (size_t i = 0; i < params.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (params[i].first == params[j].first)
        throw Error(params[i].first, "is passed twice (arguments " +
                                         std::to_string(j) + " and " +
                                         std::to_string(i) +
                                         "); pass each param or tensor once");
  for (const auto &[name, arg] : params) {
    bool known = false;
    for (const ParamInfo &p : info.params)
      known |= p.name == name;
    for (const CaptureInfo &c : info.captures)
      known |= c.name == name;
    if (known)
      continue;
    std::string best;
    size_t bestDist = name.size() / 3 + 2;
    for (const ParamInfo &p : info.params)
      if (size_t d = editDistance(name, p.name); d < bestDist)
        bestDist = d, best = p.name;
    for (const CaptureInfo &c : info.captures)
      if (size_t d = editDistance(name, c.name); d < bestDist)
        bestDist = d, best = c.name;
    throw Error(name, "variant '" + info.name +
                          "' has no param or tensor of this name" +
                          (best.empty() ? "" : "; did you mean '" + best +
                                                   "'?"));
  }
  for (const ParamInfo &p : info.params) {
    const Arg *a = findArg(params, p.name);
    if (!a) {
      if (!p.defaultValue)
        throw Error(p.name, "param has no default; pass a value (attnc: "
                            "--set " + p.name + "=VALUE)");
      plan.paramValues.push_back(*p.defaultValue);
      continue;
    }
    if (a->kind() == Arg::Kind::Tensor)
      throw Error(p.name, std::string("is a ") + dtypeName(p.type) +
                              " param, got a tensor");
    double value = a->asFloat();
    if (p.type == DType::i32) {
      if (a->kind() == Arg::Kind::Float && value != std::floor(value))
        throw Error(p.name, "is an i32 param, got the non-integer " +
                                std::to_string(value));
      if (a->kind() == Arg::Kind::Int
              ? (a->asInt() < INT32_MIN || a->asInt() > INT32_MAX)
              : (value < INT32_MIN || value > INT32_MAX))
        throw Error(p.name, "does not fit in i32");
      if (a->kind() == Arg::Kind::Int)
        value = static_cast<double>(a->asInt());
    }
    plan.paramValues.push_back(value);
  }
  for (const CaptureInfo &c : info.captures) {
    const Arg *a = findArg(params, c.name);
    std::string decl = std::string(dtypeName(c.dtype)) + "[";
    for (size_t i = 0; i < c.dimText.size(); ++i)
      decl += (i ? ", " : "") + c.dimText[i];
    decl += "]";
    if (!a)
      throw Error(c.name, "missing captured tensor " + decl);
    if (a->kind() != Arg::Kind::Tensor)
      throw Error(c.name, "is a captured tensor " + decl + ", got a number");
    const TensorRef &ref = a->tensor();
    if (ref.dtype != c.dtype)
      throw Error(c.name, std::string("expected dtype ") +
                              dtypeName(c.dtype) + ", got " +
                              dtypeName(ref.dtype));
    if (ref.shape.size() != c.dimRpn.size())
      throw Error(c.name, "expected " + std::to_string(c.dimRpn.size()) +
                              " dimensions " + decl + ", got " +
                              std::to_string(ref.shape.size()));
    for (size_t i = 0; i < c.dimRpn.size(); ++i) {
      int64_t want = detail::evalDimRpn(c.dimRpn[i], sz, info, params);
      if (ref.shape[i] != want)
        throw Error(c.name, "dimension " + std::to_string(i) + " is " +
                                std::to_string(ref.shape[i]) + ", expected " +
                                c.dimText[i] + " = " + std::to_string(want));
      if (want == 0)
        throw Error(c.name, "dimension " + std::to_string(i) + " (" +
                                c.dimText[i] + ") is 0; a kernel cannot read "
                                               "an empty tensor");
    }
    checkedSpan(c.name, ref);
    if (!ref.isContiguous())
      throw Error(c.name, "captured tensors must be contiguous row-major");
    if (!ref.data)
      throw Error(c.name, "null data pointer");
    if (reinterpret_cast<uintptr_t>(ref.data) % dtypeSize(ref.dtype) != 0)
      throw Error(c.name, "data pointer is not aligned");
    expectApart(c.name.c_str(), ref, "o", t.o,
                "overlaps an output of the launch");
    if (t.lse)
      expectApart(c.name.c_str(), ref, "lse", *t.lse,
                  "overlaps an output of the launch");
    plan.captures.push_back(ref);
  }
  return plan;
}

/// Argument slots of the packed entry point, in a fixed-size array: a
/// launch allocates nothing for its arguments.
class PackedArgs {
public:
  /// Enough for 4 rank-4 views, an lse, 16 params, 12 rank-4 captures, a
  /// block map and the work range; launches past that are refused.
  static constexpr size_t kMaxSlots = 256;

  void memref(const TensorRef &t) {
    pointer(t.data); // allocated
    pointer(t.data); // aligned
    scalar(0);       // offset
    for (int64_t d : t.shape)
      scalar(d);
    if (t.strides.empty()) {
      int64_t stride = 1;
      size_t first = count;
      count += t.shape.size();
      check();
      for (size_t i = t.shape.size(); i-- > 0;) {
        slots[first + i] = static_cast<uint64_t>(stride);
        stride *= t.shape[i];
      }
    } else {
      for (int64_t s : t.strides)
        scalar(s);
    }
  }
  void i32(int32_t v) {
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof v);
    slot(bits);
  }
  void f32(float v) {
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof v);
    slot(bits);
  }
  void scalar(int64_t v) { slot(static_cast<uint64_t>(v)); }
  void pointer(void *p) { slot(reinterpret_cast<uintptr_t>(p)); }

  /// Pointers to the slots (a GPU kernel's parameters).
  void pointers(void **out) {
    for (size_t i = 0; i < count; ++i)
      out[i] = &slots[i];
  }
  /// Pointers to the slots, then to `begin` and `end` (the work range).
  void pointers(void **out, int64_t *begin, int64_t *end) {
    for (size_t i = 0; i < count; ++i)
      out[i] = &slots[i];
    out[count] = begin;
    out[count + 1] = end;
  }
  size_t size() const { return count; }

private:
  void check() {
    if (count + 2 > kMaxSlots)
      throw Error("", "too many kernel arguments for one launch");
  }
  void slot(uint64_t v) {
    ++count;
    check();
    slots[count - 1] = v;
  }
  uint64_t slots[kMaxSlots];
  size_t count = 0;
};

/// q, k, v, o and (when asked for) lse: every kernel's leading arguments.
void packAttentionTensors(PackedArgs &packed, const Tensors &t) {
  for (const TensorRef *x : {&t.q, &t.k, &t.v, &t.o})
    packed.memref(*x);
  if (t.lse)
    packed.memref(*t.lse);
}

/// Runtime params (i32 or f32 as declared), then captured tensors: the
/// arguments every kernel takes after its fixed ones.
/// Quantized K/V's scales and paged K/V's table and lengths, when present.
void packScalesAndPages(PackedArgs &packed, const Tensors &t) {
  if (t.kScale) {
    packed.memref(*t.kScale);
    packed.memref(*t.vScale);
  }
  if (t.pageTable) {
    packed.memref(*t.pageTable);
    packed.memref(*t.seqLens);
  }
}

void packParamsAndCaptures(PackedArgs &packed, const KernelInfo &info,
                           const LaunchPlan &plan) {
  for (size_t i = 0; i < info.params.size(); ++i) {
    if (info.params[i].type == DType::i32)
      packed.i32(static_cast<int32_t>(plan.paramValues[i]));
    else
      packed.f32(static_cast<float>(plan.paramValues[i]));
  }
  for (const TensorRef &c : plan.captures)
    packed.memref(c);
}

/// The heads and row tiles work runs over (KernelInfo::packedHeads).
struct WorkShape {
  int64_t heads, tiles;
};
WorkShape workShape(const KernelInfo &info, const int64_t *sizes,
                    int64_t rowsPerTile) {
  int64_t hkv = std::max<int64_t>(sizes[kHkv], 1);
  int64_t rows = info.packedHeads ? sizes[kHq] / hkv * sizes[kSq] : sizes[kSq];
  return {info.packedHeads ? sizes[kHkv] : sizes[kHq],
          (rows + rowsPerTile - 1) / rowsPerTile};
}

/// Split-KV for one launch: the number of parts of the key range and the
/// buffers the parts write (only when there are several).
struct Splits {
  int32_t parts = 1;
  TensorRef outPartial, lsePartial;
};

/// The class of a launch of `sizes`: Few when every work item has at most
/// kFewRows rows (and the kernel's tiles are wider than that, else both
/// classes are the same code).
detail::CpuRows rowsClass(const KernelInfo &info, const int64_t *sizes) {
  int64_t hkv = std::max<int64_t>(sizes[kHkv], 1);
  int64_t rows = info.packedHeads ? sizes[kHq] / hkv * sizes[kSq] : sizes[kSq];
  return info.blockQ > detail::kFewRows && rows <= detail::kFewRows
             ? detail::CpuRows::Few
             : detail::CpuRows::Many;
}

detail::CpuCode cpuCodeFor(const detail::KernelState &state,
                           detail::CpuRows rows);

/// The code that runs a launch of `sizes`: a complete kernel's, or a lazy
/// kernel's for the launch's class, built now if it is the first.
detail::CpuCode cpuCode(const detail::KernelState &state,
                        const int64_t *sizes) {
  if (!state.buildRows)
    return {state.cpuEntry, state.blockMapEntry, state.mergeEntry,
            state.owner, state.backwardEntry};
  return cpuCodeFor(state, rowsClass(state.info, sizes));
}

/// A lazy kernel's code for one class of launch, built now if needed.
detail::CpuCode cpuCodeFor(const detail::KernelState &state,
                           detail::CpuRows rows) {
  std::lock_guard<std::mutex> lock(state.rowsMutex);
  detail::CpuCode &code = state.rowsCode[static_cast<int>(rows)];
  if (!code.entry) {
    detail::CpuCode built = state.buildRows(rows);
    if (!built.entry || !built.merge ||
        (state.info.hasBlockMap && !built.blockMap) ||
        (state.info.backward && !built.backward))
      throw Error("", "the kernel's code lacks an entry point");
    code = std::move(built);
  }
  return code;
}

/// Runs `items` work items of `entry` over the pool, `chunk` at a time
/// (0: a size that balances the threads).
void runItems(detail::CpuEntry entry, int64_t items, PackedArgs &packed,
              int64_t chunk = 0) {
  if (items == 0)
    return;
  detail::ThreadPool &pool = detail::ThreadPool::global();
  // Small chunks balance uneven rows (causal masks); a few per thread keep
  // the counter traffic negligible.
  if (chunk <= 0)
    chunk = std::max<int64_t>(1, items / (int64_t(pool.size()) * 64));
  pool.parallelFor(items, chunk, [&](int64_t begin, int64_t end) {
    void *args[PackedArgs::kMaxSlots];
    packed.pointers(args, &begin, &end);
    entry(args);
  });
}

/// Runs `entry` over all work items; `blockMap`, when given, is appended
/// (the kernel's map input, or the block-map function's output), then the
/// split-KV arguments for kernels.
void runCpu(const detail::KernelState &state, detail::CpuEntry entry,
            const Tensors &t, const LaunchPlan &plan,
            const TensorRef *blockMap = nullptr, int64_t rowsPerItem = 0,
            const Splits *splits = nullptr) {
  const KernelInfo &info = state.info;
  // Work items are (b, head, row tile[, part]); the select pre-pass works
  // per query block of the rule instead.
  int64_t rows = rowsPerItem ? rowsPerItem : info.blockQ;
  WorkShape w = workShape(info, plan.sizes, rows);
  int64_t items = plan.sizes[kB] * w.heads * w.tiles *
                  (splits ? splits->parts : 1);
  PackedArgs packed;
  packAttentionTensors(packed, t);
  packScalesAndPages(packed, t);
  packParamsAndCaptures(packed, info, plan);
  if (blockMap)
    packed.memref(*blockMap);
  if (splits) {
    packed.i32(splits->parts);
    packed.memref(splits->outPartial);
    packed.memref(splits->lsePartial);
  }
  runItems(entry, items, packed);
}

/// How many parts to split the key range into: enough items to keep every
/// thread busy twice over, never parts smaller than two key tiles.
/// Split-KV parts: an explicit count, or (auto) enough work items for two
/// per worker (CPU threads or GPU multiprocessors) while each part keeps
/// at least two key tiles.
int32_t chooseParts(const KernelInfo &info, const int64_t *sizes,
                    int64_t workers) {
  int64_t keyTiles = (sizes[kSkv] + info.blockKV - 1) / info.blockKV;
  // An explicit count is honoured up to one key tile per part.
  if (info.splitKv > 0)
    return static_cast<int32_t>(
        std::clamp<int64_t>(std::min(info.splitKv, keyTiles), 1, 1 << 16));
  int64_t maxParts = std::clamp<int64_t>(keyTiles / 2, 1, 64);
  WorkShape w = workShape(info, sizes, info.blockQ);
  int64_t items = sizes[kB] * w.heads * w.tiles;
  int64_t want = 2 * workers;
  if (items == 0 || items >= want)
    return 1;
  return static_cast<int32_t>(
      std::min<int64_t>((want + items - 1) / items, maxParts));
}

/// GPU kernels read q, k and v 16 bytes at a time and write o in pairs:
/// rows must start on those boundaries. `pointer`: the data pointer too
/// (not for host memory that launchHost copies to aligned device memory).
void checkGpuAlignment(const std::string &name, const TensorRef &t,
                       size_t bytes, bool pointer = true) {
  size_t elements = bytes / dtypeSize(t.dtype);
  if (pointer && reinterpret_cast<uintptr_t>(t.data) % bytes != 0)
    throw Error(name, "GPU kernels need " + std::to_string(bytes) +
                          "-byte aligned data");
  std::vector<int64_t> s = t.effectiveStrides();
  for (size_t i = 0; i + 1 < s.size(); ++i)
    if (t.shape[i] > 1 && s[i] % int64_t(elements) != 0)
      throw Error(name, "GPU kernels need row strides that are multiples of " +
                            std::to_string(elements) + " elements, got " +
                            std::to_string(s[i]) + " in dimension " +
                            std::to_string(i));
}

/// The GPU's layout rules for q, k, v and o (checkGpuAlignment).
void checkGpuLayout(const Tensors &t, bool pointers) {
  for (auto [name, ref] : {std::pair{"q", &t.q}, std::pair{"k", &t.k},
                           std::pair{"v", &t.v}})
    checkGpuAlignment(name, *ref, 16, pointers);
  checkGpuAlignment("o", t.o, 2 * dtypeSize(t.o.dtype), pointers);
}

/// select's pre-pass on the device (GpuCode::selectPoolEntry, then
/// selectEntry): pools the keys of N-token blocks and writes the kept map
/// [B, Hq, ceil(Sq / N), ceil(Skv / N)] (i8, nonzero = kept) it returns,
/// in scratch from `allocate` (device memory, stream order). The pre-pass
/// kernels take the attention kernel's arguments, which `packKernelArgs`
/// packs around the kept map, then their own.
TensorRef launchGpuSelect(
    const detail::GpuFunction &gpu, const KernelInfo &info,
    const int64_t *sizes, const std::function<void *(size_t)> &allocate,
    const std::function<void(PackedArgs &, const TensorRef &)> &packKernelArgs,
    void *stream) {
  int64_t N = info.selectBlock;
  int64_t B = sizes[kB], H = sizes[kHq], S = sizes[kSq], Hkv = sizes[kHkv],
          Skv = sizes[kSkv];
  int64_t qBlocks = (S + N - 1) / N, kBlocks = (Skv + N - 1) / N;
  int64_t pooled = checkedProduct("k", {B, Hkv, kBlocks, info.headDim},
                                  "select's pooled keys");
  int64_t entries = checkedProduct("q", {B, H, qBlocks, kBlocks},
                                   "select's block scores");
  int64_t bytes; // pooled keys and scores (f32), two i8 maps
  if (__builtin_add_overflow(checkedProduct("k", {pooled, 4}, "select's "
                                            "pooled keys"),
                             checkedProduct("q", {entries, 6},
                                            "select's block scores"),
                             &bytes))
    throw Error("q", "select's scratch has more bytes than fit in 64 "
                     "bits");
  auto *p = static_cast<char *>(allocate(size_t(bytes)));
  TensorRef pooledK(p, DType::f32, {B, Hkv, kBlocks, info.headDim});
  p += pooled * sizeof(float);
  TensorRef scores(p, DType::f32, {B, H, qBlocks, kBlocks});
  p += entries * sizeof(float);
  TensorRef kept(p, DType::i8, {B, H, qBlocks, kBlocks});
  TensorRef eligible(p + entries, DType::i8, {B, H, qBlocks, kBlocks});
  if (B * H * S == 0)
    return kept;
  PackedArgs poolPacked, selectPacked;
  packKernelArgs(poolPacked, kept);
  poolPacked.memref(pooledK);
  packKernelArgs(selectPacked, kept);
  selectPacked.memref(pooledK);
  selectPacked.memref(scores);
  selectPacked.memref(eligible);
  std::vector<void *> poolArgs(poolPacked.size()),
      selectArgs(selectPacked.size());
  poolPacked.pointers(poolArgs.data());
  selectPacked.pointers(selectArgs.data());
  gpu.launchSelect({kBlocks, Hkv, B}, {qBlocks, H, B}, std::move(poolArgs),
                   std::move(selectArgs), stream);
  return kept;
}

/// One grid over (query tiles, heads, batch); arguments q, k, v, o, [lse],
/// params, captures as the generated kernel declares them. Tensors are
/// device memory (the caller's, on `stream`).
void launchGpu(const detail::KernelState &state, const Tensors &t,
               const LaunchPlan &plan, void *stream) {
  const KernelInfo &info = state.info;
  checkGpuLayout(t, /*pointers=*/true);

  const detail::GpuFunction &gpu = *state.gpu;
  int64_t B = plan.sizes[kB], H = plan.sizes[kHq], S = plan.sizes[kSq],
          Hkv = plan.sizes[kHkv], Skv = plan.sizes[kSkv],
          Dv = info.valueHeadDim;
  // select's kept map is per query head: no GQA packing.
  int64_t N = info.selectBlock;
  detail::GpuGrid grid = detail::planGpuGrid(
      B, H, N ? H : Hkv, S, Skv, info.blockKV, gpu.gpuCode().rowsPerBlock,
      info.splitKv, B * H * S > 0 ? gpu.multiprocessors() : 1);
  int64_t pack = grid.pack;
  int32_t parts = static_cast<int32_t>(grid.parts);
  // Scratch in device memory, allocated in stream order: split-KV partials
  // and select's pooled keys, scores and maps.
  std::vector<void *> scratch;
  auto allocate = [&](size_t bytes) {
    scratch.push_back(gpu.allocate(std::max<size_t>(bytes, 16), stream));
    return scratch.back();
  };
  auto releaseScratch = [&] {
    for (void *p : scratch)
      gpu.release(p, stream);
  };
  static float none = 0;
  TensorRef oPart(&none, DType::f32, {0, 0, 0, 0, Dv});
  TensorRef lsePart(&none, DType::f32, {0, 0, 0, 0});
  TensorRef kept(&none, DType::i8, {0, 0, 0, 0});
  try {
    if (parts > 1) {
      int64_t rows = checkedProduct("o", {parts, B, H, S},
                                    "the split-KV partial lse");
      int64_t oElements = checkedProduct("o", {rows, Dv},
                                         "the split-KV partial output");
      int64_t bytes = checkedProduct("o", {rows, Dv + 1, 4},
                                     "the split-KV scratch");
      void *p = allocate(size_t(bytes));
      oPart = TensorRef(p, DType::f32, {parts, B, H, S, Dv});
      lsePart = TensorRef(static_cast<float *>(p) + oElements, DType::f32,
                          {parts, B, H, S});
    }
    // The kernel's arguments (the pre-pass kernels take them too, with one
    // part and no packing).
    auto packKernelArgs = [&](PackedArgs &packed, const TensorRef &kept,
                              int32_t parts, int32_t pack) {
      packAttentionTensors(packed, t);
      packParamsAndCaptures(packed, info, plan);
      packScalesAndPages(packed, t);
      if (N)
        packed.memref(kept);
      packed.memref(oPart);
      packed.memref(lsePart);
      packed.i32(parts);
      packed.i32(pack);
    };
    if (N)
      kept = launchGpuSelect(
          gpu, info, plan.sizes, allocate,
          [&](PackedArgs &packed, const TensorRef &map) {
            packKernelArgs(packed, map, 1, 1);
          },
          stream);
    PackedArgs packed;
    packKernelArgs(packed, kept, parts, static_cast<int32_t>(pack));
    std::vector<void *> args(packed.size());
    packed.pointers(args.data());
    PackedArgs mergePacked;
    mergePacked.memref(oPart);
    mergePacked.memref(lsePart);
    mergePacked.memref(t.o);
    if (t.lse)
      mergePacked.memref(*t.lse);
    std::vector<void *> mergeArgs(mergePacked.size());
    mergePacked.pointers(mergeArgs.data());
    gpu.launchSplit(B, H, S, Dv, parts, pack, std::move(args),
                    std::move(mergeArgs), {&t.q, &t.k, &t.v}, stream);
  } catch (...) {
    releaseScratch();
    throw;
  }
  releaseScratch();
}

/// The kernel, split when that helps, then the merge of the parts.
void runKernel(const detail::KernelState &state, const Tensors &t,
               const LaunchPlan &plan, const TensorRef *classes) {
  const KernelInfo &info = state.info;
  static float noPartial = 0;
  Splits splits;
  splits.outPartial = TensorRef(&noPartial, DType::f32, {0, 0, 0, 0, 0});
  splits.lsePartial = TensorRef(&noPartial, DType::f32, {0, 0, 0, 0});
  splits.parts = chooseParts(info, plan.sizes,
                             int64_t(detail::ThreadPool::global().size()));
  std::vector<float> outPartial, lsePartial;
  int64_t B = plan.sizes[kB], H = plan.sizes[kHq], S = plan.sizes[kSq];
  if (splits.parts > 1) {
    outPartial.resize(checkedProduct(
        "o", {splits.parts, B, H, S, info.valueHeadDim},
        "the split-KV partial output"));
    lsePartial.resize(checkedProduct("o", {splits.parts, B, H, S},
                                     "the split-KV partial lse"));
    splits.outPartial = TensorRef(outPartial.data(), DType::f32,
                                  {splits.parts, B, H, S, info.valueHeadDim});
    splits.lsePartial =
        TensorRef(lsePartial.data(), DType::f32, {splits.parts, B, H, S});
  }
  detail::CpuCode code = cpuCode(state, plan.sizes);
  runCpu(state, code.entry, t, plan, classes, 0, &splits);
  if (splits.parts == 1)
    return;
  PackedArgs packed;
  packed.memref(splits.outPartial);
  packed.memref(splits.lsePartial);
  packed.memref(t.o);
  if (t.lse)
    packed.memref(*t.lse);
  runItems(code.merge, B * H * S, packed);
}

/// Device copies of host tensors for Kernel::launchHost, freed with it.
class DeviceStaging {
public:
  explicit DeviceStaging(const detail::GpuFunction &gpu) : gpu(gpu) {}
  ~DeviceStaging() {
    for (void *p : buffers)
      gpu.freeDevice(p);
  }
  DeviceStaging(const DeviceStaging &) = delete;
  DeviceStaging &operator=(const DeviceStaging &) = delete;

  /// A device view of `t` holding its data: the bytes the view spans are
  /// copied (outputs too, so that gaps between strided rows survive the
  /// copy back). Empty views still get a small valid buffer.
  TensorRef copyIn(const TensorRef &t) {
    auto [lo, hi] = byteRange(t);
    size_t bytes = hi - lo;
    buffers.push_back(gpu.allocateDevice(std::max<size_t>(bytes, 16)));
    if (bytes)
      gpu.copyToDevice(buffers.back(), t.data, bytes);
    TensorRef device = t;
    device.data = buffers.back();
    return device;
  }
  /// Copies a view staged by copyIn back over the host tensor.
  void copyOut(const TensorRef &device, const TensorRef &host) {
    auto [lo, hi] = byteRange(host);
    if (hi > lo)
      gpu.copyToHost(host.data, device.data, hi - lo);
  }

private:
  const detail::GpuFunction &gpu;
  std::vector<void *> buffers;
};


//===----------------------------------------------------------------------===//
// Backward
//===----------------------------------------------------------------------===//

/// Normalizers with a row sum, whose backward reads the forward's lse. A
/// name the table lacks (a bundle from a newer compiler) has none.
bool hasRowSum(const KernelInfo &info) {
  const NormalizerTraits *traits = findNormalizer(info.normalize);
  return traits && traits->rowSum;
}

/// A param or capture gradient: f32, `shape`, any strides that fit and
/// write each element once.
void checkGradView(const std::string &name, const TensorRef &t,
                   const std::vector<int64_t> &shape,
                   const std::string &what) {
  if (t.dtype != DType::f32)
    throw Error(name, std::string("gradients are f32, got ") +
                          dtypeName(t.dtype));
  if (t.shape != shape)
    throw Error(name, "expected shape " + shapeString(shape) + " (" + what +
                          "), got " + shapeString(t.shape));
  if (!t.strides.empty() && t.strides.size() != t.shape.size())
    throw Error(name, "expected " + std::to_string(t.shape.size()) +
                          " strides, got " + std::to_string(t.strides.size()));
  Span span = checkedSpan(name, t);
  if (selfOverlapping(t))
    throw Error(name, "its strides make elements overlap; a gradient needs "
                      "one element per index");
  if (span.hi > span.lo) {
    if (!t.data)
      throw Error(name, "null data pointer");
    if (reinterpret_cast<uintptr_t>(t.data) % sizeof(float) != 0)
      throw Error(name, "data pointer is not aligned to 4 bytes");
  }
}

/// One f32 param's or capture's gradient, in the backward entry's order
/// (f32 params, then f32 captures, each in declaration order).
struct GradBuffer {
  std::string name;
  std::vector<int64_t> shape;
  int64_t elements = 0;
  int64_t offset = 0;              // in each partial copy, in floats
  const TensorRef *out = nullptr;  // the caller's, or null (not asked for)
};

/// A backward after validation.
struct BackwardPlan {
  LaunchPlan launch;
  std::vector<GradBuffer> grads;
  int64_t gradElements = 0; // of all GradBuffers together
  int64_t items[2] = {0, 0}; // work items of phase 0 (dk, dv) and 1 (dq)
};

BackwardPlan validateBackward(const KernelInfo &info, const Tensors &t,
                              const TensorRef &dO, const Gradients &g,
                              const Params &params) {
  BackwardPlan bp;
  if (hasRowSum(info) && !t.lse)
    throw Error("lse", "the backward of a " + info.normalize +
                           " variant reads the forward's lse [B, Hq, Sq] "
                           "f32; compile the forward with lse and pass it");
  if (!hasRowSum(info) && t.lse)
    throw Error("lse", "normalize = " + info.normalize +
                           " has no row sum: its backward reads no lse; "
                           "pass none");
  KernelInfo forward = info;
  forward.lse = hasRowSum(info);
  bp.launch = validate(forward, t, params);
  const int64_t *sz = bp.launch.sizes;
  checkView("do", dO, info.outDType, {"B", "Hq", "Sq", "Dv"});
  expectSize("do", dO, 0, "B", sz[kB], "(B from q)");
  expectSize("do", dO, 1, "Hq", sz[kHq], "(Hq from q)");
  expectSize("do", dO, 2, "Sq", sz[kSq], "(Sq from q)");
  expectSize("do", dO, 3, "Dv", info.valueHeadDim,
             "(the kernel's --v-head-dim)");
  checkView("dq", g.dq, info.dtype, {"B", "Hq", "Sq", "D"});
  checkView("dk", g.dk, info.dtype, {"B", "Hkv", "Skv", "D"});
  checkView("dv", g.dv, info.dtype, {"B", "Hkv", "Skv", "Dv"});
  for (auto [name, ref, from] : {std::tuple{"dq", &g.dq, &t.q},
                                 std::tuple{"dk", &g.dk, &t.k},
                                 std::tuple{"dv", &g.dv, &t.v}}) {
    const char *src = from == &t.q ? "q" : from == &t.k ? "k" : "v";
    for (size_t d = 0; d < 4; ++d)
      if (ref->shape[d] != from->shape[d])
        throw Error(name, "expected " + std::string(src) + "'s shape " +
                              shapeString(from->shape) + ", got " +
                              shapeString(ref->shape));
    if (selfOverlapping(*ref))
      throw Error(name, "its strides make elements overlap; the output "
                        "needs one element per index");
  }

  // Named gradients: each an f32 param or f32 capture, once.
  std::vector<int> asked(info.params.size() + info.captures.size(), -1);
  for (size_t i = 0; i < g.named.size(); ++i) {
    const std::string &name = g.named[i].first;
    for (size_t j = 0; j < i; ++j)
      if (g.named[j].first == name)
        throw Error(name, "gradient asked for twice (entries " +
                              std::to_string(j) + " and " +
                              std::to_string(i) + " of Gradients::named)");
    int slot = -1;
    std::vector<int64_t> shape;
    std::string what;
    for (size_t p = 0; p < info.params.size(); ++p)
      if (info.params[p].name == name) {
        if (info.params[p].type != DType::f32)
          throw Error(name, "is an i32 param: it has no gradient (gradients "
                            "exist for f32 params and f32 tensors)");
        slot = int(p);
        shape = {1};
        what = "an f32 param's gradient";
      }
    for (size_t c = 0; c < info.captures.size(); ++c)
      if (info.captures[c].name == name) {
        if (info.captures[c].dtype != DType::f32)
          throw Error(name, std::string(info.captures[c].dtype == DType::bf16
                                            ? "is a "
                                            : "is an ") +
                                dtypeName(info.captures[c].dtype) +
                                " tensor: it has no gradient (gradients "
                                "exist for f32 params and f32 tensors)");
        slot = int(info.params.size() + c);
        shape = bp.launch.captures[c].shape;
        what = "the shape of tensor " + name;
      }
    if (slot < 0) {
      std::string best;
      size_t bestDist = name.size() / 3 + 2;
      for (const ParamInfo &p : info.params)
        if (size_t d = editDistance(name, p.name); d < bestDist)
          bestDist = d, best = p.name;
      for (const CaptureInfo &c : info.captures)
        if (size_t d = editDistance(name, c.name); d < bestDist)
          bestDist = d, best = c.name;
      throw Error(name, "variant '" + info.name +
                            "' has no param or tensor of this name to take "
                            "a gradient of" +
                            (best.empty() ? "" : "; did you mean '" + best +
                                                     "'?"));
    }
    checkGradView(name, g.named[i].second, shape, what);
    asked[slot] = int(i);
  }

  // No output may overlap an input or another output.
  std::vector<std::pair<std::string, const TensorRef *>> inputs = {
      {"q", &t.q}, {"k", &t.k}, {"v", &t.v}, {"o", &t.o}, {"do", &dO}};
  if (t.lse)
    inputs.emplace_back("lse", &*t.lse);
  for (size_t c = 0; c < info.captures.size(); ++c)
    inputs.emplace_back(info.captures[c].name, &bp.launch.captures[c]);
  std::vector<std::pair<std::string, const TensorRef *>> outputs = {
      {"dq", &g.dq}, {"dk", &g.dk}, {"dv", &g.dv}};
  for (const auto &[name, ref] : g.named)
    outputs.emplace_back(name, &ref);
  for (size_t i = 0; i < outputs.size(); ++i) {
    const auto &[name, ref] = outputs[i];
    for (const auto &[other, oref] : inputs)
      expectApart(name.c_str(), *ref, other.c_str(), *oref,
                  "overlaps input " + other +
                      "; gradients need memory of their own");
    for (size_t j = 0; j < i; ++j)
      expectApart(name.c_str(), *ref, outputs[j].first.c_str(),
                  *outputs[j].second,
                  "overlaps the gradient " + outputs[j].first);
  }

  auto addGrad = [&](const std::string &name, std::vector<int64_t> shape,
                     int slot) {
    GradBuffer b;
    b.name = name;
    b.elements = 1;
    for (int64_t d : shape)
      b.elements = checkedProduct(name, {b.elements, d}, "the gradient");
    b.shape = std::move(shape);
    b.offset = bp.gradElements;
    if (__builtin_add_overflow(bp.gradElements, b.elements, &bp.gradElements))
      throw Error(name, "the gradients have more elements than fit in 64 "
                        "bits");
    if (asked[slot] >= 0)
      b.out = &g.named[asked[slot]].second;
    bp.grads.push_back(std::move(b));
  };
  for (size_t p = 0; p < info.params.size(); ++p)
    if (info.params[p].type == DType::f32)
      addGrad(info.params[p].name, {1}, int(p));
  for (size_t c = 0; c < info.captures.size(); ++c)
    if (info.captures[c].dtype == DType::f32)
      addGrad(info.captures[c].name, bp.launch.captures[c].shape,
              int(info.params.size() + c));

  int64_t keyTiles = (sz[kSkv] + info.blockKV - 1) / info.blockKV;
  int64_t queryTiles = (sz[kSq] + info.blockQ - 1) / info.blockQ;
  bp.items[0] = checkedProduct("k", {sz[kB], sz[kHkv], keyTiles},
                               "the backward's key tiles");
  bp.items[1] = checkedProduct("q", {sz[kB], sz[kHq], queryTiles},
                               "the backward's query tiles");
  return bp;
}

/// Partial gradient copies of the deterministic scheme: a fixed number of
/// groups of work items, independent of the thread count.
constexpr int64_t kBackwardGroups = 64;

void runBackward(detail::CpuEntry entry, const KernelInfo &info,
                 const Tensors &t, const TensorRef &dO, const Gradients &g,
                 const BackwardPlan &bp, const TensorRef *selectMap) {
  int64_t copies = 0;
  if (!bp.grads.empty())
    copies = std::min<int64_t>(kBackwardGroups,
                               std::max(bp.items[0], bp.items[1]));
  std::vector<float> partials(
      size_t(checkedProduct("", {copies, bp.gradElements},
                            "the partial gradients")),
      0.0f);
  // Ordered dQ (KernelInfo::backwardOrderedDq): phase 0 sums dQ into an
  // f32 scratch, key tiles taking turns per query tile.
  const int64_t *sz = bp.launch.sizes;
  bool ordered = info.backwardOrderedDq;
  std::vector<float> dqAccum;
  // Per phase-0 item, the pairs of its walk it has passed: a 64-byte line
  // each.
  std::vector<int32_t> progress;
  int64_t keyTiles = (sz[kSkv] + info.blockKV - 1) / info.blockKV;
  if (ordered) {
    dqAccum.resize(size_t(checkedProduct(
        "q", {sz[kB], sz[kHq], sz[kSq], info.headDim}, "dq's f32 sums")));
    progress.resize(size_t(bp.items[0]) * 16 + 16); // + room to align
  }
  // ... and its items add their f32 params' gradients to one slot each
  // (bp.grads lists the f32 params first), summed in item order below.
  size_t f32Params = size_t(std::count_if(
      info.params.begin(), info.params.end(),
      [](const ParamInfo &p) { return p.type == DType::f32; }));
  std::vector<float> itemSlots;
  if (ordered)
    itemSlots.resize(size_t(checkedProduct(
        "", {int64_t(f32Params), bp.items[0]}, "the params' gradient slots")));
  auto pack = [&](PackedArgs &packed, int32_t phase, int64_t copy) {
    packAttentionTensors(packed, t);
    packParamsAndCaptures(packed, info, bp.launch);
    packed.memref(dO);
    packed.memref(g.dq);
    packed.memref(g.dk);
    packed.memref(g.dv);
    for (size_t k = 0; k < bp.grads.size(); ++k) {
      const GradBuffer &b = bp.grads[k];
      if (ordered && phase == 0 && k < f32Params)
        packed.memref(TensorRef(itemSlots.data() + k * size_t(bp.items[0]),
                                DType::f32, {bp.items[0]}));
      else
        packed.memref(TensorRef(partials.data() + copy * bp.gradElements +
                                    b.offset,
                                DType::f32, b.shape));
    }
    if (selectMap) // select's choices, held constant
      packed.memref(*selectMap);
    packed.i32(phase);
    if (ordered) {
      static float noAccum = 0;
      static int32_t noProgress = 0;
      packed.memref(TensorRef(dqAccum.empty() ? &noAccum : dqAccum.data(),
                              DType::f32,
                              {sz[kB], sz[kHq], sz[kSq], info.headDim}));
      // Each item's count on a 64-byte line of its own.
      auto at = reinterpret_cast<uintptr_t>(progress.data());
      int32_t *lines = progress.empty()
                           ? &noProgress
                           : progress.data() + ((64 - at % 64) % 64) / 4;
      packed.memref(TensorRef(lines,
                              DType::i32, {sz[kB], sz[kHkv], keyTiles, 16}));
    }
  };
  for (int32_t phase = 0; phase < 2; ++phase) {
    int64_t n = bp.items[phase];
    if (n == 0)
      continue;
    if (ordered && phase == 0) {
      // Items one at a time from the pool's counter, in order: an item
      // waits only on the one handed out before it (a key tile's dQ turn),
      // which is running or done. Phase 0 then adds to no captured
      // tensor's gradient (the compiler checks) and to params' through
      // their item slots, so it needs no group copies.
      // With enough (batch, kv head) blocks, a thread takes a whole block
      // (its key tiles are consecutive items): no item then waits on
      // another thread.
      int64_t threads = int64_t(detail::ThreadPool::global().size());
      int64_t blocks = sz[kB] * sz[kHkv];
      PackedArgs packed;
      pack(packed, phase, 0);
      runItems(entry, n, packed, blocks >= 2 * threads ? keyTiles : 1);
      continue;
    }
    if (bp.grads.empty()) {
      PackedArgs packed;
      pack(packed, phase, 0);
      runItems(entry, n, packed);
      continue;
    }
    // Group i: items [i*n/G, (i+1)*n/G) in order, on one thread, into
    // partial copy i.
    int64_t groups = std::min(kBackwardGroups, n);
    detail::ThreadPool::global().parallelFor(
        groups, 1, [&](int64_t first, int64_t last) {
          for (int64_t i = first; i < last; ++i) {
            int64_t begin = int64_t(__int128(i) * n / groups);
            int64_t end = int64_t(__int128(i + 1) * n / groups);
            PackedArgs packed;
            pack(packed, phase, i);
            void *args[PackedArgs::kMaxSlots];
            packed.pointers(args, &begin, &end);
            entry(args);
          }
        });
  }
  // The copies summed in group order (in double) into the caller's
  // gradients.
  for (size_t k = 0; k < bp.grads.size(); ++k) {
    const GradBuffer &b = bp.grads[k];
    if (!b.out)
      continue;
    std::vector<int64_t> strides = b.out->effectiveStrides();
    auto *out = static_cast<float *>(b.out->data);
    for (int64_t e = 0; e < b.elements; ++e) {
      double sum = 0;
      if (ordered && k < f32Params) // phase 0's item slots, in item order
        for (int64_t i = 0; i < bp.items[0]; ++i)
          sum += double(itemSlots[k * size_t(bp.items[0]) + size_t(i)]);
      for (int64_t c = 0; c < copies; ++c)
        sum += double(partials[size_t(c * bp.gradElements + b.offset + e)]);
      int64_t rest = e, at = 0;
      for (size_t d = b.shape.size(); d-- > 0;) {
        at += (rest % b.shape[d]) * strides[d];
        rest /= b.shape[d];
      }
      out[at] = float(sum);
    }
  }
}

} // namespace

namespace {

/// A GPU kernel's backward on host tensors (staged like Kernel::launchHost):
/// the dk/dv kernel over key tiles, then the dq kernel over query tiles
/// (GpuCode::backwardKvEntry, backwardQEntry), each gradient element
/// written by one thread.
/// A GPU kernel's backward: the dk/dv kernel over key tiles, then the dq
/// kernel over query tiles (GpuCode::backwardKvEntry, backwardQEntry),
/// each gradient element written by one thread, on `stream`. `t`, `dO`,
/// the captures in `plan` and dq, dk, dv are device memory; the param and
/// capture gradients `g.named` are device memory too unless `namedOnHost`.
void runGpuBackward(const detail::KernelState &state, const Tensors &t,
                    const LaunchPlan &plan, const TensorRef &dO,
                    const TensorRef &dq, const TensorRef &dk,
                    const TensorRef &dv, const Gradients &g,
                    const BackwardPlan &bp, void *stream, bool namedOnHost) {
  const KernelInfo &info = state.info;
  const detail::GpuFunction &gpu = *state.gpu;
  const detail::GpuCode &code = gpu.gpuCode();
  if (code.backwardKvEntry.empty() || code.backwardQEntry.empty())
    throw Error("", "the kernel's code lacks its backward entry points");
  // Backward kernels that say so (GpuCode::backwardGradients: NVIDIA and
  // AMD code from this compiler) take one flat f32 buffer per f32 param and
  // captured tensor; older code computes dq, dk and dv only.
  bool gradients = code.backwardGradients && !bp.grads.empty();
  if (!g.named.empty() && !gradients)
    throw Error(g.named.front().first,
                "gradients of params and captured tensors are not computed "
                "by this " + info.target + " kernel's backward (its code "
                "predates them: recompile it; it computes dq, dk and dv; "
                "leave Gradients::named empty)");
  const int64_t *sz = bp.launch.sizes;
  auto tiles = [](int64_t n, int64_t rows) { return (n + rows - 1) / rows; };
  std::array<int64_t, 3> grids[2] = {
      {tiles(sz[kSkv], code.backwardKvRows), sz[kHkv], sz[kB]},
      {tiles(sz[kSq], code.backwardQRows), sz[kHq], sz[kB]}};
  // Each thread of either launch adds to a slab of its own (slot = linear
  // CTA x threads + thread), in its own fixed order; the slabs are summed
  // on the host in slot order: the same bits on every run.
  int64_t slots[2] = {0, 0};
  for (int phase = 0; phase < 2; ++phase)
    slots[phase] = checkedProduct(
        "", {grids[phase][0], grids[phase][1], grids[phase][2],
             phase ? code.backwardQThreads : code.backwardKvThreads},
        "the backward's threads");
  int64_t allSlots = slots[0] + slots[1];
  std::vector<float> partials;
  if (gradients) {
    constexpr int64_t kMaxPartialFloats = int64_t(1) << 28; // 1 GiB
    const GradBuffer *largest = &bp.grads.front();
    for (const GradBuffer &b : bp.grads)
      if (b.elements > largest->elements)
        largest = &b;
    int64_t floats = 0;
    if (__builtin_mul_overflow(allSlots, bp.gradElements, &floats) ||
        floats > kMaxPartialFloats)
      throw Error(largest->name,
                  "its gradient needs a partial copy per GPU thread of the "
                  "backward (" + std::to_string(allSlots) + " threads x " +
                  std::to_string(bp.gradElements) + " floats), more than "
                  "the 1 GiB of scratch allowed; compute it on the CPU");
    partials.assign(size_t(floats), 0.0f);
  }
  // The zeroed slabs: device memory of their own, copied in before the
  // kernels are queued.
  DeviceStaging scratch(gpu);
  TensorRef partialsHost(partials.data(), DType::f32,
                         {int64_t(partials.size())});
  TensorRef partialsDevice;
  if (gradients)
    partialsDevice = scratch.copyIn(partialsHost);
  // select: its pre-pass on the forward's inputs, as the forward ran it;
  // the kernels read its kept map (select's choices are constants of the
  // backward, its unselected blocks stay skipped). Stream-ordered scratch,
  // released in stream order after the kernels.
  struct StreamScratch {
    const detail::GpuFunction &gpu;
    void *stream;
    std::vector<void *> blocks;
    ~StreamScratch() {
      for (void *p : blocks)
        gpu.release(p, stream);
    }
  } selectScratch{gpu, stream, {}};
  TensorRef kept;
  if (info.selectBlock) {
    static float none = 0;
    TensorRef oPart(&none, DType::f32, {0, 0, 0, 0, info.valueHeadDim});
    TensorRef lsePart(&none, DType::f32, {0, 0, 0, 0});
    kept = launchGpuSelect(
        gpu, info, sz,
        [&](size_t bytes) {
          selectScratch.blocks.push_back(
              gpu.allocate(std::max<size_t>(bytes, 16), stream));
          return selectScratch.blocks.back();
        },
        [&](PackedArgs &packed, const TensorRef &map) {
          // The forward kernel's arguments: one part, no packing.
          packAttentionTensors(packed, t);
          packParamsAndCaptures(packed, info, plan);
          packed.memref(map);
          packed.memref(oPart);
          packed.memref(lsePart);
          packed.i32(1);
          packed.i32(1);
        },
        stream);
  }
  for (int phase = 0; phase < 2; ++phase) {
    PackedArgs packed;
    packAttentionTensors(packed, t);
    packParamsAndCaptures(packed, info, plan);
    packed.memref(dO);
    packed.memref(dq);
    packed.memref(dk);
    packed.memref(dv);
    if (info.selectBlock)
      packed.memref(kept);
    if (gradients)
      for (const GradBuffer &b : bp.grads) {
        // Gradient b's slabs: every slot's b.elements floats, phase 0's
        // slots first.
        float *base = static_cast<float *>(partialsDevice.data) +
                      allSlots * b.offset + (phase ? slots[0] * b.elements : 0);
        packed.memref(TensorRef(base, DType::f32,
                                {slots[phase] * b.elements}));
      }
    std::vector<void *> args(packed.size());
    packed.pointers(args.data());
    gpu.launchBackward(phase, grids[phase], args.data(), stream);
  }
  if (!gradients)
    return;
  // The slabs are summed on the host: the call waits for the kernels.
  gpu.synchronize();
  scratch.copyOut(partialsDevice, partialsHost);
  for (const GradBuffer &b : bp.grads) {
    if (!b.out)
      continue;
    // The output's span, in host memory (device outputs: read, patched,
    // written back, so that gaps between strided elements survive).
    auto [lo, hi] = byteRange(*b.out);
    std::vector<char> image;
    char *span = static_cast<char *>(b.out->data);
    if (!namedOnHost) {
      image.resize(hi - lo);
      if (hi > lo)
        gpu.copyToHost(image.data(), b.out->data, hi - lo);
      span = image.data();
    }
    std::vector<int64_t> strides = b.out->effectiveStrides();
    auto *out = reinterpret_cast<float *>(span);
    const float *block = partials.data() + allSlots * b.offset;
    for (int64_t e = 0; e < b.elements; ++e) {
      double sum = 0;
      for (int64_t s = 0; s < allSlots; ++s)
        sum += double(block[s * b.elements + e]);
      int64_t rest = e, at = 0;
      for (size_t d = b.shape.size(); d-- > 0;) {
        at += (rest % b.shape[d]) * strides[d];
        rest /= b.shape[d];
      }
      out[at] = float(sum);
    }
    if (!namedOnHost && hi > lo)
      gpu.copyToDevice(b.out->data, image.data(), hi - lo);
  }
}

/// The backward of a GPU kernel on host tensors (Kernel::backwardHost):
/// every tensor staged to device memory, the gradients copied back.
void launchGpuBackwardHost(const detail::KernelState &state, const Tensors &t,
                           const TensorRef &dO, const Gradients &g,
                           const BackwardPlan &bp) {
  const detail::GpuFunction &gpu = *state.gpu;
  checkGpuLayout(t, /*pointers=*/false);
  DeviceStaging staging(gpu);
  Tensors device = t;
  device.q = staging.copyIn(t.q);
  device.k = staging.copyIn(t.k);
  device.v = staging.copyIn(t.v);
  device.o = staging.copyIn(t.o);
  if (t.lse)
    device.lse = staging.copyIn(*t.lse);
  LaunchPlan plan = bp.launch;
  for (TensorRef &c : plan.captures)
    c = staging.copyIn(c);
  TensorRef dODevice = staging.copyIn(dO);
  TensorRef dq = staging.copyIn(g.dq), dk = staging.copyIn(g.dk),
            dv = staging.copyIn(g.dv);
  runGpuBackward(state, device, plan, dODevice, dq, dk, dv, g, bp, nullptr,
                 /*namedOnHost=*/true);
  gpu.synchronize();
  staging.copyOut(dq, g.dq);
  staging.copyOut(dk, g.dk);
  staging.copyOut(dv, g.dv);
}

} // namespace

const KernelInfo &Kernel::info() const {
  if (!state)
    throw Error("", "empty attn::Kernel");
  return state->info;
}

void Kernel::launch(const Tensors &tensors, const Params &params,
                    void *stream) const {
  if (!state)
    throw Error("", "launch of an empty attn::Kernel");
  LaunchPlan plan = validate(state->info, tensors, params);
  if (state->gpu) {
    launchGpu(*state, tensors, plan, stream);
    return;
  }
  if (state->info.target != "cpu")
    throw Error("", "target " + state->info.target +
                        " has no launcher in this build");
  if (state->info.selectBlock) { // the select pre-pass, then the kernel
    launch(tensors, params, blockMap(tensors, params), stream);
    return;
  }
  // A masked kernel takes a block map; an empty one means "classify".
  static uint8_t none = 0;
  TensorRef noMap(&none, DType::i32, {0, 0, 0, 0});
  runKernel(*state, tensors, plan,
            state->info.hasBlockMap ? &noMap : nullptr);
}

void Kernel::backwardHost(const Tensors &tensors, const TensorRef &dO,
                          const Gradients &grads,
                          const Params &params) const {
  runBackwardOn(tensors, dO, grads, params, nullptr, /*host=*/true);
}

void Kernel::backward(const Tensors &tensors, const TensorRef &dO,
                      const Gradients &grads, const Params &params,
                      void *stream) const {
  runBackwardOn(tensors, dO, grads, params, stream, /*host=*/false);
}

void Kernel::runBackwardOn(const Tensors &tensors, const TensorRef &dO,
                           const Gradients &grads, const Params &params,
                           void *stream, bool host) const {
  if (!state)
    throw Error("", "backward of an empty attn::Kernel");
  const KernelInfo &info = state->info;
  if (!state->gpu && info.target != "cpu")
    throw Error("target", "backward kernels exist for the CPU and NVIDIA "
                          "targets only so far (this kernel is for " +
                              info.target + ")");
  if (!info.backward)
    throw Error("", "kernel '" + info.name +
                        "' was compiled without its backward; compile with "
                        "Options::backward (attnc compile --backward)");
  BackwardPlan bp = validateBackward(info, tensors, dO, grads, params);
  if (state->gpu) {
    if (host) {
      launchGpuBackwardHost(*state, tensors, dO, grads, bp);
      return;
    }
    checkGpuLayout(tensors, /*pointers=*/true);
    runGpuBackward(*state, tensors, bp.launch, dO, grads.dq, grads.dk,
                   grads.dv, grads, bp, stream, /*namedOnHost=*/false);
    return;
  }
  detail::CpuEntry entry = state->buildRows
                               ? cpuCodeFor(*state, detail::CpuRows::Many)
                                     .backward
                               : state->backwardEntry;
  if (!entry)
    throw Error("", "the kernel's code lacks its backward entry point");
  if (info.selectBlock) {
    // The blocks the forward computed: select's pre-pass on the same
    // inputs, whose choices the backward holds constant.
    BlockMap map = blockMap(tensors, params);
    TensorRef classes(map.classes.data(), DType::i8,
                      {map.batch, map.heads, map.queryTiles, map.keyTiles});
    runBackward(entry, info, tensors, dO, grads, bp, &classes);
    return;
  }
  runBackward(entry, info, tensors, dO, grads, bp, nullptr);
}

void Kernel::prepare(int64_t queryHeads, int64_t kvHeads,
                     int64_t queryLen) const {
  if (!state)
    throw Error("", "prepare of an empty attn::Kernel");
  if (!state->buildRows)
    return;
  int64_t sizes[7] = {1, queryHeads, kvHeads, queryLen, 0, 0, 0};
  cpuCode(*state, sizes);
}

void Kernel::launchHost(const Tensors &tensors, const Params &params) const {
  if (!state)
    throw Error("", "launch of an empty attn::Kernel");
  if (!state->gpu) {
    launch(tensors, params);
    return;
  }
  // Every check that does not depend on where the data lives comes before
  // any device memory exists.
  validate(state->info, tensors, params);
  checkGpuLayout(tensors, /*pointers=*/false);
  DeviceStaging staging(*state->gpu);
  Tensors device = tensors;
  device.q = staging.copyIn(tensors.q);
  device.k = staging.copyIn(tensors.k);
  device.v = staging.copyIn(tensors.v);
  device.o = staging.copyIn(tensors.o);
  for (auto [host, staged] :
       {std::pair{&tensors.lse, &device.lse},
        std::pair{&tensors.kScale, &device.kScale},
        std::pair{&tensors.vScale, &device.vScale},
        std::pair{&tensors.pageTable, &device.pageTable},
        std::pair{&tensors.seqLens, &device.seqLens}})
    if (*host)
      *staged = staging.copyIn(**host);
  Params deviceParams;
  for (const auto &[name, arg] : params)
    deviceParams.emplace_back(name, arg.kind() == Arg::Kind::Tensor
                                        ? Arg(staging.copyIn(arg.tensor()))
                                        : arg);
  launch(device, deviceParams, /*stream=*/nullptr);
  state->gpu->synchronize();
  staging.copyOut(device.o, tensors.o);
  if (tensors.lse)
    staging.copyOut(*device.lse, *tensors.lse);
}

void Kernel::launch(const Tensors &tensors, const Params &params,
                    const BlockMap &map, void *stream) const {
  if (!state)
    throw Error("", "launch of an empty attn::Kernel");
  const KernelInfo &info = state->info;
  LaunchPlan plan = validate(info, tensors, params);
  if (state->gpu)
    throw Error("block_map", "GPU kernels classify their tiles (and run "
                             "select's pre-pass) on the device; launch "
                             "without a block map");
  (void)stream;
  WorkShape w = workShape(info, plan.sizes, info.blockQ);
  int64_t qTiles = w.tiles;
  int64_t kTiles = (plan.sizes[kSkv] + info.blockKV - 1) / info.blockKV;
  auto expect = [&](bool ok, const std::string &what) {
    if (!ok)
      throw Error("block_map", what);
  };
  expect(map.blockQ == info.blockQ && map.blockKV == info.blockKV,
         "built for tiles of " + std::to_string(map.blockQ) + " x " +
             std::to_string(map.blockKV) + ", the kernel uses " +
             std::to_string(info.blockQ) + " x " +
             std::to_string(info.blockKV));
  expect(map.queryTiles == qTiles && map.keyTiles == kTiles,
         "has " + std::to_string(map.queryTiles) + " x " +
             std::to_string(map.keyTiles) + " tiles, this launch needs " +
             std::to_string(qTiles) + " x " + std::to_string(kTiles));
  expect(map.batch == plan.sizes[kB] || map.batch == 1,
         "has batch " + std::to_string(map.batch) + ", expected 1 or " +
             std::to_string(plan.sizes[kB]));
  expect(map.heads == w.heads || map.heads == 1,
         "has " + std::to_string(map.heads) + " heads, expected 1 or " +
             std::to_string(w.heads));
  expect(static_cast<int64_t>(map.classes.size()) ==
             map.batch * map.heads * map.queryTiles * map.keyTiles,
         "its classes do not match its dimensions");
  if (!info.hasBlockMap) { // unmasked: every block is computed anyway
    runKernel(*state, tensors, plan, nullptr);
    return;
  }
  if (map.classes.empty() && !info.selectBlock) {
    static uint8_t none = 0;
    TensorRef noMap(&none, DType::i32, {0, 0, 0, 0});
    runKernel(*state, tensors, plan, &noMap);
    return;
  }
  TensorRef classes(const_cast<uint8_t *>(map.classes.data()), DType::i32,
                    {map.batch, map.heads, map.queryTiles, map.keyTiles});
  runKernel(*state, tensors, plan, &classes);
}

BlockMap Kernel::blockMap(const Tensors &tensors, const Params &params) const {
  if (!state)
    throw Error("", "block map of an empty attn::Kernel");
  const KernelInfo &info = state->info;
  LaunchPlan plan = validate(info, tensors, params);
  if (state->gpu && info.selectBlock)
    throw Error("block_map", "select's blocks of a GPU kernel are chosen on "
                             "the device at launch");
  BlockMap map;
  WorkShape w = workShape(info, plan.sizes, info.blockQ);
  map.batch = plan.sizes[kB];
  map.heads = w.heads;
  map.blockQ = info.blockQ;
  map.blockKV = info.blockKV;
  map.queryTiles = w.tiles;
  map.keyTiles = (plan.sizes[kSkv] + info.blockKV - 1) / info.blockKV;
  // Without a mask every block is computed in full.
  map.classes.assign(checkedProduct("block_map",
                                    {map.batch, map.heads, map.queryTiles,
                                     map.keyTiles},
                                    "the block map"),
                     BlockMap::Full);
  detail::CpuCode code;
  if (info.hasBlockMap && !state->gpu && !map.classes.empty())
    code = cpuCode(*state, plan.sizes);
  if (code.blockMap) {
    TensorRef out(map.classes.data(), DType::i32,
                  {map.batch, map.heads, map.queryTiles, map.keyTiles});
    // The packer only needs the pointer, shape and strides of an i8 view.
    runCpu(*state, code.blockMap, tensors, plan, &out,
           info.selectRowsPerItem ? info.selectRowsPerItem
                                  : info.selectBlock);
  }
  return map;
}

double BlockMap::density() const {
  return classes.empty() ? 0.0
                         : double(computedBlocks()) / double(classes.size());
}

int64_t BlockMap::computedBlocks() const {
  int64_t n = 0;
  for (uint8_t c : classes)
    n += c != Empty;
  return n;
}

std::string BlockMap::str(int64_t b, int64_t h) const {
  std::string out;
  for (int64_t qt = 0; qt < queryTiles; ++qt) {
    for (int64_t kt = 0; kt < keyTiles; ++kt) {
      uint8_t c = at(b, h, qt, kt);
      out += c == Full ? '#' : c == Partial ? '+' : '.';
    }
    out += '\n';
  }
  return out;
}

namespace detail {

Kernel makeGpuKernel(KernelInfo info, GpuCode code) {
  auto state = std::make_shared<KernelState>();
  state->info = std::move(info);
  // gfx* code objects go through HIP, sm_* cubins/PTX through CUDA.
  bool amd = code.chip.rfind("gfx", 0) == 0;
  state->gpu = amd ? makeHipFunction(std::move(code))
                   : makeCudaFunction(std::move(code));
  return Kernel(std::move(state));
}

Kernel makeCpuKernel(KernelInfo info, CpuEntry entry,
                     std::shared_ptr<void> owner, CpuEntry blockMapEntry,
                     CpuEntry mergeEntry, CpuEntry backwardEntry) {
  auto state = std::make_shared<KernelState>();
  state->info = std::move(info);
  state->cpuEntry = entry;
  state->blockMapEntry = blockMapEntry;
  state->mergeEntry = mergeEntry;
  state->backwardEntry = backwardEntry;
  state->owner = std::move(owner);
  return Kernel(std::move(state));
}

Kernel makeLazyCpuKernel(KernelInfo info,
                         std::function<CpuCode(CpuRows)> build) {
  auto state = std::make_shared<KernelState>();
  state->info = std::move(info);
  state->buildRows = std::move(build);
  return Kernel(std::move(state));
}

int64_t evalDimRpn(const std::string &rpn, const int64_t sizes[7],
                   const KernelInfo &info, const Params &params) {
  std::vector<int64_t> stack;
  std::istringstream in(rpn);
  std::string tok;
  auto pop = [&]() {
    if (stack.empty())
      throw Error("", "malformed dimension expression '" + rpn + "'");
    int64_t v = stack.back();
    stack.pop_back();
    return v;
  };
  auto wrap = [](int64_t v) {
    return static_cast<int64_t>(static_cast<int32_t>(static_cast<uint32_t>(v)));
  };
  while (in >> tok) {
    if (tok == "+" || tok == "-" || tok == "*" || tok == "/" || tok == "%") {
      int64_t b = pop(), a = pop();
      int32_t a32 = static_cast<int32_t>(a), b32 = static_cast<int32_t>(b);
      // i32 arithmetic that wraps, done in uint64 so that no operand
      // (sizes up to 2^31 - 1, a bundle's literals) can overflow int64.
      uint64_t ua = static_cast<uint64_t>(a), ub = static_cast<uint64_t>(b);
      switch (tok[0]) {
      case '+': stack.push_back(wrap(static_cast<int64_t>(ua + ub))); break;
      case '-': stack.push_back(wrap(static_cast<int64_t>(ua - ub))); break;
      case '*': stack.push_back(wrap(static_cast<int64_t>(ua * ub))); break;
      case '/': stack.push_back(floorDiv(a32, b32)); break;
      default: stack.push_back(floorMod(a32, b32)); break;
      }
      continue;
    }
    if (tok == "neg") {
      stack.push_back(wrap(static_cast<int64_t>(0 - uint64_t(pop()))));
      continue;
    }
    if (std::isdigit(static_cast<unsigned char>(tok[0]))) {
      char *end = nullptr;
      errno = 0;
      unsigned long long v = std::strtoull(tok.c_str(), &end, 10);
      if (errno == ERANGE || *end != '\0')
        throw Error("", "malformed dimension expression '" + rpn + "'");
      stack.push_back(wrap(static_cast<int64_t>(v)));
      continue;
    }
    bool found = false;
    for (int i = 0; i < 7; ++i)
      if (tok == kSizeNames[i]) {
        stack.push_back(sizes[i]);
        found = true;
      }
    for (const ParamInfo &p : info.params) {
      if (found || tok != p.name)
        continue;
      const Arg *a = findArg(params, p.name);
      if (a && a->kind() != Arg::Kind::Tensor)
        stack.push_back(a->asInt());
      else if (p.defaultValue)
        stack.push_back(static_cast<int64_t>(*p.defaultValue));
      else
        throw Error(p.name, "param has no default; pass a value");
      found = true;
    }
    if (!found)
      throw Error("", "unknown name '" + tok + "' in dimension expression");
  }
  int64_t v = pop();
  if (!stack.empty())
    throw Error("", "malformed dimension expression '" + rpn + "'");
  return v;
}

} // namespace detail
} // namespace attn

attn::detail::GpuGrid attn::detail::planGpuGrid(
    int64_t batch, int64_t heads, int64_t kvHeads, int64_t seqQ,
    int64_t seqKV, int64_t blockKV, int64_t rowsPerBlock,
    int64_t requestedParts, int64_t multiprocessors) {
  GpuGrid g;
  int64_t group = kvHeads > 0 ? heads / kvHeads : 1;
  while (g.pack * 2 <= rowsPerBlock && group % (g.pack * 2) == 0 &&
         seqQ * g.pack * 2 <= rowsPerBlock)
    g.pack *= 2;
  int64_t rowsPerHead = rowsPerBlock / g.pack;
  g.queryTiles = (seqQ + rowsPerHead - 1) / rowsPerHead;
  int64_t keyTiles = (seqKV + blockKV - 1) / std::max<int64_t>(blockKV, 1);
  if (requestedParts > 0) {
    g.parts = std::clamp<int64_t>(std::min(requestedParts, keyTiles), 1,
                                  1 << 16);
    return g;
  }
  int64_t ctas = batch * (heads / g.pack) * g.queryTiles;
  int64_t want = 2 * multiprocessors;
  if (ctas > 0 && ctas < want)
    g.parts = std::min<int64_t>((want + ctas - 1) / ctas,
                                std::clamp<int64_t>(keyTiles / 2, 1, 64));
  return g;
}
