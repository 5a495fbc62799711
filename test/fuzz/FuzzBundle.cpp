//===- FuzzBundle.cpp - libFuzzer: loading .attnpkg bundles ---------------===//
//
// Bundles are files users are handed. The loader checks the header, the
// manifest and every payload's checksum before code is loaded (trusting a
// bundle's code is like trusting a shared library: docs/runtime.md); a
// damaged bundle must fail with attn::Error, never crash.
//
// The first input byte picks the mode:
//   even: the rest is a whole bundle file (seeds: real CPU and GPU bundles);
//   odd:  the rest is a manifest, which this target wraps in a valid header
//         followed by fixed payloads at kPayloadOffset, so mutations reach
//         the manifest's fields instead of dying on the header or a
//         checksum (seeds: real GPU manifests pointing at those payloads).
//
//===----------------------------------------------------------------------===//
#include "test/fuzz/FuzzSupport.h"

#include "attn/runtime.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace {

/// Where the wrapped manifest's payloads start, and what they hold: the
/// loader does not look inside GPU payloads until a launch.
constexpr size_t kPayloadOffset = 24 + 65536;
constexpr size_t kPayloadSize = 4096;

std::string wrapManifest(const std::string &manifest) {
  std::string file(attn::detail::kBundleMagic, 8);
  uint32_t format = attn::detail::kBundleFormat, reserved = 0;
  uint64_t manifestSize = manifest.size();
  file.append(reinterpret_cast<const char *>(&format), 4);
  file.append(reinterpret_cast<const char *>(&reserved), 4);
  file.append(reinterpret_cast<const char *>(&manifestSize), 8);
  file += manifest;
  file.resize(kPayloadOffset, ' ');
  for (size_t i = 0; i < 2 * kPayloadSize; ++i)
    file.push_back(static_cast<char>(i * 131 % 251));
  return file;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static attn::fuzz::MemoryFile bundle("fuzz-bundle");
  if (size == 0 || size - 1 > 65536)
    return 0;
  std::string rest(reinterpret_cast<const char *>(data + 1), size - 1);
  std::string file = (data[0] & 1) ? wrapManifest(rest) : rest;
  std::string path = bundle.write(file.data(), file.size());
  attn::fuzz::expectUserErrorsOnly("bundle", rest, [&] {
    attn::Module module = attn::Module::load(path);
    for (const std::string &name : module.kernelNames()) {
      attn::Kernel kernel = module.kernel(name);
      if (kernel.info().name != name)
        attn::fuzz::finding("bundle", "kernel '" + name + "' reports name '" +
                                          kernel.info().name + "'",
                            rest);
    }
  });
  return 0;
}
