//===- jit_latency.cpp - how fast attn::Jit hands out kernels -------------===//
//
// For every example file: a cold compile (empty caches), an in-process
// cache hit (same Jit), and a disk-cache hit (a new Jit, as a new process
// would do). Prints a table and the medians.
//
//===----------------------------------------------------------------------===//
#include "attn/jit.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

namespace fs = std::filesystem;

static double msSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now() - t0)
      .count();
}

static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

int main(int argc, char **argv) {
  std::string examples = argc > 1 ? argv[1] : "examples";
  fs::path cache = fs::temp_directory_path() / "attnc-jit-latency";
  fs::remove_all(cache);
  std::vector<fs::path> files;
  for (const auto &e : fs::directory_iterator(examples))
    if (e.path().extension() == ".attn")
      files.push_back(e.path());
  std::sort(files.begin(), files.end());
  std::vector<double> cold, memory, disk;
  std::printf("%-26s %10s %12s %12s\n", "file (first variant)", "cold ms",
              "memory us", "disk ms");
  for (const fs::path &f : files) {
    std::ifstream in(f);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string source = ss.str();
    size_t at = source.find("variant ");
    size_t end = source.find_first_of(" {", at + 8);
    attn::Options o;
    o.headDim = 64;
    o.variant = source.substr(at + 8, end - at - 8);
    attn::Jit jit(cache.string());
    auto t0 = std::chrono::steady_clock::now();
    jit.compile(source, o, f.string());
    double c = msSince(t0);
    t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 1000; ++i)
      jit.compile(source, o, f.string());
    double m = msSince(t0) / 1000 * 1000; // microseconds per hit
    attn::Jit fresh(cache.string());
    t0 = std::chrono::steady_clock::now();
    fresh.compile(source, o, f.string());
    double d = msSince(t0);
    cold.push_back(c);
    memory.push_back(m);
    disk.push_back(d);
    std::printf("%-26s %10.1f %12.1f %12.2f\n", f.filename().c_str(), c, m,
                d);
  }
  std::printf("median: cold %.1f ms, memory hit %.1f us, disk hit %.2f ms "
              "(max cold %.1f ms)\n",
              median(cold), median(memory), median(disk),
              *std::max_element(cold.begin(), cold.end()));
  fs::remove_all(cache);
  return 0;
}
