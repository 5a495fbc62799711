//===- Timing.h - median wall time of a benchmarked call ------------------===//
#ifndef ATTN_BENCH_TIMING_H
#define ATTN_BENCH_TIMING_H

#include <algorithm>
#include <chrono>
#include <functional>
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

} // namespace attn::bench

#endif // ATTN_BENCH_TIMING_H
