//===- Harness.cpp --------------------------------------------------------===//
#include "test/support/Harness.h"

#include "attn/runtime.h"
#include "lib/Driver/Compiler.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>

namespace attn::testing {

std::string readText(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw Error(path, "cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

namespace {

uint16_t f32ToBf16Bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffff) > 0x7f800000)
    return static_cast<uint16_t>((bits >> 16) | 0x40); // quiet NaN
  return static_cast<uint16_t>((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
}
float bf16BitsToF32(uint16_t b) {
  uint32_t bits = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

/// Storage of one floating tensor in the kernel's dtype.
struct Buffer {
  DType dtype;
  std::vector<uint8_t> bytes;
  Buffer(DType dtype, size_t n) : dtype(dtype), bytes(n * dtypeSize(dtype)) {}
  void set(size_t i, double x) {
    switch (dtype) {
    case DType::f32: {
      float f = static_cast<float>(x);
      std::memcpy(&bytes[4 * i], &f, 4);
      break;
    }
    case DType::f16: {
      _Float16 h = static_cast<_Float16>(static_cast<float>(x));
      std::memcpy(&bytes[2 * i], &h, 2);
      break;
    }
    case DType::bf16: {
      uint16_t b = f32ToBf16Bits(static_cast<float>(x));
      std::memcpy(&bytes[2 * i], &b, 2);
      break;
    }
    case DType::i32: {
      int32_t v = static_cast<int32_t>(x);
      std::memcpy(&bytes[4 * i], &v, 4);
      break;
    }
    default: // code dtypes are produced by attn::KVCache, not here
      break;
    }
  }
  double get(size_t i) const {
    switch (dtype) {
    case DType::f32: {
      float f;
      std::memcpy(&f, &bytes[4 * i], 4);
      return f;
    }
    case DType::f16: {
      _Float16 h;
      std::memcpy(&h, &bytes[2 * i], 2);
      return static_cast<float>(h);
    }
    case DType::bf16: {
      uint16_t b;
      std::memcpy(&b, &bytes[2 * i], 2);
      return bf16BitsToF32(b);
    }
    case DType::i32: {
      int32_t v;
      std::memcpy(&v, &bytes[4 * i], 4);
      return v;
    }
    default:
      return 0;
    }
  }
};

/// The kernel's o (and lse) against the float64 reference.
void compareWithReference(const fe::Variant &variant,
                          const ref::RefProblem &rp, const Buffer &ob,
                          const std::vector<float> &lse, bool hasLse,
                          Outcome &out) {
  ref::RefResult r = ref::referenceAttention(variant, rp);
  double absErrSum = 0, absRefSum = 0;
  for (size_t i = 0; i < r.o.size(); ++i) {
    double o = ob.get(i);
    if (std::isnan(o))
      out.hasNaN = true;
    out.maxErrO = std::max(out.maxErrO, std::fabs(o - r.o[i]));
    out.refMaxAbsO = std::max(out.refMaxAbsO, std::fabs(r.o[i]));
    absErrSum += std::fabs(o - r.o[i]);
    absRefSum += std::fabs(r.o[i]);
  }
  out.relL1O = absRefSum > 0 ? absErrSum / absRefSum : absErrSum;
  if (hasLse) {
    for (size_t i = 0; i < lse.size(); ++i) {
      double a = lse[i], b = r.lse[i];
      if (std::isnan(a))
        out.hasNaN = true;
      if (std::isinf(a) || std::isinf(b)) {
        if (a != b)
          out.lseInfMismatch = true;
        continue;
      }
      out.maxErrLse = std::max(out.maxErrLse, std::fabs(a - b));
    }
  }
}

} // namespace

void useTestGpuSimulator() {
  static std::once_flag once;
  std::call_once(once, [] {
    std::string library;
    if (const char *env = std::getenv("ATTN_GPU_SIMULATOR"); env && *env)
      library = env;
#ifdef ATTN_SIM_CUDA_LIBRARY
    else
      library = ATTN_SIM_CUDA_LIBRARY;
#endif
    if (library.empty())
      throw Error("target", "this build has no GPU simulator "
                            "(libattnsim_cuda.so); set ATTN_GPU_SIMULATOR");
    useGpuSimulator(library);
  });
}

double roundTo(double x, DType t) {
  Buffer b(t, 1);
  b.set(0, x);
  return b.get(0);
}

Outcome runAgainstReference(const Problem &p, Jit *jit) {
  Jit local;
  Jit &j = jit ? *jit : local;
  bool gpu = driver::isGpuTarget(p.options.target);
  if (gpu)
    useTestGpuSimulator();
  Kernel kernel = j.compile(p.source, p.options, p.filename);
  const KernelInfo &info = kernel.info();
  driver::Source parsed(p.source, p.filename);
  driver::KernelPlan plan = driver::planKernel(parsed, p.options);
  const fe::Variant &variant = *plan.variant;

  std::mt19937 rng(p.seed);
  std::normal_distribution<double> normal;
  int64_t D = info.headDim, Dv = info.valueHeadDim;
  ref::RefProblem rp;
  rp.B = p.B, rp.Hq = p.Hq, rp.Hkv = p.Hkv, rp.Sq = p.Sq, rp.Skv = p.Skv;
  rp.D = D, rp.Dv = Dv;
  auto fill = [&](std::vector<double> &values, Buffer &buf, size_t n,
                  double scale) {
    values.resize(n);
    for (size_t i = 0; i < n; ++i) {
      buf.set(i, normal(rng) * scale);
      values[i] = buf.get(i); // the reference sees what the kernel reads
    }
  };
  size_t nq = p.B * p.Hq * p.Sq * D, nk = p.B * p.Hkv * p.Skv * D,
         nv = p.B * p.Hkv * p.Skv * Dv, no = p.B * p.Hq * p.Sq * Dv;
  Buffer qb(info.dtype, nq), kb(info.dtype, nk), vb(info.dtype, nv);
  fill(rp.q, qb, nq, p.qScale);
  fill(rp.k, kb, nk, 1.0);
  fill(rp.v, vb, nv, 1.0);
  Buffer ob(info.outDType, no);
  for (size_t i = 0; i < no; ++i) // an entry the kernel never writes is NaN
    ob.set(i, std::nan(""));
  std::vector<float> lse(p.B * p.Hq * p.Sq, 123.0f);

  Params params;
  for (const auto &[name, value] : p.params) {
    bool isInt = false;
    for (const ParamInfo &pi : info.params)
      if (pi.name == name)
        isInt = pi.type == DType::i32;
    if (isInt)
      params.emplace_back(name, static_cast<int64_t>(value));
    else
      params.emplace_back(name, value);
  }
  for (const ParamInfo &pi : info.params) {
    double value = pi.defaultValue ? *pi.defaultValue : 0.0;
    for (const auto &[name, v] : p.params)
      if (name == pi.name)
        value = v;
    rp.params.push_back(value);
  }

  // Captured tensors: explicit ones, else generated with the right shape.
  // Paged launches size them by the page table's capacity.
  int64_t pageSize = p.options.paged;
  int64_t skvCapacity =
      pageSize > 0 ? std::max<int64_t>(1, (p.Skv + pageSize - 1) / pageSize) *
                         pageSize
                   : p.Skv;
  int64_t sizes[7] = {p.B, p.Hq, p.Hkv, p.Sq, skvCapacity, D, Dv};
  std::vector<Buffer> captureBufs;
  captureBufs.reserve(info.captures.size());
  for (const CaptureInfo &c : info.captures) {
    ref::RefTensor t;
    auto it = p.captures.find(c.name);
    if (it != p.captures.end()) {
      t = it->second;
    } else {
      for (const std::string &rpn : c.dimRpn)
        t.shape.push_back(detail::evalDimRpn(rpn, sizes, info, params));
      int64_t n = 1;
      for (int64_t d : t.shape)
        n *= d;
      std::uniform_int_distribution<int32_t> ints(0, p.intRange - 1);
      for (int64_t i = 0; i < n; ++i)
        t.values.push_back(c.dtype == DType::i32 ? double(ints(rng))
                                                 : normal(rng));
    }
    int64_t n = 1;
    for (int64_t d : t.shape)
      n *= d;
    captureBufs.emplace_back(c.dtype, n);
    for (int64_t i = 0; i < n; ++i) {
      captureBufs.back().set(i, t.values[i]);
      t.values[i] = captureBufs.back().get(i);
    }
    params.emplace_back(c.name, TensorRef(captureBufs.back().bytes.data(),
                                          c.dtype, t.shape));
    rp.captures.push_back(std::move(t));
  }

  Tensors tensors{TensorRef(qb.bytes.data(), info.dtype, {p.B, p.Hq, p.Sq, D}),
                  TensorRef(kb.bytes.data(), info.dtype, {p.B, p.Hkv, p.Skv, D}),
                  TensorRef(vb.bytes.data(), info.dtype,
                            {p.B, p.Hkv, p.Skv, Dv}),
                  TensorRef(ob.bytes.data(), info.outDType,
                            {p.B, p.Hq, p.Sq, Dv}),
                  std::nullopt};
  if (info.lse)
    tensors.lse = TensorRef(lse.data(), DType::f32, {p.B, p.Hq, p.Sq});
  // Quantized or paged kernels read the same K/V through attn::KVCache;
  // the reference keeps the unquantized values.
  KVCache cache;
  if (info.kvDtype != "same" || info.pageSize > 0) {
    cache = KVCache::build(info, tensors.k, tensors.v, p.seed);
    cache.bind(tensors);
  }
  Outcome out;
  out.info = info;
  if (gpu) {
    // Host memory through device copies, on the simulator; no timing and
    // no block map (the kernel classifies its tiles on the device).
    kernel.launchHost(tensors, params);
    compareWithReference(variant, rp, ob, lse, info.lse, out);
    return out;
  }
  kernel.launch(tensors, params);

  if (p.timingReps > 0) {
    std::vector<double> times;
    for (int r = 0; r < p.timingReps; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      kernel.launch(tensors, params);
      auto t1 = std::chrono::steady_clock::now();
      times.push_back(
          std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
    std::sort(times.begin(), times.end());
    out.ms = times[times.size() / 2];
  }

  // The kernel's block classes against the exact mask.
  BlockMap map = kernel.blockMap(tensors, params);
  std::vector<uint8_t> keep = ref::referenceMask(variant, rp);
  for (int64_t b = 0; b < map.batch; ++b)
    for (int64_t h = 0; h < map.heads; ++h)
      for (int64_t qt = 0; qt < map.queryTiles; ++qt)
        for (int64_t kt = 0; kt < map.keyTiles; ++kt) {
          bool anyKept = false, anyMasked = false;
          // Packed maps hold rows of all query heads of a kv head's group.
          int64_t group = info.packedHeads ? p.Hq / p.Hkv : 1;
          int64_t rowsTotal = group * p.Sq;
          for (int64_t r = qt * map.blockQ;
               r < std::min(rowsTotal, (qt + 1) * map.blockQ); ++r)
            for (int64_t kv = kt * map.blockKV;
                 kv < std::min(p.Skv, (kt + 1) * map.blockKV); ++kv) {
              int64_t head = info.packedHeads ? h * group + r / p.Sq : h;
              int64_t q = r % p.Sq;
              bool k = keep[((b * p.Hq + head) * p.Sq + q) * p.Skv + kv];
              anyKept |= k;
              anyMasked |= !k;
            }
          uint8_t c = map.at(b, h, qt, kt);
          BlockMapCheck &bc = out.blockMap;
          ++bc.blocks;
          bc.wronglyEmpty += c == BlockMap::Empty && anyKept;
          bc.wronglyFull += c == BlockMap::Full && anyMasked;
          bc.emptyOrFull += c != BlockMap::Partial;
          bc.uniform += !(anyKept && anyMasked);
        }

  compareWithReference(variant, rp, ob, lse, info.lse, out);
  return out;
}

} // namespace attn::testing
