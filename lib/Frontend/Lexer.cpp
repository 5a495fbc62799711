//===- Lexer.cpp ----------------------------------------------------------===//
#include "lib/Frontend/Lexer.h"

#include <cctype>

namespace attn::fe {

const char *tokSpelling(Tok t) {
  switch (t) {
  case Tok::Eof: return "end of file";
  case Tok::Error: return "invalid token";
  case Tok::Ident: return "a name";
  case Tok::Int: return "an integer";
  case Tok::Float: return "a number";
  case Tok::LBrace: return "'{'";
  case Tok::RBrace: return "'}'";
  case Tok::LParen: return "'('";
  case Tok::RParen: return "')'";
  case Tok::LBracket: return "'['";
  case Tok::RBracket: return "']'";
  case Tok::Comma: return "','";
  case Tok::Semi: return "';'";
  case Tok::Colon: return "':'";
  case Tok::Question: return "'?'";
  case Tok::Assign: return "'='";
  case Tok::Plus: return "'+'";
  case Tok::Minus: return "'-'";
  case Tok::Star: return "'*'";
  case Tok::Slash: return "'/'";
  case Tok::Percent: return "'%'";
  case Tok::Bang: return "'!'";
  case Tok::Lt: return "'<'";
  case Tok::Le: return "'<='";
  case Tok::Gt: return "'>'";
  case Tok::Ge: return "'>='";
  case Tok::EqEq: return "'=='";
  case Tok::NotEq: return "'!='";
  case Tok::AndAnd: return "'&&'";
  case Tok::OrOr: return "'||'";
  case Tok::Pipe: return "'|'";
  }
  return "?";
}

static bool isIdentStart(char c) {
  return std::isalpha(static_cast<unsigned char>(c)) || c == '_';
}
static bool isIdentChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
}
static bool isDigit(char c) {
  return std::isdigit(static_cast<unsigned char>(c));
}

void Lexer::skipSpaceAndComments() {
  while (pos < src.size()) {
    char c = src[pos];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
        c == '\v') {
      ++pos;
    } else if (c == '/' && pos + 1 < src.size() && src[pos + 1] == '/') {
      while (pos < src.size() && src[pos] != '\n')
        ++pos;
    } else if (c == '/' && pos + 1 < src.size() && src[pos + 1] == '*') {
      size_t begin = pos;
      pos += 2;
      while (pos + 1 < src.size() && !(src[pos] == '*' && src[pos + 1] == '/'))
        ++pos;
      if (pos + 1 >= src.size()) {
        diags.error({static_cast<uint32_t>(begin), 2},
                    "unterminated comment; expected '*/'");
        pos = src.size();
        return;
      }
      pos += 2;
    } else {
      return;
    }
  }
}

Token Lexer::make(Tok kind, size_t begin) {
  Token t;
  t.kind = kind;
  t.loc = {static_cast<uint32_t>(begin),
           static_cast<uint32_t>(pos > begin ? pos - begin : 1)};
  t.text = src.substr(begin, pos - begin);
  return t;
}

Token Lexer::lexNumber(size_t begin) {
  bool isFloat = false;
  while (pos < src.size() && isDigit(src[pos]))
    ++pos;
  if (pos < src.size() && src[pos] == '.') {
    isFloat = true;
    ++pos;
    while (pos < src.size() && isDigit(src[pos]))
      ++pos;
  }
  if (pos < src.size() && (src[pos] == 'e' || src[pos] == 'E')) {
    size_t save = pos;
    ++pos;
    if (pos < src.size() && (src[pos] == '+' || src[pos] == '-'))
      ++pos;
    if (pos < src.size() && isDigit(src[pos])) {
      isFloat = true;
      while (pos < src.size() && isDigit(src[pos]))
        ++pos;
    } else {
      pos = save;
    }
  }
  if (pos < src.size() && isIdentChar(src[pos])) {
    while (pos < src.size() && isIdentChar(src[pos]))
      ++pos;
    Token t = make(Tok::Error, begin);
    diags.error(t.loc, "malformed number '" + t.text + "'");
    return t;
  }
  return make(isFloat ? Tok::Float : Tok::Int, begin);
}

bool Lexer::decodeUtf8(size_t begin, uint32_t &codePoint) {
  auto byte = [&](size_t i) { return static_cast<unsigned char>(src[i]); };
  unsigned char lead = byte(begin);
  size_t length = lead >= 0xf0 && lead < 0xf5   ? 4
                  : lead >= 0xe0 && lead < 0xf0 ? 3
                  : lead >= 0xc2 && lead < 0xe0 ? 2
                                                : 0;
  if (length == 0 || begin + length > src.size())
    return false;
  codePoint = lead & (0x7f >> length);
  for (size_t i = 1; i < length; ++i) {
    if ((byte(begin + i) & 0xc0) != 0x80)
      return false;
    codePoint = (codePoint << 6) | (byte(begin + i) & 0x3f);
  }
  // Overlong forms, surrogates and values past U+10FFFF are not UTF-8.
  static const uint32_t least[] = {0, 0, 0x80, 0x800, 0x10000};
  if (codePoint < least[length] || codePoint > 0x10ffff ||
      (codePoint >= 0xd800 && codePoint < 0xe000))
    return false;
  pos = begin + length;
  return true;
}

Token Lexer::next() {
  skipSpaceAndComments();
  size_t begin = pos;
  if (pos >= src.size())
    return make(Tok::Eof, begin);
  char c = src[pos];
  if (isIdentStart(c)) {
    while (pos < src.size() && isIdentChar(src[pos]))
      ++pos;
    return make(Tok::Ident, begin);
  }
  if (isDigit(c) || (c == '.' && pos + 1 < src.size() && isDigit(src[pos + 1])))
    return lexNumber(begin);
  ++pos;
  auto two = [&](char second, Tok ifTwo, Tok ifOne) {
    if (pos < src.size() && src[pos] == second) {
      ++pos;
      return make(ifTwo, begin);
    }
    return make(ifOne, begin);
  };
  switch (c) {
  case '{': return make(Tok::LBrace, begin);
  case '}': return make(Tok::RBrace, begin);
  case '(': return make(Tok::LParen, begin);
  case ')': return make(Tok::RParen, begin);
  case '[': return make(Tok::LBracket, begin);
  case ']': return make(Tok::RBracket, begin);
  case ',': return make(Tok::Comma, begin);
  case ';': return make(Tok::Semi, begin);
  case ':': return make(Tok::Colon, begin);
  case '?': return make(Tok::Question, begin);
  case '+': return make(Tok::Plus, begin);
  case '-': return make(Tok::Minus, begin);
  case '*': return make(Tok::Star, begin);
  case '/': return make(Tok::Slash, begin);
  case '%': return make(Tok::Percent, begin);
  case '=': return two('=', Tok::EqEq, Tok::Assign);
  case '!': return two('=', Tok::NotEq, Tok::Bang);
  case '<': return two('=', Tok::Le, Tok::Lt);
  case '>': return two('=', Tok::Ge, Tok::Gt);
  case '&':
    if (pos < src.size() && src[pos] == '&') {
      ++pos;
      return make(Tok::AndAnd, begin);
    }
    break;
  case '|': return two('|', Tok::OrOr, Tok::Pipe);
  default:
    break;
  }
  std::string shown;
  unsigned char uc = static_cast<unsigned char>(c);
  if (uc >= 0x20 && uc < 0x7f) {
    shown = std::string("'") + c + "'";
    if (c == '&')
      shown += "; did you mean '&&'?";
  } else if (uint32_t cp = 0; uc >= 0x80 && decodeUtf8(begin, cp)) {
    // One error for the whole character, not one per byte.
    char buf[16];
    snprintf(buf, sizeof buf, "U+%04X", cp);
    shown = "'" + src.substr(begin, pos - begin) + "' (" + buf +
            "); names and operators are ASCII";
  } else {
    char buf[8];
    snprintf(buf, sizeof buf, "0x%02x", uc);
    shown = std::string("byte ") + buf;
    if (uc >= 0x80) {
      // A run of bytes that are not UTF-8: one error for all of them.
      while (pos < src.size() &&
             static_cast<unsigned char>(src[pos]) >= 0x80) {
        uint32_t ignored;
        size_t save = pos;
        if (decodeUtf8(pos, ignored)) {
          pos = save;
          break;
        }
        pos = save + 1;
      }
      shown += pos - begin > 1 ? " (and the " + std::to_string(pos - begin - 1) +
                                     " after it: not UTF-8 text)"
                               : " (not UTF-8 text)";
    }
  }
  Token t = make(Tok::Error, begin);
  diags.error(t.loc, "unexpected character " + shown);
  return t;
}

} // namespace attn::fe
