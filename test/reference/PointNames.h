//===- PointNames.h - what a variant's names mean at one entry ------------===//
//
// The values of indices, sizes, params and captured-tensor elements at one
// (b, h, q, kv, s) point of a reference problem, shared by the forward
// reference (Reference.cpp) and the backward one (ReferenceBackward.cpp), so
// both read the variant exactly alike. Lets are the subclasses' (each
// caches them its own way).
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_TEST_REFERENCE_POINTNAMES_H
#define ATTN_TEST_REFERENCE_POINTNAMES_H

#include "lib/Frontend/Eval.h"
#include "test/reference/Reference.h"

#include <algorithm>

namespace attn::ref {

class PointNames : public fe::EvalEnv {
public:
  PointNames(const fe::Variant &v, const RefProblem &p) : v(v), p(p) {}

  void at(int64_t b, int64_t h, int64_t q, int64_t kv, double s) {
    idx[0] = s;
    idx[1] = double(b);
    idx[2] = double(h);
    idx[3] = double(q);
    idx[4] = double(kv);
    idx[5] = double(h / (p.Hq / p.Hkv));
  }
  fe::Scalar index(fe::IndexVar iv) override {
    if (iv == fe::IndexVar::S)
      return fe::Scalar::ofFloat(idx[0]);
    return fe::Scalar::ofInt(static_cast<int32_t>(idx[static_cast<int>(iv)]));
  }
  fe::Scalar size(fe::SizeVar sv) override {
    int64_t values[] = {p.B, p.Hq, p.Hkv, p.Sq, p.Skv, p.D, p.Dv};
    return fe::Scalar::ofInt(
        static_cast<int32_t>(values[static_cast<int>(sv)]));
  }
  fe::Scalar param(int i) override {
    return v.params[i].type == fe::Type::I32
               ? fe::Scalar::ofInt(static_cast<int32_t>(p.params[i]))
               : fe::Scalar::ofFloat(p.params[i]);
  }
  fe::Scalar tensorElement(int t, const std::vector<int32_t> &indices) override {
    double x = p.captures[t].values[flatIndex(t, indices)];
    return v.tensors[t].valueType() == fe::Type::I32
               ? fe::Scalar::ofInt(static_cast<int32_t>(x))
               : fe::Scalar::ofFloat(x);
  }

protected:
  /// Same convention as the kernels: indices clamp into range.
  int64_t flatIndex(int t, const std::vector<int32_t> &indices) const {
    const RefTensor &c = p.captures[t];
    int64_t flat = 0;
    for (size_t d = 0; d < indices.size(); ++d)
      flat = flat * c.shape[d] +
             std::clamp<int64_t>(indices[d], 0, c.shape[d] - 1);
    return flat;
  }

  const fe::Variant &v;
  const RefProblem &p;
  double idx[6] = {};
};

/// kv_index: how many slots of (b, hkv) list each key position (entries
/// outside [0, Skv) list nothing): unlisted positions are masked, a listed
/// one counts once per listing, as the kernel visits it once per slot.
/// All ones without kv_index.
inline void listedPositions(const fe::Variant &v, const RefProblem &p,
                            int64_t b, int64_t hkv,
                            std::vector<double> &listed) {
  listed.assign(p.Skv, v.kvIndexTensor >= 0 ? 0.0 : 1.0);
  if (v.kvIndexTensor < 0)
    return;
  const RefTensor &idx = p.captures[v.kvIndexTensor];
  int64_t n = idx.shape[2];
  for (int64_t j = 0; j < n; ++j) {
    double pos = idx.values[(b * p.Hkv + hkv) * n + j];
    if (pos >= 0 && pos < double(p.Skv))
      listed[static_cast<int64_t>(pos)] += 1.0;
  }
}

} // namespace attn::ref

#endif // ATTN_TEST_REFERENCE_POINTNAMES_H
