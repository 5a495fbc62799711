//===- Catalog.h - test problems for the variant catalog in examples/ -----===//
#ifndef ATTN_TEST_CATALOG_H
#define ATTN_TEST_CATALOG_H

#include "test/support/Harness.h"

#include <ostream>
#include <string>
#include <vector>

namespace attn::testing {

struct CatalogCase {
  std::string name;    // test name
  std::string file;    // under examples/
  std::string variant; // "" = the file's only one
  /// Fills shapes, params and captures on top of the defaults.
  void (*setup)(Problem &p);
};

inline void PrintTo(const CatalogCase &c, std::ostream *os) { *os << c.name; }

/// Every catalog variant of examples/ with data that exercises it.
const std::vector<CatalogCase> &catalogCases();

/// A Problem for `c`, with examples/ resolved from the source root.
Problem catalogProblem(const CatalogCase &c, const std::string &root,
                       int64_t headDim = 64);

/// Whether the problem's variant has a row sum (softmax, softplus): then it
/// has an lse to check.
bool hasRowSum(const Problem &p);

} // namespace attn::testing

#endif // ATTN_TEST_CATALOG_H
