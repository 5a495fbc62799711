//===- Sema.h - name resolution and type checking -------------------------===//
#ifndef ATTN_FRONTEND_SEMA_H
#define ATTN_FRONTEND_SEMA_H

#include "lib/Frontend/AST.h"
#include "lib/Frontend/Diagnostics.h"

namespace attn::fe {

/// Resolves names, assigns types, folds consts and parameter defaults and
/// enforces DSL.md's rules (a mask never reads `s`, sink sees only `h`, ...).
/// Reports every problem to `diags`.
void checkProgram(Program &program, Diagnostics &diags);

/// Lets (indices into `variant.lets`) that `expr` needs, transitively, in
/// declaration order, so that each can be materialized once before use.
std::vector<int> letsNeededBy(const Variant &variant, const Expr &expr);

} // namespace attn::fe

#endif // ATTN_FRONTEND_SEMA_H
