//===- ThreadPool.h - the CPU launcher's worker threads -------------------===//
#ifndef ATTN_RUNTIME_THREADPOOL_H
#define ATTN_RUNTIME_THREADPOOL_H

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace attn::detail {

/// Threads created once and reused by every launch: no thread creation or
/// allocation on the launch path. Items are handed out in chunks through an
/// atomic counter, so uneven work (causal rows) balances itself.
class ThreadPool {
public:
  explicit ThreadPool(unsigned threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool &) = delete;
  ThreadPool &operator=(const ThreadPool &) = delete;

  static ThreadPool &global();
  unsigned size() const { return static_cast<unsigned>(workers.size()) + 1; }

  /// Runs fn(begin, end) over [0, n) in chunks of `chunk` on all threads
  /// (the caller included); returns when every chunk is done.
  void parallelFor(int64_t n, int64_t chunk,
                   const std::function<void(int64_t, int64_t)> &fn);

private:
  void workerLoop();
  void runChunks();

  std::vector<std::thread> workers;
  std::mutex launchMutex; // one parallelFor at a time
  std::mutex mutex;
  std::condition_variable wake, done;
  uint64_t generation = 0;
  unsigned active = 0;
  bool stopping = false;

  // The job being run.
  const std::function<void(int64_t, int64_t)> *job = nullptr;
  int64_t total = 0, chunkSize = 1;
  std::atomic<int64_t> next{0};
};

} // namespace attn::detail

#endif // ATTN_RUNTIME_THREADPOOL_H
