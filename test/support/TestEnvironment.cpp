//===- TestEnvironment.cpp - the environment every gtest binary runs in ---===//
//
// The JIT's disk cache goes to the build tree's jit-cache unless the caller
// chose one, so test runs never write to the user's cache directory.
//
//===----------------------------------------------------------------------===//
#include <cstdlib>

namespace {
const bool kCacheDirSet = [] {
  setenv("ATTNC_CACHE_DIR", ATTN_TEST_CACHE_DIR, /*overwrite=*/0);
  return true;
}();
} // namespace
