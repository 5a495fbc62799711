//===- backward.cpp - backward time over forward time, per variant --------===//
//
// Training runs the forward and the backward of every layer; what a
// backward costs is best read against its own forward, measured in the
// same run on the same inputs (FlashAttention-2 reports about 2.5x). Sparse
// masks must keep their speedup in the backward: each masked variant's
// backward is also reported against the dense backward.
//
//   attn-bench-backward [--s N] [--h N] [--d N] [--reps N] [--cpu NAME]
//                       [--window N] [--docs N] [--only NAME] [--json FILE]
//
// f32, B = 1, Hq = Hkv = H, Sq = Skv = S; the forward writes lse (which
// the backward reads), the backward the gradients of q, k, v and, for the
// soft-capped variant, of its f32 param.
//
//===----------------------------------------------------------------------===//
#include "attn/jit.h"
#include "bench/Timing.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

using namespace attn;
using attn::bench::medianMs;

namespace {

struct Case {
  const char *name;
  const char *source;
};

// The masks of bench/cpu/variants.attn; documents of S / docs tokens.
const Case kCases[] = {
    {"dense", "variant dense {}"},
    {"causal", "variant causal { mask(b, h, q, kv) = kv <= q; }"},
    {"window", "variant window { param window: i32 = 256;\n"
               "  mask(b, h, q, kv) = kv <= q && q - kv < window; }"},
    {"documents", "variant documents { tensor doc: i32[B, Skv];\n"
                  "  mask(b, h, q, kv) = doc[b, q] == doc[b, kv]; }"},
    {"softcap_causal",
     "variant softcap_causal { param cap: f32 = 30.0;\n"
     "  score(s, b, h, q, kv) = cap * tanh(s / cap);\n"
     "  mask(b, h, q, kv) = kv <= q; }"},
};

} // namespace

int main(int argc, char **argv) {
  int64_t S = 8192, H = 4, D = 64, window = 256, docs = 8;
  int reps = 3;
  std::string cpu = "native", only, json;
  if (int status = attn::bench::checkOptionPairs(
          argc, argv, "attn-bench-backward",
          "[--s N] [--h N] [--d N] [--reps N] [--cpu NAME] [--window N] "
          "[--docs N] [--only NAME] [--json FILE]",
          1);
      status >= 0)
    return status;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    const char *v = argv[i + 1];
    if (a == "--s")
      S = std::atoll(v);
    else if (a == "--h")
      H = std::atoll(v);
    else if (a == "--d")
      D = std::atoll(v);
    else if (a == "--reps")
      reps = std::max(1, std::atoi(v));
    else if (a == "--cpu")
      cpu = v;
    else if (a == "--window")
      window = std::atoll(v);
    else if (a == "--docs")
      docs = std::max<int64_t>(1, std::atoll(v));
    else if (a == "--only")
      only = v;
    else if (a == "--json")
      json = v;
    else {
      std::fprintf(stderr, "attn-bench-backward: unknown option %s\n",
                   a.c_str());
      return 1;
    }
  }
  size_t n = size_t(H) * size_t(S) * size_t(D);
  std::vector<float> q(n), k(n), v(n), o(n), dO(n), dq(n), dk(n), dv(n),
      lse(size_t(H) * size_t(S));
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (std::vector<float> *x : {&q, &k, &v, &dO})
    for (float &e : *x)
      e = normal(rng);
  std::vector<int32_t> doc(static_cast<size_t>(S));
  for (int64_t i = 0; i < S; ++i)
    doc[size_t(i)] = int32_t(i / std::max<int64_t>(1, S / docs));
  float dCap = 0;

  Tensors t;
  t.q = TensorRef(q.data(), DType::f32, {1, H, S, D});
  t.k = TensorRef(k.data(), DType::f32, {1, H, S, D});
  t.v = TensorRef(v.data(), DType::f32, {1, H, S, D});
  t.o = TensorRef(o.data(), DType::f32, {1, H, S, D});
  t.lse = TensorRef(lse.data(), DType::f32, {1, H, S});
  TensorRef dORef(dO.data(), DType::f32, {1, H, S, D});

  Jit jit;
  std::string out = "{\"S\": " + std::to_string(S) +
                    ", \"H\": " + std::to_string(H) +
                    ", \"D\": " + std::to_string(D) + ", \"cpu\": \"" + cpu +
                    "\", \"variants\": [";
  std::printf("B=1 H=%lld S=%lld D=%lld f32, --cpu %s\n", (long long)H,
              (long long)S, (long long)D, cpu.c_str());
  std::printf("%-16s %12s %12s %10s %18s\n", "variant", "forward ms",
              "backward ms", "bwd/fwd", "bwd vs dense bwd");
  double denseBackward = 0;
  bool first = true;
  for (const Case &c : kCases) {
    if (!only.empty() && only != c.name)
      continue;
    Options opts;
    opts.headDim = D;
    opts.lse = true;
    opts.backward = true;
    opts.cpu = cpu;
    Kernel kernel = jit.compile(c.source, opts);
    Params params;
    if (!std::strcmp(c.name, "window"))
      params.push_back({"window", Arg(window)});
    if (!std::strcmp(c.name, "documents"))
      params.push_back({"doc", Arg(TensorRef(doc.data(), DType::i32, {1, S}))});
    Gradients grads{TensorRef(dq.data(), DType::f32, {1, H, S, D}),
                    TensorRef(dk.data(), DType::f32, {1, H, S, D}),
                    TensorRef(dv.data(), DType::f32, {1, H, S, D})};
    if (!std::strcmp(c.name, "softcap_causal"))
      grads.named.push_back({"cap", TensorRef(&dCap, DType::f32, {1})});
    double fwd = medianMs(reps, [&] { kernel.launch(t, params); });
    double bwd = medianMs(reps, [&] { kernel.backward(t, dORef, grads, params); });
    if (!std::strcmp(c.name, "dense"))
      denseBackward = bwd;
    char vsDense[32] = "-";
    if (denseBackward > 0 && std::strcmp(c.name, "dense"))
      std::snprintf(vsDense, sizeof vsDense, "%.3f", bwd / denseBackward);
    std::printf("%-16s %12.2f %12.2f %10.2f %18s\n", c.name, fwd, bwd,
                bwd / fwd, vsDense);
    char row[256];
    std::snprintf(row, sizeof row,
                  "%s{\"name\": \"%s\", \"forward_ms\": %.3f, "
                  "\"backward_ms\": %.3f, \"ratio\": %.3f}",
                  first ? "" : ", ", c.name, fwd, bwd, bwd / fwd);
    out += row;
    first = false;
  }
  out += "]}\n";
  if (!json.empty()) {
    FILE *f = std::fopen(json.c_str(), "w");
    if (!f) {
      std::fprintf(stderr, "attn-bench-backward: cannot write %s\n",
                   json.c_str());
      return 1;
    }
    std::fputs(out.c_str(), f);
    std::fclose(f);
  }
  return 0;
}
