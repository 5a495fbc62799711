//===- Catalog.cpp --------------------------------------------------------===//
#include "test/numerics/Catalog.h"

#include "lib/Driver/Compiler.h"

#include <random>

namespace attn::testing {
namespace {

using ref::RefTensor;

RefTensor tensor(std::vector<int64_t> shape, std::vector<double> values) {
  return RefTensor{std::move(shape), std::move(values)};
}

/// Sorted document ids over Skv positions (documents of random length),
/// and the query ids of the last Sq positions (bottom-right aligned).
void documents(Problem &p) {
  std::mt19937 rng(p.seed + 7);
  std::uniform_int_distribution<int> len(1, 40);
  std::vector<double> kdoc, qdoc;
  for (int64_t b = 0; b < p.B; ++b) {
    std::vector<double> ids;
    int doc = 0;
    while ((int64_t)ids.size() < p.Skv) {
      int n = len(rng);
      for (int i = 0; i < n && (int64_t)ids.size() < p.Skv; ++i)
        ids.push_back(doc);
      ++doc;
    }
    kdoc.insert(kdoc.end(), ids.begin(), ids.end());
    qdoc.insert(qdoc.end(), ids.end() - p.Sq, ids.end());
  }
  p.captures["kdoc"] = tensor({p.B, p.Skv}, kdoc);
  p.captures["qdoc"] = tensor({p.B, p.Sq}, qdoc);
}

const std::vector<CatalogCase> kCases = {
    {"causal", "causal.attn", "", [](Problem &) {}},
    {"causal_decode", "causal.attn", "",
     [](Problem &p) { p.Sq = 5, p.Skv = 203; }},
    {"sliding_sink", "sliding_sink.attn", "",
     [](Problem &p) { p.params = {{"window", 16}, {"sinks", 3}}; }},
    {"streaming", "streaming.attn", "",
     [](Problem &p) {
       p.Sq = 40;
       p.params = {{"window", 20}, {"sinks", 2}};
     }},
    {"packed_docs", "document_mask.attn", "",
     [](Problem &p) {
       p.B = 2;
       documents(p);
     }},
    {"alibi", "alibi.attn", "", [](Problem &p) { p.Hq = p.Hkv = 4; }},
    {"softcap", "softcap.attn", "",
     [](Problem &p) {
       p.qScale = 6.0;
       p.params = {{"cap", 5.0}};
     }},
    {"prefix_lm", "prefix_lm.attn", "",
     [](Problem &p) {
       p.B = 2;
       p.Sq = p.Skv = 90;
       p.captures["plen"] = tensor({2}, {10, 50});
     }},
    {"flash_sigmoid", "sigmoid.attn", "", [](Problem &) {}},
    {"na2d", "neighborhood_2d.attn", "",
     [](Problem &p) {
       p.Sq = p.Skv = 99;
       p.params = {{"rows", 9}, {"cols", 11}};
     }},
    {"na2d_dilated", "neighborhood_2d.attn", "",
     [](Problem &p) {
       p.Sq = p.Skv = 20 * 17;
       p.params = {{"rows", 20}, {"cols", 17}, {"dil", 2}};
     }},
    {"learned_sink", "learned_sink.attn", "",
     [](Problem &p) {
       p.Hq = 4, p.Hkv = 2;
       p.captures["sink_logit"] = tensor({4}, {2.0, -1.0, 0.5, 8.0});
     }},
    {"t5_bias", "t5_bias.attn", "",
     [](Problem &p) { p.Sq = p.Skv = 200; }},
    {"decay", "decay.attn", "",
     [](Problem &p) { p.captures["lam"] = tensor({2}, {0.9, 0.99}); }},
    {"chunk_anchor", "chunk_anchor.attn", "",
     [](Problem &p) {
       p.Sq = p.Skv = 131;
       p.params = {{"chunk", 32}};
     }},
    {"strided", "strided.attn", "",
     [](Problem &p) {
       p.Sq = p.Skv = 150;
       p.params = {{"local", 16}, {"stride", 3}, {"blk", 8}};
     }},
    {"s2_attn", "shifted_groups.attn", "",
     [](Problem &p) {
       p.Hq = p.Hkv = 4;
       p.Sq = p.Skv = 131;
       p.params = {{"G", 32}, {"sinks", 2}};
     }},
    {"moa", "per_head_window.attn", "",
     [](Problem &p) {
       p.Hq = 4, p.Hkv = 2;
       p.Sq = 60;
       p.captures["alpha"] = tensor({4}, {4, 8, 16, 2});
       p.captures["beta"] = tensor({4}, {0.05, 0.1, 0.0, 0.02});
       p.captures["retrieval"] = tensor({4}, {0, 1, 0, 0});
       p.params = {{"sinks", 3}};
     }},
    {"image_bidir", "modality.attn", "image_bidir",
     [](Problem &p) { p.Sq = p.Skv = 100; }},
    {"candidates", "modality.attn", "candidates",
     [](Problem &p) { p.Sq = p.Skv = 100; }},
    {"tree_verify", "modality.attn", "tree_verify",
     [](Problem &p) {
       p.Sq = 9, p.Skv = 70;
       // A binary tree over 9 drafts: parent(j) = (j - 1) / 2.
       std::vector<double> anc(81, 0.0);
       for (int i = 0; i < 9; ++i)
         for (int j = i;; j = (j - 1) / 2) {
           anc[i * 9 + j] = 1;
           if (j == 0)
             break;
         }
       p.captures["anc"] = tensor({1, 9, 9}, anc);
     }},
    {"pasta", "steering.attn", "",
     [](Problem &p) {
       p.intRange = 2;
       p.params = {{"alpha", 0.05}};
     }},
    {"entropy_scale", "entropy_scale.attn", "", [](Problem &) {}},
    {"relu_attn", "relu.attn", "relu_attn", [](Problem &) {}},
    {"relu2_attn", "relu.attn", "relu2_attn", [](Problem &) {}},
    {"softplus_attn", "softplus.attn", "", [](Problem &) {}},
    {"top_theta", "top_theta.attn", "",
     [](Problem &p) { p.captures["theta"] = tensor({2}, {0.0, 0.5}); }},
    {"criss_cross", "criss_cross.attn", "criss_cross",
     [](Problem &p) {
       p.Sq = p.Skv = 99;
       p.params = {{"cols", 11}};
     }},
    {"axial", "criss_cross.attn", "axial",
     [](Problem &p) {
       p.Hq = p.Hkv = 4;
       p.Sq = p.Skv = 99;
       p.params = {{"cols", 11}};
     }},
    {"vertical_slash", "vertical_slash.attn", "",
     [](Problem &p) {
       p.Sq = p.Skv = 100;
       p.intRange = 2;
     }},
    {"striped_shard", "striped_shard.attn", "",
     [](Problem &p) {
       p.Sq = p.Skv = 64;
       p.params = {{"P", 4}, {"rq", 1}, {"rk", 2}};
     }},
    {"kept_kv", "kept_kv.attn", "",
     [](Problem &p) {
       p.Hq = 4, p.Hkv = 2;
       p.intRange = 2;
     }},
    {"moba_topk", "select.attn", "moba",
     [](Problem &p) {
       p.Sq = p.Skv = 200;
       p.qScale = 3.0; // spread the pooled scores apart
       p.params = {{"k", 2}};
     }},
    {"flex_prefill_mass", "select.attn", "flex_prefill",
     [](Problem &p) {
       p.Sq = p.Skv = 230;
       p.qScale = 3.0;
     }},
    {"block_theta", "select.attn", "block_theta",
     [](Problem &p) {
       p.Sq = 150, p.Skv = 270;
       p.qScale = 3.0;
       p.params = {{"theta", 0.02}};
     }},
    {"dilated", "dilated_window.attn", "",
     [](Problem &p) {
       p.Sq = p.Skv = 150;
       p.params = {{"r", 3}, {"window", 40}};
     }},
    // Appended, so the sims' per-index flavors of the cases above stay.
    {"laplace_attn", "laplace.attn", "", [](Problem &) {}},
};

} // namespace

const std::vector<CatalogCase> &catalogCases() { return kCases; }

Problem catalogProblem(const CatalogCase &c, const std::string &root,
                       int64_t headDim) {
  Problem p;
  p.filename = root + "/examples/" + c.file;
  p.source = readText(p.filename);
  p.options.variant = c.variant;
  p.options.headDim = headDim;
  p.seed = static_cast<uint32_t>(std::hash<std::string>()(c.name));
  c.setup(p);
  return p;
}

bool hasRowSum(const Problem &p) {
  driver::Source s(p.source, p.filename);
  const fe::Variant *v = p.options.variant.empty()
                             ? &s.program.variants.front()
                             : s.program.find(p.options.variant);
  return v && v->hasRowSum();
}

} // namespace attn::testing
