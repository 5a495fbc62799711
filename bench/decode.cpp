//===- decode.cpp - decode throughput against a memory copy ---------------===//
//
// Decode reads the whole K/V cache once per step, so its speed is a
// bandwidth: bytes of K/V (codes and scales) read per second. This times
// GQA decode (causal, Sq = 1) over long caches for each K/V layout and, in
// the same run, a multi-threaded memcpy of the same number of bytes with
// the same thread count, and prints both and their ratio. Paged caches
// also get a copy of their pages in the order decode reads them (per kv
// head, each page of the table), which is what the memory system gives
// that layout: "page copy" and the ratio against it.
//
//   attn-bench-decode [--skv N] [--hq N] [--hkv N] [--d N] [--reps N]
//                     [--block-kv N] [--json FILE] [--only NAME] [--cpu NAME]
//
//===----------------------------------------------------------------------===//
#include "attn/jit.h"
#include "bench/Timing.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

using namespace attn;
using attn::bench::medianMs;

namespace {

/// memcpy of `bytes` split over `threads` threads.
double copyMs(size_t bytes, unsigned threads, int reps) {
  std::vector<char> src(bytes, 1), dst(bytes, 0);
  return medianMs(reps, [&] {
    std::vector<std::thread> pool;
    size_t chunk = (bytes + threads - 1) / threads;
    for (unsigned t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        size_t lo = std::min(bytes, t * chunk),
               hi = std::min(bytes, lo + chunk);
        std::memcpy(dst.data() + lo, src.data() + lo, hi - lo);
      });
    for (std::thread &th : pool)
      th.join();
  });
}

/// Copies a paged cache's K/V rows in decode's order (per kv head, split
/// over `threads`, every page of batch 0's table: its K rows, then its V
/// rows) plus the scales, into one buffer per thread.
double pageOrderCopyMs(const Tensors &t, unsigned threads, int reps) {
  const std::vector<int64_t> &shape = t.k.shape; // [pages, Hkv, page, row]
  int64_t heads = shape[1];
  size_t rowBytes = size_t(shape[2] * shape[3] * dtypeSize(t.k.dtype));
  size_t pageStride = size_t(shape[1]) * rowBytes;
  const auto *table = static_cast<const int32_t *>(t.pageTable->data);
  int64_t pages = t.pageTable->shape[1];
  size_t scaleBytes = 0;
  for (const std::optional<TensorRef> *r : {&t.kScale, &t.vScale})
    if (*r)
      scaleBytes += (*r)->numel() * 4;
  std::vector<char> scales(scaleBytes, 1);
  std::vector<std::vector<char>> dst(
      threads, std::vector<char>(2 * rowBytes * pages + scaleBytes));
  return medianMs(reps, [&] {
    std::vector<std::thread> pool;
    for (unsigned th = 0; th < threads; ++th)
      pool.emplace_back([&, th] {
        char *out = dst[th].data();
        for (int64_t h = th; h < heads; h += threads)
          for (int64_t p = 0; p < pages; ++p)
            for (const TensorRef *cache : {&t.k, &t.v}) {
              const char *page = static_cast<const char *>(cache->data) +
                                 size_t(table[p]) * pageStride +
                                 size_t(h) * rowBytes;
              std::memcpy(out + 2 * rowBytes * p +
                              (cache == &t.v ? rowBytes : 0),
                          page, rowBytes);
            }
        if (th == 0 && scaleBytes)
          std::memcpy(out + 2 * rowBytes * pages, scales.data(), scaleBytes);
      });
    for (std::thread &th : pool)
      th.join();
  });
}

struct Config {
  const char *name;
  const char *dtype;   // q/o (and K/V when not quantized)
  const char *kvDtype; // same or a code
  int64_t paged;
};

} // namespace

int main(int argc, char **argv) {
  int64_t Skv = 65536, Hq = 32, Hkv = 8, D = 128;
  int reps = 20;
  int64_t blockKV = 0;
  std::string json, only, cpu = "native";
  if (int status = attn::bench::checkOptionPairs(
          argc, argv, "attn-bench-decode",
          "[--skv N] [--hq N] [--hkv N] [--d N] [--reps N] [--block-kv N] "
          "[--json FILE] [--only NAME] [--cpu NAME]",
          2);
      status >= 0)
    return status;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    int64_t v = std::atoll(argv[i + 1]);
    if (a == "--skv") Skv = v;
    else if (a == "--hq") Hq = v;
    else if (a == "--hkv") Hkv = v;
    else if (a == "--d") D = v;
    else if (a == "--reps") reps = int(v);
    else if (a == "--block-kv") blockKV = v;
    else if (a == "--json") json = argv[i + 1];
    else if (a == "--only") only = argv[i + 1];
    else if (a == "--cpu") cpu = argv[i + 1]; // e.g. x86-64-v3: AVX2 kernels
    else {
      std::fprintf(stderr, "unknown option %s\n", argv[i]);
      return 2;
    }
  }
  const char *source =
      "variant decode { mask(b, h, q, kv) = kv <= q + (Skv - Sq); }";
  const Config configs[] = {
      {"f32", "f32", "same", 0},          {"bf16", "bf16", "same", 0},
      {"bf16 paged 16", "bf16", "same", 16}, {"int8", "bf16", "int8", 0},
      {"int8 paged 16", "bf16", "int8", 16}, {"int8 paged 64", "bf16", "int8", 64},
      {"fp8e4m3", "bf16", "fp8e4m3", 0},
      {"int4", "bf16", "int4", 0},
  };
  unsigned threads = detail::cpuThreadCount();
  std::printf("decode: B=1 Hq=%lld Hkv=%lld Sq=1 Skv=%lld D=%lld, %u "
              "threads\n",
              (long long)Hq, (long long)Hkv, (long long)Skv, (long long)D,
              threads);
  std::printf("%-16s %9s %10s %10s %11s %7s %11s %7s\n", "K/V", "ms",
              "MB read", "GB/s", "copy GB/s", "ratio", "page copy", "ratio");
  Jit jit;
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::vector<float> q(Hq * D), k(Hkv * Skv * D), v(Hkv * Skv * D);
  for (float &x : q) x = normal(rng);
  for (float &x : k) x = normal(rng);
  for (float &x : v) x = normal(rng);
  std::vector<uint16_t> qb(q.size()), kb(k.size()), vb(v.size());
  auto toBf16 = [](const std::vector<float> &a, std::vector<uint16_t> &b) {
    for (size_t i = 0; i < a.size(); ++i) {
      uint32_t bits;
      std::memcpy(&bits, &a[i], 4);
      b[i] = uint16_t((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
    }
  };
  toBf16(q, qb);
  toBf16(k, kb);
  toBf16(v, vb);
  std::string rows;
  double bf16Ms = 0, int8Ms = 0;
  for (const Config &c : configs) {
    // --only NAME: one row (and its bf16 baseline for the ratio).
    if (!only.empty() && only != c.name && std::string(c.name) != "bf16")
      continue;
    Options o;
    o.headDim = D;
    o.dtype = c.dtype;
    o.kvDtype = c.kvDtype;
    o.paged = c.paged;
    o.blockKV = blockKV;
    o.cpu = cpu;
    Kernel kernel = jit.compile(source, o);
    bool bf = std::string(c.dtype) == "bf16";
    DType dt = bf ? DType::bf16 : DType::f32;
    void *qp = bf ? static_cast<void *>(qb.data()) : q.data();
    void *kp = bf ? static_cast<void *>(kb.data()) : k.data();
    void *vp = bf ? static_cast<void *>(vb.data()) : v.data();
    std::vector<float> out(Hq * D * 2);
    Tensors t;
    t.q = TensorRef(qp, dt, {1, Hq, 1, D});
    t.o = TensorRef(out.data(), dt, {1, Hq, 1, D});
    KVCache cache = KVCache::build(kernel.info(),
                                   TensorRef(kp, dt, {1, Hkv, Skv, D}),
                                   TensorRef(vp, dt, {1, Hkv, Skv, D}));
    cache.bind(t);
    size_t bytes = 0;
    for (const TensorRef *r : {&t.k, &t.v})
      bytes += r->numel() * dtypeSize(r->dtype);
    for (const std::optional<TensorRef> *r : {&t.kScale, &t.vScale})
      if (*r)
        bytes += (*r)->numel() * 4;
    double ms = medianMs(reps, [&] { kernel.launch(t); });
    double copy = copyMs(bytes, threads, reps);
    double gbs = bytes / (ms * 1e6), copyGbs = bytes / (copy * 1e6);
    double pageGbs = 0;
    if (c.paged)
      pageGbs = bytes / (pageOrderCopyMs(t, threads, reps) * 1e6);
    std::printf("%-16s %9.3f %10.1f %10.2f %11.2f %7.2f", c.name, ms,
                bytes / 1e6, gbs, copyGbs, gbs / copyGbs);
    if (c.paged)
      std::printf(" %11.2f %7.2f", pageGbs, gbs / pageGbs);
    std::printf("\n");
    if (std::string(c.name) == "bf16")
      bf16Ms = ms;
    if (std::string(c.name) == "int8")
      int8Ms = ms;
    char row[256];
    std::snprintf(row, sizeof row,
                  "%s{\"kv\": \"%s\", \"ms\": %.4f, \"bytes\": %zu, "
                  "\"gbps\": %.3f, \"copy_gbps\": %.3f, "
                  "\"page_copy_gbps\": %.3f}",
                  rows.empty() ? "" : ", ", c.name, ms, bytes, gbs, copyGbs,
                  pageGbs);
    rows += row;
  }
  std::printf("int8 / bf16 decode time: %.2f\n", int8Ms / bf16Ms);
  if (!json.empty()) {
    FILE *f = std::fopen(json.c_str(), "w");
    if (!f)
      return 1;
    std::fprintf(f,
                 "{\"skv\": %lld, \"hq\": %lld, \"hkv\": %lld, \"d\": %lld, "
                 "\"threads\": %u, \"rows\": [%s]}\n",
                 (long long)Skv, (long long)Hq, (long long)Hkv, (long long)D,
                 threads, rows.c_str());
    std::fclose(f);
  }
  return 0;
}
