//===- CPUTargetInfo.h - TargetInfo for CPUs ------------------------------===//
#ifndef ATTN_TARGET_CPU_CPUTARGETINFO_H
#define ATTN_TARGET_CPU_CPUTARGETINFO_H

#include "lib/Target/TargetInfo.h"

namespace attn::cpu {

/// The CPU target (lib/Target/TargetInfo.cpp lists it). The class
/// itself is private to its .cpp: a polymorphic class with external
/// linkage would have its typeinfo both in libattnjit.so and in programs
/// that also link the compiler statically (the tests), which ASan reports
/// as an ODR violation.
const mlir::attn::TargetInfo &cpuTargetInfo();

} // namespace attn::cpu

#endif // ATTN_TARGET_CPU_CPUTARGETINFO_H
