//===- AmdBackwardSimTest.cpp - AMD backward kernels on the CDNA simulator ===//
//
// Variants compiled with backward for gfx942 (every variant) and gfx90a /
// gfx950 (a few; bf16 inputs), the forward and then Kernel::backward
// launched on host tensors through attnrt's HIP launcher on the functional
// simulator (libattnsim_hip.so), and dq, dk, dv and every f32 param's and
// captured tensor's gradient compared with the float64 referenceBackward
// under BackwardTest's bf16 bounds: |g - r| <= 3e-2 max(1, max |r|) per
// tensor for dq, dk, dv and 1e-1 for param and capture gradients. Shapes
// are small and ragged (Sq = 70, Skv = 100 in the causal case: tails in
// both directions, several workgroups and key tiles). Also: two runs give
// the same bits (param and capture gradients included), and the code
// object's metadata reports no spills and no scratch for the backward
// kernels.
//
//===----------------------------------------------------------------------===//
#include "attn/jit.h"
#include "attn/runtime.h"
#include "lib/Driver/Compiler.h"
#include "lib/Frontend/Eval.h"
#include "lib/Target/AMDGPU/AMDGPUTarget.h"
#include "test/reference/ReferenceBackward.h"
#include "test/support/Harness.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <random>
#include <regex>
#include <string>
#include <vector>

using namespace attn;

namespace {

uint16_t toBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return uint16_t((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
}
float fromBf16(uint16_t b) {
  uint32_t bits = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

struct Shape {
  int64_t B = 1, Hq = 2, Hkv = 2, Sq = 37, Skv = 53, D = 32, Dv = 32;
};

struct Case {
  const char *name;
  const char *source;
  Shape shape = {};
};

/// bf16 values in (-1, 1); `values` gets what the kernel reads.
std::vector<uint16_t> randomBf16(int64_t n, std::mt19937 &rng,
                                 std::vector<double> &values) {
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  std::vector<uint16_t> x(n);
  values.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    x[i] = toBf16(uni(rng));
    values[i] = fromBf16(x[i]);
  }
  return x;
}

/// Capture dims for the reference: sizes and params.
class DimEnv : public fe::EvalEnv {
public:
  DimEnv(const fe::Variant &v, const ref::RefProblem &p) : v(v), p(p) {}
  fe::Scalar index(fe::IndexVar) override { return fe::Scalar::ofInt(0); }
  fe::Scalar size(fe::SizeVar sv) override {
    int64_t values[] = {p.B, p.Hq, p.Hkv, p.Sq, p.Skv, p.D, p.Dv};
    return fe::Scalar::ofInt(int32_t(values[int(sv)]));
  }
  fe::Scalar param(int i) override {
    return v.params[i].type == fe::Type::I32
               ? fe::Scalar::ofInt(int32_t(p.params[i]))
               : fe::Scalar::ofFloat(p.params[i]);
  }
  fe::Scalar tensorElement(int, const std::vector<int32_t> &) override {
    return fe::Scalar::ofInt(0);
  }
  fe::Scalar let(int) override { return fe::Scalar::ofInt(0); }

private:
  const fe::Variant &v;
  const ref::RefProblem &p;
};

Jit &jit() {
  static Jit j;
  return j;
}

/// gfx* kernels on libattnsim_hip.so (the harness's opt-in names only the
/// CUDA simulator).
void useAmdSimulator() {
  static std::once_flag once;
  std::call_once(once, [] {
    attn::testing::useTestGpuSimulator();
    useGpuSimulator(ATTN_SIM_CUDA_LIBRARY, ATTN_SIM_HIP_LIBRARY);
  });
}

struct SimRun {
  std::vector<uint16_t> dq, dk, dv;
  double err[3] = {0, 0, 0};
  /// Gradients of the f32 params and captured tensors, by name.
  std::vector<std::pair<std::string, std::vector<float>>> named;
};

/// Forward and backward of `c` on `target` in the simulator; compares with
/// the reference when `compare`.
SimRun runOnSimulator(const Case &c, const std::string &target,
                   bool compare = true) {
  useAmdSimulator();
  driver::Source src(c.source, "<amd-backward-sim-test>");
  const fe::Variant &v = src.program.variants.at(0);
  const Shape &sh = c.shape;
  ref::RefProblem p;
  p.B = sh.B, p.Hq = sh.Hq, p.Hkv = sh.Hkv, p.Sq = sh.Sq, p.Skv = sh.Skv;
  p.D = sh.D, p.Dv = sh.Dv;
  std::mt19937 rng(1234);
  auto q = randomBf16(sh.B * sh.Hq * sh.Sq * sh.D, rng, p.q);
  auto k = randomBf16(sh.B * sh.Hkv * sh.Skv * sh.D, rng, p.k);
  auto vv = randomBf16(sh.B * sh.Hkv * sh.Skv * sh.Dv, rng, p.v);
  Params params;
  for (const fe::ParamDecl &d : v.params) {
    double value = d.defaultValue ? *d.defaultValue : 0.0;
    if (d.type == fe::Type::F32)
      value = double(float(value));
    p.params.push_back(value);
    if (d.type == fe::Type::I32)
      params.emplace_back(d.name, int64_t(value));
    else
      params.emplace_back(d.name, value);
  }
  std::vector<std::vector<float>> captures;
  captures.reserve(v.tensors.size());
  DimEnv env(v, p);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  for (const fe::TensorDecl &t : v.tensors) {
    EXPECT_EQ(t.dtype, fe::DType::F32) << "the test makes f32 tensors";
    ref::RefTensor rt;
    int64_t n = 1;
    for (const fe::ExprPtr &d : t.dims) {
      rt.shape.push_back(fe::evaluate(*d, v, env).i);
      n *= rt.shape.back();
    }
    captures.emplace_back(n);
    for (int64_t i = 0; i < n; ++i) {
      captures.back()[i] = uni(rng);
      rt.values.push_back(captures.back()[i]);
    }
    params.emplace_back(t.name,
                        TensorRef(captures.back().data(), DType::f32, rt.shape));
    p.captures.push_back(std::move(rt));
  }
  std::vector<double> dout;
  auto dO = randomBf16(sh.B * sh.Hq * sh.Sq * sh.Dv, rng, dout);

  Options o;
  o.target = target;
  o.headDim = sh.D;
  o.valueHeadDim = sh.Dv;
  o.dtype = "bf16";
  o.lse = v.hasRowSum();
  o.backward = true;
  Kernel kernel = jit().compile(c.source, o, "<amd-backward-sim-test>");
  EXPECT_TRUE(kernel.info().backward);

  std::vector<uint16_t> out(sh.B * sh.Hq * sh.Sq * sh.Dv);
  std::vector<float> lse(sh.B * sh.Hq * sh.Sq);
  Tensors t;
  t.q = TensorRef(q.data(), DType::bf16, {sh.B, sh.Hq, sh.Sq, sh.D});
  t.k = TensorRef(k.data(), DType::bf16, {sh.B, sh.Hkv, sh.Skv, sh.D});
  t.v = TensorRef(vv.data(), DType::bf16, {sh.B, sh.Hkv, sh.Skv, sh.Dv});
  t.o = TensorRef(out.data(), DType::bf16, {sh.B, sh.Hq, sh.Sq, sh.Dv});
  if (o.lse)
    t.lse = TensorRef(lse.data(), DType::f32, {sh.B, sh.Hq, sh.Sq});
  kernel.launchHost(t, params);

  SimRun r;
  r.dq.assign(q.size(), 0xdead);
  r.dk.assign(k.size(), 0xdead);
  r.dv.assign(vv.size(), 0xdead);
  Gradients g;
  g.dq = TensorRef(r.dq.data(), DType::bf16, t.q.shape);
  g.dk = TensorRef(r.dk.data(), DType::bf16, t.k.shape);
  g.dv = TensorRef(r.dv.data(), DType::bf16, t.v.shape);
  // Every f32 param's and captured tensor's gradient too.
  for (size_t i = 0; i < v.params.size(); ++i)
    if (v.params[i].type == fe::Type::F32)
      r.named.emplace_back(v.params[i].name, std::vector<float>(1, -7.0f));
  for (size_t i = 0; i < v.tensors.size(); ++i)
    r.named.emplace_back(v.tensors[i].name,
                         std::vector<float>(p.captures[i].values.size(), -7.0f));
  for (size_t i = 0; i < r.named.size(); ++i) {
    std::vector<int64_t> shape = {1};
    for (size_t j = 0; j < v.tensors.size(); ++j)
      if (v.tensors[j].name == r.named[i].first)
        shape = p.captures[j].shape;
    g.named.emplace_back(r.named[i].first,
                         TensorRef(r.named[i].second.data(), DType::f32, shape));
  }
  kernel.backwardHost(t, TensorRef(dO.data(), DType::bf16, t.o.shape), g, params);
  if (!compare)
    return r;

  ref::RefGradients want = ref::referenceBackward(v, p, dout);
  const char *names[3] = {"dq", "dk", "dv"};
  const std::vector<uint16_t> *got[3] = {&r.dq, &r.dk, &r.dv};
  const std::vector<double> *ref[3] = {&want.dq, &want.dk, &want.dv};
  std::string report = std::string(c.name) + " " + target + ":";
  for (int i = 0; i < 3; ++i) {
    double scale = 1, err = 0;
    size_t where = 0;
    for (double w : *ref[i])
      scale = std::max(scale, std::fabs(w));
    EXPECT_EQ(got[i]->size(), ref[i]->size());
    if (got[i]->size() != ref[i]->size())
      continue;
    for (size_t j = 0; j < ref[i]->size(); ++j) {
      double e = std::fabs(double(fromBf16((*got[i])[j])) - (*ref[i])[j]);
      if (!(e <= err)) { // NaN counts as the worst
        err = std::isnan(e) ? INFINITY : e;
        where = j;
      }
    }
    r.err[i] = err / scale;
    char line[160];
    std::snprintf(line, sizeof line, " %s %.2e", names[i], r.err[i]);
    report += line;
    EXPECT_LE(r.err[i], 3e-2)
        << c.name << " on " << target << ": " << names[i] << " at element "
        << where << ": got " << fromBf16((*got[i])[where]) << ", reference "
        << (*ref[i])[where];
  }
  // Param and capture gradients: BackwardTest's bf16 bound, 1e-1.
  for (const auto &[name, got] : r.named) {
    const std::vector<double> *wantValues = nullptr;
    std::vector<double> one;
    for (size_t j = 0; j < v.params.size(); ++j)
      if (v.params[j].name == name) {
        one = {want.dparams[j]};
        wantValues = &one;
      }
    for (size_t j = 0; j < v.tensors.size(); ++j)
      if (v.tensors[j].name == name)
        wantValues = &want.dcaptures[j].values;
    EXPECT_NE(wantValues, nullptr) << name;
    if (!wantValues)
      continue;
    EXPECT_EQ(got.size(), wantValues->size());
    double scale = 1, err = 0;
    for (double w : *wantValues)
      scale = std::max(scale, std::fabs(w));
    for (size_t j = 0; j < wantValues->size() && j < got.size(); ++j) {
      double e = std::fabs(double(got[j]) - (*wantValues)[j]);
      err = std::isnan(e) ? INFINITY : std::max(err, e);
    }
    char line[160];
    std::snprintf(line, sizeof line, " d%s %.2e", name.c_str(), err / scale);
    report += line;
    EXPECT_LE(err / scale, 1e-1) << c.name << " on " << target << ": d" << name;
  }
  std::printf("%s\n", report.c_str());
  return r;
}

const char *kAlibiParam =
    "variant alibi_slopes {\n"
    "  tensor slopes: f32[Hq];\n"
    "  param bias: f32 = 0.25;\n"
    "  score(s, b, h, q, kv) = s - slopes[h] * float(q - kv) + bias;\n"
    "  mask(b, h, q, kv) = kv <= q;\n"
    "}";

// (A Case's shape must outlive the call: runOnSimulator reads it.)
std::vector<Case> cases() {
  Shape ragged;
  ragged.Sq = 70;
  ragged.Skv = 100;
  Shape gqa;
  gqa.Hq = 4;
  gqa.Hkv = 1;
  Shape dv;
  dv.Dv = 16;
  Shape wide;
  wide.D = 64;
  wide.Dv = 64;
  wide.Sq = 20;
  wide.Skv = 24;
  return {
      {"dense", "variant dense {}"},
      {"causal_ragged",
       "variant causal {\n  mask(b, h, q, kv) = kv <= q + (Skv - Sq);\n}",
       ragged},
      {"gqa", "variant causal {\n  mask(b, h, q, kv) = kv <= q;\n}", gqa},
      {"sliding_window", "variant sliding {\n"
                         "  param window: i32 = 9;\n"
                         "  mask(b, h, q, kv) = kv <= q && q - kv < window;\n"
                         "}"},
      {"softcap", "variant softcap {\n"
                  "  param cap: f32 = 1.5;\n"
                  "  score(s, b, h, q, kv) = cap * tanh(s / cap);\n"
                  "  mask(b, h, q, kv) = kv <= q;\n}"},
      {"alibi", "variant alibi {\n"
                "  tensor slopes: f32[Hq];\n"
                "  score(s, b, h, q, kv) = s - slopes[h] * float(q - kv);\n"
                "  mask(b, h, q, kv) = kv <= q;\n}"},
      {"sinks", "variant sinks {\n"
                "  tensor sink_logit: f32[Hq];\n"
                "  param sb: f32 = 0.3;\n"
                "  sink(h) = sink_logit[h] + sb;\n"
                "  mask(b, h, q, kv) = kv <= q;\n}"},
      {"sigmoid", "variant sig {\n  normalize = sigmoid;\n"
                  "  score(s, b, h, q, kv) = s - log(float(Skv));\n}"},
      {"softplus", "variant sp {\n  normalize = softplus;\n"
                   "  score(s, b, h, q, kv) = log(float(q + 2)) * s;\n"
                   "  mask(b, h, q, kv) = kv <= q;\n}"},
      {"relu2", "variant r2 {\n  normalize = relu2;\n"
                "  score(s, b, h, q, kv) = s / float(Skv);\n}"},
      {"value_head_dim",
       "variant causal {\n  mask(b, h, q, kv) = kv <= q;\n}", dv},
      {"head_dim_64", "variant causal {\n  mask(b, h, q, kv) = kv <= q;\n}",
       wide},
      {"fully_masked_rows",
       "variant holes {\n"
       "  mask(b, h, q, kv) = kv <= q && q != 3 && q / 16 != 1;\n}"},
  };
}

class AmdBackwardSim : public ::testing::TestWithParam<Case> {};

TEST_P(AmdBackwardSim, Gfx942MatchesReference) {
  runOnSimulator(GetParam(), "gfx942");
}

INSTANTIATE_TEST_SUITE_P(Variants, AmdBackwardSim,
                         ::testing::ValuesIn(cases()),
                         [](const auto &info) { return info.param.name; });

// The other CDNA chips build the same kernels: the ragged causal case and
// one with a score region and Dv != D cover their code objects.
TEST(AmdBackwardSimChips, Gfx90aAndGfx950MatchReference) {
  std::vector<Case> all = cases();
  for (const char *chip : {"gfx90a", "gfx950"})
    for (const Case &c : all)
      if (std::string(c.name) == "causal_ragged" ||
          std::string(c.name) == "softcap" ||
          std::string(c.name) == "value_head_dim")
        runOnSimulator(c, chip);
}

TEST(AmdBackwardSimDeterminism, TwoRunsAreBitIdentical) {
  // Ragged (several workgroups and key tiles), with a capture's and a
  // param's gradient summed over many slabs.
  Shape ragged;
  ragged.Sq = 70;
  ragged.Skv = 100;
  Case c = {"alibi_ragged", kAlibiParam, ragged};
  SimRun a = runOnSimulator(c, "gfx942", /*compare=*/false);
  SimRun b = runOnSimulator(c, "gfx942", /*compare=*/false);
  EXPECT_EQ(a.dq, b.dq);
  EXPECT_EQ(a.dk, b.dk);
  EXPECT_EQ(a.dv, b.dv);
  ASSERT_EQ(a.named.size(), 2u);
  ASSERT_EQ(b.named.size(), 2u);
  for (size_t i = 0; i < a.named.size(); ++i)
    EXPECT_EQ(std::memcmp(a.named[i].second.data(), b.named[i].second.data(),
                          4 * a.named[i].second.size()),
              0)
        << a.named[i].first;
}

// Gradients of f32 params and captured tensors (the cases above check
// softcap's cap, ALiBi's slopes and the sinks' capture and param): a
// capture and a param in one score, a T5 relative-bias table (several
// entries per slab) and a param in the scale.
TEST(AmdBackwardSimGradients, ParamAndCaptureGradientsMatchReference) {
  std::vector<Case> more = {
      {"alibi_capture_and_param", kAlibiParam},
      {"bias_table", "variant t5 {\n"
                     "  tensor rel: f32[32, Hq];\n"
                     "  let n = max(q - kv, 0);\n"
                     "  score(s, b, h, q, kv) = s + rel[min(n, 31), h];\n"
                     "  mask(b, h, q, kv) = kv <= q;\n}"},
      {"scale_param", "variant scaled {\n"
                      "  param n_train: f32 = 4096.0;\n"
                      "  scale = sqrt(log(float(Skv)) / log(n_train) / "
                      "float(D));\n}"},
  };
  for (const Case &c : more) {
    SimRun r = runOnSimulator(c, "gfx942");
    EXPECT_FALSE(r.named.empty()) << c.name;
  }
}

/// The code object's metadata note per backward kernel: registers, spills
/// and scratch (spilled VGPRs live in scratch), up to the widest head dim.
TEST(AmdBackwardSimCodeObject, NoSpillsNoScratch) {
  for (const char *chip : {"gfx90a", "gfx942", "gfx950"})
    for (int64_t d : {64, 128, 256}) {
      if (d == 256 && std::string(chip) != "gfx942")
        continue;
      Options o;
      o.target = chip;
      o.headDim = d;
      o.dtype = "bf16";
      o.lse = true;
      o.backward = true;
      driver::Source parsed(
          "variant c { param cap: f32 = 2.0; score(s, b, h, q, kv) = cap * "
          "tanh(s / cap); mask(b, h, q, kv) = kv <= q; }",
          "c.attn");
      driver::KernelPlan plan = driver::planKernel(parsed, o);
      driver::GpuObject g = driver::compileGpuObject(parsed, plan);
      std::string error;
      auto object =
          mlir::attn::rocm::inspectCodeObject(g.code.binary, error);
      ASSERT_TRUE(succeeded(object)) << error;
      const std::string &report = object->report;
      for (const char *kernel : {"_bwd_kv", "_bwd_q"}) {
        std::regex line(std::string("attn_entry_c") + kernel +
                        ": (\\d+) VGPRs, (\\d+) AGPRs, (\\d+) SGPRs, "
                        "(\\d+) VGPR spills, (\\d+) SGPR spills, (\\d+) "
                        "bytes scratch, (\\d+) bytes LDS");
        std::smatch m;
        ASSERT_TRUE(std::regex_search(report, m, line))
            << chip << " D=" << d << kernel << ":\n" << report;
        std::printf("%s D=%lld %s: %s VGPRs, %s AGPRs, %s SGPRs, spills %s "
                    "VGPR %s SGPR, scratch %s bytes, LDS %s bytes\n",
                    chip, (long long)d, kernel, m[1].str().c_str(),
                    m[2].str().c_str(), m[3].str().c_str(),
                    m[4].str().c_str(), m[5].str().c_str(),
                    m[6].str().c_str(), m[7].str().c_str());
        EXPECT_EQ(m[4].str(), "0") << chip << " D=" << d << kernel;
        EXPECT_EQ(m[6].str(), "0") << chip << " D=" << d << kernel;
      }
      EXPECT_EQ(g.spillStoreBytes, 0) << chip << " D=" << d;
    }
}

} // namespace
