//===- Diagnostics.cpp ----------------------------------------------------===//
#include "lib/Frontend/Diagnostics.h"

#include <algorithm>

namespace attn::fe {

std::pair<unsigned, unsigned> SourceFile::lineCol(uint32_t offset) const {
  offset = std::min<uint32_t>(offset, text.size());
  unsigned line = 1, col = 1;
  for (uint32_t i = 0; i < offset; ++i) {
    if (text[i] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return {line, col};
}

std::string SourceFile::lineText(uint32_t offset) const {
  size_t begin = std::min<size_t>(offset, text.size());
  while (begin > 0 && text[begin - 1] != '\n')
    --begin;
  size_t end = std::min<size_t>(offset, text.size());
  while (end < text.size() && text[end] != '\n')
    ++end;
  return text.substr(begin, end - begin);
}

void Diagnostics::error(SourceLoc loc, std::string message) {
  if (saturated())
    return;
  errors.push_back({loc, std::move(message)});
}

void Diagnostics::warning(SourceLoc loc, std::string message) {
  if (warnings.size() >= kMaxErrors)
    return;
  warnings.push_back({loc, std::move(message), /*warning=*/true});
}

namespace {

bool isContinuationByte(char c) {
  return (static_cast<unsigned char>(c) & 0xc0) == 0x80;
}

} // namespace

std::string Diagnostics::render(const Diagnostic &d) const {
  auto [line, col] = file.lineCol(d.loc.offset);
  std::string out = file.name + ":" + std::to_string(line) + ":" +
                    std::to_string(col) + ": " +
                    (d.warning ? "warning: " : "error: ") + d.message + "\n";
  std::string text = file.lineText(d.loc.offset);
  size_t at = std::min<size_t>(col - 1, text.size()); // the caret's byte
  // A long line (a generated file, a 12 KB expression) is shown as a
  // window of it around the column, cut at character boundaries.
  size_t begin = 0, end = text.size();
  if (text.size() > kMaxShownColumns) {
    begin = at > kMaxShownColumns / 2 ? at - kMaxShownColumns / 2 : 0;
    end = std::min(text.size(), begin + kMaxShownColumns);
    begin = end - std::min(end, kMaxShownColumns);
    while (begin > 0 && begin < text.size() && isContinuationByte(text[begin]))
      ++begin;
    while (end < text.size() && isContinuationByte(text[end]))
      --end;
  }
  std::string shown = text.substr(begin, end - begin);
  // Keep the echoed line printable: control bytes would garble terminals.
  for (char &c : shown)
    if ((unsigned char)c < 0x20 && c != '\t')
      c = ' ';
  out += (begin > 0 ? "..." : "") + shown +
         (end < text.size() ? "..." : "") + "\n";
  std::string caret = begin > 0 ? "   " : "";
  for (size_t i = begin; i < at && i < end; ++i)
    if (!isContinuationByte(text[i])) // one column per UTF-8 character
      caret += text[i] == '\t' ? '\t' : ' ';
  caret += '^';
  out += caret + "\n";
  return out;
}

std::string Diagnostics::renderAll() const {
  // Source order reads best, whatever order the checks ran in.
  // Report order (errors, then warnings) breaks ties.
  std::vector<std::pair<const Diagnostic *, size_t>> sorted;
  for (const Diagnostic &d : errors)
    sorted.push_back({&d, sorted.size()});
  for (const Diagnostic &d : warnings)
    sorted.push_back({&d, sorted.size()});
  std::sort(sorted.begin(), sorted.end(), [](const auto &a, const auto &b) {
    return a.first->loc.offset != b.first->loc.offset
               ? a.first->loc.offset < b.first->loc.offset
               : a.second < b.second;
  });
  std::string out;
  for (const auto &[d, order] : sorted)
    out += render(*d);
  return out;
}

static size_t editDistance(const std::string &a, const std::string &b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j)
    prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string closestName(const std::string &name,
                        const std::vector<std::string> &candidates) {
  std::string best;
  size_t bestDist = std::max<size_t>(1, name.size() / 3) + 1;
  for (const std::string &c : candidates) {
    size_t d = editDistance(name, c);
    if (d < bestDist) {
      bestDist = d;
      best = c;
    }
  }
  return best;
}

} // namespace attn::fe
