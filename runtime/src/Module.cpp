//===- Module.cpp - loading AOT bundles -----------------------------------===//
//
// A bundle's CPU code is a shared object stored inside the file. It is
// handed to dlopen through an anonymous memory file (memfd), so loading
// writes nothing to disk and needs no LLVM.
//
//===----------------------------------------------------------------------===//
#include "attn/runtime.h"

#include "runtime/support/Manifest.h"

#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <fstream>
#include <map>
#include <sstream>
#include <sys/mman.h>
#include <unistd.h>

namespace attn {
namespace detail {

struct ModuleState {
  std::map<std::string, Kernel> kernels;
};

uint64_t checksum(const void *data, size_t size) {
  const auto *p = static_cast<const unsigned char *>(data);
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < size; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

const std::vector<std::pair<std::string, bool>> &hostCpuFeatures() {
  static const std::vector<std::pair<std::string, bool>> features = [] {
    __builtin_cpu_init();
    return std::vector<std::pair<std::string, bool>>{
        {"sse4.2", bool(__builtin_cpu_supports("sse4.2"))},
        {"avx", bool(__builtin_cpu_supports("avx"))},
        {"avx2", bool(__builtin_cpu_supports("avx2"))},
        {"fma", bool(__builtin_cpu_supports("fma"))},
        {"f16c", bool(__builtin_cpu_supports("f16c"))},
        {"avx512f", bool(__builtin_cpu_supports("avx512f"))},
        {"avx512bw", bool(__builtin_cpu_supports("avx512bw"))},
        {"avx512dq", bool(__builtin_cpu_supports("avx512dq"))},
        {"avx512vl", bool(__builtin_cpu_supports("avx512vl"))},
        {"avx512vnni", bool(__builtin_cpu_supports("avx512vnni"))},
        {"avx512bf16", bool(__builtin_cpu_supports("avx512bf16"))},
    };
  }();
  return features;
}

} // namespace detail

namespace {

[[noreturn]] void fail(const std::string &message) {
  throw Error("bundle", message);
}

/// dlopen of in-memory ELF bytes; the handle closes with its last kernel.
std::shared_ptr<void> openSharedObject(const std::string &bytes,
                                       const std::string &path) {
  int fd = memfd_create("attnpkg", MFD_CLOEXEC);
  std::string file;
  if (fd >= 0) {
    file = "/proc/self/fd/" + std::to_string(fd);
  } else {
    // No memfd (old kernel, sandbox): a private temporary file instead.
    char tmpl[] = "/tmp/attnpkg-XXXXXX";
    fd = mkstemp(tmpl);
    if (fd < 0)
      fail("cannot create a file for the kernel code of '" + path + "'");
    file = tmpl;
  }
  size_t written = 0;
  while (written < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n <= 0) {
      ::close(fd);
      fail("cannot write the kernel code of '" + path + "'");
    }
    written += static_cast<size_t>(n);
  }
  void *handle = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
  std::string error = handle ? "" : dlerror();
  bool temporary = file.rfind("/tmp/", 0) == 0;
  if (temporary)
    ::unlink(file.c_str());
  if (!handle) {
    ::close(fd);
    fail("cannot load the kernel code of '" + path + "': " + error);
  }
  if (temporary) {
    ::close(fd);
    return std::shared_ptr<void>(handle, [](void *h) { dlclose(h); });
  }
  // The memfd stays open while the code is loaded: the loader knows a
  // library by its path, and a closed descriptor's number (so the next
  // bundle's "/proc/self/fd/N") would be reused, making dlopen hand back
  // this library instead of loading the next one.
  return std::shared_ptr<void>(handle, [fd](void *h) {
    dlclose(h);
    ::close(fd);
  });
}

/// What the loader picks binaries by: detail::hostCpuFeatures(), less the
/// features ATTN_HIDE_CPU_FEATURES lists (comma-separated), which shows
/// what a machine without them would load.
using CpuFeatures = std::vector<std::pair<std::string, bool>>;
CpuFeatures loaderCpuFeatures(std::string &hidden) {
  CpuFeatures features = detail::hostCpuFeatures();
  const char *hide = std::getenv("ATTN_HIDE_CPU_FEATURES");
  hidden = hide ? hide : "";
  std::string list = "," + hidden + ",";
  for (auto &[name, has] : features)
    if (list.find("," + name + ",") != std::string::npos)
      has = false;
  return features;
}

/// The features `b` (CPU code) needs that this machine lacks, or that this
/// attnrt cannot detect (a newer attnc's): those are never assumed.
std::vector<std::string> missingCpuFeatures(const manifest::BinaryEntry &b,
                                            const CpuFeatures &host) {
  std::vector<std::string> missing;
  for (const std::string &f : b.cpuFeatures) {
    bool present = false;
    for (const auto &[name, has] : host)
      if (name == f)
        present = has;
    if (!present)
      missing.push_back(f);
  }
  return missing;
}

std::string joined(const std::vector<std::string> &names) {
  std::string s;
  for (const std::string &n : names)
    s += (s.empty() ? "" : ", ") + n;
  return s;
}

/// Why no binary of `candidates` runs here: each one's CPU, the features
/// it needs and those this machine lacks.
std::string noCpuFits(const std::string &path, const std::string &kernel,
                      const std::vector<manifest::BinaryEntry> &binaries,
                      const std::vector<int64_t> &candidates,
                      const CpuFeatures &host, const std::string &hidden) {
  std::string m = "'" + path + "' has no code this machine's CPU can run";
  if (candidates.size() > 1)
    m += " for kernel '" + kernel + "': its " +
         std::to_string(candidates.size()) + " binaries were compiled for ";
  else
    m += ": kernel '" + kernel + "' was compiled for ";
  for (size_t i = 0; i < candidates.size(); ++i) {
    const manifest::BinaryEntry &b = binaries[candidates[i]];
    std::vector<std::string> lacked, unknown;
    for (const std::string &f : missingCpuFeatures(b, host)) {
      bool detectable = false;
      for (const auto &[name, has] : host)
        detectable |= name == f;
      (detectable ? lacked : unknown).push_back(f);
    }
    std::string why;
    if (!lacked.empty())
      why = "this machine lacks " + joined(lacked);
    if (!unknown.empty())
      why += (why.empty() ? "" : ", and ") +
             std::string("this attnrt cannot detect ") + joined(unknown);
    m += std::string(i == 0 ? "" : i + 1 == candidates.size() ? " and " : ", ") +
         "CPU '" + b.cpu + "' (needs " + joined(b.cpuFeatures) + "; " + why +
         ")";
  }
  if (!hidden.empty())
    m += " (ATTN_HIDE_CPU_FEATURES=" + hidden + " hides features)";
  return m + "; recompile with --cpu native, or add a CPU this machine "
             "has to the list (e.g. --cpu x86-64-v4,x86-64-v3,x86-64-v2)";
}

} // namespace

Module Module::load(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    fail("cannot open '" + path + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  std::string data = ss.str();
  if (data.size() < 24 ||
      std::memcmp(data.data(), detail::kBundleMagic, 8) != 0)
    fail("'" + path + "' is not an attnc bundle (.attnpkg)");
  uint32_t format;
  uint64_t manifestSize;
  std::memcpy(&format, data.data() + 8, 4);
  std::memcpy(&manifestSize, data.data() + 16, 8);
  // Formats count up from 1: a 0 is a damaged or hand-made file, not an
  // old bundle that recompiling would fix.
  if (format == 0)
    fail("'" + path + "' is not a valid attnc bundle: its header says "
         "format 0, which no attnc writes (the file is damaged or was not "
         "written by attnc compile)");
  if (format < detail::kOldestBundleFormat || format > detail::kBundleFormat)
    fail("'" + path + "' has bundle format " + std::to_string(format) +
         "; this attnrt reads formats " +
         std::to_string(detail::kOldestBundleFormat) + " to " +
         std::to_string(detail::kBundleFormat) +
         (format < detail::kOldestBundleFormat
              ? " (recompile it with this attnc)"
              : " (written by a newer attnc, or damaged: recompile it with "
                "this attnc)"));
  if (manifestSize > data.size() - 24)
    fail("'" + path + "' is truncated");
  // Throws attn::Error("manifest", ...) naming the field when malformed.
  manifest::BundleManifest contents = manifest::readBundleManifest(
      std::string_view(data).substr(24, manifestSize), path);
  if (contents.format != format)
    fail("'" + path + "' is not a valid attnc bundle: its header says format " +
         std::to_string(format) + " and its manifest format " +
         std::to_string(contents.format) + " (the file is damaged)");

  // Every payload is checked; CPU code is loaded when a kernel picks it.
  std::vector<std::string> images;
  for (const manifest::BinaryEntry &b : contents.binaries) {
    if (uint64_t(b.offset) > data.size() ||
        uint64_t(b.size) > data.size() - uint64_t(b.offset))
      fail("'" + path + "' is truncated");
    std::string bytes = data.substr(b.offset, b.size);
    char sum[20];
    std::snprintf(sum, sizeof sum, "%016llx",
                  static_cast<unsigned long long>(
                      detail::checksum(bytes.data(), bytes.size())));
    if (b.checksum != sum)
      fail("'" + path + "' is corrupt (checksum mismatch)");
    images.push_back(std::move(bytes));
  }
  std::vector<std::shared_ptr<void>> libraries(contents.binaries.size());
  auto library = [&](int64_t index) {
    if (!libraries[index])
      libraries[index] = openSharedObject(images[index], path);
    return libraries[index];
  };
  // The manifest's reader checked that each kernel's payloads exist and
  // hold code for its target, and that GPU kernels have their geometry.
  std::string hidden;
  const CpuFeatures host = loaderCpuFeatures(hidden);
  auto state = std::make_shared<detail::ModuleState>();
  for (manifest::KernelEntry &k : contents.kernels) {
    KernelInfo &info = k.info;
    if (k.gpu) {
      // NVIDIA kernels carry PTX next to the cubin; AMD code objects are
      // the whole kernel.
      detail::GpuCode code;
      code.chip = info.target;
      code.entry = k.entry;
      code.binary = images[k.binary];
      if (k.ptxBinary)
        code.ptx = images[*k.ptxBinary];
      code.blockThreads = k.gpu->blockThreads;
      code.rowsPerBlock = k.gpu->rowsPerBlock;
      code.sharedBytes = k.gpu->sharedBytes;
      code.tensorMaps = k.gpu->tensorMaps;
      code.clusterCtas = k.gpu->clusterCtas;
      code.blockKV = info.blockKV;
      code.mergeEntry = k.mergeEntry;
      code.selectPoolEntry = k.gpu->selectPoolEntry;
      code.selectEntry = k.gpu->selectEntry;
      code.backwardKvEntry = k.gpu->backwardKvEntry;
      code.backwardQEntry = k.gpu->backwardQEntry;
      code.backwardKvThreads = k.gpu->backwardKvThreads;
      code.backwardKvRows = k.gpu->backwardKvRows;
      code.backwardQThreads = k.gpu->backwardQThreads;
      code.backwardQRows = k.gpu->backwardQRows;
      code.backwardGradients = k.gpu->backwardGradients;
      // C++17 evaluates the right side of `=` first: keep the name.
      std::string name = info.name;
      state->kernels[name] =
          detail::makeGpuKernel(std::move(info), std::move(code));
      continue;
    }
    // The first binary, best first, whose CPU features this machine has.
    std::vector<int64_t> candidates{k.binary};
    candidates.insert(candidates.end(), k.fallbackBinaries.begin(),
                      k.fallbackBinaries.end());
    int64_t chosen = -1;
    for (int64_t c : candidates)
      if (missingCpuFeatures(contents.binaries[c], host).empty()) {
        chosen = c;
        break;
      }
    if (chosen < 0)
      fail(noCpuFits(path, info.name, contents.binaries, candidates, host,
                     hidden));
    std::shared_ptr<void> owner = library(chosen);
    info.cpu = contents.binaries[chosen].cpu;
    auto symbol = [&](const std::string &entry) {
      void *fn = dlsym(owner.get(), entry.c_str());
      if (!fn)
        fail("kernel '" + info.name + "' lacks its entry point " + entry);
      return reinterpret_cast<detail::CpuEntry>(fn);
    };
    detail::CpuEntry fn = symbol(k.entry);
    detail::CpuEntry blockMap =
        k.blockMapEntry.empty() ? nullptr : symbol(k.blockMapEntry);
    detail::CpuEntry merge = symbol(k.mergeEntry);
    detail::CpuEntry backward =
        k.backwardEntry.empty() ? nullptr : symbol(k.backwardEntry);
    state->kernels[info.name] =
        detail::makeCpuKernel(info, fn, owner, blockMap, merge, backward);
  }
  Module m;
  m.state = std::move(state);
  return m;
}

Kernel Module::kernel(const std::string &name) const {
  if (!state)
    throw Error(name, "no bundle is loaded");
  auto it = state->kernels.find(name);
  if (it == state->kernels.end()) {
    std::string names;
    for (const auto &[n, k] : state->kernels)
      names += (names.empty() ? "" : ", ") + n;
    throw Error(name, "the bundle has no kernel of this name (it has " +
                          names + ")");
  }
  return it->second;
}

std::vector<std::string> Module::kernelNames() const {
  std::vector<std::string> names;
  if (state)
    for (const auto &[n, k] : state->kernels)
      names.push_back(n);
  return names;
}

} // namespace attn
