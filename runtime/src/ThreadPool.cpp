//===- ThreadPool.cpp -----------------------------------------------------===//
#include "ThreadPool.h"

#include "attn/runtime.h"

#include <algorithm>
#include <cstdlib>
#include <memory>

namespace attn::detail {

unsigned cpuThreadCount() {
  if (const char *env = std::getenv("ATTN_NUM_THREADS")) {
    long n = std::strtol(env, nullptr, 10);
    if (n > 0 && n <= 1024)
      return static_cast<unsigned>(n);
  }
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : n;
}

ThreadPool::ThreadPool(unsigned threads) {
  for (unsigned i = 1; i < threads; ++i)
    workers.emplace_back([this] { workerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex);
    stopping = true;
  }
  wake.notify_all();
  for (std::thread &t : workers)
    t.join();
}

namespace {
// The pool of CPU launches; replaced only by setCpuThreadCount (tests),
// never while a launch runs.
std::mutex globalMutex;
std::unique_ptr<ThreadPool> globalPool;
} // namespace

ThreadPool &ThreadPool::global() {
  std::lock_guard<std::mutex> lock(globalMutex);
  if (!globalPool)
    globalPool = std::make_unique<ThreadPool>(cpuThreadCount());
  return *globalPool;
}

void setCpuThreadCount(unsigned threads) {
  std::lock_guard<std::mutex> lock(globalMutex);
  globalPool.reset();
  globalPool = std::make_unique<ThreadPool>(
      threads ? std::min(threads, 1024u) : cpuThreadCount());
}

void ThreadPool::runChunks() {
  while (true) {
    int64_t begin = next.fetch_add(chunkSize, std::memory_order_relaxed);
    if (begin >= total)
      return;
    int64_t end = begin + chunkSize < total ? begin + chunkSize : total;
    (*job)(begin, end);
  }
}

void ThreadPool::workerLoop() {
  uint64_t seen = 0;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mutex);
      wake.wait(lock, [&] { return stopping || generation != seen; });
      if (stopping)
        return;
      seen = generation;
      ++active;
    }
    runChunks();
    {
      std::lock_guard<std::mutex> lock(mutex);
      --active;
    }
    done.notify_all();
  }
}

void ThreadPool::parallelFor(int64_t n, int64_t chunk,
                             const std::function<void(int64_t, int64_t)> &fn) {
  if (n <= 0)
    return;
  if (workers.empty() || n <= chunk) {
    fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> launch(launchMutex);
  {
    std::lock_guard<std::mutex> lock(mutex);
    job = &fn;
    total = n;
    chunkSize = chunk < 1 ? 1 : chunk;
    next.store(0, std::memory_order_relaxed);
    ++generation;
  }
  wake.notify_all();
  runChunks();
  // Workers that woke for this job finish their chunks; ones that had not
  // woken yet find no chunk left and return immediately.
  std::unique_lock<std::mutex> lock(mutex);
  done.wait(lock, [&] { return active == 0; });
  job = nullptr;
}

} // namespace attn::detail
