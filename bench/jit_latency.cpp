//===- jit_latency.cpp - how fast attn::Jit hands out kernels -------------===//
//
// For every example file: a cold compile (empty caches) of the code a
// prefill launch needs (more than 16 rows per K/V head; CPU kernels build
// each class of launch at its first use), then the code decode needs (at
// most 16 rows), an in-process cache hit (same Jit), and a disk-cache hit
// (a new Jit, as a new process would do). Prints a table and the medians;
// "eager" is the baseline in the same run: one object with every class
// (what an AOT bundle holds, and what the JIT built before it built the
// classes lazily), compiled through the driver without caches. The JIT
// compiles the split-KV merge and block-map entries at their first call
// (most launches call neither): "deferred" is what that costs, once per
// class, for decode's class (compiled through the driver).
//
//===----------------------------------------------------------------------===//
#include "attn/jit.h"
#include "lib/Driver/Compiler.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
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

/// CPU time of this process in ms: on a shared machine the wall time also
/// counts the time other processes held the cores.
static double cpuMs() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

static double maxOf(const std::vector<double> &v) {
  return v.empty() ? 0 : *std::max_element(v.begin(), v.end());
}

/// attn-jit-latency --dump OUT DIR...: the objects the compiler makes for
/// every variant of every .attn file in the DIRs (the JIT's prefill and
/// decode classes, each with its deferred entries, and the eager object
/// with every class) for native and x86-64-v3 code, D = 64 and 128, f32
/// and int8 K/V, written to OUT. Two compilers' OUTs compare byte for byte:
/// a change to the compiler that keeps them equal keeps the machine code.
static int dumpObjects(const std::string &out, std::vector<std::string> dirs) {
  fs::create_directories(out);
  std::vector<fs::path> files;
  for (const std::string &dir : dirs)
    for (const auto &e : fs::directory_iterator(dir))
      if (e.path().extension() == ".attn")
        files.push_back(e.path());
  std::sort(files.begin(), files.end());
  struct Config {
    const char *name;
    int64_t headDim;
    const char *kvDtype;
  };
  const Config configs[] = {
      {"d64", 64, "same"}, {"d128", 128, "same"}, {"d128-int8", 128, "int8"}};
  int written = 0;
  auto write = [&](const std::string &name, const std::string &bytes) {
    std::ofstream(fs::path(out) / name, std::ios::binary) << bytes;
    ++written;
  };
  for (const fs::path &f : files) {
    std::ifstream in(f);
    std::stringstream ss;
    ss << in.rdbuf();
    attn::driver::Source parsed(ss.str(), f.string());
    std::string stem = f.parent_path().filename().string() + "-" +
                       f.stem().string();
    for (const auto &variant : parsed.program.variants)
      for (const char *cpu : {"native", "x86-64-v3"})
        for (const Config &c : configs) {
          std::string base = stem + "." + variant.name + "." + cpu + "." +
                             c.name;
          attn::Options o;
          o.variant = variant.name;
          o.cpu = cpu;
          o.headDim = c.headDim;
          o.kvDtype = c.kvDtype;
          try {
            attn::driver::KernelPlan plan =
                attn::driver::planKernel(parsed, o);
            write(base + ".all.o",
                  attn::driver::compileCpuObject(parsed, plan).object);
            for (const char *rows : {"many", "few"}) {
              plan.rows = rows;
              attn::driver::CpuJitCode code =
                  attn::driver::compileCpuJitCode(parsed, plan);
              write(base + "." + rows + ".o", code.now.object);
              write(base + "." + rows + ".deferred.o",
                    attn::driver::compileCpuDeferred(parsed, plan,
                                                     code.deferred)
                        .object);
            }
          } catch (const std::exception &e) {
            write(base + ".error", e.what());
          }
        }
  }
  std::printf("%d files written to %s\n", written, out.c_str());
  return 0;
}

int main(int argc, char **argv) {
  if (argc > 2 && std::string(argv[1]) == "--dump")
    return dumpObjects(argv[2], std::vector<std::string>(argv + 3, argv + argc));
  // attn-jit-latency [EXAMPLES_DIR] [CPU]: CPU as attnc --cpu (e.g.
  // x86-64-v3 for AVX2 code; default native).
  std::string examples = argc > 1 ? argv[1] : "examples";
  std::string cpu = argc > 2 ? argv[2] : "native";
  // A third argument "classes": only the JIT's classes (and the cache
  // hits), not the eager and deferred baselines, for quicker comparisons.
  bool classesOnly = argc > 3 && std::string(argv[3]) == "classes";
  fs::path cache = fs::temp_directory_path() / "attnc-jit-latency";
  fs::remove_all(cache);
  std::vector<fs::path> files;
  for (const auto &e : fs::directory_iterator(examples))
    if (e.path().extension() == ".attn")
      files.push_back(e.path());
  std::sort(files.begin(), files.end());
  std::vector<double> eager, eagerCpu, cold, coldCpu, decode, decodeCpu, all,
      allCpu, memory, disk, deferredCpu;
  std::printf("%-22s %9s %7s %9s %7s %9s %7s %9s %9s %8s %8s\n",
              "file (first variant)", "eager ms", "cpu", "cold ms", "cpu",
              "decode ms", "cpu", "both ms", "memory us", "disk ms",
              "deferred");
  for (const fs::path &f : files) {
    std::ifstream in(f);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string source = ss.str();
    size_t at = source.find("variant ");
    size_t end = source.find_first_of(" {", at + 8);
    attn::Options o;
    o.headDim = 64;
    o.cpu = cpu;
    o.variant = source.substr(at + 8, end - at - 8);
    auto t0 = std::chrono::steady_clock::now();
    double cpu0 = cpuMs();
    if (!classesOnly) {
      attn::driver::Source parsed(source, f.string());
      attn::driver::KernelPlan plan = attn::driver::planKernel(parsed, o);
      attn::driver::compileCpuObject(parsed, plan); // plan.rows = all
    }
    double e = msSince(t0), ec = cpuMs() - cpu0;
    double dfc = 0;
    if (!classesOnly) {
      attn::driver::Source parsed(source, f.string());
      attn::driver::KernelPlan plan = attn::driver::planKernel(parsed, o);
      plan.rows = "few";
      attn::driver::CpuJitCode code =
          attn::driver::compileCpuJitCode(parsed, plan);
      cpu0 = cpuMs();
      attn::driver::compileCpuDeferred(parsed, plan, code.deferred);
      dfc = cpuMs() - cpu0;
    }
    attn::Jit jit(cache.string());
    // Prefill (1 head, 1024 queries) and decode (GQA group of 4, 1 query).
    t0 = std::chrono::steady_clock::now();
    cpu0 = cpuMs();
    attn::Kernel kernel = jit.compile(source, o, f.string());
    kernel.prepare(1, 1, 1024);
    double c = msSince(t0), cc = cpuMs() - cpu0;
    t0 = std::chrono::steady_clock::now();
    cpu0 = cpuMs();
    kernel.prepare(4, 1, 1);
    double dc = msSince(t0), dcc = cpuMs() - cpu0;
    t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 1000; ++i)
      jit.compile(source, o, f.string());
    double m = msSince(t0) / 1000 * 1000; // microseconds per hit
    attn::Jit fresh(cache.string());
    t0 = std::chrono::steady_clock::now();
    fresh.compile(source, o, f.string()).prepare(1, 1, 1024);
    double d = msSince(t0);
    eager.push_back(e);
    eagerCpu.push_back(ec);
    cold.push_back(c);
    coldCpu.push_back(cc);
    decode.push_back(dc);
    decodeCpu.push_back(dcc);
    all.push_back(c + dc);
    allCpu.push_back(cc + dcc);
    memory.push_back(m);
    disk.push_back(d);
    deferredCpu.push_back(dfc);
    std::printf(
        "%-22s %9.1f %7.1f %9.1f %7.1f %9.1f %7.1f %9.1f %9.1f %8.2f %8.1f\n",
        f.filename().c_str(), e, ec, c, cc, dc, dcc, c + dc, m, d, dfc);
  }
  std::printf("eager, every class: median %.1f ms, max %.1f ms; cpu median "
              "%.1f ms, max %.1f ms\n",
              median(eager), maxOf(eager), median(eagerCpu), maxOf(eagerCpu));
  std::printf("cold (prefill): median %.1f ms, max %.1f ms; cpu median %.1f "
              "ms, max %.1f ms\n",
              median(cold), maxOf(cold), median(coldCpu), maxOf(coldCpu));
  std::printf("decode: median %.1f ms, max %.1f ms; cpu median %.1f ms, max "
              "%.1f ms\n",
              median(decode), maxOf(decode), median(decodeCpu),
              maxOf(decodeCpu));
  std::printf("both classes: median %.1f ms, max %.1f ms; cpu median %.1f "
              "ms, max %.1f ms\n",
              median(all), maxOf(all), median(allCpu), maxOf(allCpu));
  std::printf("memory hit %.1f us, disk hit %.2f ms (medians)\n",
              median(memory), median(disk));
  std::printf("deferred entries (decode class, at their first call): cpu "
              "median %.1f ms, max %.1f ms\n",
              median(deferredCpu), maxOf(deferredCpu));
  fs::remove_all(cache);
  return 0;
}
