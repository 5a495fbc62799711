//===- KVCache.cpp - host K/V in a kernel's quantized / paged layout ------===//
#include "attn/runtime.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>

namespace attn {

KVCache KVCache::build(const KernelInfo &info, const TensorRef &k,
                       const TensorRef &v, uint64_t seed,
                       const std::vector<int32_t> &lens) {
  for (auto [name, t] : {std::pair{"k", &k}, std::pair{"v", &v}})
    if (t->shape.size() != 4 || !t->isContiguous())
      throw Error(name, "expected a contiguous [B, Hkv, S, D] tensor");
  int64_t B = k.shape[0], H = k.shape[1], S = k.shape[2];
  if (v.shape[0] != B || v.shape[1] != H || v.shape[2] != S)
    throw Error("v", "expected the batch, heads and length of k");
  KVCache c;
  c.quantized = info.kvDtype != "same";
  c.paged = info.pageSize > 0;
  bool quant = info.kvDtype != "same";
  int64_t pack = quant ? codesPerElement(info.kvDtype) : 1;
  DType elt = quant ? codeDType(info.kvDtype) : k.dtype;
  if (!quant && v.dtype != k.dtype)
    throw Error("v", "expected k's dtype");
  for (auto [name, t] : {std::pair{"k", &k}, std::pair{"v", &v}})
    for (int64_t d : t->shape)
      if (d < 0 || d > INT32_MAX)
        throw Error(name, "expected sizes in 0..2^31 - 1");
  int64_t rowK = k.shape[3] / pack * int64_t(dtypeSize(elt));
  int64_t rowV = v.shape[3] / pack * int64_t(dtypeSize(elt));
  // Sizes derived from the shapes, in checked arithmetic.
  auto product = [](const char *name, std::initializer_list<int64_t> fs) {
    int64_t n = 1;
    for (int64_t f : fs)
      if (__builtin_mul_overflow(n, f, &n))
        throw Error(name, "the cache would hold more bytes than fit in 64 "
                          "bits");
    return n;
  };

  // Contiguous rows in the kernel's element type: codes or the inputs.
  std::vector<uint8_t> kRows(product("k", {B, H, S, rowK})),
      vRows(product("v", {B, H, S, rowV}));
  if (quant && info.kvGroup < 1)
    throw Error("kv_group", "expected a positive group size");
  if (quant) {
    int64_t G = info.kvGroup;
    c.kScale.resize(product("k", {B, H, (S + G - 1) / G, k.shape[3], 4}) / 4);
    c.vScale.resize(product("v", {B, H, S, 4}) / 4);
    TensorRef kCodes(kRows.data(), elt,
                     {B, H, S, k.shape[3] / pack});
    TensorRef vCodes(vRows.data(), elt, {B, H, S, v.shape[3] / pack});
    quantizeKeys(k, info.kvDtype, G,
                 kCodes, TensorRef(c.kScale.data(), DType::f32,
                                   {B, H, (S + G - 1) / G, k.shape[3]}));
    quantizeValues(v, info.kvDtype, vCodes,
                   TensorRef(c.vScale.data(), DType::f32, {B, H, S}));
  } else {
    // Empty K/V may come with null pointers: memcpy must not see them.
    if (!kRows.empty())
      std::memcpy(kRows.data(), k.data, kRows.size());
    if (!vRows.empty())
      std::memcpy(vRows.data(), v.data, vRows.size());
  }

  if (info.pageSize <= 0) {
    c.kData = std::move(kRows);
    c.vData = std::move(vRows);
    c.kRef = TensorRef(c.kData.data(), elt, {B, H, S, rowK / int64_t(dtypeSize(elt))});
    c.vRef = TensorRef(c.vData.data(), elt, {B, H, S, rowV / int64_t(dtypeSize(elt))});
    if (quant) {
      int64_t G = info.kvGroup;
      c.kScaleRef = TensorRef(c.kScale.data(), DType::f32,
                              {B, H, (S + G - 1) / G, k.shape[3]});
      c.vScaleRef = TensorRef(c.vScale.data(), DType::f32, {B, H, S});
    }
    return c;
  }

  // Pages: every batch's positions [i*P, (i+1)*P) in page
  // order[b * perBatch + i] of a shuffled pool; [pages, H, P, row].
  int64_t P = info.pageSize;
  int64_t perBatch = std::max<int64_t>(1, (S + P - 1) / P);
  int64_t pages = B * perBatch;
  if (pages > INT32_MAX)
    throw Error("k", "the page pool would need more than 2^31 - 1 pages");
  std::vector<int32_t> order(pages);
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(seed);
  std::shuffle(order.begin(), order.end(), rng);
  c.pageTable.assign(order.begin(), order.end());
  c.seqLens = lens.empty() ? std::vector<int32_t>(B, int32_t(S)) : lens;
  if (int64_t(c.seqLens.size()) != B)
    throw Error("seq_lens", "expected one length per batch");
  for (int32_t len : c.seqLens)
    if (len < 0 || len > S)
      throw Error("seq_lens", "expected lengths in 0..S");
  c.kData.assign(product("k", {pages, H, P, rowK}), 0);
  c.vData.assign(product("v", {pages, H, P, rowV}), 0);
  for (int64_t b = 0; b < B && (rowK > 0 || rowV > 0); ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t s = 0; s < S; ++s) {
        int64_t page = c.pageTable[b * perBatch + s / P], slot = s % P;
        int64_t src = (b * H + h) * S + s, dst = (page * H + h) * P + slot;
        if (rowK > 0)
          std::memcpy(&c.kData[dst * rowK], &kRows[src * rowK], rowK);
        if (rowV > 0)
          std::memcpy(&c.vData[dst * rowV], &vRows[src * rowV], rowV);
      }
  int64_t cols = int64_t(dtypeSize(elt));
  c.kRef = TensorRef(c.kData.data(), elt, {pages, H, P, rowK / cols});
  c.vRef = TensorRef(c.vData.data(), elt, {pages, H, P, rowV / cols});
  c.pageTableRef = TensorRef(c.pageTable.data(), DType::i32, {B, perBatch});
  c.seqLensRef = TensorRef(c.seqLens.data(), DType::i32, {B});
  if (quant) {
    // Scales are indexed by position up to the table's capacity.
    int64_t G = info.kvGroup, capacity = perBatch * P;
    int64_t groups = (S + G - 1) / G, capGroups = (capacity + G - 1) / G;
    int64_t D = k.shape[3];
    std::vector<float> ks(product("k", {B, H, capGroups, D, 4}) / 4, 0.0f),
        vs(product("v", {B, H, capacity, 4}) / 4, 0.0f);
    for (int64_t bh = 0; bh < B * H; ++bh) {
      std::copy_n(&c.kScale[bh * groups * D], groups * D,
                  &ks[bh * capGroups * D]);
      std::copy_n(&c.vScale[bh * S], S, &vs[bh * capacity]);
    }
    c.kScale = std::move(ks);
    c.vScale = std::move(vs);
    c.kScaleRef =
        TensorRef(c.kScale.data(), DType::f32, {B, H, capGroups, D});
    c.vScaleRef = TensorRef(c.vScale.data(), DType::f32, {B, H, capacity});
  }
  return c;
}

void KVCache::bind(Tensors &t) const {
  t.k = kRef;
  t.v = vRef;
  t.kScale.reset();
  t.vScale.reset();
  t.pageTable.reset();
  t.seqLens.reset();
  if (quantized) {
    t.kScale = kScaleRef;
    t.vScale = vScaleRef;
  }
  if (paged) {
    t.pageTable = pageTableRef;
    t.seqLens = seqLensRef;
  }
}

} // namespace attn
