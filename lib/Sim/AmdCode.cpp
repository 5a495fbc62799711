//===- AmdCode.cpp - code objects through LLVM's AMDGPU MC layer ----------===//
#include "lib/Sim/AmdCode.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/BinaryFormat/ELF.h"
#include "llvm/BinaryFormat/MsgPackDocument.h"
#include "llvm/MC/MCAsmInfo.h"
#include "llvm/MC/MCContext.h"
#include "llvm/MC/MCDisassembler/MCDisassembler.h"
#include "llvm/MC/MCInst.h"
#include "llvm/MC/MCInstPrinter.h"
#include "llvm/MC/MCInstrInfo.h"
#include "llvm/MC/MCRegisterInfo.h"
#include "llvm/MC/MCSubtargetInfo.h"
#include "llvm/MC/MCTargetOptions.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Object/ELF.h"
#include "llvm/Support/AMDHSAKernelDescriptor.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/TargetParser/Triple.h"

#include <cstring>
#include <map>
#include <mutex>

extern "C" void LLVMInitializeAMDGPUDisassembler();

namespace attn::sim::amd {

namespace {

constexpr int kHipInvalidImage = 200;
constexpr int kHipNoBinaryForGpu = 209;

/// LLVM's MC objects for one chip, made once per process.
struct McChip {
  std::unique_ptr<llvm::MCRegisterInfo> mri;
  std::unique_ptr<llvm::MCAsmInfo> mai;
  std::unique_ptr<llvm::MCSubtargetInfo> sti;
  std::unique_ptr<llvm::MCInstrInfo> mii;
  std::unique_ptr<llvm::MCContext> ctx;
  std::unique_ptr<llvm::MCDisassembler> dis;
  std::unique_ptr<llvm::MCInstPrinter> printer;
  /// The operand type of source modifiers (AMDGPU::OPERAND_INPUT_MODS),
  /// read from an opcode known to have them rather than hard-coded.
  uint8_t inputModsType = 0xff;
  std::map<unsigned, Operand> registers; // MCRegister -> operand
  std::mutex mutex;                      // MC objects are not thread safe
};

McChip &mcFor(const std::string &chip) {
  static std::mutex mutex;
  static std::map<std::string, std::unique_ptr<McChip>> chips;
  std::lock_guard<std::mutex> lock(mutex);
  std::unique_ptr<McChip> &c = chips[chip];
  if (c)
    return *c;
  static std::once_flag init;
  std::call_once(init, [] {
    LLVMInitializeAMDGPUTargetInfo();
    LLVMInitializeAMDGPUTargetMC();
    LLVMInitializeAMDGPUDisassembler();
  });
  llvm::Triple triple("amdgcn-amd-amdhsa");
  std::string error;
  const llvm::Target *target =
      llvm::TargetRegistry::lookupTarget(triple, error);
  if (!target)
    throw LoadError(kHipInvalidImage, "no AMDGPU target in LLVM: " + error);
  c = std::make_unique<McChip>();
  c->mri.reset(target->createMCRegInfo(triple));
  llvm::MCTargetOptions options;
  c->mai.reset(target->createMCAsmInfo(*c->mri, triple, options));
  c->sti.reset(target->createMCSubtargetInfo(triple, chip, ""));
  c->mii.reset(target->createMCInstrInfo());
  c->ctx = std::make_unique<llvm::MCContext>(triple, c->mai.get(),
                                             c->mri.get(), c->sti.get());
  c->dis.reset(target->createMCDisassembler(*c->sti, *c->ctx));
  c->printer.reset(
      target->createMCInstPrinter(triple, 0, *c->mai, *c->mii, *c->mri));
  if (!c->dis || !c->printer)
    throw LoadError(kHipInvalidImage,
                    "LLVM has no AMDGPU disassembler for " + chip);
  for (unsigned op = 0; op < c->mii->getNumOpcodes(); ++op)
    if (c->mii->getName(op) == "V_FMA_F32_vi") {
      c->inputModsType = c->mii->get(op).operands()[1].OperandType;
      break;
    }
  return *c;
}

/// "SGPR4_SGPR5" -> (Sgpr, 4, 2) and so on, by the register's MC name.
Operand registerOperand(McChip &mc, unsigned reg) {
  auto it = mc.registers.find(reg);
  if (it != mc.registers.end())
    return it->second;
  std::string name = mc.mri->getName(reg);
  Operand o;
  auto tuple = [&](llvm::StringRef prefix, Operand::Kind kind, uint16_t base) {
    llvm::SmallVector<llvm::StringRef> parts;
    llvm::StringRef(name).split(parts, '_');
    unsigned first = 0;
    if (!parts[0].consume_front(prefix) || parts[0].getAsInteger(10, first))
      return false;
    o.kind = kind;
    o.index = static_cast<uint16_t>(base + first);
    o.dwords = static_cast<uint8_t>(parts.size());
    return true;
  };
  static const std::map<std::string, std::pair<uint16_t, uint8_t>> special = {
      {"VCC", {kVcc, 2}},           {"VCC_LO", {kVcc, 1}},
      {"VCC_HI", {kVcc + 1, 1}},    {"EXEC", {kExec, 2}},
      {"EXEC_LO", {kExec, 1}},      {"EXEC_HI", {kExec + 1, 1}},
      {"M0", {kM0, 1}},             {"FLAT_SCR", {kFlatScratch, 2}},
      {"FLAT_SCR_LO", {kFlatScratch, 1}},
      {"FLAT_SCR_HI", {kFlatScratch + 1, 1}},
      {"XNACK_MASK", {kXnackMask, 2}},
      {"XNACK_MASK_LO", {kXnackMask, 1}},
      {"XNACK_MASK_HI", {kXnackMask + 1, 1}}};
  if (tuple("SGPR", Operand::Sgpr, 0) || tuple("TTMP", Operand::Sgpr, kTtmp0) ||
      tuple("VGPR", Operand::Vgpr, 0) || tuple("AGPR", Operand::Vgpr, kAgpr0)) {
  } else if (auto s = special.find(name); s != special.end()) {
    o.kind = Operand::Sgpr;
    o.index = s->second.first;
    o.dwords = s->second.second;
  } else if (name == "SCC" || name == "SRC_SCC") {
    o.kind = Operand::Scc;
  } else if (name == "SRC_EXECZ") {
    o.kind = Operand::Execz;
  } else if (name == "SRC_VCCZ") {
    o.kind = Operand::Vccz;
  } else if (llvm::StringRef(name).starts_with("SRC_SHARED_BASE") ||
             llvm::StringRef(name).starts_with("SRC_PRIVATE_BASE") ||
             llvm::StringRef(name).starts_with("SRC_SHARED_LIMIT") ||
             llvm::StringRef(name).starts_with("SRC_PRIVATE_LIMIT")) {
    // The apertures' high halves (see AmdMachine.h); 64-bit reads give
    // the full base address.
    o.kind = Operand::Aperture;
    bool shared = llvm::StringRef(name).contains("SHARED");
    bool limit = llvm::StringRef(name).contains("LIMIT");
    o.imm = (shared ? 1ull : 2ull) << 16;
    o.imm = limit ? ((o.imm << 32) | 0xffffffffull) : (o.imm << 32);
    o.dwords = llvm::StringRef(name).ends_with("_LO") ? 1 : 2;
  } else {
    o.kind = Operand::None; // unknown: the instruction is not modelled
    o.index = 0xffff;
  }
  mc.registers[reg] = o;
  return o;
}

/// "v_add_f32_e32" -> "v_add_f32"; "v_mov_b32_dpp" -> "v_mov_b32".
std::string baseMnemonic(llvm::StringRef text, Inst &in) {
  text = text.trim();
  llvm::StringRef m = text.take_until([](char c) { return c == ' ' || c == '\t'; });
  if (m.consume_back("_e32")) {
  } else if (m.consume_back("_e64")) {
    in.vop3 = true;
  } else if (m.consume_back("_dpp")) {
    in.dpp = true;
  } else if (m.consume_back("_sdwa")) {
    in.sdwa = true;
  }
  return m.str();
}

/// False when an operand has no model (an unknown register or operand kind).
bool decodeOperands(McChip &mc, const llvm::MCInst &mci, Inst &in) {
  const llvm::MCInstrDesc &desc = mc.mii->get(mci.getOpcode());
  unsigned ndefs = desc.getNumDefs();
  uint8_t mods = 0;
  bool unknown = false;
  for (unsigned i = 0; i < mci.getNumOperands(); ++i) {
    const llvm::MCOperand &op = mci.getOperand(i);
    const llvm::MCOperandInfo *info =
        i < desc.getNumOperands() ? &desc.operands()[i] : nullptr;
    if (i < ndefs && op.isReg()) {
      if (in.ndef < 2)
        in.def[in.ndef++] = registerOperand(mc, op.getReg());
      continue;
    }
    if (info && info->OperandType == mc.inputModsType && op.isImm()) {
      mods = static_cast<uint8_t>(op.getImm());
      continue;
    }
    Operand o;
    if (op.isReg()) {
      if (!op.getReg())
        continue; // an absent optional register
      o = registerOperand(mc, op.getReg());
      unknown |= o.kind == Operand::None;
    } else if (op.isImm() && info && info->RegClass != -1) {
      o.kind = Operand::Imm;
      o.imm = static_cast<uint64_t>(op.getImm());
    } else if (op.isImm()) {
      if (in.nimm < std::size(in.imm))
        in.imm[in.nimm++] = op.getImm();
      continue;
    } else {
      unknown = true;
      continue;
    }
    o.mods = mods;
    mods = 0;
    if (in.nsrc < 4)
      in.src[in.nsrc++] = o;
    else
      unknown = true;
  }
  if (in.dpp && in.nsrc > 0) {
    // DPP's first source is `old`, the result's previous value.
    in.old = in.src[0];
    for (int i = 1; i < in.nsrc; ++i)
      in.src[i - 1] = in.src[i];
    --in.nsrc;
  }
  return !unknown;
}

const llvm::object::ELF64LE::Shdr *
sectionNamed(const llvm::object::ELF64LEFile &elf, llvm::StringRef name) {
  auto sections = elf.sections();
  if (!sections)
    return nullptr;
  for (const auto &s : *sections) {
    auto n = elf.getSectionName(s);
    if (n && *n == name)
      return &s;
  }
  return nullptr;
}

int64_t integer(llvm::msgpack::DocNode &map, llvm::StringRef key) {
  auto &m = map.getMap();
  auto it = m.find(map.getDocument()->getNode(key));
  if (it == m.end())
    return 0;
  llvm::msgpack::DocNode &n = it->second;
  if (n.getKind() == llvm::msgpack::Type::Int)
    return n.getInt();
  if (n.getKind() == llvm::msgpack::Type::UInt)
    return static_cast<int64_t>(n.getUInt());
  return 0;
}

std::string string(llvm::msgpack::DocNode &map, llvm::StringRef key) {
  auto &m = map.getMap();
  auto it = m.find(map.getDocument()->getNode(key));
  if (it == m.end() || it->second.getKind() != llvm::msgpack::Type::String)
    return "";
  return it->second.getString().str();
}

/// Reads the metadata note: the target's chip and each kernel's fields.
std::string readMetadata(const llvm::object::ELF64LEFile &elf,
                         std::vector<Kernel> &kernels) {
  auto sections = elf.sections();
  if (!sections)
    throw LoadError(kHipInvalidImage, llvm::toString(sections.takeError()));
  std::string target;
  for (const auto &section : *sections) {
    if (section.sh_type != llvm::ELF::SHT_NOTE)
      continue;
    llvm::Error err = llvm::Error::success();
    for (const auto &note : elf.notes(section, err)) {
      if (note.getName() != "AMDGPU" ||
          note.getType() != llvm::ELF::NT_AMDGPU_METADATA)
        continue;
      llvm::ArrayRef<uint8_t> desc = note.getDesc(section.sh_addralign);
      llvm::msgpack::Document doc;
      if (!doc.readFromBlob(
              llvm::StringRef(reinterpret_cast<const char *>(desc.data()),
                              desc.size()),
              false))
        continue;
      auto &root = doc.getRoot();
      target = string(root, "amdhsa.target");
      auto &rm = root.getMap();
      auto list = rm.find(doc.getNode("amdhsa.kernels"));
      if (list == rm.end())
        continue;
      for (llvm::msgpack::DocNode &k : list->second.getArray()) {
        Kernel kernel;
        kernel.name = string(k, ".name");
        kernel.wavefrontSize = uint32_t(integer(k, ".wavefront_size"));
        kernel.vgprs = uint32_t(integer(k, ".vgpr_count"));
        kernel.agprs = uint32_t(integer(k, ".agpr_count"));
        kernel.sgprs = uint32_t(integer(k, ".sgpr_count"));
        if (int64_t m = integer(k, ".max_flat_workgroup_size"))
          kernel.maxFlatWorkgroupSize = uint32_t(m);
        auto &km = k.getMap();
        auto reqd = km.find(doc.getNode(".reqd_workgroup_size"));
        if (reqd != km.end() &&
            reqd->second.getKind() == llvm::msgpack::Type::Array)
          for (size_t i = 0; i < 3 && i < reqd->second.getArray().size(); ++i) {
            auto &n = reqd->second.getArray()[i];
            kernel.reqdWorkgroupSize[i] = uint32_t(
                n.getKind() == llvm::msgpack::Type::UInt ? n.getUInt()
                                                         : n.getInt());
          }
        auto args = km.find(doc.getNode(".args"));
        if (args != km.end())
          for (llvm::msgpack::DocNode &a : args->second.getArray())
            kernel.args.push_back({uint32_t(integer(a, ".offset")),
                                   uint32_t(integer(a, ".size")),
                                   string(a, ".value_kind")});
        kernel.name = kernel.name.empty() ? string(k, ".symbol") : kernel.name;
        kernels.push_back(std::move(kernel));
      }
    }
    if (err)
      throw LoadError(kHipInvalidImage, llvm::toString(std::move(err)));
  }
  return target;
}

} // namespace

const Kernel *CodeObject::find(const std::string &name) const {
  for (const Kernel &k : kernels)
    if (k.name == name)
      return &k;
  return nullptr;
}

size_t elfImageSize(const void *bytes) {
  const auto *h = static_cast<const llvm::ELF::Elf64_Ehdr *>(bytes);
  if (memcmp(h->e_ident, llvm::ELF::ElfMagic, 4) != 0 ||
      h->e_ident[llvm::ELF::EI_CLASS] != llvm::ELF::ELFCLASS64)
    return 0;
  uint64_t end = h->e_shoff + uint64_t(h->e_shnum) * h->e_shentsize;
  end = std::max<uint64_t>(end, h->e_phoff + uint64_t(h->e_phnum) *
                                                 h->e_phentsize);
  const auto *base = static_cast<const uint8_t *>(bytes);
  for (unsigned i = 0; i < h->e_shnum && h->e_shoff; ++i) {
    llvm::ELF::Elf64_Shdr s;
    memcpy(&s, base + h->e_shoff + i * h->e_shentsize, sizeof(s));
    if (s.sh_type != llvm::ELF::SHT_NOBITS)
      end = std::max<uint64_t>(end, s.sh_offset + s.sh_size);
  }
  return static_cast<size_t>(end);
}

std::unique_ptr<CodeObject> loadCodeObject(const void *bytes, size_t size,
                                           Handler (*bind)(Inst &)) {
  llvm::StringRef data(static_cast<const char *>(bytes), size);
  if (size < 4 || memcmp(bytes, "\x7f" "ELF", 4) != 0)
    throw LoadError(kHipInvalidImage, "not an ELF code object");
  auto elfOr = llvm::object::ELF64LEFile::create(data);
  if (!elfOr)
    throw LoadError(kHipInvalidImage, "not an ELF code object: " +
                                          llvm::toString(elfOr.takeError()));
  llvm::object::ELF64LEFile &elf = *elfOr;
  if (elf.getHeader().e_machine != llvm::ELF::EM_AMDGPU)
    throw LoadError(kHipNoBinaryForGpu, "not an AMDGPU code object");

  auto co = std::make_unique<CodeObject>();
  std::string target = readMetadata(elf, co->kernels);
  // "amdgcn-amd-amdhsa--gfx942:sramecc+:xnack-" -> "gfx942".
  llvm::StringRef processor = llvm::StringRef(target).rsplit("--").second;
  co->chip = processor.split(':').first.str();
  if (co->chip != "gfx90a" && co->chip != "gfx942" && co->chip != "gfx950")
    throw LoadError(kHipNoBinaryForGpu,
                    "the simulator runs CDNA code objects (gfx90a, gfx942, "
                    "gfx950), not '" + target + "'");

  // The loadable segments at their virtual addresses.
  auto phdrs = elf.program_headers();
  if (!phdrs)
    throw LoadError(kHipInvalidImage, llvm::toString(phdrs.takeError()));
  for (const auto &p : *phdrs)
    if (p.p_type == llvm::ELF::PT_LOAD)
      co->imageBytes = std::max<uint64_t>(co->imageBytes, p.p_vaddr + p.p_memsz);
  co->image.reset(new uint8_t[co->imageBytes + 1]());
  for (const auto &p : *phdrs)
    if (p.p_type == llvm::ELF::PT_LOAD) {
      if (p.p_offset + p.p_filesz > size)
        throw LoadError(kHipInvalidImage, "truncated code object");
      memcpy(co->image.get() + p.p_vaddr, data.data() + p.p_offset,
             p.p_filesz);
    }

  // Dynamic relocations of data in the image (pointers to the image).
  if (const auto *rela = sectionNamed(elf, ".rela.dyn")) {
    auto relas = elf.relas(*rela);
    const auto *dynsym = sectionNamed(elf, ".dynsym");
    if (relas)
      for (const auto &r : *relas) {
        uint32_t type = r.getType(false);
        uint64_t value = 0;
        if (type == llvm::ELF::R_AMDGPU_RELATIVE64) {
          value = co->deviceAddress(0) + r.r_addend;
        } else if (type == llvm::ELF::R_AMDGPU_ABS64 && dynsym) {
          auto sym = elf.getRelocationSymbol(r, dynsym);
          if (!sym || !*sym)
            throw LoadError(kHipInvalidImage, "bad relocation symbol");
          value = co->deviceAddress((*sym)->st_value) + r.r_addend;
        } else {
          throw LoadError(kHipInvalidImage,
                          "relocation type " + std::to_string(type) +
                              " is not modelled");
        }
        if (r.r_offset + 8 > co->imageBytes)
          throw LoadError(kHipInvalidImage, "relocation outside the image");
        memcpy(co->image.get() + r.r_offset, &value, 8);
      }
  }

  // Kernel descriptors (symbol NAME.kd) and entry points.
  const auto *symtab = sectionNamed(elf, ".dynsym");
  if (!symtab)
    symtab = sectionNamed(elf, ".symtab");
  if (!symtab)
    throw LoadError(kHipInvalidImage, "the code object has no symbols");
  auto syms = elf.symbols(symtab);
  auto strtab = elf.getStringTableForSymtab(*symtab);
  if (!syms || !strtab)
    throw LoadError(kHipInvalidImage, "unreadable symbol table");
  for (Kernel &k : co->kernels) {
    bool found = false;
    for (const auto &s : *syms) {
      auto name = s.getName(*strtab);
      if (!name || *name != k.name + ".kd")
        continue;
      if (s.st_value + sizeof(llvm::amdhsa::kernel_descriptor_t) >
          co->imageBytes)
        throw LoadError(kHipInvalidImage, k.name + ".kd outside the image");
      llvm::amdhsa::kernel_descriptor_t kd;
      memcpy(&kd, co->image.get() + s.st_value, sizeof(kd));
      k.groupSegmentBytes = kd.group_segment_fixed_size;
      k.privateSegmentBytes = kd.private_segment_fixed_size;
      k.kernargBytes = kd.kernarg_size;
      k.rsrc1 = kd.compute_pgm_rsrc1;
      k.rsrc2 = kd.compute_pgm_rsrc2;
      k.rsrc3 = kd.compute_pgm_rsrc3;
      k.codeProperties = kd.kernel_code_properties;
      k.kernargPreload = kd.kernarg_preload;
      k.entry = s.st_value + kd.kernel_code_entry_byte_offset;
      found = true;
      break;
    }
    if (!found)
      throw LoadError(kHipInvalidImage, "no kernel descriptor " + k.name +
                                            ".kd");
  }

  // Every instruction of .text.
  const auto *text = sectionNamed(elf, ".text");
  if (!text)
    throw LoadError(kHipInvalidImage, "the code object has no .text");
  co->textBegin = text->sh_addr;
  co->textEnd = text->sh_addr + text->sh_size;
  co->indexOf.assign((text->sh_size + 3) / 4, -1);
  llvm::ArrayRef<uint8_t> code(co->image.get() + text->sh_addr, text->sh_size);
  McChip &mc = mcFor(co->chip);
  std::lock_guard<std::mutex> lock(mc.mutex);
  for (uint64_t offset = 0; offset < code.size();) {
    Inst in;
    in.address = co->textBegin + offset;
    llvm::MCInst mci;
    uint64_t bytes = 0;
    auto status = mc.dis->getInstruction(mci, bytes, code.slice(offset),
                                         in.address, llvm::nulls());
    if (status != llvm::MCDisassembler::Success || bytes == 0) {
      in.size = 4;
      in.text = "<undecodable " +
                llvm::utohexstr(llvm::support::endian::read32le(
                    code.data() + offset)) +
                ">";
      in.mnemonic = in.text;
    } else {
      in.size = static_cast<uint32_t>(bytes);
      in.opcode = mci.getOpcode();
      in.mcName = mc.mii->getName(mci.getOpcode()).str();
      std::string printed;
      llvm::raw_string_ostream os(printed);
      mc.printer->printInst(&mci, in.address, "", *mc.sti, os);
      in.text = llvm::StringRef(printed).trim().str();
      in.mnemonic = baseMnemonic(in.text, in);
      in.klass = classifyMnemonic(in.mnemonic);
      // Operands first: the binder inspects them (forms, widths, modifiers).
      if (decodeOperands(mc, mci, in))
        in.run = bind(in);
    }
    co->indexOf[offset / 4] = static_cast<int32_t>(co->insts.size());
    co->insts.push_back(std::move(in));
    offset += co->insts.back().size;
  }
  return co;
}

const char *instClassName(InstClass c) {
  static const char *const names[kInstClasses] = {
      "salu",      "smem",       "branch",   "wait",      "barrier",
      "valu",      "mfma",       "vmem_load", "vmem_store", "lds_read",
      "lds_write", "lds_other",  "other"};
  return c < kInstClasses ? names[c] : "other";
}

InstClass classifyMnemonic(const std::string &mnemonic) {
  llvm::StringRef m = mnemonic;
  if (m.starts_with("v_mfma"))
    return kMfma;
  if (m.starts_with("v_"))
    return kValu;
  if (m.starts_with("ds_read"))
    return kLdsRead;
  if (m.starts_with("ds_write"))
    return kLdsWrite;
  if (m.starts_with("ds_"))
    return kLdsOther;
  if (m.starts_with("global_") || m.starts_with("flat_") ||
      m.starts_with("buffer_") || m.starts_with("scratch_"))
    return m.contains("_load") && !m.contains("atomic") ? kVmemLoad
                                                         : kVmemStore;
  if (m.starts_with("s_load") || m.starts_with("s_buffer_") ||
      m.starts_with("s_store") || m.starts_with("s_dcache") ||
      m.starts_with("s_memtime") || m.starts_with("s_memrealtime"))
    return kSmem;
  if (m == "s_barrier")
    return kBarrier;
  if (m.starts_with("s_waitcnt") || m == "s_nop" || m == "s_sleep")
    return kWait;
  if (m == "s_branch" || m.starts_with("s_cbranch") || m == "s_setpc_b64" ||
      m == "s_swappc_b64" || m == "s_endpgm")
    return kBranch;
  if (m.starts_with("s_"))
    return kSalu;
  return kOther;
}

} // namespace attn::sim::amd
