//===- Parser.h - .attn source to AST -------------------------------------===//
#ifndef ATTN_FRONTEND_PARSER_H
#define ATTN_FRONTEND_PARSER_H

#include "lib/Frontend/AST.h"
#include "lib/Frontend/Diagnostics.h"

namespace attn::fe {

/// Parses a whole file. Syntax errors go to `diags`; the returned program
/// holds what parsed (callers must not use it when `diags.hasErrors()`).
Program parseProgram(const SourceFile &file, Diagnostics &diags);

/// Parse and check: the front end as the driver uses it.
Program parseAndCheck(const SourceFile &file, Diagnostics &diags);

/// Largest expression tree height accepted; deeper input gets an error, so
/// recursive walks over the tree stay far from the stack limit.
constexpr unsigned kMaxExprDepth = 256;

} // namespace attn::fe

#endif // ATTN_FRONTEND_PARSER_H
