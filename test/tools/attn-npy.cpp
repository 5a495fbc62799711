//===- attn-npy.cpp - .npy inputs and reference checks for tests ----------===//
//
//   attn-npy rand  OUT.npy f32|f16|bf16 D0,D1,... [SEED]   unit normal values
//   attn-npy ints  OUT.npy D0,D1,... LO HI [SEED]           i32 in [LO, HI)
//   attn-npy range OUT.npy D0,D1,... STEP                   i32 (i % last) / STEP
//   attn-npy fill  OUT.npy D0,D1,... VALUE                  i32 VALUE everywhere
//   attn-npy check FILE.attn [--variant V] --q --k --v [--set N=V|f.npy]
//                  --o o.npy [--lse lse.npy] [--tol T] [--rel-l1 R]
//                  (--rel-l1: check sum |o - ref| / sum |ref| <= R instead
//                  of the max error, for quantized K/V)
//                  [--do do.npy --dq dq.npy --dk dk.npy --dv dv.npy
//                   [--grad NAME=g.npy ...] [--grad-tol T]]
//       recomputes the answer with the float64 reference and compares;
//       with --do also the gradients (attnc run --backward) against
//       referenceBackward: max |g - ref| <= T * max(1, max |ref|) for each
//       (T 2e-4 unless given).
//
//===----------------------------------------------------------------------===//
#include "attn/npy.h"
#include "lib/Driver/Compiler.h"
#include "test/reference/Reference.h"
#include "test/reference/ReferenceBackward.h"
#include "test/support/Harness.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <sstream>

using namespace attn;

namespace {

std::vector<int64_t> parseShape(const std::string &s) {
  std::vector<int64_t> shape;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    shape.push_back(std::stoll(item));
  return shape;
}

double elementAt(const NpyArray &a, int64_t i) {
  switch (a.dtype) {
  case DType::f32: {
    float f;
    std::memcpy(&f, &a.bytes[4 * i], 4);
    return f;
  }
  case DType::i32: {
    int32_t v;
    std::memcpy(&v, &a.bytes[4 * i], 4);
    return v;
  }
  case DType::f16: {
    _Float16 h;
    std::memcpy(&h, &a.bytes[2 * i], 2);
    return static_cast<float>(h);
  }
  case DType::bf16: {
    uint16_t b;
    std::memcpy(&b, &a.bytes[2 * i], 2);
    uint32_t bits = uint32_t(b) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  case DType::i8:
    return static_cast<int8_t>(a.bytes[i]);
  default:
    return a.bytes[i]; // fp8 code bytes
  }
}

std::vector<double> toDoubles(const NpyArray &a) {
  std::vector<double> out(a.numel());
  for (int64_t i = 0; i < a.numel(); ++i)
    out[i] = elementAt(a, i);
  return out;
}

int check(int argc, char **argv) {
  std::string file, variant, qPath, kPath, vPath, oPath, lsePath, dtype;
  double tol = 2e-4, relL1 = -1, gradTol = 2e-4;
  std::vector<std::string> sets, grads;
  std::string doPath, dqPath, dkPath, dvPath;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc)
        throw Error(a, "needs a value");
      return argv[++i];
    };
    if (a == "--variant") variant = next();
    else if (a == "--q") qPath = next();
    else if (a == "--k") kPath = next();
    else if (a == "--v") vPath = next();
    else if (a == "--o") oPath = next();
    else if (a == "--lse") lsePath = next();
    else if (a == "--set") sets.push_back(next());
    else if (a == "--tol") tol = std::stod(next());
    else if (a == "--rel-l1") relL1 = std::stod(next());
    else if (a == "--dtype") dtype = next();
    else if (a == "--do") doPath = next();
    else if (a == "--dq") dqPath = next();
    else if (a == "--dk") dkPath = next();
    else if (a == "--dv") dvPath = next();
    else if (a == "--grad") grads.push_back(next());
    else if (a == "--grad-tol") gradTol = std::stod(next());
    else file = a;
  }
  bool bf16 = dtype == "bf16";
  NpyArray q = readNpy(qPath, "q", bf16), k = readNpy(kPath, "k", bf16),
           v = readNpy(vPath, "v", bf16), o = readNpy(oPath, "o", bf16);
  driver::Source source(testing::readText(file), file);
  Options options;
  options.variant = variant;
  options.headDim = q.shape[3];
  options.valueHeadDim = v.shape[3];
  driver::KernelPlan plan = driver::planKernel(source, options);
  const fe::Variant &var = *plan.variant;

  ref::RefProblem p;
  p.B = q.shape[0], p.Hq = q.shape[1], p.Sq = q.shape[2], p.D = q.shape[3];
  p.Hkv = k.shape[1], p.Skv = k.shape[2], p.Dv = v.shape[3];
  p.q = toDoubles(q), p.k = toDoubles(k), p.v = toDoubles(v);
  for (const fe::ParamDecl &pd : var.params)
    p.params.push_back(pd.defaultValue ? *pd.defaultValue : 0.0);
  p.captures.resize(var.tensors.size());
  for (const std::string &s : sets) {
    size_t eq = s.find('=');
    std::string name = s.substr(0, eq), value = s.substr(eq + 1);
    if (int pi = var.findParam(name); pi >= 0) {
      p.params[pi] = std::stod(value);
    } else if (int ti = var.findTensor(name); ti >= 0) {
      // uint16 data is a bf16 tensor's bit patterns (as attnc run reads it).
      NpyArray t = readNpy(value, name, true);
      p.captures[ti] = ref::RefTensor{t.shape, toDoubles(t)};
    } else {
      throw Error(name, "not a param or tensor of the variant");
    }
  }
  ref::RefResult r = ref::referenceAttention(var, p);
  double err = 0;
  for (int64_t i = 0; i < o.numel(); ++i)
    err = std::max(err, std::fabs(elementAt(o, i) - r.o[i]));
  std::printf("max |o - ref| = %.3e\n", err);
  bool ok = err <= tol;
  if (relL1 >= 0) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < o.numel(); ++i) {
      num += std::fabs(elementAt(o, i) - r.o[i]);
      den += std::fabs(r.o[i]);
    }
    double rel = den > 0 ? num / den : num;
    std::printf("rel-L1 |o - ref| = %.3e\n", rel);
    ok = rel <= relL1;
    tol = relL1;
  }
  if (!lsePath.empty()) {
    NpyArray lse = readNpy(lsePath, "lse");
    double lerr = 0;
    for (int64_t i = 0; i < lse.numel(); ++i) {
      double a = elementAt(lse, i), b = r.lse[i];
      if (std::isinf(a) || std::isinf(b))
        lerr = std::max(lerr, a == b ? 0.0 : INFINITY);
      else
        lerr = std::max(lerr, std::fabs(a - b));
    }
    std::printf("max |lse - ref| = %.3e\n", lerr);
    ok = ok && lerr <= tol;
  }
  if (!doPath.empty()) {
    NpyArray dO = readNpy(doPath, "do", bf16);
    ref::RefGradients g = ref::referenceBackward(var, p, toDoubles(dO));
    auto compare = [&](const std::string &name, const std::string &path,
                       const std::vector<double> &want) {
      NpyArray got = readNpy(path, name, bf16);
      if (got.numel() != int64_t(want.size()))
        throw Error(name, "has " + std::to_string(got.numel()) +
                              " elements, the reference " +
                              std::to_string(want.size()));
      double scale = 1, gerr = 0;
      for (double w : want)
        scale = std::max(scale, std::fabs(w));
      for (int64_t i = 0; i < got.numel(); ++i) {
        double e = std::fabs(elementAt(got, i) - want[i]);
        gerr = std::isnan(e) ? INFINITY : std::max(gerr, e);
      }
      std::printf("max |%s - ref| / max(1, max |ref|) = %.3e\n", name.c_str(),
                  gerr / scale);
      ok = ok && gerr / scale <= gradTol;
    };
    compare("dq", dqPath, g.dq);
    compare("dk", dkPath, g.dk);
    compare("dv", dvPath, g.dv);
    for (const std::string &s : grads) {
      size_t eq = s.find('=');
      std::string name = s.substr(0, eq), path = s.substr(eq + 1);
      if (int pi = var.findParam(name); pi >= 0)
        compare("d" + name, path, {g.dparams[pi]});
      else if (int ti = var.findTensor(name); ti >= 0)
        compare("d" + name, path, g.dcaptures[ti].values);
      else
        throw Error(name, "not a param or tensor of the variant");
    }
  }
  std::printf("%s (tolerance %.1e)\n", ok ? "OK" : "MISMATCH", tol);
  return ok ? 0 : 1;
}

} // namespace

int main(int argc, char **argv) {
  try {
    if (argc < 3) {
      std::fprintf(stderr, "usage: attn-npy rand|ints|range|check ...\n");
      return 2;
    }
    std::string cmd = argv[1];
    if (cmd == "check")
      return check(argc, argv);
    NpyArray a;
    uint32_t seed = 0;
    if (cmd == "rand") {
      a.dtype = *parseDType(argv[3]);
      a.shape = parseShape(argv[4]);
      seed = argc > 5 ? std::stoul(argv[5]) : 0;
      std::mt19937 rng(seed);
      std::normal_distribution<float> normal;
      a.bytes.resize(a.numel() * dtypeSize(a.dtype));
      for (int64_t i = 0; i < a.numel(); ++i) {
        float x = normal(rng);
        if (a.dtype == DType::f32) {
          std::memcpy(&a.bytes[4 * i], &x, 4);
        } else if (a.dtype == DType::f16) {
          _Float16 h = static_cast<_Float16>(x);
          std::memcpy(&a.bytes[2 * i], &h, 2);
        } else {
          uint32_t bits;
          std::memcpy(&bits, &x, 4);
          uint16_t b = static_cast<uint16_t>((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
          std::memcpy(&a.bytes[2 * i], &b, 2);
        }
      }
    } else if (cmd == "fill") {
      a.dtype = DType::i32;
      a.shape = parseShape(argv[3]);
      a.bytes.resize(a.numel() * 4);
      int32_t value = std::stoi(argv[4]);
      for (int64_t i = 0; i < a.numel(); ++i)
        std::memcpy(&a.bytes[4 * i], &value, 4);
    } else if (cmd == "ints" || cmd == "range") {
      a.dtype = DType::i32;
      a.shape = parseShape(argv[3]);
      a.bytes.resize(a.numel() * 4);
      int32_t lo = std::stoi(argv[4]);
      int32_t hi = cmd == "ints" ? std::stoi(argv[5]) : 0;
      seed = cmd == "ints" && argc > 6 ? std::stoul(argv[6]) : 0;
      std::mt19937 rng(seed);
      int64_t inner = a.shape.empty() ? 1 : a.shape.back();
      for (int64_t i = 0; i < a.numel(); ++i) {
        int32_t x = cmd == "ints"
                        ? std::uniform_int_distribution<int32_t>(lo, hi - 1)(rng)
                        : static_cast<int32_t>((i % inner) / lo);
        std::memcpy(&a.bytes[4 * i], &x, 4);
      }
    } else {
      std::fprintf(stderr, "attn-npy: unknown command '%s'\n", cmd.c_str());
      return 2;
    }
    writeNpy(argv[2], a, "out");
    return 0;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "attn-npy: %s\n", e.what());
    return 2;
  }
}
