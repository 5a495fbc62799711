//===- CommandLine.cpp - attnc's subcommands and options ------------------===//
//
// One cl::SubCommand per attnc command; every option belongs to the
// commands that read it, so `attnc run --help` lists run's options and an
// option of another command is an unknown one. Values are checked as they
// are parsed (a head dim must be positive, --target one of the targets),
// and each option may be given once (--set excepted).
//
// Every message has attnc's form, `attnc: error: WHAT: why`: the parsers
// below write theirs so, and report() rewrites llvm::cl's own ones
// (unknown options with its "did you mean", ...).
//
//===----------------------------------------------------------------------===//
#include "CommandLine.h"

#include "lib/Driver/Bundle.h"
#include "lib/Driver/Compiler.h"
#include "lib/Frontend/Diagnostics.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/raw_ostream.h"

#include <type_traits>

using namespace attn;
using namespace attn::tool;
namespace cl = llvm::cl;
using llvm::StringRef;

namespace {

//===----------------------------------------------------------------------===//
// Messages
//===----------------------------------------------------------------------===//

/// What the parse reports, in order: the parsers' `attnc: error: ...` lines
/// and llvm::cl's messages (its Errs stream), which report() rewrites.
std::string parseLog;
llvm::raw_string_ostream parseErrs(parseLog);

/// An option as the user writes it: -o, every other one with two dashes
/// (the one-letter --b, --h, --q, --k and --v too).
std::string flagNamed(StringRef name) {
  return (name == "o" ? "-" : "--") + name.str();
}
std::string flagOf(const cl::Option &o) { return flagNamed(o.ArgStr); }

bool fail(const cl::Option &o, const llvm::Twine &message) {
  parseErrs << "attnc: error: " << flagOf(o) << ": " << message << "\n";
  return true;
}

/// "a, b or c" ("a and b" with `last` = " and ").
std::string listed(const std::vector<std::string> &names,
                   const char *last = " or ") {
  std::string s;
  for (size_t i = 0; i < names.size(); ++i)
    s += (i == 0 ? "" : i + 1 == names.size() ? last : ", ") + names[i];
  return s;
}

//===----------------------------------------------------------------------===//
// Parsers
//===----------------------------------------------------------------------===//

/// Converts an option's text into its value, or returns why it cannot.
template <class T> using Convert = std::string (*)(StringRef text, T &value);

std::string asIs(StringRef text, std::string &value) {
  value = text.str();
  return "";
}

/// A flag: `--lse`, or `--lse=true|false|1|0` as llvm::cl takes it.
std::string flag(StringRef text, bool &value) {
  if (text.empty() || text == "true" || text == "1")
    value = true;
  else if (text == "false" || text == "0")
    value = false;
  else
    return "takes no value, got '" + text.str() + "'";
  return "";
}

/// llvm::cl's parser for T with the value checked by `convert` (set with
/// check()), and the option given once: a second occurrence is an error
/// naming both values rather than the last one winning.
template <class T> class Once : public cl::parser<T> {
public:
  explicit Once(cl::Option &o) : cl::parser<T>(o) {
    if constexpr (std::is_same_v<T, bool>)
      convert = flag;
    else if constexpr (std::is_same_v<T, std::string>)
      convert = asIs;
  }

  bool parse(cl::Option &o, StringRef, StringRef text, T &value) {
    if (o.getNumOccurrences() > 1) {
      if constexpr (std::is_same_v<T, bool>)
        return fail(o, "given twice; pass it once");
      else
        return fail(o, "given twice ('" + first + "', then '" + text +
                           "'); pass it once");
    }
    first = text.str();
    std::string error = convert(text, value);
    return error.empty() ? false : fail(o, error);
  }

  /// --help names the option as DSL.md writes it, `--q <q.npy>`, where
  /// llvm::cl would print a one-letter option as `-q <q.npy>`.
  size_t getOptionWidth(const cl::Option &o) const {
    return synopsis(o).size() + 3; // and " - "
  }
  void printOptionInfo(const cl::Option &o, size_t width) const {
    llvm::outs() << synopsis(o);
    cl::Option::printHelpStr(o.HelpStr, width, getOptionWidth(o));
  }

  Convert<T> convert = nullptr;

private:
  std::string synopsis(const cl::Option &o) const {
    std::string s = "  " + flagOf(o);
    if (o.getValueExpectedFlag() == cl::ValueRequired)
      s += (o.ArgStr.size() == 1 ? " <" : "=<") +
           (o.ValueStr.empty() ? this->getValueName() : o.ValueStr).str() + ">";
    return s;
  }

  std::string first;
};

/// The modifier that sets an option's conversion: cl::opt<Int, false,
/// Once<Int>> x("x", check(positive)).
template <class T> struct check {
  Convert<T> convert;
  template <class Opt> void apply(Opt &o) const {
    o.getParser().convert = convert;
  }
};
template <class T> check(Convert<T>) -> check<T>;

template <class T> using OnceOpt = cl::opt<T, false, Once<T>>;

/// Integer options hold long long: llvm::cl's parser<long> (int64_t) is
/// final.
using Int = long long;

std::string integer(StringRef text, Int &value) {
  Int x;
  if (text.getAsInteger(10, x))
    return "expected an integer, got '" + text.str() + "'";
  value = x;
  return "";
}

std::string positive(StringRef text, Int &value) {
  Int x;
  if (text.getAsInteger(10, x))
    return "expected a positive integer, got '" + text.str() + "'";
  if (x <= 0)
    return "must be positive, got " + text.str();
  value = x;
  return "";
}

/// A tile size: a positive integer, or `auto` (0: the compiler picks).
std::string positiveOrAuto(StringRef text, Int &value) {
  if (text == "auto") {
    value = 0;
    return "";
  }
  Int x;
  if (text.getAsInteger(10, x))
    return "expected a positive integer or 'auto', got '" + text.str() + "'";
  if (x <= 0)
    return "must be positive, got " + text.str();
  value = x;
  return "";
}

/// A token count of 1..2^20 (the compiler's range for both).
template <const char *What> std::string tokens(StringRef text, Int &value) {
  Int x;
  if (text.getAsInteger(10, x) || x < 1 || x > (1 << 20))
    return std::string("expected ") + What + " of 1..1048576 tokens, got '" +
           text.str() + "'";
  value = x;
  return "";
}
constexpr char kPage[] = "a page size", kGroup[] = "a group";

/// --split-kv: a positive count of parts or `auto`.
std::string countOrAuto(StringRef text, std::string &value) {
  Int x;
  if (text != "auto" && (text.getAsInteger(10, x) || x < 1))
    return "expected a positive count or 'auto', got '" + text.str() + "'";
  value = text.str();
  return "";
}

/// --cpu: a CPU LLVM knows, or (compile) a comma-separated list of them,
/// none twice.
std::string cpus(StringRef text, std::string &value) {
  value = text.str();
  try {
    driver::cpuList(value);
  } catch (const Error &e) {
    std::string what = e.what(); // "--cpu: why"
    return what.substr(e.argument().empty() ? 0 : e.argument().size() + 2);
  }
  return "";
}

/// --shape B,Hq,Hkv,Sq,Skv of positive integers.
std::string shapeOf(StringRef text, std::vector<int64_t> &shape) {
  llvm::SmallVector<StringRef, 5> items;
  text.split(items, ',');
  shape.clear();
  for (StringRef item : items) {
    Int x;
    if (item.getAsInteger(10, x) || x <= 0)
      return "expected B,Hq,Hkv,Sq,Skv of positive integers, got '" +
             text.str() + "'";
    shape.push_back(x);
  }
  if (shape.size() != 5)
    return "expected B,Hq,Hkv,Sq,Skv, got '" + text.str() + "'";
  return "";
}

std::string shape(StringRef text, std::string &value) {
  std::vector<int64_t> dims;
  std::string error = shapeOf(text, dims);
  value = text.str();
  return error;
}

/// One of a fixed list of names (given with cl::values, which --help
/// prints): another value is an error listing them, with a "did you mean"
/// for a near miss.
enum class Choice : int {};

class OneOf : public cl::parser<Choice> {
public:
  explicit OneOf(cl::Option &o) : cl::parser<Choice>(o) {}

  bool parse(cl::Option &o, StringRef, StringRef text, Choice &value) {
    if (o.getNumOccurrences() > 1)
      return fail(o, "given twice ('" + chosen + "', then '" + text +
                         "'); pass it once");
    std::vector<std::string> names;
    for (unsigned i = 0, e = getNumOptions(); i != e; ++i) {
      names.push_back(getOption(i).str());
      if (getOption(i) == text) {
        value = Choice(i);
        chosen = text.str();
        return false;
      }
    }
    // A name that starts with the text first ("sm_90" is sm_90a).
    std::string hint;
    for (const std::string &name : names)
      if (hint.empty() && !text.empty() && StringRef(name).starts_with(text))
        hint = name;
    if (hint.empty())
      hint = fe::closestName(text.str(), names);
    return fail(o, "expected " + listed(names) + ", got '" + text + "'" +
                       (hint.empty() ? "" : "; did you mean '" + hint + "'?"));
  }

  std::string chosen;
};

using OneOfOpt = cl::opt<Choice, false, OneOf>;

/// A name of a OneOf option, with its line in --help.
cl::OptionEnumValue is(const char *name, const char *help) {
  return {name, 0, help};
}

std::string chosen(OneOfOpt &o, const char *fallback) {
  return o.getNumOccurrences() ? o.getParser().chosen : fallback;
}

template <class T> T given(OnceOpt<T> &o, T fallback) {
  return o.getNumOccurrences() ? T(o) : fallback;
}

//===----------------------------------------------------------------------===//
// Commands and options
//===----------------------------------------------------------------------===//

cl::SubCommand checkCmd("check", "parse and verify every variant of FILE.attn "
                                 "(silent when it is fine)");
cl::SubCommand emitCmd("emit", "print the IR, PTX or AMDGPU assembly at a "
                               "stage (every variant unless --variant)");
cl::SubCommand compileCmd("compile", "AOT: write OUT.attnpkg (kernels and "
                                     "metadata) and OUT.h (typed C++ "
                                     "launchers)");
cl::SubCommand runCmd("run", "compile and execute once on .npy files (GPU "
                             "targets on the functional simulator, "
                             "--simulate)");
cl::SubCommand benchCmd("bench", "time the kernel on random inputs (CPU "
                                 "target)");
cl::SubCommand blockmapCmd("blockmap", "print which tiles a launch computes "
                                       "(CPU target)");

struct CommandInfo {
  const char *name;
  cl::SubCommand *sub;
  Command command;
};
const CommandInfo kCommands[] = {{"check", &checkCmd, Command::Check},
                                 {"emit", &emitCmd, Command::Emit},
                                 {"compile", &compileCmd, Command::Compile},
                                 {"run", &runCmd, Command::Run},
                                 {"bench", &benchCmd, Command::Bench},
                                 {"blockmap", &blockmapCmd, Command::BlockMap}};

cl::SubCommandGroup every({&checkCmd, &emitCmd, &compileCmd, &runCmd, &benchCmd,
                           &blockmapCmd});
cl::SubCommandGroup compiling({&emitCmd, &compileCmd, &runCmd, &benchCmd,
                               &blockmapCmd});
cl::SubCommandGroup launching({&runCmd, &benchCmd, &blockmapCmd});
cl::SubCommandGroup randomInputs({&benchCmd, &blockmapCmd});
cl::SubCommandGroup backwardCmds({&compileCmd, &runCmd, &benchCmd});
cl::SubCommandGroup notRun({&checkCmd, &emitCmd, &compileCmd, &benchCmd,
                            &blockmapCmd});

cl::OptionCategory compileCat("Compile options",
                              "What the kernel is built for (the same for "
                              "every command that compiles).");
cl::OptionCategory launchCat("Launch options",
                             "What the kernel is launched with.");
cl::OptionCategory emitCat("attnc emit");
cl::OptionCategory compileOutCat("attnc compile");
cl::OptionCategory runCat("attnc run");
cl::OptionCategory benchCat("attnc bench");
cl::OptionCategory blockmapCat("attnc blockmap");
const cl::OptionCategory *kCategories[] = {
    &compileCat, &launchCat, &emitCat,    &compileOutCat,
    &runCat,     &benchCat,  &blockmapCat};

cl::list<std::string> files(cl::Positional, cl::desc("FILE.attn"),
                            cl::sub(every));

// Compile options: emit, compile, run, bench, blockmap.
OneOfOpt target("target",
                cl::desc("the hardware to compile for (default cpu; GPU "
                         "targets: emit, compile, and run on the simulator)"),
                cl::values(is("cpu", "this machine's CPU (see --cpu)"),
                           is("sm_80", "NVIDIA Ampere (mma.sync, cp.async)"),
                           is("sm_90a", "NVIDIA Hopper (wgmma, TMA)"),
                           is("gfx90a", "AMD CDNA2 (MI200)"),
                           is("gfx942", "AMD CDNA3 (MI300)"),
                           is("gfx950", "AMD CDNA4 (MI350)"),
                           is("gfx1100", "AMD RDNA3 (not implemented yet)")),
                cl::sub(compiling), cl::cat(compileCat));
OneOfOpt dtype("dtype",
               cl::desc("q/k/v element type (default f32 on the CPU, bf16 "
                        "on GPUs)"),
               cl::values(is("f32", "float32"), is("f16", "float16"),
                          is("bf16", "bfloat16 (.npy: uint16 bit patterns)")),
               cl::sub(compiling), cl::cat(compileCat));
OnceOpt<Int> headDim("head-dim",
                     cl::desc("D, the head dim of q and k (compile: "
                              "required; run: from q.npy; emit, bench, "
                              "blockmap: 64)"),
                     cl::value_desc("D"), check(positive), cl::sub(compiling),
                     cl::cat(compileCat));
OnceOpt<Int> valueHeadDim("v-head-dim",
                          cl::desc("Dv, the head dim of v and o "
                                   "(default D; run: from v.npy)"),
                          cl::value_desc("Dv"), check(positive),
                          cl::sub(compiling), cl::cat(compileCat));
OnceOpt<Int> blockQ("block-q",
                    cl::desc("query rows per tile (default auto: per "
                             "target)"),
                    cl::value_desc("N|auto"), check(positiveOrAuto),
                    cl::sub(compiling), cl::cat(compileCat));
OnceOpt<Int> blockKV("block-kv",
                     cl::desc("keys per tile (default auto: per "
                              "target)"),
                     cl::value_desc("N|auto"), check(positiveOrAuto),
                     cl::sub(compiling), cl::cat(compileCat));
OnceOpt<bool> lse("lse", cl::desc("also compute each row's log-sum-exp"),
                  cl::sub(compiling), cl::cat(compileCat));
OnceOpt<std::string> variant("variant",
                             cl::desc("the variant, when the file holds "
                                      "several"),
                             cl::value_desc("NAME"), cl::sub(compiling),
                             cl::cat(compileCat));
OneOfOpt kvDtype(
    "kv-dtype",
    cl::desc("K/V storage: quantized codes with f32 scales (default same)"),
    cl::values(is("same", "q's dtype"), is("int8", "int8 codes"),
               is("fp8e4m3", "OCP fp8 e4m3 codes"),
               is("fp8e5m2", "OCP fp8 e5m2 codes"),
               is("int4", "int4 codes in [-7, 7], two per byte")),
    cl::sub(compiling), cl::cat(compileCat));
OnceOpt<Int> kvGroup("kv-group",
                     cl::desc("tokens per K scale of quantized K/V "
                              "(default 64)"),
                     cl::value_desc("G"), check(tokens<kGroup>),
                     cl::sub(compiling), cl::cat(compileCat));
OnceOpt<Int> paged("paged",
                   cl::desc("read K/V through a page table of PAGE-token "
                            "pages (run: a shuffled pool of the inputs)"),
                   cl::value_desc("PAGE"), check(tokens<kPage>),
                   cl::sub(compiling), cl::cat(compileCat));
OnceOpt<std::string> splitKv("split-kv",
                             cl::desc("decode: split the key range into N "
                                      "parts merged by LSE (default auto)"),
                             cl::value_desc("N|auto"), check(countOrAuto),
                             cl::sub(compiling), cl::cat(compileCat));
OneOfOpt gpuLoads("gpu-loads",
                  cl::desc("how sm_90a kernels load K/V tiles (default auto)"),
                  cl::values(is("auto", "TMA where it applies (the default)"),
                             is("tma", "a TMA producer warp"),
                             is("cp.async", "cp.async by every thread")),
                  cl::sub(compiling), cl::cat(compileCat));
OnceOpt<std::string> cpu("cpu",
                         cl::desc("the CPU to generate code for (default "
                                  "native; e.g. x86-64-v3, znver4). compile "
                                  "takes a comma-separated list "
                                  "(x86-64-v4,x86-64-v3): the bundle holds "
                                  "code for each, and attnrt loads the best "
                                  "this machine's CPU runs"),
                         cl::value_desc("native|NAME[,NAME...]"),
                         check(cpus), cl::sub(compiling),
                         cl::cat(compileCat));

OnceOpt<bool> backward("backward",
                       cl::desc("also build the backward (gradients of "
                                "sum(o * do); compile and run: cpu, sm_*, "
                                "gfx*)"),
                       cl::sub(backwardCmds), cl::cat(compileCat));

// emit
OneOfOpt stage("stage", cl::desc("the stage to print (required)"),
               cl::values(is("attn", "the attn dialect: one op with regions"),
                          is("tiled", "the tiled loop nest (GPU targets: the "
                                      "gpu.module)"),
                          is("llvm", "optimized LLVM IR"),
                          is("ptx", "PTX (NVIDIA targets)"),
                          is("amdgcn", "AMDGPU assembly (AMD targets)")),
               cl::sub(emitCmd), cl::cat(emitCat));

// compile
OnceOpt<std::string> bundleOut("o",
                               cl::desc("writes OUT.attnpkg and OUT.h "
                                        "(required)"),
                               cl::value_desc("OUT"), cl::sub(compileCmd),
                               cl::cat(compileOutCat));

// run
OnceOpt<std::string> qFile("q", cl::desc("queries [B, Hq, Sq, D] (required)"),
                           cl::value_desc("q.npy"), cl::sub(runCmd),
                           cl::cat(runCat));
OnceOpt<std::string> kFile("k", cl::desc("keys [B, Hkv, Skv, D] (required)"),
                           cl::value_desc("k.npy"), cl::sub(runCmd),
                           cl::cat(runCat));
OnceOpt<std::string> vFile("v", cl::desc("values [B, Hkv, Skv, Dv] (required)"),
                           cl::value_desc("v.npy"), cl::sub(runCmd),
                           cl::cat(runCat));
OnceOpt<std::string> oFile("o",
                           cl::desc("the output [B, Hq, Sq, Dv] (required)"),
                           cl::value_desc("o.npy"), cl::sub(runCmd),
                           cl::cat(runCat));
OnceOpt<std::string> lseFile("lse-out",
                             cl::desc("also write the log-sum-exp [B, Hq, "
                                      "Sq] (implies --lse)"),
                             cl::value_desc("lse.npy"), cl::sub(runCmd),
                             cl::cat(runCat));
OnceOpt<bool> simulate("simulate",
                       cl::desc("run a GPU target's kernel on attnc's "
                                "functional GPU simulator (lib/ beside "
                                "bin/attnc) instead of a GPU"),
                       cl::sub(runCmd), cl::cat(runCat));
OnceOpt<std::string> doFile("do",
                             cl::desc("--backward: the gradient of the "
                                      "output [B, Hq, Sq, Dv] (required)"),
                             cl::value_desc("do.npy"), cl::sub(runCmd),
                             cl::cat(runCat));
OnceOpt<std::string> dqFile("dq",
                            cl::desc("--backward: writes dL/dq (required)"),
                            cl::value_desc("dq.npy"), cl::sub(runCmd),
                            cl::cat(runCat));
OnceOpt<std::string> dkFile("dk",
                            cl::desc("--backward: writes dL/dk (required)"),
                            cl::value_desc("dk.npy"), cl::sub(runCmd),
                            cl::cat(runCat));
OnceOpt<std::string> dvFile("dv",
                            cl::desc("--backward: writes dL/dv (required)"),
                            cl::value_desc("dv.npy"), cl::sub(runCmd),
                            cl::cat(runCat));
cl::list<std::string> gradFiles(
    "grad",
    cl::desc("--backward: writes the gradient of the f32 param or captured "
             "tensor NAME (a param's is [1]); once per NAME"),
    cl::value_desc("NAME=FILE.npy"), cl::sub(runCmd), cl::cat(runCat));
// Only run launches on the simulator: the other commands refuse it by name
// (bench because a simulator says nothing about speed).
OnceOpt<bool> simulateRefused("simulate", cl::ReallyHidden, cl::sub(notRun));

// run, bench, blockmap
cl::list<std::string> sets("set",
                           cl::desc("a runtime param (a number) or a "
                                    "captured tensor (.npy); once per NAME"),
                           cl::value_desc("NAME=VALUE|NAME=FILE.npy"),
                           cl::sub(launching), cl::cat(launchCat));
OnceOpt<Int> seed("seed",
                  cl::desc("seed of the random inputs (default 0) "
                           "and of the page pool's shuffle (default 1)"),
                  cl::value_desc("N"), check(integer), cl::sub(launching),
                  cl::cat(launchCat));
OnceOpt<std::string> shapeText("shape", cl::desc("the launch shape (required)"),
                               cl::value_desc("B,Hq,Hkv,Sq,Skv"), check(shape),
                               cl::sub(randomInputs), cl::cat(launchCat));

// bench
OnceOpt<Int> reps("reps",
                  cl::desc("timed launches (default: at least 5, for "
                           "about a second)"),
                  cl::value_desc("N"), check(positive), cl::sub(benchCmd),
                  cl::cat(benchCat));
OnceOpt<bool> json("json",
                   cl::desc("print one JSON object {\"ms\", \"tflops\", "
                            "\"density\", ...; with --backward "
                            "\"backward_ms\", \"backward_ratio\"}"),
                   cl::sub(benchCmd), cl::cat(benchCat));

// blockmap
OnceOpt<Int> batchEntry("b", cl::desc("the batch entry (default 0)"),
                        cl::value_desc("N"), check(integer),
                        cl::sub(blockmapCmd), cl::cat(blockmapCat));
OnceOpt<Int> queryHead("h",
                       cl::desc("the query head (default 0; under GQA "
                                "the tiles of its kv head that hold its "
                                "rows)"),
                       cl::value_desc("N"), check(integer),
                       cl::sub(blockmapCmd), cl::cat(blockmapCat));

cl::extrahelp exitStatus(
    "\nExit status: 0 ok; 1 a user error (message on stderr, nothing "
    "written); 2 an internal error.\n");

//===----------------------------------------------------------------------===//
// Parsing
//===----------------------------------------------------------------------===//

const CommandInfo *commandNamed(StringRef name) {
  for (const CommandInfo &c : kCommands)
    if (name == c.name)
      return &c;
  return nullptr;
}

std::vector<std::string> commandNames() {
  std::vector<std::string> names;
  for (const CommandInfo &c : kCommands)
    names.push_back(c.name);
  return names;
}

/// The option `name` of `sub` that --help shows, if any.
cl::Option *visibleOption(const cl::SubCommand &sub, StringRef name) {
  cl::Option *o = sub.OptionsMap.lookup(name);
  return o && o->hasArgStr() && o->getOptionHiddenFlag() != cl::ReallyHidden
             ? o
             : nullptr;
}

/// The message for an argument that no option of `command` (null: before
/// a command) takes; `suggestion` is llvm::cl's nearest option ("" for
/// none).
std::string unknownOption(StringRef arg, StringRef suggestion,
                          const CommandInfo *command) {
  if (!arg.starts_with("-") || arg == "-")
    return "unexpected argument '" + arg.str() + "'";
  std::string where = command ? std::string(" for attnc ") + command->name : "";
  // An option of other commands: say which.
  StringRef name = arg.ltrim('-').split('=').first;
  std::vector<std::string> owners;
  for (const CommandInfo &c : kCommands)
    if (&c != command && visibleOption(*c.sub, name))
      owners.push_back(c.name);
  if (!owners.empty())
    return "unknown option '" + arg.str() + "'" + where +
           " (an option of attnc " + listed(owners, " and ") + ")";
  // llvm::cl suggests the nearest option however far it is: only a near
  // miss is a plausible typo.
  auto [suggested, value] = suggestion.ltrim('-').split('=');
  if (!suggested.empty() &&
      !fe::closestName(name.str(), {suggested.str()}).empty())
    return "unknown option '" + arg.str() + "'; did you mean '" +
           flagNamed(suggested) +
           (suggestion.contains('=') ? "=" + value.str() : "") + "'?";
  return "unknown option '" + arg.str() + "'" + where + " (attnc " +
         (command ? command->name + std::string(" ") : "") +
         "--help lists them)";
}

/// llvm::cl reads "-abc" as a group of one-letter options: a typo such as
/// "-head-dim" would run -h (help) and "-out" would feed -o. attnc's
/// options take two dashes (-o and -h aside), so such an argument is an
/// unknown option; and an option that needs a value must not end the line
/// (llvm::cl says "requires a value!" in its own words). Returns false
/// after reporting.
bool screen(llvm::ArrayRef<const char *> args, const CommandInfo *command) {
  const cl::SubCommand &sub =
      command ? *command->sub : cl::SubCommand::getTopLevel();
  bool ok = true;
  for (size_t i = command ? 2 : 1; i < args.size(); ++i) {
    StringRef arg = args[i];
    if (arg == "--")
      break;
    bool number = arg.size() > 1 && (llvm::isDigit(arg[1]) || arg[1] == '.');
    if (!arg.starts_with("-") || arg.size() < 2 || number)
      continue;
    bool twoDashes = arg.starts_with("--");
    StringRef name = arg.drop_front(twoDashes ? 2 : 1).split('=').first;
    if (!twoDashes && name.size() > 1) {
      parseErrs << "attnc: error: "
                << (visibleOption(sub, name)
                        ? "unknown option '" + arg.str() +
                              "'; did you mean '-" + arg.str() + "'?"
                        : unknownOption(arg, "", command))
                << "\n";
      ok = false;
      continue;
    }
    cl::Option *o = sub.OptionsMap.lookup(name);
    if (o && o->getValueExpectedFlag() == cl::ValueRequired &&
        !arg.contains('=')) {
      if (i + 1 == args.size()) {
        fail(*o, "needs a value");
        ok = false;
      }
      ++i; // its value
    }
  }
  return ok;
}

/// Prints the parse's messages in attnc's form: its own lines as they are,
/// llvm::cl's rewritten ("attnc: Unknown command line argument '--x'.
/// Try: ...", "attnc: Did you mean '--y'?", "attnc: for the --z option:
/// ...").
void report(const CommandInfo *command) {
  parseErrs.flush();
  llvm::SmallVector<StringRef> lines;
  StringRef(parseLog).split(lines, '\n', -1, false);
  auto error = [](const llvm::Twine &message) {
    llvm::errs() << "attnc: error: " << message << "\n";
  };
  for (size_t i = 0; i < lines.size(); ++i) {
    StringRef line = lines[i];
    if (line.starts_with("attnc: error: ")) {
      llvm::errs() << line << "\n";
    } else if (line.consume_front("attnc: Unknown command line argument '")) {
      StringRef arg = line.rsplit("'.  Try: ").first, suggestion;
      StringRef next = i + 1 < lines.size() ? lines[i + 1] : "";
      if (next.consume_front("attnc: Did you mean '") &&
          next.consume_back("'?")) {
        suggestion = next;
        ++i;
      }
      error(unknownOption(arg, suggestion, command));
    } else if (line.consume_front("attnc: for the ")) {
      auto [name, message] = line.split(" option: ");
      error(name + ": " + message.rtrim('!'));
    } else if (line.consume_front("attnc: ")) {
      error(line.rtrim('!'));
    } else {
      llvm::errs() << line << "\n";
    }
  }
}

void printVersion(llvm::raw_ostream &os) {
  os << "attnc " << driver::compilerVersion() << "\n";
}

} // namespace

std::optional<Invocation> tool::parseCommandLine(int argc, char **argv) {
  // Messages and --help say "attnc" wherever it runs from.
  std::vector<const char *> args(argv, argv + argc);
  args[0] = "attnc";
  std::string commands = listed(commandNames());
  if (args.size() < 2) {
    llvm::errs() << "attnc: error: expected a command: " << commands
                 << " (attnc --help describes them)\n";
    return std::nullopt;
  }
  // `attnc help [COMMAND]` and `attnc version` are --help and --version.
  if (StringRef(args[1]) == "help") {
    if (args.size() > 2 && commandNamed(args[2]))
      args = {"attnc", args[2], "--help"};
    else
      args = {"attnc", "--help"};
  } else if (StringRef(args[1]) == "version") {
    args = {"attnc", "--version"};
  }
  const CommandInfo *command = nullptr;
  if (!StringRef(args[1]).starts_with("-")) {
    command = commandNamed(args[1]);
    if (!command) {
      std::string hint = fe::closestName(args[1], commandNames());
      llvm::errs() << "attnc: error: unknown command '" << args[1] << "'"
                   << (hint.empty() ? "" : "; did you mean '" + hint + "'?")
                   << " (the commands: " << commands << ")\n";
      return std::nullopt;
    }
  }

  // --help shows attnc's options only, not those of the LLVM and MLIR
  // libraries it links (registered at the top level).
  cl::HideUnrelatedOptions(kCategories);
  for (const CommandInfo &c : kCommands)
    cl::HideUnrelatedOptions(kCategories, *c.sub);
  cl::SetVersionPrinter(printVersion);
  bool parsed = screen(args, command) &&
                cl::ParseCommandLineOptions(
                    int(args.size()), args.data(),
                    "attnc: attention variants (.attn files) compiled for "
                    "CPUs and GPUs\n",
                    &parseErrs, /*VFS=*/nullptr, /*EnvVar=*/nullptr,
                    /*LongOptionsUseDoubleDash=*/true);
  if (!parsed) {
    report(command);
    return std::nullopt;
  }
  if (!command) {
    llvm::errs() << "attnc: error: expected a command: " << commands
                 << " (attnc --help describes them)\n";
    return std::nullopt;
  }

  Invocation inv;
  inv.command = command->command;
  std::string usage = std::string("attnc ") + command->name +
                      " FILE.attn [options]; attnc " + command->name +
                      " --help lists them";
  if (files.empty())
    throw Error("", "expected a .attn file (" + usage + ")");
  if (files.size() > 1)
    throw Error("", "unexpected argument '" + files[1] + "' (" + usage + ")");
  inv.file = files[0];
  if (simulateRefused.getNumOccurrences())
    throw Error("--simulate",
                command->command == Command::Bench
                    ? "attnc bench refuses it: a simulator says nothing "
                      "about speed"
                    : "only attnc run launches kernels on the simulator");

  Options &o = inv.options;
  o.target = chosen(target, "cpu");
  o.dtype = chosen(dtype, "");
  o.kvDtype = chosen(kvDtype, "same");
  o.headDim = given<Int>(headDim, 0);
  o.valueHeadDim = given<Int>(valueHeadDim, 0);
  o.blockQ = given<Int>(blockQ, 0);
  o.blockKV = given<Int>(blockKV, 0);
  o.variant = given<std::string>(variant, "");
  o.paged = given<Int>(paged, 0);
  o.kvGroup = given<Int>(kvGroup, 64);
  o.splitKv = given<std::string>(splitKv, "auto");
  o.gpuLoads = chosen(gpuLoads, "auto");
  o.cpu = given<std::string>(cpu, "native");
  o.backward = given<bool>(backward, false);
  if (o.cpu.find(',') != std::string::npos &&
      command->command != Command::Compile)
    throw Error("--cpu", std::string("attnc ") + command->name +
                             " generates code for one CPU; a list ('" +
                             o.cpu + "') is for attnc compile's bundles");

  inv.stage = chosen(stage, "");
  inv.out = command->command == Command::Compile
                ? given<std::string>(bundleOut, "")
                : given<std::string>(oFile, "");
  inv.q = given<std::string>(qFile, "");
  inv.k = given<std::string>(kFile, "");
  inv.v = given<std::string>(vFile, "");
  inv.lseOut = given<std::string>(lseFile, "");
  o.lse = given<bool>(lse, false) || !inv.lseOut.empty();
  inv.simulate = given<bool>(simulate, false);
  inv.dO = given<std::string>(doFile, "");
  inv.dq = given<std::string>(dqFile, "");
  inv.dk = given<std::string>(dkFile, "");
  inv.dv = given<std::string>(dvFile, "");
  inv.grads.assign(gradFiles.begin(), gradFiles.end());
  inv.sets.assign(sets.begin(), sets.end());
  if (seed.getNumOccurrences())
    inv.seed = Int(seed);
  if (shapeText.getNumOccurrences())
    shapeOf(shapeText, inv.shape); // checked as it was parsed
  inv.reps = given<Int>(reps, 0);
  inv.json = given<bool>(json, false);
  inv.b = given<Int>(batchEntry, 0);
  inv.h = given<Int>(queryHead, 0);

  // What each command needs, before anything is read or written.
  switch (inv.command) {
  case Command::Emit:
    if (inv.stage.empty())
      throw Error("--stage", "required: attn, tiled, llvm, ptx or amdgcn");
    break;
  case Command::Compile:
    if (inv.out.empty())
      throw Error("-o", "required for compile (writes OUT.attnpkg and "
                        "OUT.h)");
    break;
  case Command::Run:
    for (auto [name, value] : {std::pair{"--q", &inv.q},
                               {"--k", &inv.k},
                               {"--v", &inv.v},
                               {"-o", &inv.out}})
      if (value->empty())
        throw Error(name, "required for run");
    for (auto [name, value] : {std::pair{"--do", &inv.dO},
                               {"--dq", &inv.dq},
                               {"--dk", &inv.dk},
                               {"--dv", &inv.dv}}) {
      if (o.backward && value->empty())
        throw Error(name, "required for run --backward");
      if (!o.backward && !value->empty())
        throw Error(name, "applies to run --backward only");
    }
    if (!o.backward && !inv.grads.empty())
      throw Error("--grad", "applies to run --backward only");
    break;
  case Command::Bench:
  case Command::BlockMap:
    if (inv.shape.empty())
      throw Error("--shape", std::string("required for ") + command->name +
                                 ": B,Hq,Hkv,Sq,Skv");
    break;
  case Command::Check:
    break;
  }
  return inv;
}
