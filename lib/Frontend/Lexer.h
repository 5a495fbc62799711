//===- Lexer.h - tokens of the .attn language ----------------------------===//
#ifndef ATTN_FRONTEND_LEXER_H
#define ATTN_FRONTEND_LEXER_H

#include "lib/Frontend/Diagnostics.h"

#include <cstdint>
#include <string>

namespace attn::fe {

enum class Tok {
  Eof, Error, Ident, Int, Float,
  LBrace, RBrace, LParen, RParen, LBracket, RBracket,
  Comma, Semi, Colon, Question, Assign,
  Plus, Minus, Star, Slash, Percent, Bang,
  Lt, Le, Gt, Ge, EqEq, NotEq, AndAnd, OrOr, Pipe,
};
const char *tokSpelling(Tok t);

struct Token {
  Tok kind = Tok::Eof;
  SourceLoc loc;
  std::string text; // identifier or literal spelling
};

/// Turns any byte sequence into tokens; bad bytes become `Tok::Error`
/// tokens with a diagnostic, never a crash.
class Lexer {
public:
  Lexer(const SourceFile &file, Diagnostics &diags)
      : src(file.text), diags(diags) {}
  Token next();

private:
  void skipSpaceAndComments();
  Token make(Tok kind, size_t begin);
  Token lexNumber(size_t begin);
  /// The UTF-8 character starting at `begin`: on success its code point,
  /// and `pos` moves past it; false (and `pos` unchanged) for bytes that
  /// are not UTF-8.
  bool decodeUtf8(size_t begin, uint32_t &codePoint);

  const std::string &src;
  Diagnostics &diags;
  size_t pos = 0;
};

} // namespace attn::fe

#endif // ATTN_FRONTEND_LEXER_H
