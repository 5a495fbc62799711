//===- peak.cpp - the machine's own limits, for bench/cpu's fractions -----===//
//
// attn-bench-peak [--isa auto|avx512|avx2] [--cpu LEVEL] [--threads N]
//                 [--seconds S] [--json]
//
// f32 FMA throughput from a loop that keeps its accumulators in registers
// (no loads), per core and on every thread; the 8-bit integer dot-product
// rate (AVX-512 VNNI vpdpbusd, or AVX2's vpmaddubsw + vpmaddwd + vpaddd
// where there is no VNNI); and read bandwidth (a sum over a buffer far
// larger than the caches, on every thread). The ISA is the one the kernels
// use: the host's best (auto), or the one a --cpu level implies
// (x86-64-v3: AVX2, x86-64-v4 / native on an AVX-512 host: AVX-512).
//
//===----------------------------------------------------------------------===//
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

// Independent accumulators: enough to cover the FMA latency on two pipes.
constexpr int kChains = 12;
constexpr int64_t kInner = 1 << 16;

using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

/// f32 FLOPs done by `iters` rounds of kChains 16-wide FMAs.
__attribute__((target("avx512f"))) double fmaAvx512(int64_t iters,
                                                     float seed) {
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i)
    acc[i] = _mm512_set1_ps(seed + i);
  __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (int64_t n = 0; n < iters; ++n)
    for (int i = 0; i < kChains; ++i)
      acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  __m512 s = acc[0];
  for (int i = 1; i < kChains; ++i)
    s = _mm512_add_ps(s, acc[i]);
  volatile float sink = _mm512_reduce_add_ps(s);
  (void)sink;
  return double(iters) * kChains * 16 * 2;
}

__attribute__((target("avx2,fma"))) double fmaAvx2(int64_t iters,
                                                   float seed) {
  __m256 acc[kChains];
  for (int i = 0; i < kChains; ++i)
    acc[i] = _mm256_set1_ps(seed + i);
  __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (int64_t n = 0; n < iters; ++n)
    for (int i = 0; i < kChains; ++i)
      acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  __m256 s = acc[0];
  for (int i = 1; i < kChains; ++i)
    s = _mm256_add_ps(s, acc[i]);
  float out[8];
  _mm256_storeu_ps(out, s);
  volatile float sink = out[0];
  (void)sink;
  return double(iters) * kChains * 8 * 2;
}

/// u8 x s8 multiply-adds done by `iters` rounds of kChains vpdpbusd.
__attribute__((target("avx512f,avx512vnni"))) double dotVnni(int64_t iters,
                                                             int seed) {
  __m512i acc[kChains];
  for (int i = 0; i < kChains; ++i)
    acc[i] = _mm512_set1_epi32(seed + i);
  __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
  for (int64_t n = 0; n < iters; ++n)
    for (int i = 0; i < kChains; ++i)
      acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
  __m512i s = acc[0];
  for (int i = 1; i < kChains; ++i)
    s = _mm512_add_epi32(s, acc[i]);
  volatile int sink = _mm512_reduce_add_epi32(s);
  (void)sink;
  return double(iters) * kChains * 64;
}

/// The same multiply-adds without VNNI: u8 x s8 pairs to i16
/// (vpmaddubsw), pairs of those to i32 (vpmaddwd by ones), accumulated.
/// Six chains, each with its own u8 operand: AVX2 has 16 registers.
__attribute__((target("avx2"))) double dotAvx2(int64_t iters, int seed) {
  constexpr int kPairs = 6;
  __m256i acc[kPairs], a[kPairs];
  for (int i = 0; i < kPairs; ++i) {
    acc[i] = _mm256_set1_epi32(seed + i);
    a[i] = _mm256_set1_epi8(char(3 + i));
  }
  __m256i b = _mm256_set1_epi8(-2), ones = _mm256_set1_epi16(1);
  for (int64_t n = 0; n < iters; ++n) {
    // The products do not depend on the accumulators: keep the compiler
    // from computing them once outside the loop (costs no instruction).
    for (int i = 0; i < kPairs; ++i)
      __asm__("" : "+x"(a[i]));
    for (int i = 0; i < kPairs; ++i)
      acc[i] = _mm256_add_epi32(
          acc[i], _mm256_madd_epi16(_mm256_maddubs_epi16(a[i], b), ones));
  }
  __m256i s = acc[0];
  for (int i = 1; i < kPairs; ++i)
    s = _mm256_add_epi32(s, acc[i]);
  int out[8];
  _mm256_storeu_si256(reinterpret_cast<__m256i *>(out), s);
  volatile int sink = out[0];
  (void)sink;
  return double(iters) * kPairs * 32;
}

/// Sums `n` floats (vectorized by the compiler); returns the bytes read.
__attribute__((target("avx2"))) double readSum(const float *p, size_t n,
                                               float &out) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm256_add_ps(s0, _mm256_load_ps(p + i));
    s1 = _mm256_add_ps(s1, _mm256_load_ps(p + i + 8));
    s2 = _mm256_add_ps(s2, _mm256_load_ps(p + i + 16));
    s3 = _mm256_add_ps(s3, _mm256_load_ps(p + i + 24));
  }
  float t[8];
  _mm256_storeu_ps(t, _mm256_add_ps(_mm256_add_ps(s0, s1),
                                    _mm256_add_ps(s2, s3)));
  out = t[0];
  return double(i) * sizeof(float);
}

/// Rate (units per second) of `work` run on `threads` threads for about
/// `seconds`, best of three.
template <typename Work>
double rate(int threads, double seconds, Work work) {
  double best = 0;
  for (int round = 0; round < 3; ++round) {
    std::atomic<bool> stop{false};
    std::vector<double> done(threads, 0);
    std::vector<std::thread> pool;
    auto t0 = Clock::now();
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        while (!stop.load(std::memory_order_relaxed))
          done[t] += work(t);
      });
    while (secondsSince(t0) < seconds / 3)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    stop = true;
    for (std::thread &th : pool)
      th.join();
    double total = 0;
    for (double d : done)
      total += d;
    best = std::max(best, total / secondsSince(t0));
  }
  return best;
}

struct Result {
  std::string isa, dot;
  int threads = 1;
  double fmaCore = 0, fmaAll = 0, dotCore = 0, dotAll = 0, readAll = 0;
};

bool hostHasAvx512() {
  return __builtin_cpu_supports("avx512f");
}

} // namespace

int main(int argc, char **argv) {
  std::string isa = "auto";
  int threads = int(std::thread::hardware_concurrency());
  if (const char *env = std::getenv("ATTN_NUM_THREADS"))
    threads = std::atoi(env);
  double seconds = 1.5;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "attn-bench-peak: %s needs a value\n", a.c_str());
        std::exit(1);
      }
      return argv[++i];
    };
    if (a == "--isa")
      isa = next();
    else if (a == "--cpu") {
      // The level the kernels were compiled for decides the vector width.
      std::string cpu = next();
      isa = cpu == "x86-64-v3" || cpu == "haswell" || cpu == "znver3"
                ? "avx2"
                : "auto";
    } else if (a == "--threads")
      threads = std::max(1, std::atoi(next().c_str()));
    else if (a == "--seconds")
      seconds = std::max(0.03, std::atof(next().c_str()));
    else if (a == "--json")
      json = true;
    else {
      std::fprintf(stderr,
                   "usage: attn-bench-peak [--isa auto|avx512|avx2] [--cpu "
                   "LEVEL] [--threads N] [--seconds S] [--json]\n");
      return 1;
    }
  }
  if (isa == "auto")
    isa = hostHasAvx512() ? "avx512" : "avx2";
  if (isa == "avx512" && !hostHasAvx512()) {
    std::fprintf(stderr, "attn-bench-peak: this CPU has no AVX-512\n");
    return 1;
  }
  if (isa == "avx2" &&
      !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) {
    std::fprintf(stderr, "attn-bench-peak: this CPU has no AVX2 and FMA\n");
    return 1;
  }
  if (isa != "avx512" && isa != "avx2") {
    std::fprintf(stderr, "attn-bench-peak: --isa avx512 or avx2\n");
    return 1;
  }
  bool wide = isa == "avx512";
  bool vnni = wide && __builtin_cpu_supports("avx512vnni");
  Result r;
  r.isa = isa;
  r.dot = vnni ? "vpdpbusd" : "vpmaddubsw+vpmaddwd";
  r.threads = threads;
  auto fma = [&](int t) {
    return wide ? fmaAvx512(kInner, float(t)) : fmaAvx2(kInner, float(t));
  };
  auto dot = [&](int t) {
    return vnni ? dotVnni(kInner, t) : dotAvx2(kInner, t);
  };
  r.fmaCore = rate(1, seconds, fma);
  r.fmaAll = rate(threads, seconds, fma);
  r.dotCore = rate(1, seconds, dot);
  r.dotAll = rate(threads, seconds, dot);
  // 256 MB per thread at most 1 GB: far past any last-level cache.
  size_t perThread =
      std::min<size_t>(size_t(256) << 20, (size_t(1) << 30) / threads) /
      sizeof(float);
  std::vector<float *> buffers(threads);
  for (int t = 0; t < threads; ++t) {
    buffers[t] = static_cast<float *>(
        std::aligned_alloc(64, perThread * sizeof(float)));
    std::memset(buffers[t], 0, perThread * sizeof(float));
  }
  std::vector<float> sinks(threads);
  r.readAll = rate(threads, seconds, [&](int t) {
    return readSum(buffers[t], perThread, sinks[t]);
  });
  for (float *b : buffers)
    std::free(b);
  if (json) {
    std::printf("{\"isa\": \"%s\", \"dot\": \"%s\", \"threads\": %d, "
                "\"fma_gflops_core\": %.2f, \"fma_gflops\": %.2f, "
                "\"dot_gops_core\": %.2f, \"dot_gops\": %.2f, "
                "\"read_gbps\": %.2f}\n",
                r.isa.c_str(), r.dot.c_str(), r.threads, r.fmaCore / 1e9,
                r.fmaAll / 1e9, r.dotCore / 1e9, r.dotAll / 1e9,
                r.readAll / 1e9);
    return 0;
  }
  std::printf("ISA %s, %d threads\n", r.isa.c_str(), r.threads);
  std::printf("f32 FMA:     %8.1f GFLOP/s per core, %8.1f in total\n",
              r.fmaCore / 1e9, r.fmaAll / 1e9);
  std::printf("int8 dot (%s): %8.1f GOP/s per core, %8.1f in total "
              "(multiply-adds)\n",
              r.dot.c_str(), r.dotCore / 1e9, r.dotAll / 1e9);
  std::printf("read bandwidth: %8.1f GB/s on %d threads\n", r.readAll / 1e9,
              r.threads);
  return 0;
}
