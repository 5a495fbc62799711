//===- FuzzCompile.cpp - libFuzzer: the pipeline to LLVM IR and PTX -------===//
//
// Inputs that pass the checker go down the whole pipeline: every variant to
// optimized LLVM IR for the CPU and to PTX for sm_90a. Options (dtype, K/V
// dtype, lse, paging) come from a hash of the input so the same input always
// takes the same path. A checked source that the pipeline cannot compile is
// an internal error: a finding.
//
//===----------------------------------------------------------------------===//
#include "test/fuzz/FuzzSupport.h"

#include "lib/Driver/Compiler.h"

#include <cstddef>
#include <cstdint>
#include <string>

namespace {

uint64_t fnv1a(const std::string &s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s)
    h = (h ^ c) * 1099511628211ull;
  return h;
}

attn::Options optionsFor(uint64_t h, const std::string &target) {
  attn::Options o;
  o.target = target;
  o.headDim = (h & 1) ? 64 : 128;
  o.lse = (h >> 1) & 1;
  const char *dtypes[] = {"f32", "f16", "bf16"};
  o.dtype = target == "cpu" ? dtypes[(h >> 2) % 3] : ((h >> 2) & 1 ? "bf16" : "f16");
  const char *kv[] = {"same", "same", "int8", "fp8e4m3", "int4"};
  o.kvDtype = kv[(h >> 4) % 5];
  o.paged = ((h >> 8) % 4 == 0) ? 16 : 0;
  return o;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  using namespace attn;
  std::string text(reinterpret_cast<const char *>(data), size);
  std::optional<driver::Source> source;
  try {
    source.emplace(text, "fuzz.attn");
    driver::checkAll(*source);
  } catch (const Error &) {
    return 0; // Rejected with diagnostics: FuzzFrontend's business.
  } catch (const std::exception &e) {
    fuzz::finding("compile", std::string("checking threw: ") + e.what(), text);
  }
  uint64_t h = fnv1a(text);
  for (const fe::Variant &variant : source->program.variants) {
    for (const char *target : {"cpu", "sm_90a"}) {
      Options options = optionsFor(h, target);
      options.variant = variant.name;
      driver::KernelPlan plan;
      try {
        // Option combinations the variant does not allow (e.g. lse with a
        // normalizer that has none) are refused here, as in attnc.
        plan = driver::planKernel(*source, options);
      } catch (const Error &) {
        continue;
      } catch (const std::exception &e) {
        fuzz::finding("compile", std::string("planning threw: ") + e.what(),
                      text);
      }
      fuzz::expectUserErrorsOnly("compile", text, [&] {
        if (options.target == "cpu")
          (void)driver::emitStage(*source, plan, driver::Stage::LLVM);
        else
          (void)driver::compileGpuObject(*source, plan, /*assemble=*/false);
      });
    }
  }
  return 0;
}
