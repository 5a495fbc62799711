//===- Bundle.h - AOT bundles and typed launcher headers ------------------===//
#ifndef ATTN_DRIVER_BUNDLE_H
#define ATTN_DRIVER_BUNDLE_H

#include "lib/Driver/Compiler.h"

#include <string>
#include <vector>

namespace attn::driver {

/// The CPUs of a CPU bundle: `options.cpu` is one CPU ("native",
/// "x86-64-v3") or a comma-separated list of them. Throws attn::Error
/// naming --cpu and the value for an empty, repeated or unknown entry.
std::vector<std::string> cpuList(const std::string &cpus);

/// Compiles the variants of `source` (all, or `options.variant`) and writes
/// `<out>.attnpkg` and `<out>.h`. Writes nothing unless every step works.
/// With several CPUs (cpuList) the bundle holds a shared object for each,
/// best first (the one needing the most features the loader can check);
/// attnrt runs the first whose features the machine has. CPUs that need
/// the same checkable features are an error: the loader could not tell
/// them apart.
void writeBundle(const Source &source, const Options &options,
                 const std::string &out);

/// The typed C++ launcher header for `plans`, in namespace `ns`.
std::string launcherHeader(const std::vector<KernelPlan> &plans,
                           const std::string &ns,
                           const std::string &bundleFile,
                           const std::string &sourceName);

} // namespace attn::driver

#endif // ATTN_DRIVER_BUNDLE_H
