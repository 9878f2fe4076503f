#include "agent/cli/table.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <iostream>

namespace vow::agent::cli {
namespace {

bool colour_on() {
  static const bool on = ::isatty(STDOUT_FILENO) && std::getenv("NO_COLOR") == nullptr;
  return on;
}

// Width as shown: escape sequences do not count.
std::size_t shown_width(const std::string& s) {
  std::size_t n = 0;
  bool esc = false;
  for (unsigned char c : s) {
    if (c == 0x1b) {
      esc = true;
    } else if (esc) {
      if (c == 'm') esc = false;
    } else if ((c & 0xc0) != 0x80) {
      ++n;
    }
  }
  return n;
}

// A cell with its text escaped; when colour is on, the colour codes paint() put
// around it (ESC [ digits m) are kept as they are.
std::string escape_cell(const std::string& cell) {
  std::string out;
  std::size_t plain = 0;
  auto flush = [&](std::size_t end) {
    out += escape_text(std::string_view(cell).substr(plain, end - plain));
  };
  for (std::size_t i = 0; i < cell.size(); ++i) {
    if (cell[i] != '\x1b' || !colour_on()) continue;
    std::size_t j = i + 1;
    if (j >= cell.size() || cell[j] != '[') continue;
    ++j;
    while (j < cell.size() && ((cell[j] >= '0' && cell[j] <= '9') || cell[j] == ';')) ++j;
    if (j >= cell.size() || cell[j] != 'm') continue;
    flush(i);
    out.append(cell, i, j + 1 - i);
    plain = j + 1;
    i = j;
  }
  flush(cell.size());
  return out;
}

}  // namespace

std::string escape_text(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char ch : text) {
    auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\x%02x", c);
          out += buf;
        } else {
          out += ch;
        }
    }
  }
  return out;
}

std::string dot_quote(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

void print_table(const Row& header, const std::vector<Row>& given, int indent) {
  std::vector<Row> rows = given;
  for (auto& r : rows) {
    for (auto& cell : r) cell = escape_cell(cell);
  }
  std::vector<std::size_t> width(header.size(), 0);
  for (std::size_t i = 0; i < header.size(); ++i) width[i] = shown_width(header[i]);
  for (const auto& r : rows) {
    for (std::size_t i = 0; i < r.size() && i < width.size(); ++i) {
      width[i] = std::max(width[i], shown_width(r[i]));
    }
  }
  auto line = [&](const Row& r, bool bold) {
    std::string out(static_cast<std::size_t>(indent), ' ');
    for (std::size_t i = 0; i < width.size(); ++i) {
      std::string cell = i < r.size() ? r[i] : "";
      bool last = i + 1 == width.size();
      std::string shown = bold ? paint(cell, Colour::kBold) : cell;
      out += shown;
      if (!last) out += std::string(width[i] - shown_width(cell) + 2, ' ');
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    std::cout << out << "\n";
  };
  line(header, true);
  for (const auto& r : rows) line(r, false);
}

std::string paint(const std::string& text, Colour colour) {
  if (!colour_on()) return text;
  const char* code = "";
  switch (colour) {
    case Colour::kGreen:
      code = "\x1b[32m";
      break;
    case Colour::kYellow:
      code = "\x1b[33m";
      break;
    case Colour::kRed:
      code = "\x1b[31m";
      break;
    case Colour::kDim:
      code = "\x1b[2m";
      break;
    case Colour::kBold:
      code = "\x1b[1m";
      break;
  }
  return code + text + "\x1b[0m";
}

std::string paint_state(const std::string& state) {
  if (state == "done") return paint(state, Colour::kGreen);
  if (state == "failed") return paint(state, Colour::kRed);
  if (state == "running" || state == "ready") return paint(state, Colour::kYellow);
  if (state == "superseded") return paint(state, Colour::kDim);
  return state;
}

std::string short_id(const std::string& s, std::size_t n) { return s.substr(0, n); }

std::string human_ms(std::int64_t ms) {
  char buf[32];
  if (ms < 0) return "-";
  if (ms < 1000) {
    std::snprintf(buf, sizeof(buf), "%lldms", static_cast<long long>(ms));
  } else if (ms < 60'000) {
    std::snprintf(buf, sizeof(buf), "%.1fs", static_cast<double>(ms) / 1000.0);
  } else {
    std::snprintf(buf, sizeof(buf), "%lldm%02llds", static_cast<long long>(ms / 60'000),
                  static_cast<long long>((ms / 1000) % 60));
  }
  return buf;
}

std::string human_time(std::int64_t unix_ms) {
  if (unix_ms <= 0) return "-";
  std::time_t t = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

std::string human_bytes(std::uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

}  // namespace vow::agent::cli
