//===- attnc.cpp - the attnc command line ---------------------------------===//
//
// attnc check | emit | compile | run | bench | blockmap (DSL.md "attnc
// subcommands"); CommandLine.cpp parses the command line. Exit 0 ok, 1 user
// error (message on stderr, nothing written), 2 internal error.
//
//===----------------------------------------------------------------------===//
#include "CommandLine.h"
#include "attn/jit.h"
#include "attn/npy.h"
#include "attn/runtime.h"
#include "lib/Driver/Bundle.h"
#include "lib/Driver/Compiler.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <functional>
#include <iostream>
#include <random>
#include <sstream>
#include <unistd.h>

using namespace attn;
using attn::tool::Command;
using attn::tool::Invocation;

namespace {

std::string readFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw Error(path, "cannot open the source file");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// Parses and checks a source, printing its warnings (errors throw).
driver::Source loadSource(const std::string &text, const std::string &file) {
  driver::Source source(text, file);
  std::fputs(source.warnings.c_str(), stderr);
  return source;
}

/// run, bench and blockmap execute here, on the CPU.
void requireHostTarget(const Options &o) {
  if (driver::isGpuTarget(o.target))
    throw Error("--target", "attnc run, bench and blockmap execute CPU "
                            "kernels on .npy data; " + o.target +
                            " kernels are launched by attnrt on device "
                            "memory (attnc compile, bench/gpu)");
}

/// `--simulate`: GPU kernels of this process run on the functional
/// simulators installed next to attnc (lib/libattnsim_cuda.so and
/// lib/libattnsim_hip.so beside bin/attnc, in the build and install trees).
void useSimulatorNextToAttnc(const std::string &target) {
  if (!driver::isGpuTarget(target))
    throw Error("--simulate", "needs a GPU target (--target sm_80, sm_90a, "
                              "gfx90a, gfx942 or gfx950); " + target +
                                  " kernels run natively");
  static int anchor;
  std::string exe = llvm::sys::fs::getMainExecutable("attnc", &anchor);
  llvm::SmallString<256> lib(llvm::sys::path::parent_path(
      llvm::sys::path::parent_path(exe)));
  llvm::sys::path::append(lib, "lib");
  auto path = [&](const char *name) {
    llvm::SmallString<256> p(lib);
    llvm::sys::path::append(p, name);
    return std::string(p);
  };
  std::string cuda = path("libattnsim_cuda.so"),
              hip = path("libattnsim_hip.so");
  bool amd = target.rfind("gfx", 0) == 0;
  const std::string &needed = amd ? hip : cuda;
  if (!llvm::sys::fs::exists(needed))
    throw Error("--simulate", "no " + std::string(amd ? "AMD" : "NVIDIA") +
                                  " GPU simulator at '" + needed +
                                  "' (it is built and installed with attnc)");
  useGpuSimulator(cuda, hip);
}

/// `--set NAME=VALUE`: a number, or a .npy file for a captured tensor.
void parseSets(const Invocation &inv, Params &params,
               std::vector<std::unique_ptr<NpyArray>> &arrays) {
  for (const std::string &s : inv.sets) {
    size_t eq = s.find('=');
    if (eq == std::string::npos || eq == 0)
      throw Error("--set", "expected NAME=VALUE, got '" + s + "'");
    std::string name = s.substr(0, eq), value = s.substr(eq + 1);
    for (const auto &[n, a] : params)
      if (n == name)
        throw Error(name, "set twice with --set");
    if (value.size() > 4 && value.substr(value.size() - 4) == ".npy") {
      // uint16 data can only be a bf16 tensor's bits.
      arrays.push_back(
          std::make_unique<NpyArray>(readNpy(value, name, true)));
      params.emplace_back(name, arrays.back()->ref());
      continue;
    }
    char *end = nullptr;
    long long i = std::strtoll(value.c_str(), &end, 10);
    if (!value.empty() && *end == '\0') {
      params.emplace_back(name, static_cast<int64_t>(i));
      continue;
    }
    double f = std::strtod(value.c_str(), &end);
    if (value.empty() || *end != '\0')
      throw Error(name, "'" + value + "' is neither a number nor a .npy file");
    params.emplace_back(name, f);
  }
}

int cmdCheck(const Invocation &inv) {
  driver::Source source = loadSource(readFile(inv.file), inv.file);
  driver::checkAll(source);
  return 0;
}

int cmdCompile(const Invocation &inv) {
  driver::Source source = loadSource(readFile(inv.file), inv.file);
  driver::writeBundle(source, inv.options, inv.out);
  return 0;
}

int cmdEmit(const Invocation &inv) {
  auto stage = driver::parseStage(inv.stage);
  if (!stage)
    throw InternalError("unknown stage '" + inv.stage + "'");
  driver::Source source = loadSource(readFile(inv.file), inv.file);
  Options options = inv.options;
  if (options.headDim == 0)
    options.headDim = 64; // emit is for reading IR: any D will do
  std::vector<std::string> variants;
  if (!options.variant.empty())
    variants.push_back(options.variant);
  else
    for (const auto &v : source.program.variants)
      variants.push_back(v.name);
  for (const std::string &name : variants) {
    options.variant = name;
    driver::KernelPlan plan = driver::planKernel(source, options);
    std::cout << driver::emitStage(source, plan, *stage);
  }
  return 0;
}

NpyArray makeOutput(DType dtype, std::vector<int64_t> shape) {
  NpyArray a;
  a.dtype = dtype;
  a.shape = std::move(shape);
  a.bytes.assign(a.numel() * dtypeSize(dtype), 0);
  return a;
}

/// The files `attnc run` writes: each is checked before anything is
/// computed (a new file is created beside it, so a missing directory or
/// one without write permission is an error up front), filled in that
/// temporary file, and renamed into place only once every output is
/// written. A run that fails leaves none of its outputs.
class OutputFiles {
public:
  OutputFiles() = default;
  OutputFiles(const OutputFiles &) = delete;
  OutputFiles &operator=(const OutputFiles &) = delete;
  ~OutputFiles() {
    for (const File &f : files)
      if (!f.committed)
        std::remove(f.temp.c_str());
  }

  /// Reserves `path` for option `flag`; returns the index for write().
  size_t add(const std::string &flag, const std::string &path) {
    for (const File &f : files)
      if (f.path == path)
        throw Error(flag, "'" + path + "' is also the file of " + f.flag);
    if (llvm::sys::fs::is_directory(path))
      throw Error(flag, "cannot write '" + path + "': it is a directory");
    File f{flag, path,
           path + ".attnc-" + std::to_string(::getpid()) + "-" +
               std::to_string(files.size()) + ".tmp"};
    int fd = ::open(f.temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                    0666);
    if (fd < 0)
      throw Error(flag, "cannot write '" + path + "': " +
                            std::strerror(errno));
    ::close(fd);
    files.push_back(std::move(f));
    return files.size() - 1;
  }
  void write(size_t index, const NpyArray &array) {
    writeNpy(files[index].temp, array, files[index].flag);
  }
  /// Moves every written output into place.
  void commit() {
    for (File &f : files) {
      if (std::rename(f.temp.c_str(), f.path.c_str()) != 0)
        throw Error(f.flag, "cannot write '" + f.path + "': " +
                                std::strerror(errno));
      f.committed = true;
    }
  }

private:
  struct File {
    std::string flag, path, temp;
    bool committed = false;
  };
  std::vector<File> files;
};

/// Compiles (a cache hit when `jit` has seen the source), allocates o (and
/// lse) for q's shape, and returns everything a launch needs.
struct Prepared {
  Kernel kernel;
  NpyArray o, lse;
  Tensors tensors;
  KVCache cache; // quantized and/or paged K/V (--kv-dtype, --paged)
};
Prepared prepare(Jit &jit, const std::string &text, const Invocation &inv,
                 const Options &options, NpyArray &q, NpyArray &k,
                 NpyArray &v) {
  Prepared p;
  p.kernel = jit.compile(text, options, inv.file);
  const KernelInfo &info = p.kernel.info();
  p.o = makeOutput(info.outDType,
                   {q.shape[0], q.shape[1], q.shape[2], info.valueHeadDim});
  p.lse = makeOutput(DType::f32, {q.shape[0], q.shape[1], q.shape[2]});
  p.tensors.q = q.ref();
  p.tensors.k = k.ref();
  p.tensors.v = v.ref();
  p.tensors.o = p.o.ref();
  if (info.lse)
    p.tensors.lse = p.lse.ref();
  if (info.kvDtype != "same" || info.pageSize > 0) {
    // The f32 inputs go through the runtime's quantizer and/or into a
    // shuffled page pool, so those paths run on the same data.
    for (auto [name, a, dim] : {std::tuple{"k", &k, info.headDim},
                                std::tuple{"v", &v, info.valueHeadDim}}) {
      if (a->shape.size() != 4 || a->shape[3] != dim)
        throw Error(name, "expected [B, Hkv, Skv, " + std::to_string(dim) +
                              "], got " + std::to_string(a->shape.size()) +
                              " dimensions");
      if (a->dtype == DType::i32)
        throw Error(name, "expected floating-point K/V to quantize or page");
    }
    if (k.shape[0] != q.shape[0])
      throw Error("k", "dimension 0 (B) differs from q's");
    p.cache = KVCache::build(info, k.ref(), v.ref(),
                             static_cast<uint64_t>(inv.seed.value_or(1)));
    p.cache.bind(p.tensors);
  }
  return p;
}

/// `run --paged P`: the kernel sizes captured tensors by the page table's
/// capacity (Skv = max_pages * P), which run chooses when it builds the
/// pool, so a tensor the user sized for the inputs' Skv (as an unpaged run
/// takes it) is copied into one of the pool's size, zero past the keys
/// (which the kernel never reads: they lie past seq_lens).
void sizeCapturesToPool(const Prepared &p, const NpyArray &q,
                        const NpyArray &k, Params &params,
                        std::vector<std::unique_ptr<NpyArray>> &arrays) {
  const KernelInfo &info = p.kernel.info();
  if (info.pageSize <= 0 || !p.tensors.pageTable)
    return;
  int64_t unpaged[7] = {q.shape[0], q.shape[1], k.shape[1], q.shape[2],
                        k.shape[2], info.headDim, info.valueHeadDim};
  int64_t paged[7];
  std::copy(unpaged, unpaged + 7, paged);
  paged[4] = p.tensors.pageTable->shape[1] * info.pageSize;
  for (const CaptureInfo &c : info.captures)
    for (auto &[name, arg] : params) {
      if (name != c.name || arg.kind() != Arg::Kind::Tensor)
        continue;
      const TensorRef &given = arg.tensor();
      std::vector<int64_t> from, to;
      try {
        for (const std::string &rpn : c.dimRpn) {
          from.push_back(detail::evalDimRpn(rpn, unpaged, info, params));
          to.push_back(detail::evalDimRpn(rpn, paged, info, params));
        }
      } catch (const Error &) {
        continue; // a missing param: the launch reports it
      }
      if (to.empty() || given.shape != from || from == to)
        continue;
      bool fits = true;
      for (size_t i = 0; i < to.size(); ++i)
        fits &= from[i] >= 0 && from[i] <= to[i];
      if (!fits)
        continue;
      // Copy the given box into the pool-sized one, a row at a time.
      NpyArray padded = makeOutput(given.dtype, to);
      size_t elt = dtypeSize(given.dtype), rank = to.size();
      int64_t rows = 1;
      for (size_t i = 0; i + 1 < rank; ++i)
        rows *= from[i];
      int64_t rowBytes = from.back() * int64_t(elt);
      for (int64_t r = 0; r < rows && rowBytes > 0; ++r) {
        int64_t rest = r, dst = 0, scale = to.back();
        for (size_t i = rank - 1; i-- > 0;) {
          dst += (rest % from[i]) * scale;
          rest /= from[i];
          scale *= to[i];
        }
        std::memcpy(padded.bytes.data() + dst * elt,
                    static_cast<const char *>(given.data) + r * rowBytes,
                    rowBytes);
      }
      arrays.push_back(std::make_unique<NpyArray>(std::move(padded)));
      arg = Arg(arrays.back()->ref());
    }
}

/// `--grad NAME=FILE`s, in the order given.
std::vector<std::pair<std::string, std::string>>
parseGrads(const Invocation &inv) {
  std::vector<std::pair<std::string, std::string>> grads;
  for (const std::string &g : inv.grads) {
    size_t eq = g.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == g.size())
      throw Error("--grad", "expected NAME=FILE.npy, got '" + g + "'");
    std::string name = g.substr(0, eq);
    for (const auto &[n, f] : grads)
      if (n == name)
        throw Error(name, "given twice with --grad");
    grads.emplace_back(name, g.substr(eq + 1));
  }
  return grads;
}

/// A --grad NAME must be an f32 param or f32 captured tensor of the
/// variant: checked before any input is read.
void checkGradNames(const KernelInfo &info,
                    const std::vector<std::pair<std::string, std::string>>
                        &grads) {
  for (const auto &[name, file] : grads) {
    bool found = false;
    for (const ParamInfo &p : info.params)
      if (p.name == name) {
        found = true;
        if (p.type != DType::f32)
          throw Error(name, "is an i32 param: it has no gradient (--grad "
                            "takes f32 params and f32 tensors)");
      }
    for (const CaptureInfo &c : info.captures)
      if (c.name == name) {
        found = true;
        if (c.dtype != DType::f32)
          throw Error(name, std::string(c.dtype == DType::bf16 ? "is a "
                                                               : "is an ") +
                                dtypeName(c.dtype) +
                                " tensor: it has no gradient (--grad takes "
                                "f32 params and f32 tensors)");
      }
    if (!found)
      throw Error(name, "variant '" + info.name +
                            "' has no param or tensor of this name (--grad)");
  }
}

int cmdRun(const Invocation &inv) {
  Options options = inv.options;
  auto grads = parseGrads(inv);
  // Every output can be written, before anything is computed.
  OutputFiles outputs;
  size_t oFile = outputs.add("-o", inv.out);
  std::optional<size_t> lseFile;
  if (!inv.lseOut.empty())
    lseFile = outputs.add("--lse-out", inv.lseOut);
  size_t dqFile = 0, dkFile = 0, dvFile = 0;
  std::vector<size_t> gradFiles;
  if (options.backward) {
    dqFile = outputs.add("--dq", inv.dq);
    dkFile = outputs.add("--dk", inv.dk);
    dvFile = outputs.add("--dv", inv.dv);
    for (const auto &[name, file] : grads)
      gradFiles.push_back(outputs.add("--grad " + name, file));
  }
  std::string text = readFile(inv.file);
  if (inv.simulate)
    useSimulatorNextToAttnc(options.target);
  else
    requireHostTarget(options);
  // GPU kernels default to bf16, which the .npy files must then hold.
  if (driver::isGpuTarget(options.target) && options.dtype.empty())
    options.dtype = "bf16";
  {
    // Source and option errors come before any input is read.
    driver::Source source = loadSource(text, inv.file);
    Options early = options;
    if (early.headDim == 0)
      early.headDim = 64;
    driver::KernelPlan plan = driver::planKernel(source, early);
    if (options.backward) {
      // The backward reads the forward's lse where the normalizer has a
      // row sum.
      options.lse |= plan.variant->hasRowSum();
      checkGradNames(plan.info, grads);
    }
  }
  bool bf16 = options.dtype == "bf16";
  NpyArray q = readNpy(inv.q, "q", bf16);
  NpyArray k = readNpy(inv.k, "k", bf16);
  NpyArray v = readNpy(inv.v, "v", bf16);
  if (q.shape.size() != 4)
    throw Error("q", "expected 4 dimensions [B, Hq, Sq, D], got " +
                         std::to_string(q.shape.size()));
  if (v.shape.size() != 4)
    throw Error("v", "expected 4 dimensions [B, Hkv, Skv, Dv], got " +
                         std::to_string(v.shape.size()));
  // Unless given, D, Dv and the dtype come from the inputs.
  if (options.headDim == 0)
    options.headDim = q.shape[3];
  if (options.valueHeadDim == 0)
    options.valueHeadDim = v.shape[3];
  if (options.dtype.empty())
    options.dtype = dtypeName(q.dtype);

  Params params;
  std::vector<std::unique_ptr<NpyArray>> arrays;
  parseSets(inv, params, arrays);

  Jit jit;
  Prepared p = prepare(jit, text, inv, options, q, k, v);
  sizeCapturesToPool(p, q, k, params, arrays);
  std::optional<NpyArray> dO;
  if (options.backward) {
    dO = readNpy(inv.dO, "do", bf16);
    if (dO->dtype != p.kernel.info().outDType)
      throw Error("do", std::string("expected dtype ") +
                            dtypeName(p.kernel.info().outDType) +
                            " (o's), got " + dtypeName(dO->dtype));
  }
  // GPU kernels (--simulate) get device copies of the host arrays.
  p.kernel.launchHost(p.tensors, params);
  NpyArray dq, dk, dv;
  std::vector<NpyArray> gradArrays;
  if (options.backward) {
    const KernelInfo &info = p.kernel.info();
    dq = makeOutput(q.dtype, q.shape);
    dk = makeOutput(k.dtype, k.shape);
    dv = makeOutput(v.dtype, v.shape);
    Gradients g{dq.ref(), dk.ref(), dv.ref()};
    for (const auto &[name, file] : grads) {
      std::vector<int64_t> shape = {1};
      for (const CaptureInfo &c : info.captures)
        if (c.name == name)
          for (const auto &[n, a] : params)
            if (n == name && a.kind() == Arg::Kind::Tensor)
              shape = a.tensor().shape;
      gradArrays.push_back(makeOutput(DType::f32, shape));
    }
    for (size_t i = 0; i < grads.size(); ++i)
      g.named.emplace_back(grads[i].first, gradArrays[i].ref());
    // Host arrays (GPU kernels under --simulate are staged).
    p.kernel.backwardHost(p.tensors, dO->ref(), g, params);
  }
  outputs.write(oFile, p.o);
  if (lseFile)
    outputs.write(*lseFile, p.lse);
  if (options.backward) {
    outputs.write(dqFile, dq);
    outputs.write(dkFile, dk);
    outputs.write(dvFile, dv);
    for (size_t i = 0; i < grads.size(); ++i)
      outputs.write(gradFiles[i], gradArrays[i]);
  }
  outputs.commit();
  return 0;
}

uint16_t toHalfBits(float f, DType t) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if (t == DType::bf16)
    return static_cast<uint16_t>((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
  _Float16 h = static_cast<_Float16>(f);
  uint16_t out;
  std::memcpy(&out, &h, 2);
  return out;
}

NpyArray randomArray(DType dtype, std::vector<int64_t> shape,
                     std::mt19937 &rng) {
  NpyArray a = makeOutput(dtype, std::move(shape));
  std::normal_distribution<float> normal;
  int64_t n = a.numel();
  for (int64_t i = 0; i < n; ++i) {
    float x = normal(rng);
    if (dtype == DType::f32)
      std::memcpy(a.bytes.data() + 4 * i, &x, 4);
    else {
      uint16_t h = toHalfBits(x, dtype);
      std::memcpy(a.bytes.data() + 2 * i, &h, 2);
    }
  }
  return a;
}

/// Random inputs of `shape` for a compiled kernel, ready to launch.
struct RandomLaunch {
  NpyArray q, k, v;
  Prepared p;
};
RandomLaunch randomLaunch(Jit &jit, const std::string &text,
                          const Invocation &inv, const Options &options,
                          const std::vector<int64_t> &shape) {
  KernelInfo info = jit.compile(text, options, inv.file).info();
  std::mt19937 rng(static_cast<uint32_t>(inv.seed.value_or(0)));
  int64_t B = shape[0], Hq = shape[1], Hkv = shape[2], Sq = shape[3],
          Skv = shape[4];
  RandomLaunch r;
  r.q = randomArray(info.dtype, {B, Hq, Sq, info.headDim}, rng);
  r.k = randomArray(info.dtype, {B, Hkv, Skv, info.headDim}, rng);
  r.v = randomArray(info.dtype, {B, Hkv, Skv, info.valueHeadDim}, rng);
  r.p = prepare(jit, text, inv, options, r.q, r.k, r.v);
  return r;
}

/// FLOPs of the blocks a launch computes (both matmuls, 2 per MAC).
/// FLOPs of the blocks `map` computes. `Sq` counts the rows of one of the
/// map's heads: with packed heads (a map head per kv head), the rows of
/// all query heads of its group.
double computedFlops(const BlockMap &map, const KernelInfo &info, int64_t Sq,
                     int64_t Skv) {
  double flops = 0;
  for (int64_t b = 0; b < map.batch; ++b)
    for (int64_t h = 0; h < map.heads; ++h)
      for (int64_t qt = 0; qt < map.queryTiles; ++qt)
        for (int64_t kt = 0; kt < map.keyTiles; ++kt) {
          if (map.at(b, h, qt, kt) == BlockMap::Empty)
            continue;
          double rows = std::min(map.blockQ, Sq - qt * map.blockQ);
          double cols = std::min(map.blockKV, Skv - kt * map.blockKV);
          flops += 2.0 * rows * cols * (info.headDim + info.valueHeadDim);
        }
  return flops;
}

int cmdBlockMap(const Invocation &inv) {
  const std::vector<int64_t> &shape = inv.shape;
  Options options = inv.options;
  requireHostTarget(options);
  if (options.headDim == 0)
    options.headDim = 64;
  std::string text = readFile(inv.file);
  loadSource(text, inv.file);
  Params params;
  std::vector<std::unique_ptr<NpyArray>> arrays;
  parseSets(inv, params, arrays);
  Jit jit;
  RandomLaunch r = randomLaunch(jit, text, inv, options, shape);
  sizeCapturesToPool(r.p, r.q, r.k, params, arrays);
  BlockMap map = r.p.kernel.blockMap(r.p.tensors, params);
  const KernelInfo &info = r.p.kernel.info();
  int64_t Hq = shape[1], Sq = shape[3];
  int64_t b = inv.b, h = inv.h;
  if (b < 0 || b >= map.batch)
    throw Error("--b", "expected 0.." + std::to_string(map.batch - 1));
  if (h < 0 || h >= Hq)
    throw Error("--h", "expected a query head 0.." + std::to_string(Hq - 1));
  // With packed heads (GQA), a map head is a kv head whose query tiles
  // stack the rows of its group's query heads (head-major): show the
  // tiles that hold query head h's rows, and say so.
  int64_t group = info.packedHeads ? Hq / map.heads : 1;
  int64_t mapHead = h / group, first = 0, last = map.queryTiles - 1;
  std::string where = "b=" + std::to_string(b) + ", h=" + std::to_string(h);
  if (group > 1) {
    int64_t rowLo = (h % group) * Sq, rowHi = rowLo + Sq - 1;
    first = rowLo / map.blockQ;
    last = rowHi / map.blockQ;
    where += ": kv head " + std::to_string(mapHead) + " computes query "
             "heads " + std::to_string(mapHead * group) + ".." +
             std::to_string(mapHead * group + group - 1) + " as one stack "
             "of " + std::to_string(group * Sq) + " rows, h=" +
             std::to_string(h) + " being rows " + std::to_string(rowLo) +
             ".." + std::to_string(rowHi) + ", query tiles " +
             std::to_string(first) + ".." + std::to_string(last);
  }
  std::printf("%s: %lld x %lld tiles of %lld x %lld (%s); "
              "'#' full, '+' partial, '.' skipped\n",
              info.name.c_str(), (long long)(last - first + 1),
              (long long)map.keyTiles, (long long)map.blockQ,
              (long long)map.blockKV, where.c_str());
  std::istringstream rows(map.str(b, mapHead));
  std::string line;
  for (int64_t qt = 0; std::getline(rows, line); ++qt)
    if (qt >= first && qt <= last)
      std::printf("%s\n", line.c_str());
  std::printf("density %.4f (%lld of %zu blocks computed)\n", map.density(),
              (long long)map.computedBlocks(), map.classes.size());
  return 0;
}

int cmdBench(const Invocation &inv) {
  const std::vector<int64_t> &shape = inv.shape;
  Options options = inv.options;
  requireHostTarget(options);
  if (options.headDim == 0)
    options.headDim = 64;
  std::string text = readFile(inv.file);
  {
    driver::Source source = loadSource(text, inv.file);
    // The backward reads the forward's lse where the normalizer has one.
    if (options.backward)
      options.lse |= driver::planKernel(source, options).variant->hasRowSum();
  }
  Params params;
  std::vector<std::unique_ptr<NpyArray>> arrays;
  parseSets(inv, params, arrays);
  Jit jit;
  RandomLaunch r = randomLaunch(jit, text, inv, options, shape);
  sizeCapturesToPool(r.p, r.q, r.k, params, arrays);
  Kernel &kernel = r.p.kernel;
  Tensors &tensors = r.p.tensors;
  const KernelInfo &info = kernel.info();
  int64_t Sq = shape[3], Skv = shape[4];
  int64_t reps = inv.reps;
  // Median time of `launch` over repeated runs (one warm-up first).
  auto medianMs = [&](const std::function<void()> &launch) {
    launch(); // warm-up, and validates the arguments
    std::vector<double> times;
    auto start = std::chrono::steady_clock::now();
    while (true) {
      auto t0 = std::chrono::steady_clock::now();
      launch();
      auto t1 = std::chrono::steady_clock::now();
      times.push_back(
          std::chrono::duration<double, std::milli>(t1 - t0).count());
      double elapsed = std::chrono::duration<double>(t1 - start).count();
      if (reps > 0 ? (int64_t)times.size() >= reps
                   : (times.size() >= 5 && elapsed > 1.0) ||
                         times.size() >= 200)
        break;
    }
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
  };
  double ms = medianMs([&] { kernel.launch(tensors, params); });
  // A masked kernel can also take its block map prebuilt (built once,
  // reused across layers): time that too.
  double msWithMap = -1, msBuildMap = -1;
  BlockMap prebuilt;
  if (info.hasBlockMap) {
    msBuildMap = medianMs([&] { prebuilt = kernel.blockMap(tensors, params); });
    msWithMap = medianMs([&] { kernel.launch(tensors, params, prebuilt); });
  }
  // FLOPs of the blocks the kernel computes: EMPTY ones are skipped.
  BlockMap map = kernel.blockMap(tensors, params);
  double density = map.density();
  int64_t Hq = shape[1];
  int64_t rowsPerHead =
      info.packedHeads && map.heads < Hq ? Sq * (Hq / map.heads) : Sq;
  double flops = computedFlops(map, info, rowsPerHead, Skv);
  double tflops = flops / (ms * 1e-3) / 1e12;
  // Decode-shaped launches (one query tile per head) are bound by reading
  // K/V: the bytes of the cache (codes and scales; for a pool, the pages
  // it holds) times the fraction of key tiles computed.
  bool decodeShaped = map.queryTiles == 1;
  double kvBytes = 0;
  for (const TensorRef *t : {&tensors.k, &tensors.v})
    kvBytes += double(t->numel()) * double(dtypeSize(t->dtype));
  for (const std::optional<TensorRef> *t : {&tensors.kScale, &tensors.vScale})
    if (*t)
      kvBytes += double((*t)->numel()) * double(dtypeSize((*t)->dtype));
  double kvRead = kvBytes * density;
  double kvGbps = kvRead / (ms * 1e-3) / 1e9;
  // The backward on the forward's o and lse and a random dO, every
  // gradient computed (those of params and captures into scratch).
  double msBackward = -1;
  if (options.backward) {
    std::mt19937 rng(static_cast<uint32_t>(inv.seed.value_or(0)) + 1);
    NpyArray dO = randomArray(tensors.o.dtype, tensors.o.shape, rng);
    NpyArray dq = makeOutput(tensors.q.dtype, tensors.q.shape);
    NpyArray dk = makeOutput(tensors.k.dtype, tensors.k.shape);
    NpyArray dv = makeOutput(tensors.v.dtype, tensors.v.shape);
    kernel.launch(tensors, params); // o and lse for these inputs
    Gradients g{dq.ref(), dk.ref(), dv.ref()};
    msBackward =
        medianMs([&] { kernel.backward(tensors, dO.ref(), g, params); });
  }
  if (inv.json) {
    std::printf("{\"ms\": %.4f, \"tflops\": %.6f, \"density\": %.4f",
                ms, tflops, density);
    if (msBackward >= 0)
      std::printf(", \"backward_ms\": %.4f, \"backward_ratio\": %.3f",
                  msBackward, msBackward / ms);
    if (msWithMap >= 0)
      std::printf(", \"ms_prebuilt_map\": %.4f, \"ms_build_map\": %.4f",
                  msWithMap, msBuildMap);
    if (decodeShaped)
      std::printf(", \"kv_bytes\": %.0f, \"kv_gbps\": %.3f", kvRead, kvGbps);
    std::printf("}\n");
  } else {
    std::printf("%s: median %.3f ms, %.3f TFLOP/s on computed blocks, "
                "density %.3f\n",
                info.name.c_str(), ms, tflops, density);
    if (msWithMap >= 0)
      std::printf("  with a prebuilt block map: %.3f ms (building it: %.3f "
                  "ms)\n",
                  msWithMap, msBuildMap);
    if (msBackward >= 0)
      std::printf("  backward: median %.3f ms, %.2fx the forward\n",
                  msBackward, msBackward / ms);
    if (decodeShaped)
      std::printf("  K/V read: %.3f MB at %.2f GB/s (decode is bound by "
                  "it; attn-bench-decode compares with a memory copy)\n",
                  kvRead / 1e6, kvGbps);
  }
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  try {
    std::optional<Invocation> inv = tool::parseCommandLine(argc, argv);
    if (!inv)
      return 1;
    switch (inv->command) {
    case Command::Check:
      return cmdCheck(*inv);
    case Command::Emit:
      return cmdEmit(*inv);
    case Command::Compile:
      return cmdCompile(*inv);
    case Command::Run:
      return cmdRun(*inv);
    case Command::Bench:
      return cmdBench(*inv);
    case Command::BlockMap:
      return cmdBlockMap(*inv);
    }
    return 2;
  } catch (const CompileError &e) {
    std::fputs(e.what(), stderr);
    return 1;
  } catch (const InternalError &e) {
    std::fprintf(stderr, "attnc: %s\n", e.what());
    return 2;
  } catch (const Error &e) {
    std::fprintf(stderr, "attnc: error: %s\n", e.what());
    return 1;
  } catch (const driver::InternalError &e) {
    std::fprintf(stderr, "attnc: internal error: %s\n", e.what());
    return 2;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "attnc: internal error: %s\n", e.what());
    return 2;
  }
}
