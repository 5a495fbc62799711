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

std::string Diagnostics::render(const Diagnostic &d) const {
  auto [line, col] = file.lineCol(d.loc.offset);
  std::string out = file.name + ":" + std::to_string(line) + ":" +
                    std::to_string(col) + ": error: " + d.message + "\n";
  std::string text = file.lineText(d.loc.offset);
  // Keep the echoed line printable: control bytes would garble terminals.
  for (char &c : text)
    if ((unsigned char)c < 0x20 && c != '\t')
      c = ' ';
  out += text + "\n";
  std::string caret;
  for (unsigned i = 0; i + 1 < col && i < text.size(); ++i)
    caret += text[i] == '\t' ? '\t' : ' ';
  caret += '^';
  out += caret + "\n";
  return out;
}

std::string Diagnostics::renderAll() const {
  // Source order reads best, whatever order the checks ran in.
  std::vector<const Diagnostic *> sorted;
  for (const Diagnostic &d : errors)
    sorted.push_back(&d);
  std::sort(sorted.begin(), sorted.end(),
            [](const Diagnostic *a, const Diagnostic *b) {
              return a->loc.offset != b->loc.offset
                         ? a->loc.offset < b->loc.offset
                         : a < b; // report order breaks ties
            });
  std::string out;
  for (const Diagnostic *d : sorted)
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
