//===- AmdCode.h - an AMDGPU code object, loaded and decoded --------------===//
//
// What the AMD simulator executes: a code object (the ELF shared object
// hipModuleLoadData takes) with its loadable segments copied into simulated
// device memory, every instruction of .text decoded by LLVM's own AMDGPU
// disassembler (MCDisassembler) and printed by its instruction printer, and
// each kernel's descriptor (the `.kd` symbol, laid out as
// llvm/Support/AMDHSAKernelDescriptor.h's kernel_descriptor_t) and
// metadata note (its arguments, as AMDGPUUsage's "Code Object V5 Metadata"
// describes them).
//
// Operands are read from the MCInst the disassembler builds, classified by
// the opcode's MCInstrDesc: the first getNumDefs() operands are results,
// an operand of the source-modifier type applies to the operand after it,
// register and register-class (inline constant or literal) operands are
// sources, and the remaining immediates (offsets, cache policy, DPP and
// SDWA controls, MFMA broadcast fields, branch offsets) are kept in order.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_SIM_AMDCODE_H
#define ATTN_SIM_AMDCODE_H

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace attn::sim::amd {

/// Scalar register file positions (the SGPR operand encodings of GFX9,
/// CDNA3 ISA section 3.3 "Scalar General-Purpose Registers" and the
/// scalar operand table): VCC, M0 and EXEC live in the same array as
/// s0..s101 so 64-bit scalar operations on them need no special case.
constexpr uint16_t kFlatScratch = 102;
constexpr uint16_t kXnackMask = 104;
constexpr uint16_t kVcc = 106;
constexpr uint16_t kTtmp0 = 108;
constexpr uint16_t kM0 = 124;
constexpr uint16_t kExec = 126;
constexpr uint16_t kScalarRegs = 128;
/// AGPRs follow the 256 VGPRs in one array (gfx90a and later unify the
/// two files per wave; an AGPR operand reads a[i] = position 256 + i).
constexpr uint16_t kAgpr0 = 256;
constexpr uint16_t kVectorRegs = 512;
/// Rows past the register file that no instruction names: SDWA operands
/// are staged there (see AmdMachine.cpp).
constexpr uint16_t kSdwaRow = kVectorRegs;
constexpr uint16_t kVectorRows = kVectorRegs + 3;

/// Source-modifier bits (SISrcMods in LLVM's AMDGPU backend; the NEG and
/// ABS fields of VOP3 and the NEG, NEG_HI, OP_SEL and OP_SEL_HI fields of
/// VOP3P, ISA section 12.13 / 12.15).
constexpr uint8_t kModNeg = 1;
constexpr uint8_t kModAbs = 2; // NEG_HI for packed (VOP3P) sources
constexpr uint8_t kModSext = 16; // SDWA integer sources: sext()
constexpr uint8_t kModOpSel0 = 4;
constexpr uint8_t kModOpSel1 = 8; // OP_SEL_HI; DST_OP_SEL on src0 of VOP3

struct Operand {
  enum Kind : uint8_t {
    None,
    Sgpr,    // index: scalar file position
    Vgpr,    // index: vector file position (AGPRs from kAgpr0)
    Imm,     // inline constant or literal: imm holds the operand's bits
    Scc,     // src_scc
    Execz,   // src_execz
    Vccz,    // src_vccz
    Aperture // src_shared_base & co: imm holds the 32-bit value
  };
  Kind kind = None;
  uint8_t dwords = 1;
  uint8_t mods = 0;
  uint16_t index = 0;
  uint64_t imm = 0;
};

/// What an instruction occupies, for the per-class counts of
/// ATTNSIM_STATS / ATTNSIM_PROFILE (the performance model's inputs).
enum InstClass : uint8_t {
  kSalu,      // scalar ALU (s_*, not below)
  kSmem,      // scalar memory (s_load_*, s_buffer_load_*, ...)
  kBranch,    // s_branch, s_cbranch_*, s_setpc/s_swappc, s_endpgm
  kWait,      // s_waitcnt*, s_nop, s_sleep
  kBarrier,   // s_barrier
  kValu,      // vector ALU (v_*, not MFMA)
  kMfma,      // v_mfma_*
  kVmemLoad,  // global/flat/buffer loads
  kVmemStore, // global/flat/buffer stores and atomics
  kLdsRead,   // ds_read*
  kLdsWrite,  // ds_write*
  kLdsOther,  // other ds_* (permutes, swizzles, atomics)
  kOther,
  kInstClasses
};
const char *instClassName(InstClass c);
/// The class of a mnemonic ("v_add_f32", encoding suffixes removed).
InstClass classifyMnemonic(const std::string &mnemonic);

/// Execution of one decoded instruction (see AmdMachine.cpp).
struct Exec;
struct Inst;
using Handler = void (*)(Exec &, const Inst &);

struct Inst {
  uint64_t address = 0;  // within the code object (its ELF virtual address)
  uint32_t size = 0;     // bytes
  unsigned opcode = 0;   // the MC opcode
  Handler run = nullptr; // null: not modelled (a hard error when reached)
  uint32_t aux = 0;      // handler-specific (operation, width, ...)
  uint8_t ndef = 0, nsrc = 0, nimm = 0;
  InstClass klass = kOther;
  bool dpp = false, sdwa = false, vop3 = false;
  Operand def[2];
  Operand src[4];
  Operand old;       // DPP: the tied previous value of the result
  Operand orig[3];   // SDWA: the sources and destination as encoded (the
                     // machine rewrites src / def to scratch rows)
  int64_t imm[12] = {};
  std::string mnemonic; // "v_add_f32" (encoding suffixes removed)
  std::string text;     // as llvm-objdump prints it
  std::string mcName;   // the MC opcode's name, e.g. V_ADD_F32_e32_vi
};

struct KernelArg {
  uint32_t offset = 0, size = 0;
  std::string kind; // .value_kind: by_value, global_buffer, hidden_...
};

struct Kernel {
  std::string name;
  uint64_t entry = 0; // address of the first instruction
  // kernel_descriptor_t fields.
  uint32_t groupSegmentBytes = 0, privateSegmentBytes = 0, kernargBytes = 0;
  uint32_t rsrc1 = 0, rsrc2 = 0, rsrc3 = 0;
  uint16_t codeProperties = 0, kernargPreload = 0;
  // Metadata.
  std::vector<KernelArg> args;
  uint32_t reqdWorkgroupSize[3] = {0, 0, 0};
  uint32_t maxFlatWorkgroupSize = 1024;
  uint32_t wavefrontSize = 64;
  uint32_t vgprs = 0, agprs = 0, sgprs = 0;
};

struct CodeObject {
  std::string chip; // gfx90a, gfx942, gfx950 (amdhsa.target's processor)
  std::vector<Kernel> kernels;
  std::vector<Inst> insts; // .text in address order
  /// The instruction starting at address a is insts[indexOf[(a - textBegin)
  /// / 4]], or -1 when none starts there.
  std::vector<int32_t> indexOf;
  uint64_t textBegin = 0, textEnd = 0;
  /// The loaded image (PT_LOAD segments at their virtual addresses), in
  /// host memory: device address of ELF address a is image + a.
  std::unique_ptr<uint8_t[]> image;
  uint64_t imageBytes = 0;

  const Kernel *find(const std::string &name) const;
  const Inst *at(uint64_t address) const {
    if (address < textBegin || address >= textEnd || (address & 3))
      return nullptr;
    int32_t i = indexOf[(address - textBegin) / 4];
    return i < 0 ? nullptr : &insts[size_t(i)];
  }
  uint64_t deviceAddress(uint64_t elfAddress) const {
    return reinterpret_cast<uint64_t>(image.get()) + elfAddress;
  }
};

/// Thrown for an image that is not a loadable CDNA code object.
struct LoadError : std::exception {
  std::string message;
  int code; // the HIP error a runtime gives: 200 invalid image, 209 no
            // binary for this GPU
  LoadError(int code, std::string m) : message(std::move(m)), code(code) {}
  const char *what() const noexcept override { return message.c_str(); }
};

/// Loads and decodes `bytes` (an ELF code object); throws LoadError. Each
/// instruction gets its handler from `bind` (null when not modelled).
std::unique_ptr<CodeObject> loadCodeObject(const void *bytes, size_t size,
                                           Handler (*bind)(Inst &));

/// Bytes of the ELF image starting at `bytes` (its section headers' end),
/// for callers that get a pointer without a size (hipModuleLoadData).
size_t elfImageSize(const void *bytes);

} // namespace attn::sim::amd

#endif // ATTN_SIM_AMDCODE_H
