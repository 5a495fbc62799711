//===- Timing.h - median wall time of a benchmarked call, option pairs ----===//
#ifndef ATTN_BENCH_TIMING_H
#define ATTN_BENCH_TIMING_H

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace attn::bench {

/// The median of `reps` timed calls of `fn` in milliseconds, after one
/// untimed warm-up call.
inline double medianMs(int reps, const std::function<void()> &fn) {
  fn(); // warm-up
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    auto t1 = std::chrono::steady_clock::now();
    t.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

/// The bench tools read `--name value` pairs: a lone last option (--help,
/// or a value left off) would be skipped and the run go on with the
/// defaults. Returns the exit status to stop with (0 after --help's usage,
/// `failure` after an error), or -1 when the options pair up.
inline int checkOptionPairs(int argc, char **argv, const char *tool,
                            const char *usage, int failure) {
  if (argc % 2 == 1)
    return -1;
  bool help = std::string(argv[argc - 1]) == "--help";
  if (!help)
    std::fprintf(stderr, "%s: %s without its value\n", tool, argv[argc - 1]);
  std::fprintf(help ? stdout : stderr, "usage: %s %s\n", tool, usage);
  return help ? 0 : failure;
}

} // namespace attn::bench

#endif // ATTN_BENCH_TIMING_H
