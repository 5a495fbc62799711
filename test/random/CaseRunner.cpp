//===- CaseRunner.cpp -----------------------------------------------------===//
#include "test/random/CaseRunner.h"

#include "attn/npy.h"
#include "lib/Driver/Compiler.h"
#include "test/numerics/Bounds.h"
#include "test/reference/Reference.h"
#include "test/support/Harness.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <sstream>

namespace attn::testing::rdiff {

const char *kindName(Failure::Kind k) {
  switch (k) {
  case Failure::None: return "pass";
  case Failure::Rejected: return "valid source rejected";
  case Failure::Internal: return "internal error";
  case Failure::Launch: return "launch error";
  case Failure::NaN: return "NaN";
  case Failure::Mismatch: return "wrong numbers";
  case Failure::LseInf: return "lse -inf mismatch";
  case Failure::BlockMap: return "wrong block map";
  case Failure::Reference: return "reference not finite (generator bug)";
  }
  return "?";
}

namespace {

bool isGpu(const std::string &target) { return target != "cpu"; }

uint16_t toBf16(float f) { // attn-npy's rounding
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return static_cast<uint16_t>((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
}

/// Element access on .npy storage.
void setElement(NpyArray &a, size_t i, double x) {
  switch (a.dtype) {
  case DType::f32: {
    float f = static_cast<float>(x);
    std::memcpy(&a.bytes[4 * i], &f, 4);
    break;
  }
  case DType::f16: {
    _Float16 h = static_cast<_Float16>(static_cast<float>(x));
    std::memcpy(&a.bytes[2 * i], &h, 2);
    break;
  }
  case DType::bf16: {
    uint16_t b = toBf16(static_cast<float>(x));
    std::memcpy(&a.bytes[2 * i], &b, 2);
    break;
  }
  case DType::i32: {
    int32_t v = static_cast<int32_t>(x);
    std::memcpy(&a.bytes[4 * i], &v, 4);
    break;
  }
  default:
    break;
  }
}

double getElement(const NpyArray &a, size_t i) {
  switch (a.dtype) {
  case DType::f32: {
    float f;
    std::memcpy(&f, &a.bytes[4 * i], 4);
    return f;
  }
  case DType::f16: {
    _Float16 h;
    std::memcpy(&h, &a.bytes[2 * i], 2);
    return static_cast<float>(h);
  }
  case DType::bf16: {
    uint16_t b;
    std::memcpy(&b, &a.bytes[2 * i], 2);
    uint32_t bits = uint32_t(b) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  case DType::i32: {
    int32_t v;
    std::memcpy(&v, &a.bytes[4 * i], 4);
    return v;
  }
  default:
    return 0;
  }
}

NpyArray makeArray(DType dtype, std::vector<int64_t> shape) {
  NpyArray a;
  a.dtype = dtype;
  a.shape = std::move(shape);
  a.bytes.assign(a.numel() * dtypeSize(dtype), 0);
  return a;
}

/// `attn-npy rand OUT DTYPE SHAPE SEED`'s values.
NpyArray randArray(DType dtype, std::vector<int64_t> shape, uint32_t seed) {
  NpyArray a = makeArray(dtype, std::move(shape));
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  for (int64_t i = 0; i < a.numel(); ++i)
    setElement(a, i, normal(rng));
  return a;
}

std::vector<double> values(const NpyArray &a) {
  std::vector<double> v(a.numel());
  for (int64_t i = 0; i < a.numel(); ++i)
    v[i] = getElement(a, i);
  return v;
}

/// Everything one launch reads.
struct LaunchData {
  NpyArray q, k, v;
  std::vector<NpyArray> captures; // declaration order
  std::vector<std::string> captureNames;
  uint32_t qSeed = 0, kSeed = 0, vSeed = 0;
};

LaunchData launchData(const Case &c, size_t l) {
  LaunchData d;
  DType dt = *parseDType(c.dtype);
  d.qSeed = c.dataSeed + 1000 * uint32_t(l) + 1;
  d.kSeed = d.qSeed + 1;
  d.vSeed = d.qSeed + 2;
  d.q = randArray(dt, {c.B, c.Hq, c.Sq, c.D}, d.qSeed);
  d.k = randArray(dt, {c.B, c.Hkv, c.Skv, c.D}, d.kSeed);
  d.v = randArray(dt, {c.B, c.Hkv, c.Skv, c.Dv}, d.vSeed);
  for (const TensorData &t : captureData(c, l)) {
    NpyArray a = makeArray(t.dtype, t.shape);
    for (size_t i = 0; i < t.values.size(); ++i)
      setElement(a, i, t.values[i]);
    d.captures.push_back(std::move(a));
    d.captureNames.push_back(t.name);
  }
  return d;
}

std::string fmt(double x) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.3e", x);
  return buf;
}

/// Params as passed in launch `l` (the ones the launch sets).
std::vector<std::pair<std::string, double>> passedParams(const Case &c,
                                                         size_t l) {
  std::vector<std::pair<std::string, double>> out;
  for (size_t p = 0; p < c.spec.params.size(); ++p)
    if (c.launches[l][p])
      out.push_back({c.spec.params[p].name, *c.launches[l][p]});
  return out;
}

/// The kernel's o and lse on launch `l` against the reference.
Failure compareLaunch(const Case &c, size_t l, Kernel &kernel,
                      const fe::Variant &variant, double &worst) {
  const KernelInfo &info = kernel.info();
  LaunchData d = launchData(c, l);
  NpyArray o = makeArray(info.outDType, {c.B, c.Hq, c.Sq, c.Dv});
  for (int64_t i = 0; i < o.numel(); ++i)
    setElement(o, i, std::nan("")); // never written: NaN
  std::vector<float> lse(c.B * c.Hq * c.Sq, 123.0f);

  Params params;
  ref::RefProblem rp;
  rp.B = c.B, rp.Hq = c.Hq, rp.Hkv = c.Hkv, rp.Sq = c.Sq, rp.Skv = c.Skv;
  rp.D = c.D, rp.Dv = c.Dv;
  rp.q = values(d.q), rp.k = values(d.k), rp.v = values(d.v);
  // The reference takes params and tensors in the source's order, which
  // the print order decides.
  rp.params.assign(variant.params.size(), 0.0);
  rp.captures.resize(variant.tensors.size());
  for (size_t p = 0; p < c.spec.params.size(); ++p) {
    double x = paramValue(c, l, p);
    const std::string &name = c.spec.params[p].name;
    bool isInt = c.spec.params[p].type == VT::I;
    if (c.launches[l][p]) {
      if (isInt)
        params.emplace_back(name, int64_t(x));
      else
        params.emplace_back(name, x);
    }
    rp.params.at(size_t(variant.findParam(name))) = isInt ? x : double(float(x));
  }
  for (size_t t = 0; t < d.captures.size(); ++t) {
    params.emplace_back(d.captureNames[t], d.captures[t].ref());
    rp.captures.at(size_t(variant.findTensor(d.captureNames[t]))) = {
        d.captures[t].shape, values(d.captures[t])};
  }
  Tensors tensors{d.q.ref(), d.k.ref(), d.v.ref(), o.ref(), std::nullopt};
  if (info.lse)
    tensors.lse = TensorRef(lse.data(), DType::f32, {c.B, c.Hq, c.Sq});
  KVCache cache;
  if (info.pageSize > 0) {
    cache = KVCache::build(info, tensors.k, tensors.v, c.dataSeed + l);
    cache.bind(tensors);
  }
  Failure f;
  f.launch = l;
  try {
    if (isGpu(c.target))
      kernel.launchHost(tensors, params);
    else
      kernel.launch(tensors, params);
  } catch (const std::exception &e) {
    f.kind = Failure::Launch;
    f.message = e.what();
    return f;
  }

  ref::RefResult r = ref::referenceAttention(variant, rp);
  double refMax = 0;
  for (double x : r.o) {
    if (!std::isfinite(x)) {
      f.kind = Failure::Reference;
      f.message = "the reference's o holds " + std::to_string(x);
      return f;
    }
    refMax = std::max(refMax, std::fabs(x));
  }
  double bound = outputBound(info.outDType, refMax);
  if (isGpu(c.target))
    bound = std::max(bound, gpuOutputBound(info, refMax));
  f.bound = bound;
  double maxErr = 0;
  size_t at = 0;
  for (size_t i = 0; i < r.o.size(); ++i) {
    double x = getElement(o, i);
    if (std::isnan(x)) {
      f.kind = Failure::NaN;
      f.message = "o[" + std::to_string(i) + "] is NaN (reference " +
                  fmt(r.o[i]) + ")";
      return f;
    }
    double err = std::fabs(x - r.o[i]);
    if (err > maxErr)
      maxErr = err, at = i;
  }
  worst = std::max(worst, maxErr / bound);
  auto where = [&](size_t i, int64_t inner) {
    int64_t row = int64_t(i) / inner, col = int64_t(i) % inner;
    int64_t qi = row % c.Sq, h = row / c.Sq % c.Hq, b = row / c.Sq / c.Hq;
    return "[b " + std::to_string(b) + ", h " + std::to_string(h) + ", q " +
           std::to_string(qi) + (inner > 1 ? ", d " + std::to_string(col) : "") +
           "]";
  };
  if (maxErr > bound) {
    f.kind = Failure::Mismatch;
    f.message = "max |o - ref| = " + fmt(maxErr) + " > bound " + fmt(bound) +
                " at o" + where(at, c.Dv) + ": kernel " +
                fmt(getElement(o, at)) + ", reference " + fmt(r.o[at]) +
                " (max |ref| " + fmt(refMax) + ")";
    return f;
  }
  if (info.lse) {
    double lseErr = 0;
    for (size_t i = 0; i < lse.size(); ++i) {
      double a = lse[i], b = r.lse[i];
      if (std::isnan(a)) {
        f.kind = Failure::NaN;
        f.message = "lse" + where(i, 1) + " is NaN (reference " + fmt(b) + ")";
        return f;
      }
      if (std::isinf(a) || std::isinf(b)) {
        if (a != b) {
          f.kind = Failure::LseInf;
          f.message = "lse" + where(i, 1) + ": kernel " + fmt(a) +
                      ", reference " + fmt(b);
          return f;
        }
        continue;
      }
      if (std::fabs(a - b) > lseErr)
        lseErr = std::fabs(a - b), at = i;
    }
    worst = std::max(worst, lseErr / kLseBound);
    if (lseErr > kLseBound) {
      f.kind = Failure::Mismatch;
      f.message = "max |lse - ref| = " + fmt(lseErr) + " > " +
                  fmt(kLseBound) + " at lse" + where(at, 1) + ": kernel " +
                  fmt(lse[at]) + ", reference " + fmt(r.lse[at]);
      return f;
    }
  }
  // CPU kernels: tiles classified EMPTY or FULL against the exact mask.
  if (!isGpu(c.target) && info.hasBlockMap) {
    BlockMap map;
    try {
      map = kernel.blockMap(tensors, params);
    } catch (const std::exception &e) {
      f.kind = Failure::Launch;
      f.message = std::string("blockMap: ") + e.what();
      return f;
    }
    std::vector<uint8_t> keep = ref::referenceMask(variant, rp);
    int64_t group = info.packedHeads ? c.Hq / c.Hkv : 1;
    for (int64_t b = 0; b < map.batch; ++b)
      for (int64_t h = 0; h < map.heads; ++h)
        for (int64_t qt = 0; qt < map.queryTiles; ++qt)
          for (int64_t kt = 0; kt < map.keyTiles; ++kt) {
            bool anyKept = false, anyMasked = false;
            int64_t rows = group * c.Sq;
            for (int64_t row = qt * map.blockQ;
                 row < std::min(rows, (qt + 1) * map.blockQ); ++row)
              for (int64_t kv = kt * map.blockKV;
                   kv < std::min(c.Skv, (kt + 1) * map.blockKV); ++kv) {
                int64_t head = info.packedHeads ? h * group + row / c.Sq : h;
                bool k =
                    keep[((b * c.Hq + head) * c.Sq + row % c.Sq) * c.Skv + kv];
                anyKept |= k;
                anyMasked |= !k;
              }
            uint8_t cls = map.at(b, h, qt, kt);
            if ((cls == BlockMap::Empty && anyKept) ||
                (cls == BlockMap::Full && anyMasked)) {
              f.kind = Failure::BlockMap;
              f.message = std::string("tile (b ") + std::to_string(b) +
                          ", h " + std::to_string(h) + ", q tile " +
                          std::to_string(qt) + ", kv tile " +
                          std::to_string(kt) + ") classified " +
                          (cls == BlockMap::Empty ? "EMPTY" : "FULL") +
                          " but the mask " +
                          (cls == BlockMap::Empty ? "keeps" : "drops") +
                          " some of it";
              return f;
            }
          }
  }
  return f;
}

} // namespace

std::string useSimulators() {
  static std::once_flag once;
  static std::string why;
  std::call_once(once, [] {
#if defined(ATTN_SIM_CUDA_LIBRARY) && defined(ATTN_SIM_HIP_LIBRARY)
    useGpuSimulator(ATTN_SIM_CUDA_LIBRARY, ATTN_SIM_HIP_LIBRARY);
#elif defined(ATTN_SIM_CUDA_LIBRARY)
    useGpuSimulator(ATTN_SIM_CUDA_LIBRARY);
#else
    why = "this build has no GPU simulator";
#endif
  });
  return why;
}

RunResult runCase(const Case &c, Jit &jit) {
  RunResult result;
  Failure &f = result.failure;
  std::string source = toSource(c.spec);
  Options options = caseOptions(c);
  Kernel kernel;
  try {
    kernel = jit.compile(source, options, "random.attn");
  } catch (const InternalError &e) {
    f.kind = Failure::Internal;
    f.message = e.what();
    return result;
  } catch (const CompileError &e) {
    f.kind = Failure::Rejected;
    f.message = e.what();
    return result;
  } catch (const Error &e) {
    f.kind = Failure::Rejected;
    f.message = std::string(e.argument()) + ": " + e.what();
    return result;
  } catch (const std::exception &e) {
    f.kind = Failure::Internal;
    f.message = e.what();
    return result;
  }
  try {
    driver::Source parsed(source, "random.attn");
    driver::KernelPlan plan = driver::planKernel(parsed, options);
    for (size_t l = 0; l < c.launches.size(); ++l) {
      f = compareLaunch(c, l, kernel, *plan.variant, result.worst);
      // The AMD simulator refuses kernels that spill to scratch
      // (docs/simulator.md); a GPU runs them.
      if (f.kind == Failure::Launch &&
          f.message.find("uses scratch memory, which the simulator does not "
                         "model") != std::string::npos) {
        result.unsupported = f.message;
        f = Failure();
        return result;
      }
      if (f)
        return result;
    }
  } catch (const std::exception &e) {
    f.kind = Failure::Internal;
    f.message = e.what();
  }
  return result;
}

namespace {

std::string caseKey(const Case &c) {
  std::ostringstream os;
  os << toSource(c.spec) << describe(c) << c.blockQ << " " << c.blockKV;
  for (const auto &l : c.launches) {
    os << "|";
    for (const auto &p : l)
      os << (p ? std::to_string(*p) : std::string("-")) << ",";
  }
  return os.str();
}

} // namespace

Shrunk shrink(const Case &start, const Failure &failure, Jit &jit,
              int maxRuns, double maxSeconds) {
  Shrunk s{start, failure};
  auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                         t0)
        .count();
  };
  std::set<std::string> tried = {caseKey(start)};
  bool progress = true;
  while (progress && s.runs < maxRuns && elapsed() < maxSeconds) {
    progress = false;
    for (Case &candidate : shrinkCandidates(s.minimal)) {
      if (s.runs >= maxRuns || elapsed() >= maxSeconds)
        break;
      if (!validate(candidate).empty())
        continue;
      if (!tried.insert(caseKey(candidate)).second)
        continue;
      ++s.runs;
      Failure f = runCase(candidate, jit).failure;
      if (f.kind == s.failure.kind) {
        s.minimal = std::move(candidate);
        s.failure = f;
        ++s.steps;
        progress = true;
        break;
      }
    }
  }
  return s;
}

std::string writeReproducer(const Case &c, const Failure &failure,
                            const std::string &dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  size_t l = std::min(failure.launch, c.launches.size() - 1);
  std::string source = toSource(c.spec);
  std::ostringstream os;
  {
    std::ofstream out(dir + "/case.attn");
    out << "// random differential case: " << c.target << " seed " << c.seed
        << " index " << c.index << "\n// " << describe(c) << "\n"
        << source;
  }
  LaunchData d = launchData(c, l);
  bool files = true;
  try {
    writeNpy(dir + "/q.npy", d.q, "q");
    writeNpy(dir + "/k.npy", d.k, "k");
    writeNpy(dir + "/v.npy", d.v, "v");
    for (size_t t = 0; t < d.captures.size(); ++t)
      writeNpy(dir + "/" + d.captureNames[t] + ".npy", d.captures[t],
               d.captureNames[t]);
  } catch (const std::exception &) {
    files = false;
  }
  bool gpu = isGpu(c.target);
  std::string sets;
  for (const auto &[name, value] : passedParams(c, l)) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.17g", value);
    sets += " --set " + name + "=" + buf;
  }
  for (const std::string &name : d.captureNames)
    sets += " --set " + name + "=" + name + ".npy";
  std::string attnc = ATTNC_PATH, npy = ATTN_NPY_PATH;
  std::ostringstream run;
  run << attnc << " run case.attn --target " << c.target
      << (gpu ? " --simulate" : "") << " --dtype " << c.dtype
      << " --head-dim " << c.D << " --v-head-dim " << c.Dv;
  if (c.blockQ)
    run << " --block-q " << c.blockQ;
  if (c.blockKV)
    run << " --block-kv " << c.blockKV;
  if (c.splitKv != "auto")
    run << " --split-kv " << c.splitKv;
  if (c.paged)
    run << " --paged " << c.paged;
  if (c.gpuLoads != "auto")
    run << " --gpu-loads " << c.gpuLoads;
  if (c.lse)
    run << " --lse";
  run << " --q q.npy --k k.npy --v v.npy" << sets << " -o o.npy"
      << (c.lse ? " --lse-out lse.npy" : "");
  bool bf16 = c.dtype == "bf16" || c.spec.outDtype == "bf16";
  std::ostringstream check;
  check << npy << " check case.attn" << (bf16 ? " --dtype bf16" : "")
        << " --q q.npy --k k.npy --v v.npy" << sets << " --o o.npy"
        << (c.lse ? " --lse lse.npy" : "") << " --tol "
        << fmt(failure.bound);
  auto shape = [](std::vector<int64_t> s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i)
      out += (i ? "," : "") + std::to_string(s[i]);
    return out;
  };

  os << "  " << describe(c) << "\n";
  os << "  ---- " << dir << "/case.attn ----\n";
  std::istringstream lines(source);
  for (std::string line; std::getline(lines, line);)
    os << "  " << line << "\n";
  os << "  ----\n  params (launch " << l << "):";
  if (c.spec.params.empty())
    os << " none";
  for (size_t p = 0; p < c.spec.params.size(); ++p)
    os << " " << c.spec.params[p].name << "=" << paramValue(c, l, p)
       << (c.launches[l][p] ? "" : " (default)");
  os << "\n  reproduce (inputs " << (files ? "written" : "NOT written")
     << " to that directory):\n"
     << "    cd " << dir << "\n"
     << "    " << run.str() << "\n"
     << "    " << check.str() << "\n"
     << "  or regenerate q, k, v: " << npy << " rand q.npy " << c.dtype << " "
     << shape(d.q.shape) << " " << d.qSeed << "; ... rand k.npy " << c.dtype
     << " " << shape(d.k.shape) << " " << d.kSeed << "; ... rand v.npy "
     << c.dtype << " " << shape(d.v.shape) << " " << d.vSeed << "\n";
  {
    std::ofstream sh(dir + "/run.sh");
    std::string message = failure.message;
    for (size_t at = 0; (at = message.find('\n', at)) != std::string::npos;)
      message.replace(at, 1, "\n# "), at += 3;
    sh << "#!/bin/sh\n# " << kindName(failure.kind) << ": " << message
       << "\ncd \"$(dirname \"$0\")\"\n"
       << run.str() << " && " << check.str() << "\n";
  }
  return os.str();
}

} // namespace attn::testing::rdiff
