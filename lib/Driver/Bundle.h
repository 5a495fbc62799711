//===- Bundle.h - AOT bundles and typed launcher headers ------------------===//
#ifndef ATTN_DRIVER_BUNDLE_H
#define ATTN_DRIVER_BUNDLE_H

#include "lib/Driver/Compiler.h"

#include <string>
#include <vector>

namespace attn::driver {

/// Compiles the variants of `source` (all, or `options.variant`) and writes
/// `<out>.attnpkg` and `<out>.h`. Writes nothing unless every step works.
void writeBundle(const Source &source, const Options &options,
                 const std::string &out);

/// The typed C++ launcher header for `plans`, in namespace `ns`.
std::string launcherHeader(const std::vector<KernelPlan> &plans,
                           const std::string &ns,
                           const std::string &bundleFile,
                           const std::string &sourceName);

} // namespace attn::driver

#endif // ATTN_DRIVER_BUNDLE_H
