//===- Jit.cpp - attn::Jit: compile from host code, cached ----------------===//
//
// Three levels: an in-memory map (a kernel per key, shared by all threads;
// concurrent requests for one key compile once), an on-disk cache of
// compiled objects (ATTNC_CACHE_DIR, default ~/.cache/attnc) that a new
// process loads without running the compiler, and the compiler itself.
// The key covers the compiler version, the code generation target, every
// option and the source text.
//
//===----------------------------------------------------------------------===//
#include "attn/jit.h"

#include "lib/Driver/Compiler.h"
#include "lib/Target/CPU/CPUTarget.h"
#include "runtime/support/Manifest.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/SHA256.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>
#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

namespace attn {

namespace {

std::string defaultCacheDir() {
  if (const char *env = std::getenv("ATTNC_CACHE_DIR"))
    return std::string(env) == "off" ? "" : env;
  if (const char *xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg)
    return std::string(xdg) + "/attnc";
  if (const char *home = std::getenv("HOME"); home && *home)
    return std::string(home) + "/.cache/attnc";
  return "";
}

std::string hexDigest(const std::string &text) {
  auto digest = llvm::SHA256::hash(llvm::ArrayRef<uint8_t>(
      reinterpret_cast<const uint8_t *>(text.data()), text.size()));
  std::string hex;
  char buf[3];
  for (uint8_t byte : digest) {
    std::snprintf(buf, sizeof buf, "%02x", byte);
    hex += buf;
  }
  return hex;
}

/// Identifies this build of the compiler: the size and modification time of
/// the library holding it, so a rebuilt attnc never reuses another build's
/// objects even when the version number is unchanged.
const std::string &compilerBuildId() {
  static const std::string id = [] {
    Dl_info info;
    struct stat st;
    if (dladdr(reinterpret_cast<void *>(&defaultCacheDir), &info) &&
        info.dli_fname && ::stat(info.dli_fname, &st) == 0)
      return std::to_string(st.st_size) + "-" +
             std::to_string(st.st_mtim.tv_sec) + "." +
             std::to_string(st.st_mtim.tv_nsec);
    return std::string("unknown");
  }();
  return id;
}

/// Everything that changes the generated code.
std::string cacheKey(const std::string &source, const Options &o) {
  cpu::CodegenTarget target = cpu::CodegenTarget::named(o.cpu);
  std::ostringstream key;
  key << driver::compilerVersion() << '|' << compilerBuildId() << '\n'
      << target.triple << '|' << target.cpu << '|' << target.features << '\n'
      << o.target << '|' << o.headDim << '|' << o.valueHeadDim << '|'
      << o.dtype << '|' << o.kvDtype << '|' << o.kvGroup << '|' << o.blockQ << '|' << o.blockKV
      << '|' << o.lse << '|' << o.variant << '|' << o.paged << '|'
      << o.splitKv << '|' << o.gpuLoads << '|' << o.backward << '\n'
      << source;
  return hexDigest(key.str());
}

std::string hex64(uint64_t v) {
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

bool readFile(const std::string &path, std::string &out) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return false;
  std::stringstream ss;
  ss << in.rdbuf();
  out = ss.str();
  return true;
}

/// Writes through a private temporary and a rename, so readers never see a
/// partial file.
bool writeAtomically(const std::string &path, const std::string &bytes) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." +
                    std::to_string(std::hash<std::thread::id>()(
                        std::this_thread::get_id()));
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), bytes.size());
    if (!out) {
      std::remove(tmp.c_str());
      return false;
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return false;
  }
  return true;
}

} // namespace


/// The disk cache and the compiler behind a Jit. Shared with the lazy CPU
/// kernels it hands out, which build their code at first launch, perhaps
/// after the Jit is gone.
struct JitCache : std::enable_shared_from_this<JitCache> {
  std::atomic<uint64_t> memoryHits{0}, diskHits{0}, compiles{0};
  std::string cacheDir;

  /// A cached object for `key`, if one is there and intact.
  std::optional<driver::CpuObject> loadFromDisk(const std::string &key) {
    if (cacheDir.empty())
      return std::nullopt;
    std::string record, object;
    std::string base = cacheDir + "/" + key;
    if (!readFile(base + ".json", record) || !readFile(base + ".o", object))
      return std::nullopt;
    try {
      manifest::CpuCacheRecord r =
          manifest::readCpuCacheRecord(record, base + ".json");
      // Stale (another compiler) or corrupt entries are rebuilt.
      if (r.compiler != driver::compilerVersion() || r.key != key ||
          r.objectSize != static_cast<int64_t>(object.size()) ||
          r.objectChecksum !=
              hex64(detail::checksum(object.data(), object.size())))
        return std::nullopt;
      driver::CpuObject o;
      o.object = std::move(object);
      o.entry = std::move(r.entry);
      o.blockMapEntry = std::move(r.blockMapEntry);
      o.mergeEntry = std::move(r.mergeEntry);
      o.backwardEntry = std::move(r.backwardEntry);
      if (r.info.backward && o.backwardEntry.empty())
        return std::nullopt;
      o.info = std::move(r.info);
      return o;
    } catch (const Error &) {
      return std::nullopt;
    }
  }

  void storeToDisk(const std::string &key, const driver::CpuObject &o) {
    if (cacheDir.empty() || llvm::sys::fs::create_directories(cacheDir))
      return; // an unwritable cache only costs speed
    manifest::CpuCacheRecord r;
    r.compiler = driver::compilerVersion();
    r.key = key;
    r.entry = o.entry;
    r.blockMapEntry = o.blockMapEntry;
    r.mergeEntry = o.mergeEntry;
    r.backwardEntry = o.backwardEntry;
    r.objectSize = static_cast<int64_t>(o.object.size());
    r.objectChecksum = hex64(detail::checksum(o.object.data(), o.object.size()));
    r.info = o.info;
    std::string base = cacheDir + "/" + key;
    // The record goes last: its presence marks a complete entry.
    if (writeAtomically(base + ".o", o.object))
      writeAtomically(base + ".json", manifest::writeCacheRecord(r));
  }

  /// A cached GPU kernel for `key`: its record (info, entries, launch
  /// geometry) and its binary and PTX, if all are there and intact.
  std::optional<Kernel> loadGpuFromDisk(const std::string &key) {
    if (cacheDir.empty())
      return std::nullopt;
    std::string record, binary, ptx;
    std::string base = cacheDir + "/" + key;
    if (!readFile(base + ".json", record) ||
        !readFile(base + ".bin", binary) || !readFile(base + ".ptx", ptx))
      return std::nullopt;
    try {
      manifest::GpuCacheRecord r =
          manifest::readGpuCacheRecord(record, base + ".json");
      if (r.compiler != driver::compilerVersion() || r.key != key ||
          r.binaryChecksum !=
              hex64(detail::checksum(binary.data(), binary.size())) ||
          r.ptxChecksum != hex64(detail::checksum(ptx.data(), ptx.size())))
        return std::nullopt;
      detail::GpuCode code = std::move(r.code);
      code.binary = std::move(binary);
      code.ptx = std::move(ptx);
      return detail::makeGpuKernel(std::move(r.info), std::move(code));
    } catch (const Error &) {
      return std::nullopt;
    }
  }

  void storeGpuToDisk(const std::string &key, const driver::GpuObject &g) {
    if (cacheDir.empty() || llvm::sys::fs::create_directories(cacheDir))
      return;
    const detail::GpuCode &c = g.code;
    manifest::GpuCacheRecord r;
    r.compiler = driver::compilerVersion();
    r.key = key;
    r.code = c; // all but the binary and the PTX, the files beside it
    r.binaryChecksum =
        hex64(detail::checksum(c.binary.data(), c.binary.size()));
    r.ptxChecksum = hex64(detail::checksum(c.ptx.data(), c.ptx.size()));
    r.info = g.info;
    std::string base = cacheDir + "/" + key;
    // The record goes last: its presence marks a complete entry.
    if (writeAtomically(base + ".bin", c.binary) &&
        writeAtomically(base + ".ptx", c.ptx))
      writeAtomically(base + ".json", manifest::writeCacheRecord(r));
  }

  Kernel build(const std::string &key, const std::string &source,
               const Options &options, const std::string &filename) {
    if (driver::isGpuTarget(options.target)) {
      // GPU kernels are cached on disk too: building one (LLVM, ptxas and
      // the retries that shrink key tiles until ptxas spills nothing) takes
      // 0.3 to 15 s.
      if (auto cached = loadGpuFromDisk(key)) {
        ++diskHits;
        return *cached;
      }
      ++compiles;
      driver::Source parsed(source, filename);
      driver::KernelPlan plan = driver::planKernel(parsed, options);
      driver::GpuObject g = driver::compileGpuObject(parsed, plan);
      storeGpuToDisk(key, g);
      return detail::makeGpuKernel(g.info, g.code);
    }
    // CPU kernels: the front end now (it reports the source's and the
    // options' errors), the code for each class of launch (wide tiles, or
    // decode's few rows) when a launch first needs it. Most users launch
    // one class, which then costs half or less of building both.
    auto parsed = std::make_shared<const driver::Source>(source, filename);
    driver::KernelPlan plan = driver::planKernel(*parsed, options);
    driver::checkCpu(plan);
    std::shared_ptr<JitCache> cache = shared_from_this();
    return detail::makeLazyCpuKernel(
        plan.info, [cache, parsed, plan, key](detail::CpuRows rows) {
          return cache->buildRows(parsed, plan, key, rows);
        });
  }

  /// The code of `plan` for one class of launch, from the disk cache or
  /// compiled (and then cached). The merge and block-map entries are built
  /// (or read from the cache) at their first call: most launches need
  /// neither, and they were a fifth of a compile.
  detail::CpuCode buildRows(std::shared_ptr<const driver::Source> source,
                            driver::KernelPlan plan, const std::string &key,
                            detail::CpuRows rows) {
    plan.rows = rows == detail::CpuRows::Few ? "few" : "many";
    std::string rowsKey = key + "-" + plan.rows;
    // The deferred entries' bitcode, when this process compiled `now`.
    auto bitcode = std::make_shared<std::string>();
    std::shared_ptr<JitCache> cache = shared_from_this();
    auto deferred = [cache, source, plan, rowsKey, bitcode] {
      std::string deferredKey = rowsKey + "-deferred";
      if (auto cached = cache->loadFromDisk(deferredKey))
        return *cached;
      driver::CpuObject object =
          driver::compileCpuDeferred(*source, plan, *bitcode);
      cache->storeToDisk(deferredKey, object);
      bitcode->clear();
      return object;
    };
    try {
      if (auto cached = loadFromDisk(rowsKey)) {
        ++diskHits;
        return driver::loadCpuJitCode(*cached, deferred);
      }
      ++compiles;
      driver::CpuJitCode code = driver::compileCpuJitCode(*source, plan);
      storeToDisk(rowsKey, code.now);
      *bitcode = std::move(code.deferred);
      return driver::loadCpuJitCode(code.now, deferred);
    } catch (const driver::InternalError &e) {
      throw InternalError(e.what());
    }
  }
};

struct Jit::Impl {
  std::mutex mutex;
  std::map<std::string, std::shared_future<Kernel>> kernels;
  std::shared_ptr<JitCache> cache = std::make_shared<JitCache>();
};

Jit::Jit() : impl(std::make_unique<Impl>()) {
  impl->cache->cacheDir = defaultCacheDir();
}

Jit::Jit(const std::string &cacheDir) : impl(std::make_unique<Impl>()) {
  impl->cache->cacheDir = cacheDir;
}

Jit::~Jit() = default;

const std::string &Jit::cacheDir() const { return impl->cache->cacheDir; }

Jit::Stats Jit::stats() const {
  return {impl->cache->memoryHits.load(), impl->cache->diskHits.load(),
          impl->cache->compiles.load()};
}

Kernel Jit::compile(const std::string &source, const Options &options,
                    const std::string &filename) {
  std::string key = cacheKey(source, options);
  std::shared_ptr<std::promise<Kernel>> promise;
  std::shared_future<Kernel> future;
  {
    std::lock_guard<std::mutex> lock(impl->mutex);
    auto it = impl->kernels.find(key);
    if (it != impl->kernels.end()) {
      future = it->second;
    } else {
      promise = std::make_shared<std::promise<Kernel>>();
      future = promise->get_future().share();
      impl->kernels.emplace(key, future);
    }
  }
  if (!promise) {
    ++impl->cache->memoryHits;
    return future.get(); // compiled, or being compiled by another thread
  }
  try {
    try {
      promise->set_value(
          impl->cache->build(key, source, options, filename));
    } catch (const driver::InternalError &e) {
      throw InternalError(e.what());
    }
  } catch (...) {
    // Errors are reported to every waiter but not cached.
    {
      std::lock_guard<std::mutex> lock(impl->mutex);
      impl->kernels.erase(key);
    }
    promise->set_exception(std::current_exception());
  }
  return future.get();
}

Kernel Jit::compileFile(const std::string &path, const Options &options) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw Error(path, "cannot open the source file");
  std::stringstream text;
  text << in.rdbuf();
  return compile(text.str(), options, path);
}

} // namespace attn
