//===- FuzzFrontend.cpp - libFuzzer: parse, check, import, verify ---------===//
//
// Any byte string is a possible .attn file a user hands attnc. Diagnostics
// (CompileError) and option errors are the expected outcomes; anything else
// (a crash, a sanitizer report, an InternalError, an escaping exception) is
// a finding.
//
//===----------------------------------------------------------------------===//
#include "test/fuzz/FuzzSupport.h"

#include "lib/Driver/Compiler.h"

#include <cstddef>
#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string text(reinterpret_cast<const char *>(data), size);
  attn::fuzz::expectUserErrorsOnly("frontend", text, [&] {
    attn::driver::Source source(text, "fuzz.attn");
    attn::driver::checkAll(source);
  });
  return 0;
}
