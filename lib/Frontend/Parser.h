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

/// Deepest syntactic nesting accepted (parentheses, calls, unary operators,
/// conditionals): the parser's own recursion.
constexpr unsigned kMaxExprDepth = 256;
/// Largest expression tree height accepted, which a flat chain such as
/// `a + b + c + ...` raises by one per operator; taller input gets an
/// error, so recursive walks over the tree (checks, import, the compiler's
/// passes) stay far from the stack limit: a 1024-term sum compiles and runs
/// in about 1 MiB of stack, 8 times less than a thread's default.
constexpr unsigned kMaxExprHeight = 1024;

} // namespace attn::fe

#endif // ATTN_FRONTEND_PARSER_H
