//===- sgemm_roofline.cpp - the matmul floor of attention -----------------===//
//
// Times OpenBLAS sgemm computing just the two products of attention,
// S = Q K^T and O = P V, for every head: the work a fused kernel cannot
// avoid, with none of the softmax. Prints one JSON object.
//
//   attn-sgemm-roofline B H S D [reps]
//
//===----------------------------------------------------------------------===//
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

int main(int argc, char **argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s B H S D [reps]\n", argv[0]);
    return 2;
  }
  long B = std::atol(argv[1]), H = std::atol(argv[2]), S = std::atol(argv[3]),
       D = std::atol(argv[4]);
  int reps = argc > 5 ? std::atoi(argv[5]) : 3;
  std::mt19937 rng(0);
  std::normal_distribution<float> normal;
  std::vector<float> q(S * D), k(S * D), v(S * D), scores(S * S), o(S * D);
  for (float &x : q) x = normal(rng);
  for (float &x : k) x = normal(rng);
  for (float &x : v) x = normal(rng);
  auto once = [&] {
    // One head at a time, as attention needs it; the S x S score matrix is
    // what a fused kernel never materializes.
    for (long bh = 0; bh < B * H; ++bh) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, S, S, D, 1.0f,
                  q.data(), D, k.data(), D, 0.0f, scores.data(), S);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, S, D, S, 1.0f,
                  scores.data(), S, v.data(), D, 0.0f, o.data(), D);
    }
  };
  once();
  std::vector<double> times;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    once();
    times.push_back(std::chrono::duration<double, std::milli>(
                        std::chrono::steady_clock::now() - t0)
                        .count());
  }
  std::sort(times.begin(), times.end());
  double ms = times[times.size() / 2];
  double flops = 4.0 * B * H * S * S * D;
  std::printf("{\"ms\": %.3f, \"gflops\": %.1f}\n", ms, flops / ms / 1e6);
  return 0;
}
