//===- PtxParser.cpp - PTX text to the simulator's instruction arrays -----===//
//
// Reads the subset of PTX syntax (ISA chapters 4-6) that compilers emit:
// module directives, kernel and function headers, register, shared, local
// and global declarations, nested blocks (inline assembly brings its own
// registers and labels), labels, guarded instructions. Each opcode's
// modifiers are decoded here; one the simulator does not know is an error
// naming the line, so no instruction runs with a modifier ignored by
// accident (cache and memory-order hints, which do not change values in a
// functional model, are accepted explicitly).
//
//===----------------------------------------------------------------------===//
#include "lib/Sim/Ptx.h"
#include "lib/Sim/Fragments.h"

#include <cctype>
#include <cstring>
#include <functional>
#include <unordered_map>

namespace attn::sim::ptx {

bool isFloat(Type t) {
  switch (t) {
  case Type::F16: case Type::F16x2: case Type::BF16: case Type::BF16x2:
  case Type::TF32: case Type::F32: case Type::F64: case Type::E4M3:
  case Type::E5M2: case Type::E4M3x2: case Type::E5M2x2: return true;
  default: return false;
  }
}
bool isSigned(Type t) {
  return t == Type::S8 || t == Type::S16 || t == Type::S32 ||
         t == Type::S64 || t == Type::S4;
}
const char *typeName(Type t) {
  static const char *names[] = {
      "none", "pred", "b8", "b16", "b32", "b64", "b128", "u8", "u16", "u32",
      "u64", "s8", "s16", "s32", "s64", "f16", "f16x2", "bf16", "bf16x2",
      "tf32", "f32", "f64", "e4m3", "e5m2", "e4m3x2", "e5m2x2", "s4", "u4"};
  return names[static_cast<int>(t)];
}

const std::string &Function::sourceLine(const Instr &in) const {
  static const std::string none;
  size_t i = in.line - firstLine;
  return in.line >= firstLine && i < lines.size() ? lines[i] : none;
}

const char *className(InstrClass c) {
  static const char *names[] = {
      "int_alu", "fp_alu", "half_alu", "sfu", "convert", "move", "compare",
      "control", "global_memory", "shared_memory", "other_memory", "atomic",
      "async_copy", "mbarrier", "barrier", "warp_shuffle", "ldmatrix",
      "tensor_core", "other"};
  return names[static_cast<int>(c)];
}

InstrClass classify(const Instr &in) {
  bool half = in.type == Type::F16 || in.type == Type::BF16 ||
              in.type == Type::F16x2 || in.type == Type::BF16x2;
  switch (in.op) {
  case Op::Add: case Op::Sub: case Op::Mul: case Op::Mad: case Op::Fma:
  case Op::Min: case Op::Max: case Op::Abs: case Op::Neg: case Op::Div:
  case Op::Copysign: case Op::Testp:
    return half ? InstrClass::HalfAlu
           : isFloat(in.type) ? InstrClass::FpAlu : InstrClass::IntAlu;
  case Op::Rem: case Op::Sad: case Op::Mul24: case Op::Mad24: case Op::Popc:
  case Op::Clz: case Op::Bfind: case Op::Brev: case Op::Bfe: case Op::Bfi:
  case Op::Prmt: case Op::Shf: case Op::Lop3: case Op::Dp4a: case Op::Dp2a:
  case Op::And: case Op::Or: case Op::Xor: case Op::Not: case Op::Cnot:
  case Op::Shl: case Op::Shr:
    return InstrClass::IntAlu;
  case Op::Rcp: case Op::Sqrt: case Op::Rsqrt: case Op::Sin: case Op::Cos:
  case Op::Lg2: case Op::Ex2: case Op::Tanh:
    return InstrClass::Sfu;
  case Op::Setp: case Op::Set: case Op::Selp: case Op::Slct:
    return InstrClass::Compare;
  case Op::Mov: case Op::Cvta: case Op::Isspacep: case Op::Mapa:
  case Op::Getctarank: case Op::Activemask:
    return InstrClass::Move;
  case Op::Cvt:
    return InstrClass::Convert;
  case Op::Ld: case Op::LdU: case Op::St: case Op::Prefetch:
    return in.space == Space::Global || in.space == Space::Generic
               ? InstrClass::GlobalMemory
           : in.space == Space::Shared || in.space == Space::SharedCluster
               ? InstrClass::SharedMemory
               : InstrClass::OtherMemory;
  case Op::Atom: case Op::Red:
    return InstrClass::Atomic;
  case Op::CpAsync: case Op::CpAsyncCommit: case Op::CpAsyncWait:
  case Op::CpAsyncWaitAll: case Op::CpBulkTensor: case Op::CpBulk:
  case Op::CpBulkCommit: case Op::CpBulkWait:
    return InstrClass::AsyncCopy;
  case Op::CpAsyncMbarrierArrive: case Op::MbarInit: case Op::MbarInval:
  case Op::MbarArrive: case Op::MbarArriveDrop: case Op::MbarExpectTx:
  case Op::MbarCompleteTx: case Op::MbarTestWait: case Op::MbarTryWait:
  case Op::MbarPendingCount:
    return InstrClass::Mbarrier;
  case Op::Bra: case Op::Ret: case Op::Exit: case Op::Trap: case Op::Call:
    return InstrClass::Control;
  case Op::BarSync: case Op::BarArrive: case Op::BarRed: case Op::BarWarpSync:
  case Op::BarClusterArrive: case Op::BarClusterWait:
  case Op::Membar: case Op::Fence:
    return InstrClass::Barrier;
  case Op::Shfl: case Op::Vote: case Op::Match: case Op::Redux: case Op::Elect:
    return InstrClass::WarpShuffle;
  case Op::Ldmatrix: case Op::Stmatrix:
    return InstrClass::Ldmatrix;
  case Op::Mma: case Op::WgFence: case Op::WgMma: case Op::WgCommit:
  case Op::WgWait:
    return InstrClass::TensorCore;
  default:
    return InstrClass::Other;
  }
}

const Function *Module::find(const std::string &name) const {
  for (const auto &f : functions)
    if (f->name == name)
      return f.get();
  return nullptr;
}

namespace {

const std::unordered_map<std::string, Type> &typeTable() {
  static const std::unordered_map<std::string, Type> t = {
      {"pred", Type::Pred}, {"b8", Type::B8}, {"b16", Type::B16},
      {"b32", Type::B32}, {"b64", Type::B64}, {"b128", Type::B128},
      {"u8", Type::U8}, {"u16", Type::U16}, {"u32", Type::U32},
      {"u64", Type::U64}, {"s8", Type::S8}, {"s16", Type::S16},
      {"s32", Type::S32}, {"s64", Type::S64}, {"f16", Type::F16},
      {"f16x2", Type::F16x2}, {"bf16", Type::BF16},
      {"bf16x2", Type::BF16x2}, {"tf32", Type::TF32}, {"f32", Type::F32},
      {"f64", Type::F64}, {"e4m3", Type::E4M3}, {"e5m2", Type::E5M2},
      {"e4m3x2", Type::E4M3x2}, {"e5m2x2", Type::E5M2x2}, {"s4", Type::S4},
      {"u4", Type::U4}};
  return t;
}

const std::unordered_map<std::string, Special> &specialTable() {
  static const std::unordered_map<std::string, Special> t = {
      {"%tid.x", Special::TidX}, {"%tid.y", Special::TidY},
      {"%tid.z", Special::TidZ}, {"%ntid.x", Special::NtidX},
      {"%ntid.y", Special::NtidY}, {"%ntid.z", Special::NtidZ},
      {"%ctaid.x", Special::CtaidX}, {"%ctaid.y", Special::CtaidY},
      {"%ctaid.z", Special::CtaidZ}, {"%nctaid.x", Special::NctaidX},
      {"%nctaid.y", Special::NctaidY}, {"%nctaid.z", Special::NctaidZ},
      {"%laneid", Special::LaneId}, {"%warpid", Special::WarpId},
      {"%nwarpid", Special::NWarpId}, {"%smid", Special::SmId},
      {"%nsmid", Special::NSmId}, {"%clock", Special::Clock},
      {"%clock64", Special::Clock64}, {"%globaltimer", Special::GlobalTimer},
      {"%lanemask_eq", Special::LanemaskEq},
      {"%lanemask_lt", Special::LanemaskLt},
      {"%lanemask_le", Special::LanemaskLe},
      {"%lanemask_gt", Special::LanemaskGt},
      {"%lanemask_ge", Special::LanemaskGe},
      {"%dynamic_smem_size", Special::DynamicSmemSize},
      {"%total_smem_size", Special::TotalSmemSize},
      {"%cluster_ctarank", Special::ClusterCtaRank},
      {"%cluster_nctarank", Special::ClusterNCtaRank},
      {"%clusterid.x", Special::ClusterIdX},
      {"%clusterid.y", Special::ClusterIdY},
      {"%clusterid.z", Special::ClusterIdZ},
      {"%nclusterid.x", Special::NClusterIdX},
      {"%nclusterid.y", Special::NClusterIdY},
      {"%nclusterid.z", Special::NClusterIdZ},
      {"%cluster_ctaid.x", Special::ClusterCtaIdX},
      {"%cluster_ctaid.y", Special::ClusterCtaIdY},
      {"%cluster_ctaid.z", Special::ClusterCtaIdZ},
      {"%cluster_nctaid.x", Special::ClusterNCtaIdX},
      {"%cluster_nctaid.y", Special::ClusterNCtaIdY},
      {"%cluster_nctaid.z", Special::ClusterNCtaIdZ},
      {"%is_explicit_cluster", Special::IsExplicitCluster},
      {"%gridid", Special::GridId}};
  return t;
}

const std::unordered_map<std::string, Op> &opTable() {
  static const std::unordered_map<std::string, Op> t = {
      {"add", Op::Add}, {"sub", Op::Sub}, {"mul", Op::Mul}, {"mad", Op::Mad},
      {"fma", Op::Fma}, {"div", Op::Div}, {"rem", Op::Rem}, {"abs", Op::Abs},
      {"neg", Op::Neg}, {"min", Op::Min}, {"max", Op::Max}, {"sad", Op::Sad},
      {"mul24", Op::Mul24}, {"mad24", Op::Mad24}, {"popc", Op::Popc},
      {"clz", Op::Clz}, {"bfind", Op::Bfind}, {"brev", Op::Brev},
      {"bfe", Op::Bfe}, {"bfi", Op::Bfi}, {"prmt", Op::Prmt},
      {"shf", Op::Shf}, {"lop3", Op::Lop3}, {"dp4a", Op::Dp4a},
      {"dp2a", Op::Dp2a}, {"rcp", Op::Rcp}, {"sqrt", Op::Sqrt},
      {"rsqrt", Op::Rsqrt}, {"sin", Op::Sin}, {"cos", Op::Cos},
      {"lg2", Op::Lg2}, {"ex2", Op::Ex2}, {"tanh", Op::Tanh},
      {"copysign", Op::Copysign}, {"testp", Op::Testp}, {"and", Op::And},
      {"or", Op::Or}, {"xor", Op::Xor}, {"not", Op::Not}, {"cnot", Op::Cnot},
      {"shl", Op::Shl}, {"shr", Op::Shr}, {"setp", Op::Setp},
      {"set", Op::Set}, {"selp", Op::Selp}, {"slct", Op::Slct},
      {"mov", Op::Mov}, {"cvt", Op::Cvt}, {"cvta", Op::Cvta}, {"ld", Op::Ld},
      {"ldu", Op::LdU}, {"st", Op::St}, {"prefetch", Op::Prefetch},
      {"prefetchu", Op::Prefetch}, {"atom", Op::Atom}, {"red", Op::Red},
      {"isspacep", Op::Isspacep}, {"mapa", Op::Mapa},
      {"getctarank", Op::Getctarank}, {"bra", Op::Bra}, {"ret", Op::Ret},
      {"exit", Op::Exit}, {"trap", Op::Trap}, {"call", Op::Call},
      {"bar", Op::BarSync}, {"barrier", Op::BarSync},
      {"membar", Op::Membar}, {"fence", Op::Fence}, {"nop", Op::Nop},
      {"brkpt", Op::Brkpt}, {"pmevent", Op::Pmevent},
      {"nanosleep", Op::Nanosleep}, {"griddepcontrol", Op::Griddep},
      {"setmaxnreg", Op::Setmaxnreg}, {"shfl", Op::Shfl}, {"vote", Op::Vote},
      {"match", Op::Match}, {"redux", Op::Redux}, {"elect", Op::Elect},
      {"activemask", Op::Activemask}, {"ldmatrix", Op::Ldmatrix},
      {"stmatrix", Op::Stmatrix}, {"mma", Op::Mma}, {"mbarrier", Op::MbarInit},
      {"wgmma", Op::WgMma}, {"cp", Op::CpAsync}};
  return t;
}

/// One statement's worth of text, with the line it started on.
struct Cursor {
  const std::string &s;
  size_t i = 0;
  uint32_t line = 1;
  bool eof() { skip(); return i >= s.size(); }
  void skip() {
    while (i < s.size()) {
      char c = s[i];
      if (c == '\n') { ++line; ++i; }
      else if (isspace(static_cast<unsigned char>(c))) ++i;
      else if (c == '/' && i + 1 < s.size() && s[i + 1] == '/') {
        while (i < s.size() && s[i] != '\n') ++i;
      } else if (c == '/' && i + 1 < s.size() && s[i + 1] == '*') {
        i += 2;
        while (i + 1 < s.size() && !(s[i] == '*' && s[i + 1] == '/')) {
          if (s[i] == '\n') ++line;
          ++i;
        }
        i += 2;
      } else break;
    }
  }
  char peek() { skip(); return i < s.size() ? s[i] : '\0'; }
  /// An identifier, directive, opcode or number: up to a delimiter.
  std::string word() {
    skip();
    size_t b = i;
    while (i < s.size()) {
      char c = s[i];
      if (isspace(static_cast<unsigned char>(c)) || strchr(",;(){}[]:<>=", c))
        break;
      ++i;
    }
    // A label or a scoped name like shared::cta keeps its colons.
    while (i + 1 < s.size() && s[i] == ':' && s[i + 1] == ':') {
      i += 2;
      while (i < s.size() && !isspace(static_cast<unsigned char>(s[i])) &&
             !strchr(",;(){}[]:<>=", s[i]))
        ++i;
    }
    return s.substr(b, i - b);
  }
  /// Text up to (not including) the next top-level ';'.
  std::string statement() {
    skip();
    size_t b = i;
    int depth = 0;
    while (i < s.size() && !(s[i] == ';' && depth == 0)) {
      if (s[i] == '\n') ++line;
      if (s[i] == '{' || s[i] == '[' || s[i] == '(') ++depth;
      if (s[i] == '}' || s[i] == ']' || s[i] == ')') --depth;
      ++i;
    }
    std::string r = s.substr(b, i - b);
    if (i < s.size()) ++i;
    return r;
  }
  /// The rest of the line (directives without a ';').
  std::string statementLine() {
    skip();
    size_t b = i;
    while (i < s.size() && s[i] != '\n' && s[i] != ';')
      ++i;
    std::string r = s.substr(b, i - b);
    if (i < s.size() && s[i] == ';')
      ++i;
    return r;
  }
  void expect(char c) {
    if (peek() != c)
      throw ParseError("line " + std::to_string(line) + ": expected '" +
                       std::string(1, c) + "'");
    ++i;
  }
};

std::string trim(const std::string &s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos)
    return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

std::vector<std::string> splitTop(const std::string &s, char sep) {
  std::vector<std::string> parts;
  int depth = 0;
  size_t b = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '{' || c == '[' || c == '(') ++depth;
    if (c == '}' || c == ']' || c == ')') --depth;
    if (c == sep && depth == 0) {
      parts.push_back(trim(s.substr(b, i - b)));
      b = i + 1;
    }
  }
  std::string last = trim(s.substr(b));
  if (!last.empty() || !parts.empty())
    parts.push_back(last);
  return parts;
}

std::vector<std::string> splitDots(const std::string &s) {
  std::vector<std::string> parts;
  size_t b = 0;
  for (size_t i = 0; i <= s.size(); ++i)
    if (i == s.size() || s[i] == '.') {
      parts.push_back(s.substr(b, i - b));
      b = i + 1;
    }
  return parts;
}

bool parseInteger(const std::string &t, uint64_t &v) {
  if (t.empty())
    return false;
  size_t i = 0;
  bool neg = false;
  if (t[0] == '-' || t[0] == '+') { neg = t[0] == '-'; i = 1; }
  if (i >= t.size() || !isdigit(static_cast<unsigned char>(t[i])))
    return false;
  std::string body = t.substr(i);
  if (!body.empty() && (body.back() == 'U' || body.back() == 'u'))
    body.pop_back();
  char *end = nullptr;
  uint64_t x;
  if (body.size() > 2 && body[0] == '0' && (body[1] == 'x' || body[1] == 'X'))
    x = strtoull(body.c_str() + 2, &end, 16);
  else if (body.size() > 1 && body[0] == '0' &&
           (body[1] == 'b' || body[1] == 'B'))
    x = strtoull(body.c_str() + 2, &end, 2);
  else if (body.size() > 1 && body[0] == '0' &&
           body.find_first_not_of("01234567") == std::string::npos)
    x = strtoull(body.c_str() + 1, &end, 8);
  else
    x = strtoull(body.c_str(), &end, 10);
  if (*end)
    return false;
  v = neg ? uint64_t(0) - x : x;
  return true;
}

/// Immediates keep how they were written until the instruction's type
/// says how to store them.
enum class Literal { Int, F32Bits, F64Bits, Decimal };

struct Scope {
  std::unordered_map<std::string, uint32_t> regs;
  std::unordered_map<std::string, uint32_t> labels;
  /// Branches to labels not yet seen: instruction, operand, label.
  std::vector<std::tuple<uint32_t, uint8_t, std::string, uint32_t>> fixups;
};

struct Symbol {
  Space space;
  uint64_t address;
};

uint32_t alignUp(uint32_t x, uint32_t a) { return a ? (x + a - 1) / a * a : x; }

class Parser {
public:
  explicit Parser(const std::string &text) : text(text), c{text} {}
  std::unique_ptr<Module> run();

private:
  const std::string &text;
  Cursor c;
  std::unique_ptr<Module> module = std::make_unique<Module>();
  std::unordered_map<std::string, Symbol> moduleSymbols;
  struct SharedDecl {
    std::string text;
    bool isExtern;
  };
  std::vector<SharedDecl> moduleShared;
  bool externNext = false;
  // Per function
  Function *fn = nullptr;
  std::vector<Scope> scopes;
  std::unordered_map<std::string, Symbol> symbols;
  uint32_t dynamicAlign = 16;
  bool hasDynamic = false;
  std::vector<Literal> literals; // per operand of the current instruction

  [[noreturn]] void fail(const std::string &why, uint32_t line = 0) {
    throw ParseError("line " + std::to_string(line ? line : c.line) + ": " +
                     why);
  }
  void moduleVariable(const std::string &stmt);
  void functionVariable(const std::string &stmt, bool isExtern);
  void parseFunction(bool isKernel);
  void parseParams(Function &f);
  void parseBody();
  void declareRegs(const std::string &stmt);
  void parseInstruction(const std::string &stmt, uint32_t line);
  Operand parseOperand(const std::string &tok, Function &f, int index);
  bool findReg(const std::string &name, uint32_t &slot);
  void decode(Instr &in, const std::vector<std::string> &mods,
              const std::string &opText);
  void normalizeImmediates(Instr &in);
};

/// `.align N`, the element type and `name[count]` (or `name`) of a variable
/// declaration, with an optional `= {...}` initializer.
struct VarDecl {
  uint32_t align = 0, elementBytes = 0, count = 1;
  std::string name;
  bool unsized = false;
  std::vector<uint64_t> init;
};

VarDecl parseVarDecl(const std::string &stmt) {
  VarDecl d;
  std::string decl = stmt, init;
  if (size_t eq = stmt.find('='); eq != std::string::npos) {
    decl = stmt.substr(0, eq);
    init = stmt.substr(eq + 1);
  }
  std::vector<std::string> words;
  {
    std::string w;
    for (char ch : decl) {
      if (isspace(static_cast<unsigned char>(ch))) {
        if (!w.empty()) words.push_back(w);
        w.clear();
      } else w += ch;
    }
    if (!w.empty()) words.push_back(w);
  }
  for (size_t i = 0; i < words.size(); ++i) {
    const std::string &w = words[i];
    if (w == ".align" && i + 1 < words.size()) {
      d.align = static_cast<uint32_t>(std::stoul(words[++i]));
    } else if (w.size() > 1 && w[0] == '.') {
      auto it = typeTable().find(w.substr(1));
      if (it != typeTable().end())
        d.elementBytes = std::max(1, typeBits(it->second) / 8);
    } else {
      std::string rest;
      for (size_t j = i; j < words.size(); ++j) rest += words[j];
      size_t br = rest.find('[');
      d.name = rest.substr(0, br);
      if (br != std::string::npos) {
        std::string n = rest.substr(br + 1, rest.find(']') - br - 1);
        if (n.empty()) d.unsized = true;
        else d.count = static_cast<uint32_t>(std::stoul(n));
      }
      break;
    }
  }
  if (!init.empty()) {
    std::string body = init;
    for (char &ch : body)
      if (ch == '{' || ch == '}') ch = ' ';
    for (const std::string &v : splitTop(body, ',')) {
      uint64_t x = 0;
      if (!v.empty() && parseInteger(v, x))
        d.init.push_back(x);
    }
    if (d.unsized) { d.count = static_cast<uint32_t>(d.init.size()); d.unsized = false; }
  }
  if (!d.align) d.align = std::max<uint32_t>(d.elementBytes, 1);
  return d;
}

void Parser::moduleVariable(const std::string &stmt) {
  VarDecl d = parseVarDecl(stmt);
  GlobalVar g;
  g.name = d.name;
  g.space = stmt.rfind(".const", 0) == 0 ? Space::Const : Space::Global;
  g.align = d.align;
  size_t bytes = size_t(d.count) * d.elementBytes;
  g.init.assign(bytes, 0);
  for (size_t i = 0; i < d.init.size() && i * d.elementBytes < bytes; ++i)
    memcpy(&g.init[i * d.elementBytes], &d.init[i], d.elementBytes);
  auto storage = std::make_unique<uint8_t[]>(bytes + g.align + 16);
  uint64_t addr = alignUp(0, 1); // placeholder
  addr = (reinterpret_cast<uint64_t>(storage.get()) + g.align - 1) /
         g.align * g.align;
  memcpy(reinterpret_cast<void *>(addr), g.init.data(), bytes);
  module->globalAddress[g.name] = addr;
  moduleSymbols[g.name] = {Space::Global, addr};
  module->globals.push_back(std::move(g));
  module->globalStorage.push_back(std::move(storage));
}

void Parser::functionVariable(const std::string &stmt, bool isExtern) {
  VarDecl d = parseVarDecl(stmt);
  bool shared = stmt.find(".shared") != std::string::npos;
  bool local = stmt.find(".local") != std::string::npos;
  if (shared && (isExtern || d.unsized)) {
    hasDynamic = true;
    dynamicAlign = std::max(dynamicAlign, d.align);
    symbols[d.name] = {Space::Shared, ~0ull}; // fixed up after the body
    return;
  }
  uint32_t bytes = d.count * d.elementBytes;
  if (shared) {
    fn->staticShared = alignUp(fn->staticShared, d.align);
    symbols[d.name] = {Space::Shared, fn->staticShared};
    fn->staticShared += bytes;
  } else if (local) {
    fn->localBytes = alignUp(fn->localBytes, d.align);
    symbols[d.name] = {Space::Local, fn->localBytes};
    fn->localBytes += bytes;
  } else {
    fail("function-scope variable '" + d.name + "' in an unmodelled space");
  }
}

std::unique_ptr<Module> Parser::run() {
  while (!c.eof()) {
    std::string w = c.word();
    if (w.empty())
      fail("unexpected character '" + std::string(1, c.peek()) + "'");
    if (w == ".version") {
      std::string v = c.word();
      size_t dot = v.find('.');
      module->version = std::atoi(v.substr(0, dot).c_str()) * 10 +
                        (dot == std::string::npos
                             ? 0 : std::atoi(v.substr(dot + 1).c_str()));
    } else if (w == ".target") {
      module->target = trim(splitTop(c.statementLine(), ',')[0]);
    } else if (w == ".address_size") {
      if (c.word() != "64")
        fail("only .address_size 64 is modelled");
    } else if (w == ".visible" || w == ".extern" || w == ".weak" ||
               w == ".common") {
      if (w == ".extern") externNext = true;
    } else if (w == ".entry" || w == ".func") {
      bool ext = externNext;
      externNext = false;
      if (ext) { c.statement(); continue; }
      parseFunction(w == ".entry");
    } else if (w == ".global" || w == ".const" || w == ".shared") {
      std::string stmt = w + " " + c.statement();
      bool ext = externNext;
      externNext = false;
      if (w == ".shared")
        moduleShared.push_back({stmt, ext});
      else if (!ext)
        moduleVariable(stmt);
    } else if (w == ".file" || w == ".loc" || w == ".pragma") {
      c.statementLine();
    } else if (w == ".section") {
      c.word();
      c.expect('{');
      int depth = 1;
      while (depth && c.i < text.size()) {
        if (text[c.i] == '{') ++depth;
        if (text[c.i] == '}') --depth;
        if (text[c.i] == '\n') ++c.line;
        ++c.i;
      }
    } else {
      fail("unexpected '" + w + "' at module scope");
    }
  }
  return std::move(module);
}

void Parser::parseParams(Function &f) {
  c.expect('(');
  std::string list;
  int depth = 1;
  while (c.i < text.size()) {
    char ch = text[c.i++];
    if (ch == '\n') ++c.line;
    if (ch == '(') ++depth;
    if (ch == ')' && --depth == 0) break;
    list += ch;
  }
  for (const std::string &p : splitTop(list, ',')) {
    if (p.empty()) continue;
    VarDecl d = parseVarDecl(p);
    // `.ptr .align N` states the pointee's alignment; the parameter itself
    // is aligned to its size (ISA 5.1.6.1).
    if (p.find(".ptr") != std::string::npos)
      d.align = d.elementBytes;
    d.align = std::max(d.align, d.elementBytes);
    Param param;
    param.name = d.name;
    param.size = d.count * d.elementBytes;
    f.paramBytes = alignUp(f.paramBytes, std::max<uint32_t>(d.align, 1));
    param.offset = f.paramBytes;
    f.paramBytes += param.size;
    f.params.push_back(param);
  }
}

void Parser::parseFunction(bool isKernel) {
  auto f = std::make_unique<Function>();
  fn = f.get();
  fn->isKernel = isKernel;
  if (!isKernel && c.peek() == '(') {
    // Return parameters of a device function: not callable here (calls are
    // not modelled), but the function must still parse.
    Function ret;
    parseParams(ret);
  }
  fn->name = c.word();
  if (c.peek() == '(')
    parseParams(*fn);
  // Performance directives up to the body.
  while (c.peek() == '.') {
    std::string d = c.word();
    if (d == ".explicitcluster" || d == ".noreturn") {
      // Directives without operands: the next line is not theirs.
      fn->explicitCluster |= d == ".explicitcluster";
      continue;
    }
    std::string rest = c.statementLine();
    if (d == ".maxntid" || d == ".reqntid") {
      std::vector<std::string> v = splitTop(rest, ',');
      for (size_t i = 0; i < v.size() && i < 3; ++i)
        fn->maxThreads[i] = static_cast<uint32_t>(std::stoul(v[i]));
    }
    // Cluster directives (ISA 11.4): .reqnctapercluster x{, y{, z}} fixes
    // the cluster shape (missing dimensions are 1), .maxclusterrank bounds
    // its size; .explicitcluster (above) requires a cluster launch.
    auto number = [&](const std::string &v) {
      try {
        size_t used = 0;
        unsigned long n = std::stoul(trim(v), &used, 0);
        if (used == trim(v).size() && n > 0 && n <= 1024)
          return static_cast<uint32_t>(n);
      } catch (const std::exception &) {
      }
      fail("bad " + d + " value '" + trim(v) + "'");
    };
    if (d == ".reqnctapercluster") {
      std::vector<std::string> v = splitTop(rest, ',');
      if (v.empty() || v.size() > 3)
        fail(".reqnctapercluster takes one to three dimensions");
      for (int i = 0; i < 3; ++i)
        fn->reqCluster[i] = i < int(v.size()) ? number(v[i]) : 1;
    } else if (d == ".maxclusterrank") {
      fn->maxClusterRank = number(rest);
    }
  }
  if (c.peek() == ';') { ++c.i; return; } // a prototype
  symbols.clear();
  for (const auto &[n, s] : moduleSymbols)
    symbols[n] = s;
  hasDynamic = false;
  dynamicAlign = 16;
  for (const SharedDecl &d : moduleShared)
    functionVariable(d.text, d.isExtern);
  for (const Param &p : fn->params)
    symbols[p.name] = {Space::Param, p.offset};
  c.expect('{');
  fn->firstLine = c.line;
  scopes.clear();
  scopes.emplace_back();
  parseBody();
  if (!scopes.back().fixups.empty())
    fail("branch to unknown label '" + std::get<2>(scopes.back().fixups[0]) +
             "'",
         std::get<3>(scopes.back().fixups[0]));
  fn->dynamicSharedOffset = alignUp(fn->staticShared, dynamicAlign);
  // Dynamic shared variables were given a placeholder address.
  for (Instr &in : fn->code)
    for (int i = 0; i < in.nops; ++i) {
      Operand &o = in.ops[i];
      bool symbolic = o.kind == Operand::Imm ||
                      (o.kind == Operand::Addr && o.reg == kNoReg);
      if (symbolic && o.symbolSpace == Space::Shared &&
          (o.imm >> 40) == 0xFFFFFF)
        o.imm = fn->dynamicSharedOffset + (o.imm & 0xFFFFFFFFFFull);
    }
  // Source lines for reports.
  size_t pos = 0;
  for (uint32_t l = 1; l < fn->firstLine && pos != std::string::npos; ++l) {
    pos = text.find('\n', pos);
    if (pos != std::string::npos) ++pos;
  }
  for (uint32_t l = fn->firstLine; l <= c.line && pos < text.size(); ++l) {
    size_t end = text.find('\n', pos);
    fn->lines.push_back(trim(text.substr(pos, end == std::string::npos
                                                  ? std::string::npos
                                                  : end - pos)));
    pos = end == std::string::npos ? text.size() : end + 1;
  }
  module->functions.push_back(std::move(f));
  fn = nullptr;
}

bool Parser::findReg(const std::string &name, uint32_t &slot) {
  for (auto s = scopes.rbegin(); s != scopes.rend(); ++s)
    if (auto it = s->regs.find(name); it != s->regs.end()) {
      slot = it->second;
      return true;
    }
  return false;
}

void Parser::declareRegs(const std::string &stmt) {
  // .reg .b32 %r<100>;  .reg .pred p, q;  .reg .v4 .b32 ... (not used)
  std::string rest = trim(stmt.substr(4));
  int bits = 0;
  while (!rest.empty() && rest[0] == '.') {
    size_t sp = rest.find_first_of(" \t");
    std::string t = rest.substr(1, sp == std::string::npos ? sp : sp - 1);
    auto it = typeTable().find(t);
    if (it == typeTable().end())
      fail("unmodelled register declaration '" + stmt + "'");
    bits = typeBits(it->second);
    rest = sp == std::string::npos ? "" : trim(rest.substr(sp));
  }
  if (bits > 64)
    fail("128-bit registers are not modelled");
  for (const std::string &n : splitTop(rest, ',')) {
    size_t lt = n.find('<');
    auto add = [&](const std::string &name) {
      scopes.back().regs[name] = fn->numRegs++;
      fn->regBits.push_back(static_cast<uint8_t>(bits));
      fn->regNames.push_back(name);
    };
    if (lt == std::string::npos) {
      add(trim(n));
    } else {
      std::string base = trim(n.substr(0, lt));
      uint32_t count = static_cast<uint32_t>(std::stoul(n.substr(lt + 1)));
      for (uint32_t i = 0; i < count; ++i)
        add(base + std::to_string(i));
    }
  }
}

void Parser::parseBody() {
  while (true) {
    char ch = c.peek();
    if (ch == '\0')
      fail("unterminated function body");
    if (ch == '}') {
      ++c.i;
      Scope done = std::move(scopes.back());
      scopes.pop_back();
      if (scopes.empty()) {
        scopes.push_back(std::move(done));
        return;
      }
      for (auto &fx : done.fixups) {
        auto it = done.labels.find(std::get<2>(fx));
        if (it != done.labels.end())
          fn->code[std::get<0>(fx)].ops[std::get<1>(fx)].imm = it->second;
        else
          scopes.back().fixups.push_back(fx);
      }
      continue;
    }
    if (ch == '{') {
      ++c.i;
      scopes.emplace_back();
      continue;
    }
    uint32_t line = c.line;
    size_t save = c.i;
    std::string w = c.word();
    if (c.peek() == ':' && !w.empty() && w[0] != '.' && w[0] != '@') {
      ++c.i; // a label
      Scope &s = scopes.back();
      s.labels[w] = static_cast<uint32_t>(fn->code.size());
      // Earlier branches in this scope to this label.
      auto &fx = s.fixups;
      for (size_t i = 0; i < fx.size();)
        if (std::get<2>(fx[i]) == w) {
          fn->code[std::get<0>(fx[i])].ops[std::get<1>(fx[i])].imm =
              fn->code.size();
          fx.erase(fx.begin() + i);
        } else ++i;
      continue;
    }
    c.i = save;
    c.line = line;
    if (w == ".loc" || w == ".file" || w == ".pragma") {
      c.statementLine();
      continue;
    }
    std::string stmt = trim(c.statement());
    if (w == ".reg") {
      declareRegs(stmt);
    } else if (w == ".shared" || w == ".local") {
      functionVariable(stmt, false);
    } else if (w == ".extern") {
      functionVariable(stmt, true);
    } else if (w == ".param") {
      fail("function-scope .param variables (calls) are not modelled", line);
    } else if (!w.empty() && w[0] == '.') {
      fail("unmodelled directive '" + w + "'", line);
    } else {
      parseInstruction(stmt, line);
    }
  }
}

Operand Parser::parseOperand(const std::string &raw, Function &f, int index) {
  Operand o;
  std::string tok = trim(raw);
  literals[index] = Literal::Int;
  if (tok.empty())
    fail("empty operand");
  if (tok == "_") {
    o.kind = Operand::Sink;
    return o;
  }
  if (tok[0] == '{') {
    std::string inner = tok.substr(1, tok.size() - 2);
    o.kind = Operand::Vec;
    std::vector<Operand> elems;
    for (const std::string &e : splitTop(inner, ',')) {
      Operand sub = parseOperand(e, f, index);
      if (sub.kind == Operand::Vec || sub.kind == Operand::Addr)
        fail("nested vector operand");
      elems.push_back(sub);
    }
    o.vecBegin = static_cast<uint32_t>(f.pool.size());
    o.vecCount = static_cast<uint32_t>(elems.size());
    f.pool.insert(f.pool.end(), elems.begin(), elems.end());
    return o;
  }
  if (tok[0] == '[') {
    std::string inner = trim(tok.substr(1, tok.size() - 2));
    o.kind = Operand::Addr;
    o.reg = kNoReg;
    // base [+ offset]; the base is a register or a variable.
    size_t plus = inner.find('+', 1);
    std::string base = trim(inner.substr(0, plus));
    int64_t offset = 0;
    if (plus != std::string::npos) {
      uint64_t v;
      std::string off = trim(inner.substr(plus + 1));
      if (!parseInteger(off, v))
        fail("unmodelled address '" + tok + "'");
      offset = static_cast<int64_t>(v);
    } else if (size_t minus = inner.find('-', 1); minus != std::string::npos) {
      uint64_t v;
      if (!parseInteger(trim(inner.substr(minus + 1)), v))
        fail("unmodelled address '" + tok + "'");
      base = trim(inner.substr(0, minus));
      offset = -static_cast<int64_t>(v);
    }
    uint32_t slot;
    uint64_t v;
    if (findReg(base, slot)) {
      o.reg = slot;
    } else if (auto it = symbols.find(base); it != symbols.end()) {
      o.symbolSpace = it->second.space;
      o.imm = it->second.address;
      if (o.imm == ~0ull)
        o.imm = 0xFFFFFFull << 40; // dynamic shared: fixed up later
    } else if (parseInteger(base, v)) {
      o.imm = v;
    } else {
      fail("unknown address base '" + base + "'");
    }
    o.imm += static_cast<uint64_t>(offset);
    return o;
  }
  bool negate = false;
  if (tok[0] == '!') {
    negate = true;
    tok = trim(tok.substr(1));
  }
  uint32_t slot;
  if (findReg(tok, slot)) {
    o.kind = Operand::Reg;
    o.reg = slot;
    o.negate = negate;
    return o;
  }
  if (negate)
    fail("'!' on something other than a predicate: '" + raw + "'");
  if (tok[0] == '%') {
    auto it = specialTable().find(tok);
    if (it == specialTable().end())
      fail("unknown register '" + tok + "'");
    o.kind = Operand::Spec;
    o.special = it->second;
    return o;
  }
  o.kind = Operand::Imm;
  if (tok.size() == 10 && tok[0] == '0' && (tok[1] == 'f' || tok[1] == 'F')) {
    o.imm = strtoull(tok.c_str() + 2, nullptr, 16);
    literals[index] = Literal::F32Bits;
    return o;
  }
  if (tok.size() == 18 && tok[0] == '0' && (tok[1] == 'd' || tok[1] == 'D')) {
    o.imm = strtoull(tok.c_str() + 2, nullptr, 16);
    literals[index] = Literal::F64Bits;
    return o;
  }
  uint64_t v;
  if (parseInteger(tok, v)) {
    o.imm = v;
    return o;
  }
  if (isdigit(static_cast<unsigned char>(tok[0])) || tok[0] == '-' ||
      tok[0] == '.') {
    char *end = nullptr;
    double d = strtod(tok.c_str(), &end);
    if (*end == '\0') {
      memcpy(&o.imm, &d, 8);
      literals[index] = Literal::Decimal;
      return o;
    }
  }
  if (auto it = symbols.find(tok); it != symbols.end()) {
    o.imm = it->second.address == ~0ull ? 0xFFFFFFull << 40
                                        : it->second.address;
    o.symbolSpace = it->second.space;
    return o;
  }
  // A branch target: resolved when its scope closes.
  o.kind = Operand::Label;
  return o;
}

void Parser::parseInstruction(const std::string &stmtIn, uint32_t line) {
  std::string stmt = stmtIn;
  Instr in;
  in.line = line;
  if (stmt[0] == '@') {
    size_t sp = stmt.find_first_of(" \t\r\n");
    std::string g = stmt.substr(1, sp - 1);
    if (!g.empty() && g[0] == '!') {
      in.guardNegate = true;
      g = g.substr(1);
    }
    if (!findReg(g, in.guard))
      fail("unknown guard predicate '" + g + "'", line);
    stmt = trim(stmt.substr(sp));
  }
  size_t sp = stmt.find_first_of(" \t\r\n");
  std::string opText = stmt.substr(0, sp);
  std::string operandText =
      sp == std::string::npos ? "" : trim(stmt.substr(sp));
  std::vector<std::string> mods = splitDots(opText);
  auto it = opTable().find(mods[0]);
  if (it == opTable().end())
    fail("instruction '" + opText + "' is not modelled", line);
  in.op = it->second;
  // A destination|second-destination pair (setp p|q, shfl d|p) is two
  // operands.
  std::vector<std::string> toks;
  for (std::string t : splitTop(operandText, ',')) {
    if (t.empty()) continue;
    // [tensorMap, {coords}] splits into the map address and the coordinates.
    if (t[0] == '[' && t.find('{') != std::string::npos) {
      std::string inner = t.substr(1, t.size() - 2);
      std::vector<std::string> parts = splitTop(inner, ',');
      toks.push_back("[" + parts[0] + "]");
      for (size_t i = 1; i < parts.size(); ++i)
        toks.push_back(parts[i]);
      continue;
    }
    size_t bar = t.find('|');
    if (bar != std::string::npos && t[0] != '{') {
      toks.push_back(trim(t.substr(0, bar)));
      toks.push_back(trim(t.substr(bar + 1)));
      in.mode |= 0x80; // marks the pair form for setp/shfl
      continue;
    }
    toks.push_back(t);
  }
  if (toks.size() > 8)
    fail("too many operands for '" + opText + "'", line);
  literals.assign(8, Literal::Int);
  for (size_t i = 0; i < toks.size(); ++i) {
    in.ops[i] = parseOperand(toks[i], *fn, static_cast<int>(i));
    if (in.ops[i].kind == Operand::Label) {
      // A label already seen in this or an enclosing block; else later.
      bool known = false;
      for (auto sc = scopes.rbegin(); sc != scopes.rend() && !known; ++sc)
        if (auto l = sc->labels.find(trim(toks[i])); l != sc->labels.end()) {
          in.ops[i].imm = l->second;
          known = true;
        }
      if (!known)
        scopes.back().fixups.emplace_back(static_cast<uint32_t>(fn->code.size()),
                                        static_cast<uint8_t>(i),
                                        trim(toks[i]), line);
    }
  }
  in.nops = static_cast<uint8_t>(toks.size());
  try {
    decode(in, mods, opText);
  } catch (ParseError &e) {
    fail(std::string(e.what()) + " in '" + trim(stmtIn) + "'", line);
  }
  normalizeImmediates(in);
  in.cls = classify(in);
  fn->code.push_back(in);
}

/// Immediates become the bits of the type the instruction reads them as
/// (ISA 4.5: integer and floating-point constants).
void Parser::normalizeImmediates(Instr &in) {
  // Only instructions whose operands are values of their float type; shape
  // and mode immediates (wgmma's scales, shift counts) stay integers.
  switch (in.op) {
  case Op::Add: case Op::Sub: case Op::Mul: case Op::Mad: case Op::Fma:
  case Op::Div: case Op::Min: case Op::Max: case Op::Abs: case Op::Neg:
  case Op::Rcp: case Op::Sqrt: case Op::Rsqrt: case Op::Sin: case Op::Cos:
  case Op::Lg2: case Op::Ex2: case Op::Tanh: case Op::Setp: case Op::Set:
  case Op::Selp: case Op::Mov: case Op::Cvt: case Op::St: case Op::Copysign:
  case Op::Testp: case Op::Atom: case Op::Red: case Op::Slct:
    break;
  default:
    return;
  }
  Type src = in.op == Op::Cvt ? in.type2 : in.type;
  for (int i = 0; i < in.nops; ++i) {
    Operand &o = in.ops[i];
    if (o.kind != Operand::Imm || o.symbolSpace != Space::Generic)
      continue;
    Literal lit = literals[i];
    if (lit == Literal::Int && !isFloat(src))
      continue;
    double value;
    if (lit == Literal::F32Bits) {
      float f;
      uint32_t b = static_cast<uint32_t>(o.imm);
      memcpy(&f, &b, 4);
      value = f;
      if (src != Type::F64) continue; // already f32 bits (or raw bits)
    } else if (lit == Literal::F64Bits) {
      memcpy(&value, &o.imm, 8);
      if (src == Type::F64) continue;
    } else if (lit == Literal::Decimal) {
      memcpy(&value, &o.imm, 8);
    } else {
      // An integer literal where a float is read: shifts, selectors and
      // counts stay integers.
      if (in.op == Op::Cvt || in.op == Op::Mov || in.op == Op::Shfl)
        continue;
      value = static_cast<double>(static_cast<int64_t>(o.imm));
    }
    if (src == Type::F64) {
      memcpy(&o.imm, &value, 8);
    } else if (src == Type::F32 || !isFloat(src)) {
      float f = static_cast<float>(value);
      uint32_t b;
      memcpy(&b, &f, 4);
      o.imm = b;
    } else {
      // f16/bf16 immediates are written as 16-bit hex (0x...) in practice.
      float f = static_cast<float>(value);
      uint32_t b;
      memcpy(&b, &f, 4);
      o.imm = b;
    }
  }
}

[[noreturn]] void unknownModifier(const std::string &m) {
  throw ParseError("modifier '." + m + "' is not modelled");
}

bool isIgnoredHint(const std::string &m) {
  static const char *hints[] = {
      "ca", "cg", "cs", "lu", "cv", "wb", "wt", "nc", "volatile", "relaxed",
      "acquire", "release", "acq_rel", "sc", "weak", "mmio", "cta", "gpu",
      "sys", "cluster", "L1::no_allocate", "L1::evict_normal",
      "L1::evict_unchanged", "L1::evict_first", "L1::evict_last",
      "L2::evict_normal", "L2::evict_first", "L2::evict_last", "L2::64B",
      "L2::128B", "L2::256B", "sync", "aligned", "uni_if_possible"};
  for (const char *h : hints)
    if (m == h)
      return true;
  return false;
}

bool parseSpace(const std::string &m, Space &s) {
  if (m == "global") s = Space::Global;
  else if (m == "shared" || m == "shared::cta") s = Space::Shared;
  else if (m == "shared::cluster") s = Space::SharedCluster;
  else if (m == "local") s = Space::Local;
  else if (m == "param" || m == "param::entry" || m == "param::func")
    s = Space::Param;
  else if (m == "const") s = Space::Const;
  else if (m == "generic") s = Space::Generic;
  else return false;
  return true;
}

bool parseRound(const std::string &m, uint8_t &r) {
  static const char *names[] = {"", "rn", "rz", "rm", "rp", "rna",
                                "rni", "rzi", "rmi", "rpi", "rs"};
  for (uint8_t i = 1; i < 11; ++i)
    if (m == names[i]) { r = i; return true; }
  return false;
}

bool parseCmp(const std::string &m, uint8_t &c) {
  static const char *names[] = {"eq", "ne", "lt", "le", "gt", "ge",
                                "lo", "ls", "hi", "hs", "equ", "neu",
                                "ltu", "leu", "gtu", "geu", "num", "nan"};
  for (uint8_t i = 0; i < 18; ++i)
    if (m == names[i]) { c = i; return true; }
  return false;
}

/// Shape names like m16n8k16.
void checkModelled(const Instr &in);

bool parseShape(const std::string &m, Instr &in) {
  if (m.size() < 4 || m[0] != 'm') return false;
  unsigned a, b, k;
  if (sscanf(m.c_str(), "m%un%uk%u", &a, &b, &k) == 3) {
    in.m = static_cast<uint16_t>(a);
    in.n = static_cast<uint16_t>(b);
    in.k = static_cast<uint16_t>(k);
    return true;
  }
  if (sscanf(m.c_str(), "m%un%u", &a, &b) == 2) {
    in.m = static_cast<uint16_t>(a);
    in.n = static_cast<uint16_t>(b);
    return true;
  }
  return false;
}

void Parser::decode(Instr &in, const std::vector<std::string> &mods,
                    const std::string &opText) {
  std::vector<Type> types;
  const std::string &base = mods[0];
  auto has = [&](const char *m) {
    for (size_t i = 1; i < mods.size(); ++i)
      if (mods[i] == m) return true;
    return false;
  };
  // Opcode families that share a first word.
  if (base == "bar" || base == "barrier") {
    if (has("warp")) in.op = Op::BarWarpSync;
    else if (has("cluster"))
      in.op = has("wait") ? Op::BarClusterWait : Op::BarClusterArrive;
    else if (has("arrive")) in.op = Op::BarArrive;
    else if (has("red")) in.op = Op::BarRed;
    else in.op = Op::BarSync;
  } else if (base == "cp") {
    if (!has("async")) throw ParseError("cp without .async");
    if (has("reduce")) throw ParseError("cp.reduce.async is not modelled");
    if (has("bulk")) {
      if (has("prefetch")) in.op = Op::Prefetch;
      else if (has("commit_group")) in.op = Op::CpBulkCommit;
      else if (has("wait_group")) in.op = Op::CpBulkWait;
      else if (has("tensor")) in.op = Op::CpBulkTensor;
      else in.op = Op::CpBulk;
    } else if (has("commit_group")) in.op = Op::CpAsyncCommit;
    else if (has("wait_group")) in.op = Op::CpAsyncWait;
    else if (has("wait_all")) in.op = Op::CpAsyncWaitAll;
    else if (has("mbarrier")) in.op = Op::CpAsyncMbarrierArrive;
    else in.op = Op::CpAsync;
  } else if (base == "mbarrier") {
    if (has("init")) in.op = Op::MbarInit;
    else if (has("inval")) in.op = Op::MbarInval;
    else if (has("arrive_drop")) in.op = Op::MbarArriveDrop;
    else if (has("arrive")) in.op = Op::MbarArrive;
    else if (has("expect_tx")) in.op = Op::MbarExpectTx;
    else if (has("complete_tx")) in.op = Op::MbarCompleteTx;
    else if (has("test_wait")) in.op = Op::MbarTestWait;
    else if (has("try_wait")) in.op = Op::MbarTryWait;
    else if (has("pending_count")) in.op = Op::MbarPendingCount;
    else throw ParseError("unknown mbarrier operation");
  } else if (base == "wgmma") {
    if (has("fence")) in.op = Op::WgFence;
    else if (has("commit_group")) in.op = Op::WgCommit;
    else if (has("wait_group")) in.op = Op::WgWait;
    else if (has("mma_async")) in.op = Op::WgMma;
    else throw ParseError("unknown wgmma operation");
  }
  bool cacheHint = false;
  int layouts = 0;
  for (size_t i = 1; i < mods.size(); ++i) {
    const std::string &m = mods[i];
    if (auto t = typeTable().find(m); t != typeTable().end()) {
      types.push_back(t->second);
      continue;
    }
    if (m == "v2" || m == "v4" || m == "v8") {
      in.vec = static_cast<uint8_t>(m[1] - '0');
      continue;
    }
    if (m == "L2::cache_hint") { cacheHint = true; continue; }
    switch (in.op) {
    case Op::Mul: case Op::Mad:
      if (m == "lo") { in.mode = 0; continue; }
      if (m == "hi") { in.mode = 1; continue; }
      if (m == "wide") { in.mode = 2; continue; }
      break;
    case Op::Mul24: case Op::Mad24:
      if (m == "lo") { in.mode = 0; continue; }
      if (m == "hi") { in.mode = 1; continue; }
      break;
    case Op::Setp: case Op::Set:
      if (uint8_t cmp; parseCmp(m, cmp)) { in.cmp = cmp; continue; }
      if (m == "and") { in.boolOp = 1; continue; }
      if (m == "or") { in.boolOp = 2; continue; }
      if (m == "xor") { in.boolOp = 3; continue; }
      break;
    case Op::Shfl:
      if (m == "up") { in.mode = (in.mode & 0x80) | 0; continue; }
      if (m == "down") { in.mode = (in.mode & 0x80) | 1; continue; }
      if (m == "bfly") { in.mode = (in.mode & 0x80) | 2; continue; }
      if (m == "idx") { in.mode = (in.mode & 0x80) | 3; continue; }
      break;
    case Op::Vote:
      if (m == "all") { in.mode = 0; continue; }
      if (m == "any") { in.mode = 1; continue; }
      if (m == "uni") { in.mode = 2; continue; }
      if (m == "ballot") { in.mode = 3; continue; }
      break;
    case Op::Match:
      if (m == "any") { in.mode = 0; continue; }
      if (m == "all") { in.mode = 1; continue; }
      break;
    case Op::Atom: case Op::Red: case Op::Redux: case Op::BarRed: {
      static const char *ops[] = {"add", "inc", "dec", "min", "max", "and",
                                  "or", "xor", "exch", "cas", "popc"};
      bool found = false;
      for (uint8_t j = 0; j < 11; ++j)
        if (m == ops[j]) { in.mode = j; found = true; }
      if (found) continue;
      if (m == "noftz") continue;
      if (in.op == Op::BarRed && (m == "red")) continue;
      break;
    }
    case Op::Prmt: {
      static const char *ms[] = {"f4e", "b4e", "rc8", "ecl", "ecr", "rc16"};
      bool found = false;
      for (uint8_t j = 0; j < 6; ++j)
        if (m == ms[j]) { in.mode = j + 1; found = true; }
      if (found) continue;
      break;
    }
    case Op::Shf:
      if (m == "l") { in.mode |= 1; continue; }
      if (m == "r") continue;
      if (m == "clamp") { in.mode |= 2; continue; }
      if (m == "wrap") continue;
      break;
    case Op::Bfind:
      if (m == "shiftamt") { in.mode = 1; continue; }
      break;
    case Op::Testp: {
      static const char *ms[] = {"finite", "infinite", "number",
                                 "notanumber", "normal", "subnormal"};
      bool found = false;
      for (uint8_t j = 0; j < 6; ++j)
        if (m == ms[j]) { in.mode = j; found = true; }
      if (found) continue;
      break;
    }
    case Op::Cvta:
      if (m == "to") { in.mode = 1; continue; }
      break;
    case Op::Ldmatrix: case Op::Stmatrix:
      if (m == "x1" || m == "x2" || m == "x4") {
        in.vec = static_cast<uint8_t>(m[1] - '0');
        continue;
      }
      if (m == "trans") { in.trans = true; continue; }
      if (parseShape(m, in)) continue;
      break;
    case Op::Mma:
      if (parseShape(m, in)) continue;
      if (m == "row" || m == "col") {
        (layouts++ == 0 ? in.layoutA : in.layoutB) = m == "col";
        continue;
      }
      if (m == "satfinite") { in.satfinite = true; continue; }
      break;
    case Op::WgMma: case Op::WgFence: case Op::WgCommit: case Op::WgWait:
      if (m == "mma_async" || m == "fence" || m == "commit_group" ||
          m == "wait_group")
        continue;
      if (parseShape(m, in)) continue;
      if (m == "satfinite") { in.satfinite = true; continue; }
      break;
    case Op::BarSync: case Op::BarArrive: case Op::BarWarpSync:
      if (m == "sync" || m == "arrive" || m == "warp" || m == "aligned")
        continue;
      break;
    case Op::BarClusterArrive: case Op::BarClusterWait:
      // barrier.cluster.arrive{.release|.relaxed}{.aligned},
      // barrier.cluster.wait{.acquire}{.aligned}.
      if (m == "cluster" || m == "arrive" || m == "wait" || m == "aligned" ||
          (in.op == Op::BarClusterArrive &&
           (m == "release" || m == "relaxed")) ||
          (in.op == Op::BarClusterWait && m == "acquire"))
        continue;
      unknownModifier(m);
    case Op::CpAsync: case Op::CpAsyncCommit: case Op::CpAsyncWait:
    case Op::CpAsyncWaitAll: case Op::CpAsyncMbarrierArrive:
    case Op::CpBulkTensor: case Op::CpBulk: case Op::CpBulkCommit:
    case Op::CpBulkWait: case Op::Prefetch:
      if (m == "async" || m == "bulk" || m == "tensor" ||
          m == "commit_group" || m == "wait_group" || m == "wait_all" ||
          m == "tile" || m == "mbarrier::complete_tx::bytes" ||
          m == "bulk_group" || m == "arrive" || m == "read")
        continue;
      if (m == "mbarrier") continue;
      if (m == "noinc") { in.mode = 1; continue; }
      if (m == "prefetch" || m == "tensormap" || m == "L2") continue;
      if (m.size() == 2 && m[1] == 'd' && m[0] >= '1' && m[0] <= '5') {
        in.dims = static_cast<uint8_t>(m[0] - '0');
        continue;
      }
      if (m == "multicast::cluster") { in.multicast = true; continue; }
      if (m == "im2col" || m == "im2col_no_offs")
        throw ParseError("TMA im2col mode is not modelled");
      if (Space s; parseSpace(m, s)) {
        // cp.async.bulk*: destination space first, then source.
        if (in.space == Space::Generic && !in.bulkToGlobal && i > 1) {
          in.space = s;
          in.bulkToGlobal = s == Space::Global ? 1 : 2;
        } else if (in.bulkToGlobal == 2 && s == Space::Shared &&
                   (in.op == Op::CpBulk || in.op == Op::CpBulkTensor)) {
          throw ParseError("cp.async.bulk from shared memory to shared "
                           "memory is not modelled");
        }
        continue;
      }
      break;
    case Op::MbarInit: case Op::MbarInval: case Op::MbarArrive:
    case Op::MbarArriveDrop: case Op::MbarExpectTx: case Op::MbarCompleteTx:
    case Op::MbarTestWait: case Op::MbarTryWait: case Op::MbarPendingCount:
      if (m == "init" || m == "inval" || m == "arrive" || m == "arrive_drop" ||
          m == "expect_tx" || m == "complete_tx" || m == "test_wait" ||
          m == "try_wait" || m == "pending_count")
        continue;
      if (m == "parity") { in.mode |= 1; continue; }
      if (m == "noComplete") { in.mode |= 2; continue; }
      break;
    case Op::Fence: case Op::Membar:
      // Ordering only: a functional model's memory is sequentially
      // consistent.
      if (m == "proxy" || m == "async" || m == "alias" ||
          m == "tensormap::generic" || m == "mbarrier_init" || m == "gl" ||
          m.rfind("async::", 0) == 0 || m.rfind("sync_restrict::", 0) == 0 ||
          m == "shared::cta" ||
          m == "shared::cluster" || m == "global")
        continue;
      break;
    case Op::Elect: case Op::Activemask: case Op::Griddep:
      if (m == "launch_dependents" || m == "wait") continue;
      break;
    case Op::Setmaxnreg:
      if (m == "inc" || m == "dec") continue;
      break;
    case Op::Bra: case Op::Call: case Op::Ret:
      if (m == "uni") { in.uni = true; continue; }
      break;
    default:
      break;
    }
    if (Space s; parseSpace(m, s)) { in.space = s; continue; }
    if (uint8_t r; parseRound(m, r)) { in.round = r; continue; }
    if (m == "ftz") { in.ftz = true; continue; }
    if (m == "sat") { in.sat = true; continue; }
    if (m == "approx" || m == "full") { in.approx = true; continue; }
    if (m == "NaN") { in.nanMode = true; continue; }
    if (m == "xorsign") { in.xorsign = true; continue; }
    if (m == "abs") { in.abs = true; continue; }
    if (m == "relu") { in.relu = true; continue; }
    if (m == "satfinite") { in.satfinite = true; continue; }
    if (m == "uni") { in.uni = true; continue; }
    if (m == "cc" && (in.op == Op::Add || in.op == Op::Sub))
      throw ParseError("carry arithmetic (.cc) is not modelled");
    if (isIgnoredHint(m)) continue;
    unknownModifier(m);
  }
  (void)opText;
  if (cacheHint && in.nops > 0)
    --in.nops; // the cache policy operand changes no value
  if (!types.empty()) in.type = types[0];
  if (types.size() > 1) in.type2 = types[1];
  if (in.op == Op::Mma) {
    // mma.sync.aligned.shape.alayout.blayout.dtype.atype.btype.ctype
    if (types.size() == 4) {
      in.type = types[0];
      in.type2 = types[1];
      in.typeB = types[2];
      in.type3 = types[3];
    } else if (types.size() == 2) { // .f16 forms: dtype.ctype, A/B f16
      in.type = types[0];
      in.type2 = Type::F16;
      in.typeB = Type::F16;
      in.type3 = types[1];
    } else {
      throw ParseError("unmodelled mma type list");
    }
  }
  if (in.op == Op::WgMma) {
    // wgmma.mma_async.sync.aligned.shape.dtype.atype.btype
    if (types.size() != 3)
      throw ParseError("unmodelled wgmma type list");
    in.type = types[0];
    in.type2 = types[1];
    in.typeB = types[2];
    in.type3 = types[0];
  }
  if (in.op == Op::BarSync && base == "barrier" && !has("aligned"))
    in.uni = false;
  checkModelled(in);
}

/// Forms the machine would have to refuse at run time are refused at load,
/// so a program that loads runs every instruction it contains.
void checkModelled(const Instr &in) {
  auto refuse = [](const std::string &why) { throw ParseError(why); };
  bool half = in.type == Type::F16 || in.type == Type::BF16 ||
              in.type == Type::F16x2 || in.type == Type::BF16x2;
  switch (in.op) {
  case Op::Rem:
    if (isFloat(in.type)) refuse("rem on a floating-point type");
    break;
  case Op::Div:
    if (half) refuse("half-precision div is not modelled");
    break;
  case Op::Sin: case Op::Cos: case Op::Lg2: case Op::Ex2: case Op::Tanh:
    if (in.type == Type::F64) refuse("this f64 function is not modelled");
    break;
  case Op::Dp2a: refuse("dp2a is not modelled"); break;
  case Op::Call: refuse("call is not modelled (kernels must be inlined)"); break;
  case Op::BarRed: refuse("bar.red is not modelled"); break;
  case Op::Setp: case Op::Set:
    if (in.type == Type::F16x2 || in.type == Type::BF16x2)
      refuse("packed setp/set is not modelled");
    break;
  case Op::Cvt: {
    Type d = in.type, s = in.type2;
    bool packedD = d == Type::F16x2 || d == Type::BF16x2 ||
                   d == Type::E4M3x2 || d == Type::E5M2x2;
    bool packedS = s == Type::F16x2 || s == Type::BF16x2 ||
                   s == Type::E4M3x2 || s == Type::E5M2x2;
    bool ok = !packedD && !packedS;
    if ((d == Type::F16x2 || d == Type::BF16x2) && s == Type::F32) ok = true;
    if (d == Type::F16x2 && (s == Type::E4M3x2 || s == Type::E5M2x2)) ok = true;
    if ((d == Type::E4M3x2 || d == Type::E5M2x2) &&
        (s == Type::F32 || s == Type::F16x2))
      ok = true;
    if (!ok) refuse("this packed conversion is not modelled");
    break;
  }
  case Op::Atom: case Op::Red:
    if (in.mode > 9) refuse("this atomic operation is not modelled");
    break;
  case Op::Redux:
    if (in.mode == 1 || in.mode == 2 || in.mode > 7)
      refuse("this redux operation is not modelled");
    break;
  case Op::Ldmatrix: case Op::Stmatrix:
    if (in.m != 8 || in.n != 8 || typeBits(in.type) != 16)
      refuse("only the m8n8 .b16 shape of ldmatrix/stmatrix is modelled");
    break;
  case Op::Mma: {
    int a = in.type2 == Type::TF32 ? 32 : typeBits(in.type2);
    int b = in.typeB == Type::TF32 ? 32 : typeBits(in.typeB);
    if (!mmaFragmentCount(in.m, in.n, in.k, 'a', a) ||
        !mmaFragmentCount(in.m, in.n, in.k, 'b', b) ||
        !mmaFragmentCount(in.m, in.n, in.k, 'c', typeBits(in.type3)) ||
        !mmaFragmentCount(in.m, in.n, in.k, 'd', typeBits(in.type)))
      refuse("this mma shape and type are not modelled");
    break;
  }
  case Op::WgMma:
    if (in.m != 64 || !wgmmaFragmentCount('d', in.n, typeBits(in.type)))
      refuse("this wgmma shape is not modelled");
    break;
  default:
    break;
  }
}

} // namespace

std::unique_ptr<Module> parse(const std::string &text) {
  return Parser(text).run();
}

} // namespace attn::sim::ptx
