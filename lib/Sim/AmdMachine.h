//===- AmdMachine.h - executes CDNA code objects, wave by wave ------------===//
//
// A functional model of a CDNA compute unit running one kernel dispatch:
// every workgroup's waves of 64 lanes with their scalar and vector
// registers (AGPRs included), EXEC / VCC / SCC, the workgroup's LDS, and
// global, buffer and flat memory checked against the allocations of a
// Memory (Machine.h).
//
// Memory operations complete when issued (a legal timing), but the wait
// counters are honoured as a program could observe them: a load's
// destination registers stay pending until the s_waitcnt that retires it
// (vmcnt in order; lgkmcnt in order for LDS, at lgkmcnt(0) for scalar
// loads, which return out of order), and an instruction that reads or
// overwrites a pending register is a fault. s_barrier holds a wave until
// every wave of its workgroup that has not ended reaches one.
//
// Faults (an access outside every allocation or outside LDS, a register
// read before its load was waited for, an instruction the model does not
// have, a wave that never ends) are thrown as Fault with the runtime's
// codes: 700 illegal address, 702 launch time-out (a hang), 715 an
// instruction not modelled, 719 launch failure (anything else). Their
// text names the kernel, the workgroup, the wave, the lane where one is at
// fault, and the instruction with its address.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_SIM_AMDMACHINE_H
#define ATTN_SIM_AMDMACHINE_H

#include "lib/Sim/AmdCode.h"
#include "lib/Sim/Machine.h"

#include <set>
#include <string>

namespace attn::sim::amd {

/// The flat address space's apertures (what src_shared_base and
/// src_private_base read): 64-bit flat addresses whose high dword is
/// kSharedApertureHi address LDS, kPrivateApertureHi scratch.
constexpr uint32_t kSharedApertureHi = 1u << 16;
constexpr uint32_t kPrivateApertureHi = 2u << 16;

/// LDS per workgroup on CDNA2/CDNA3 (gfx950: 160 KiB).
uint32_t ldsLimit(const std::string &chip);

struct DispatchConfig {
  uint32_t grid[3] = {1, 1, 1};  // workgroups per dimension
  uint32_t block[3] = {1, 1, 1}; // work-items per workgroup
  uint32_t dynamicLds = 0;       // bytes past the kernel's static LDS
  uint64_t kernarg = 0;          // device address of the kernarg segment
  uint64_t dispatchPacket = 0;   // device address of the AQL packet
};

struct DispatchStats {
  uint64_t waveInstructions = 0; // instructions executed, summed over waves
  uint64_t laneInstructions = 0; // vector instructions times active lanes
  uint64_t mfmaFlops = 0;        // 2 m n k blocks per MFMA
  uint64_t workgroups = 0;
  uint64_t byClass[kInstClasses] = {}; // waveInstructions by InstClass
};

/// The handler of an instruction (null when the model lacks it); what
/// loadCodeObject asks for each instruction it decodes.
Handler bindInstruction(Inst &in);

/// The instructions in `code` that the model lacks, one per mnemonic:
/// "v_foo at 0x1a40: v_foo v1, v2".
std::set<std::string> unmodelledInstructions(const CodeObject &code);

/// Runs every workgroup of the dispatch; throws Fault.
DispatchStats dispatch(const CodeObject &code, const Kernel &kernel,
                       const DispatchConfig &config, Memory &memory);

} // namespace attn::sim::amd

#endif // ATTN_SIM_AMDMACHINE_H
