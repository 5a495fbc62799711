// One variant, shipped ahead of time and compiled at run time: the two
// kernels must agree.
#include "attn/jit.h"
#include "sliding.h"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <vector>

int main() {
  int64_t B = 2, Hq = 8, Hkv = 2, S = 300, D = 64;
  std::vector<float> q(B * Hq * S * D), k(B * Hkv * S * D), v(k.size());
  for (size_t i = 0; i < q.size(); ++i)
    q[i] = std::sin(0.013 * i);
  for (size_t i = 0; i < k.size(); ++i) {
    k[i] = std::cos(0.007 * i);
    v[i] = std::sin(0.029 * i + 1);
  }
  std::vector<float> aot(q.size()), jit(q.size());
  auto tensors = [&](std::vector<float> &o) {
    return attn::Tensors{
        attn::TensorRef(q.data(), attn::DType::f32, {B, Hq, S, D}),
        attn::TensorRef(k.data(), attn::DType::f32, {B, Hkv, S, D}),
        attn::TensorRef(v.data(), attn::DType::f32, {B, Hkv, S, D}),
        attn::TensorRef(o.data(), attn::DType::f32, {B, Hq, S, D}),
        std::nullopt};
  };

  // AOT: the bundle and its typed launcher from the build.
  sliding::sliding_sink shipped(sliding::load());
  sliding::sliding_sink::Params params;
  params.window = 128;
  shipped(tensors(aot), params);

  // JIT: the same source compiled now (cached in memory and on disk).
  std::ifstream in(SLIDING_SOURCE);
  std::stringstream source;
  source << in.rdbuf();
  attn::Jit compiler;
  attn::Kernel kernel = compiler.compile(
      source.str(), attn::Options{.target = "cpu", .headDim = 64});
  kernel.launch(tensors(jit), {{"window", 128}});

  double maxDiff = 0;
  for (size_t i = 0; i < aot.size(); ++i)
    maxDiff = std::max(maxDiff, double(std::fabs(aot[i] - jit[i])));
  std::printf("host_example: AOT vs JIT max |diff| = %.3g over %zu values\n",
              maxDiff, aot.size());
  return maxDiff <= 1e-6 ? 0 : 1;
}
