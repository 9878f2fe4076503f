// The small value grammars of config files: identifiers, durations, endpoints, and the
// edit distance behind "did you mean".
#include <algorithm>
#include <charconv>

#include "promises/config.h"

namespace vow::promises {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// "HOST:PORT", HOST a name, an IPv4 address, "*", or a bracketed IPv6 address.
Status validate_host_port(std::string_view hp, std::string_view form) {
  auto colon = hp.rfind(':');
  if (colon == std::string_view::npos) {
    return Status::invalid("missing port: use " + std::string(form));
  }
  std::string_view host = hp.substr(0, colon);
  std::string_view port = hp.substr(colon + 1);
  if (host.empty()) return Status::invalid("missing host: use " + std::string(form));
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') {
      return Status::invalid("bad IPv6 host '" + std::string(host) + "'");
    }
    for (char c : host.substr(1, host.size() - 2)) {
      if (!(is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == ':' ||
            c == '.')) {
        return Status::invalid("bad IPv6 host '" + std::string(host) + "'");
      }
    }
  } else {
    for (char c : host) {
      bool ok = is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '.' ||
                c == '-' || c == '_' || c == '*';
      if (!ok) return Status::invalid("bad host '" + std::string(host) + "'");
    }
  }
  if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), is_digit)) {
    return Status::invalid("bad port '" + std::string(port) + "': port must be 1-65535");
  }
  int n = 0;
  std::from_chars(port.data(), port.data() + port.size(), n);
  if (n < 1 || n > 65535) {
    return Status::invalid("bad port '" + std::string(port) + "': port must be 1-65535");
  }
  return Status::ok();
}

}  // namespace

bool is_identifier(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameBytes) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '-';
  });
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  // Optimal string alignment: insertions, deletions, substitutions and transpositions of
  // neighbours ("nmae" is one edit from "name") each cost one.
  std::vector<std::vector<std::size_t>> d(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
  for (std::size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (std::size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

std::optional<std::string> closest_name(std::string_view word,
                                        const std::vector<std::string>& candidates) {
  // A typo is a letter or two: allow one edit in short words, two in longer ones, and
  // never so many that a different word would match.
  constexpr std::size_t kMaxWordBytes = 256;
  if (word.size() > kMaxWordBytes) return std::nullopt;
  std::size_t limit = word.size() >= 5 ? 2 : 1;
  std::optional<std::string> best;
  std::size_t best_d = limit + 1;
  for (const auto& c : candidates) {
    if (c == word || c.size() > kMaxWordBytes) continue;
    std::size_t d = edit_distance(word, c);
    if (d < best_d && d < c.size()) {
      best_d = d;
      best = c;
    }
  }
  return best;
}

Result<std::int64_t> parse_duration_ms(std::string_view text) {
  auto bad = [&](std::string why) {
    return Status::invalid("bad duration '" + std::string(text) + "': " + why +
                           " (use a number and a unit: ms, s, m or h, like \"90s\" or "
                           "\"1m30s\")");
  };
  if (text.empty()) return bad("empty");
  std::int64_t total = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t start = pos;
    while (pos < text.size() && is_digit(text[pos])) ++pos;
    if (pos == start) return bad("expected a number");
    constexpr std::size_t kMaxDigits = 12;
    if (pos - start > kMaxDigits) return bad("number too large");
    std::int64_t n = 0;
    std::from_chars(text.data() + start, text.data() + pos, n);
    std::size_t ustart = pos;
    while (pos < text.size() && !is_digit(text[pos])) ++pos;
    std::string_view unit = text.substr(ustart, pos - ustart);
    std::int64_t scale = 0;
    if (unit == "ms") {
      scale = 1;
    } else if (unit == "s") {
      scale = 1000;
    } else if (unit == "m") {
      scale = 60 * 1000;
    } else if (unit == "h") {
      scale = 3600 * 1000;
    } else if (unit.empty()) {
      return bad("missing unit");
    } else {
      return bad("unknown unit '" + std::string(unit) + "'");
    }
    if (n > kMaxDurationMs / scale || total + n * scale > kMaxDurationMs) {
      return bad("longer than a year");
    }
    total += n * scale;
  }
  return total;
}

std::string format_duration_ms(std::int64_t ms) {
  if (ms <= 0) return ms == 0 ? "0s" : std::to_string(ms) + "ms";
  std::string out;
  constexpr std::pair<std::int64_t, const char*> kUnits[] = {
      {3600 * 1000, "h"}, {60 * 1000, "m"}, {1000, "s"}, {1, "ms"}};
  for (auto [scale, unit] : kUnits) {
    if (ms >= scale) {
      out += std::to_string(ms / scale) + unit;
      ms %= scale;
    }
  }
  return out;
}

Status validate_endpoint(std::string_view endpoint) {
  constexpr std::string_view kTcp = "tcp://", kIpc = "ipc://", kInproc = "inproc://";
  if (endpoint.substr(0, kTcp.size()) == kTcp) {
    return validate_host_port(endpoint.substr(kTcp.size()), "tcp://HOST:PORT");
  }
  if (endpoint.substr(0, kIpc.size()) == kIpc) {
    if (endpoint.size() == kIpc.size()) return Status::invalid("empty ipc:// path");
    return Status::ok();
  }
  if (endpoint.substr(0, kInproc.size()) == kInproc) {
    if (endpoint.size() == kInproc.size()) return Status::invalid("empty inproc:// name");
    return Status::ok();
  }
  return Status::invalid("unknown endpoint form: use tcp://HOST:PORT, ipc://PATH or inproc://NAME");
}

Status validate_http_address(std::string_view address) {
  return validate_host_port(address, "HOST:PORT");
}

}  // namespace vow::promises
