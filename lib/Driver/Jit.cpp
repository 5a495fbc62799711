//===- Jit.cpp - attn::Jit ------------------------------------------------===//
#include "attn/jit.h"

#include "lib/Driver/Compiler.h"

#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

namespace attn {

struct Jit::Impl {
  std::mutex mutex;
  std::map<std::string, Kernel> cache;
};

Jit::Jit() : impl(std::make_unique<Impl>()) {}
Jit::~Jit() = default;

/// Everything that changes the generated code, as one string.
static std::string cacheKey(const std::string &source, const Options &o) {
  std::ostringstream key;
  key << driver::compilerVersion() << '\n'
      << o.target << '|' << o.headDim << '|' << o.valueHeadDim << '|'
      << o.dtype << '|' << o.kvDtype << '|' << o.blockQ << '|' << o.blockKV
      << '|' << o.lse << '|' << o.variant << '|' << o.paged << '|'
      << o.splitKv << '\n'
      << source;
  return key.str();
}

Kernel Jit::compile(const std::string &source, const Options &options,
                    const std::string &filename) {
  std::string key = cacheKey(source, options);
  {
    std::lock_guard<std::mutex> lock(impl->mutex);
    auto it = impl->cache.find(key);
    if (it != impl->cache.end())
      return it->second;
  }
  driver::Source parsed(source, filename);
  driver::KernelPlan plan = driver::planKernel(parsed, options);
  Kernel kernel;
  try {
    kernel = driver::compileCpu(parsed, plan);
  } catch (const driver::InternalError &e) {
    throw InternalError(e.what());
  }
  std::lock_guard<std::mutex> lock(impl->mutex);
  impl->cache.emplace(key, kernel);
  return kernel;
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
