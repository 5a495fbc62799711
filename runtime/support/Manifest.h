//===- Manifest.h - the bundle manifest and JIT cache record schema -------===//
//
// What an .attnpkg bundle's JSON manifest and attn::Jit's disk cache records
// hold, as structs, each with one writer and one reader (Manifest.cpp, on
// nlohmann-json). The compiler writes them (lib/Driver/Bundle.cpp, Jit.cpp);
// attnrt reads bundles (Module.cpp) and prints kernel metadata (CApi.cpp).
// Built into attnrt, so it links no LLVM; not installed, and nothing here
// exposes nlohmann-json to the files that include it.
//
// Bundles are files users are handed: a reader never trusts its input. A
// malformed document throws attn::Error with argument() "manifest" and a
// message naming the document and the field, e.g.
//   'one.attnpkg': kernels[0].head_dim: expected an integer, got string "64"
// never another exception type, and never a crash.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_RUNTIME_SUPPORT_MANIFEST_H
#define ATTN_RUNTIME_SUPPORT_MANIFEST_H

#include "attn/runtime.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

// Manifest.cpp is compiled with hidden visibility (nlohmann-json's inline
// code stays out of libattnrt.so's symbol table); these are its API.
#define ATTN_MANIFEST_API __attribute__((visibility("default")))

namespace attn::manifest {

/// A payload stored after a bundle's manifest.
struct BinaryEntry {
  std::string target; // "cpu", or the GPU chip ("sm_90a", "gfx942")
  /// "elf-shared-object" (cpu), "cubin", "ptx", "amdgpu_code_object".
  std::string kind;
  /// CPU payloads: the CPU the code was compiled for, and the features it
  /// needs (names of detail::hostCpuFeatures()).
  std::string cpu;
  std::vector<std::string> cpuFeatures;
  int64_t offset = 0; // bytes from the start of the file
  int64_t size = 0;
  std::string checksum; // detail::checksum of the bytes, 16 hex digits
};

/// How a GPU kernel is launched: detail::GpuCode without its code, chip
/// (KernelInfo::target) and key tile (KernelInfo::blockKV).
struct GpuLaunch {
  int64_t blockThreads = 0, rowsPerBlock = 0, sharedBytes = 0;
  bool tensorMaps = false;
  /// select's pre-pass; both empty without select.
  std::string selectPoolEntry, selectEntry;
  int64_t registers = 0; // ptxas's count, for people reading the manifest
  /// KernelInfo::backward: the backward kernels (see detail::GpuCode).
  std::string backwardKvEntry, backwardQEntry;
  int64_t backwardKvThreads = 0, backwardKvRows = 0;
  int64_t backwardQThreads = 0, backwardQRows = 0;
  bool backwardGradients = false; // detail::GpuCode::backwardGradients
  int64_t clusterCtas = 1;         // detail::GpuCode::clusterCtas
};

/// One kernel of a bundle: what it expects and where its code is.
struct KernelEntry {
  KernelInfo info;
  int64_t binary = 0;      // index into BundleManifest::binaries
  /// CPU kernels of a bundle compiled for several CPUs (format 3): the
  /// other binaries holding this kernel, next best first. The loader runs
  /// the first of `binary`, then these, whose CPU features the host has.
  std::vector<int64_t> fallbackBinaries;
  std::string entry;       // exported symbol of the kernel
  std::string mergeEntry;  // the split-KV merge
  std::string blockMapEntry; // CPU kernels of masked variants; else empty
  std::string backwardEntry; // CPU kernels with KernelInfo::backward
  /// NVIDIA kernels: the index of their PTX payload.
  std::optional<int64_t> ptxBinary;
  /// Set exactly for kernels whose binary is GPU code.
  std::optional<GpuLaunch> gpu;
};

/// A bundle's manifest. The reader checks what holds the document
/// together: each kernel's binary (and PTX) index names a payload, a GPU
/// kernel's binary is GPU code for its own target and comes with its
/// launch geometry, a CPU kernel's is CPU code, and so are its fallbacks
/// (distinct payloads, only from format 3 on).
struct BundleManifest {
  int64_t format = detail::kBundleFormat; // as in the file header
  std::string compiler; // attnc version that wrote it
  std::string source;   // name of the .attn file
  std::vector<KernelEntry> kernels;
  std::vector<BinaryEntry> binaries;
};

ATTN_MANIFEST_API std::string writeBundleManifest(const BundleManifest &m);
/// `origin` (the bundle's path) names the document in error messages.
ATTN_MANIFEST_API BundleManifest readBundleManifest(std::string_view text,
                                                    const std::string &origin);

/// A KernelInfo alone: the C ABI's attn_kernel_info_json.
ATTN_MANIFEST_API std::string writeKernelInfo(const KernelInfo &info);
ATTN_MANIFEST_API KernelInfo readKernelInfo(std::string_view text,
                                            const std::string &origin);

/// attn::Jit's disk cache: KEY.json describes KEY.o (a CPU kernel's
/// object) or KEY.bin and KEY.ptx (a GPU kernel's binary and PTX), and is
/// written after them. A record that does not read back, or whose compiler,
/// key or checksums disagree, is rebuilt.
struct CpuCacheRecord {
  std::string compiler, key;
  std::string entry, blockMapEntry, mergeEntry;
  std::string backwardEntry; // empty without KernelInfo::backward
  int64_t objectSize = 0;
  std::string objectChecksum;
  KernelInfo info;
};
struct GpuCacheRecord {
  std::string compiler, key;
  /// All but `binary` and `ptx` are written (those are the files beside
  /// the record); they read back empty.
  detail::GpuCode code;
  std::string binaryChecksum, ptxChecksum;
  KernelInfo info;
};

ATTN_MANIFEST_API std::string writeCacheRecord(const CpuCacheRecord &r);
ATTN_MANIFEST_API std::string writeCacheRecord(const GpuCacheRecord &r);
ATTN_MANIFEST_API CpuCacheRecord readCpuCacheRecord(std::string_view text,
                                                    const std::string &origin);
ATTN_MANIFEST_API GpuCacheRecord readGpuCacheRecord(std::string_view text,
                                                    const std::string &origin);

} // namespace attn::manifest

#endif // ATTN_RUNTIME_SUPPORT_MANIFEST_H
