//===- Module.cpp - loading AOT bundles -----------------------------------===//
//
// A bundle's CPU code is a shared object stored inside the file. It is
// handed to dlopen through an anonymous memory file (memfd), so loading
// writes nothing to disk and needs no LLVM.
//
//===----------------------------------------------------------------------===//
#include "attn/runtime.h"

#include "Json.h"

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
  if (format != detail::kBundleFormat)
    fail("'" + path + "' has bundle format " + std::to_string(format) +
         "; this attnrt reads format " + std::to_string(detail::kBundleFormat) +
         (format < detail::kBundleFormat
              ? " (recompile it with this attnc)"
              : " (written by a newer attnc, or damaged: recompile it with "
                "this attnc)"));
  if (manifestSize > data.size() - 24)
    fail("'" + path + "' is truncated");
  json::Value manifest = json::parse(data.substr(24, manifestSize));

  std::vector<std::shared_ptr<void>> binaries;
  std::vector<std::string> gpuImages; // GPU payloads by index
  for (const json::Value &b : manifest["binaries"].asArray()) {
    int64_t offset = b["offset"].asInt(), size = b["size"].asInt();
    if (offset < 0 || size < 0 || uint64_t(offset) > data.size() ||
        uint64_t(size) > data.size() - uint64_t(offset))
      fail("'" + path + "' is truncated");
    std::string bytes = data.substr(offset, size);
    char sum[20];
    std::snprintf(sum, sizeof sum, "%016llx",
                  static_cast<unsigned long long>(
                      detail::checksum(bytes.data(), bytes.size())));
    if (b["checksum"].asString() != sum)
      fail("'" + path + "' is corrupt (checksum mismatch)");
    if (b["target"].asString() != "cpu") {
      // GPU code: handed to the CUDA or HIP runtime at the first launch.
      binaries.push_back(nullptr);
      gpuImages.push_back(std::move(bytes));
      continue;
    }
    gpuImages.emplace_back();
    for (const json::Value &f : b["cpu_features"].asArray())
      for (const auto &[name, present] : detail::hostCpuFeatures())
        if (name == f.asString() && !present)
          fail("'" + path + "' was compiled for CPU '" + b["cpu"].asString() +
               "', which needs " + name +
               "; this machine lacks it (recompile with --cpu x86-64-v2, "
               "x86-64-v3 or native)");
    binaries.push_back(openSharedObject(bytes, path));
  }

  auto state = std::make_shared<detail::ModuleState>();
  for (const json::Value &k : manifest["kernels"].asArray()) {
    KernelInfo info = json::kernelInfoFrom(k);
    int64_t index = k["binary"].asInt();
    if (index < 0 || size_t(index) >= binaries.size())
      fail("kernel '" + info.name + "' names a missing binary");
    const std::string &entry = k["entry"].asString();
    if (!binaries[index]) {
      // NVIDIA kernels carry PTX next to the cubin; AMD code objects are
      // the whole kernel.
      bool nvidia = info.target.rfind("sm_", 0) == 0;
      int64_t ptx = k.has("ptx_binary") ? k["ptx_binary"].asInt() : -1;
      if (nvidia && (ptx < 0 || size_t(ptx) >= gpuImages.size()))
        fail("kernel '" + info.name + "' names a missing PTX payload");
      detail::GpuCode code;
      code.chip = info.target;
      code.entry = entry;
      code.binary = gpuImages[index];
      if (nvidia)
        code.ptx = gpuImages[ptx];
      code.blockThreads = k["block_threads"].asInt();
      code.rowsPerBlock = k["rows_per_block"].asInt();
      code.sharedBytes = k["shared_bytes"].asInt();
      code.tensorMaps = k.has("tensor_maps") && k["tensor_maps"].asBool();
      code.blockKV = info.blockKV;
      code.mergeEntry =
          k.has("merge_entry") ? k["merge_entry"].asString() : std::string();
      if (code.mergeEntry.empty())
        fail("kernel '" + info.name + "' lacks its split-KV merge entry");
      if (info.selectBlock > 0) {
        for (auto [field, key] :
             {std::pair{&code.selectPoolEntry, "select_pool_entry"},
              std::pair{&code.selectEntry, "select_entry"}}) {
          *field = k.has(key) ? k[key].asString() : std::string();
          if (field->empty())
            fail("kernel '" + info.name + "' lacks its select pre-pass entry " +
                 key);
        }
      }
      if (code.tensorMaps && code.blockKV <= 0)
        fail("kernel '" + info.name + "' has no key tile size");
      if (code.blockThreads <= 0 || code.rowsPerBlock <= 0)
        fail("kernel '" + info.name + "' has no launch geometry");
      // C++17 evaluates the right side of `=` first: keep the name.
      std::string name = info.name;
      state->kernels[name] =
          detail::makeGpuKernel(std::move(info), std::move(code));
      continue;
    }
    void *fn = dlsym(binaries[index].get(), entry.c_str());
    if (!fn)
      fail("kernel '" + info.name + "' lacks its entry point " + entry);
    detail::CpuEntry blockMap = nullptr;
    if (k.has("block_map_entry")) {
      const std::string &bm = k["block_map_entry"].asString();
      blockMap = reinterpret_cast<detail::CpuEntry>(
          dlsym(binaries[index].get(), bm.c_str()));
      if (!blockMap)
        fail("kernel '" + info.name + "' lacks its entry point " + bm);
    }
    const std::string &mergeName = k["merge_entry"].asString();
    auto merge = reinterpret_cast<detail::CpuEntry>(
        dlsym(binaries[index].get(), mergeName.c_str()));
    if (!merge)
      fail("kernel '" + info.name + "' lacks its entry point " + mergeName);
    state->kernels[info.name] = detail::makeCpuKernel(
        info, reinterpret_cast<detail::CpuEntry>(fn), binaries[index],
        blockMap, merge);
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
