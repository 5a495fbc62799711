//===- Diagnostics.h - located errors for .attn sources ------------------===//
//
// Every user-facing error names file:line:col, shows the line with a caret
// and says what was expected (DSL.md "Errors").
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_FRONTEND_DIAGNOSTICS_H
#define ATTN_FRONTEND_DIAGNOSTICS_H

#include <cstdint>
#include <string>
#include <vector>

namespace attn::fe {

/// A byte range of the source; `offset` is 0-based.
struct SourceLoc {
  uint32_t offset = 0;
  uint32_t length = 1;
};

struct SourceFile {
  std::string name;
  std::string text;
  /// 1-based line and column of a byte offset.
  std::pair<unsigned, unsigned> lineCol(uint32_t offset) const;
  /// The text of the line holding `offset`, without its newline.
  std::string lineText(uint32_t offset) const;
};

struct Diagnostic {
  SourceLoc loc;
  std::string message;
  bool warning = false; // a warning does not stop compilation
};

class Diagnostics {
public:
  explicit Diagnostics(const SourceFile &file) : file(file) {}

  void error(SourceLoc loc, std::string message);
  /// Something that compiles but is most likely not meant.
  void warning(SourceLoc loc, std::string message);
  bool hasErrors() const { return !errors.empty(); }
  bool hasWarnings() const { return !warnings.empty(); }
  size_t count() const { return errors.size(); }
  const std::vector<Diagnostic> &all() const { return errors; }
  /// Too many errors: callers stop early instead of cascading.
  bool saturated() const { return errors.size() >= kMaxErrors; }

  /// `file:line:col: error: message` (or `warning:`), the line, and a caret
  /// under the column. A long line is shown as a window around the column.
  std::string render(const Diagnostic &d) const;
  /// Errors and warnings, in source order.
  std::string renderAll() const;

  const SourceFile &source() const { return file; }

  /// Longest stretch of a source line shown under a message.
  static constexpr size_t kMaxShownColumns = 120;

private:
  static constexpr size_t kMaxErrors = 20;
  const SourceFile &file;
  std::vector<Diagnostic> errors, warnings;
};

/// The closest candidate by edit distance, or "" when none is close enough
/// to be a plausible typo.
std::string closestName(const std::string &name,
                        const std::vector<std::string> &candidates);

} // namespace attn::fe

#endif // ATTN_FRONTEND_DIAGNOSTICS_H
