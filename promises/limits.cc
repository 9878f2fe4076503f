#include "promises/limits.h"

#include <algorithm>
#include <cstdio>

#include "promises/config.h"

namespace vow::promises {
namespace {

// How much of an over-long field a refusal quotes (it says the length).
constexpr std::size_t kShortQuoteBytes = 24;

// The first violation found, as a sentence; fields are checked in declaration order.
class Limits {
 public:
  void bytes(const char* field, std::string_view value, std::size_t limit) {
    if (error_ || value.size() <= limit) return;
    error_ = std::string(field) + " " + quoted(value, kShortQuoteBytes) + " is over its limit of " +
             std::to_string(limit) + " bytes";
  }
  // A name from a config: an identifier (letters, digits, '_', '-') of at most
  // kMaxStatementNameBytes.
  void name(const char* field, std::string_view value) {
    bytes(field, value, kMaxStatementNameBytes);
    if (error_ || is_identifier(value)) return;
    error_ = std::string(field) + " " + quoted(value) + ": not an identifier";
  }
  void count(const char* field, std::size_t n, std::size_t limit) {
    if (error_ || n <= limit) return;
    error_ = std::string(field) + ": " + std::to_string(n) + " items (limit " +
             std::to_string(limit) + ")";
  }
  void job(const JobRef& ref) {
    name("job pipeline", ref.pipeline);
    name("job stage", ref.stage);
    bytes("job shard", ref.shard, kMaxShardBytes);
  }
  void artifacts(const char* field, const std::vector<NamedArtifact>& list) {
    count(field, list.size(), kMaxNamedArtifacts);
    for (const auto& a : list) bytes(field, a.name, kMaxInputNameBytes);
  }
  std::optional<std::string> take() { return std::move(error_); }

 private:
  std::optional<std::string> error_;
};

}  // namespace

std::optional<std::string> check_limits(const Statement& st) {
  Limits l;
  std::visit(
      [&](const auto& b) {
        using T = std::decay_t<decltype(b)>;
        if constexpr (std::is_same_v<T, Advert>) {
          if (!b.name.empty()) l.name("advert name", b.name);
          l.count("advert endpoints", b.endpoints.size(), kMaxEndpoints);
          for (const auto& e : b.endpoints) l.bytes("advert endpoint", e, kMaxEndpointBytes);
          l.count("advert promises and sources", b.promises.size() + b.sources.size(),
                  kMaxAdvertEntries);
          for (const auto& p : b.promises) {
            l.name("advert promise pipeline", p.pipeline);
            l.name("advert promise stage", p.stage);
          }
          for (const auto& s : b.sources) {
            l.name("advert source pipeline", s.pipeline);
            l.name("advert source", s.source);
          }
        } else if constexpr (std::is_same_v<T, PipelineDef>) {
          l.name("pipeline name", b.name);
          l.bytes("pipeline definition", b.canonical, kMaxPipelineTextBytes);
        } else if constexpr (std::is_same_v<T, SourceVersion>) {
          l.name("source pipeline", b.pipeline);
          l.name("source", b.source);
        } else if constexpr (std::is_same_v<T, Claim> || std::is_same_v<T, Checkpoint>) {
          l.job(b.job);
        } else if constexpr (std::is_same_v<T, Release> || std::is_same_v<T, Retry>) {
          l.job(b.job);
          l.bytes("reason", b.reason, kMaxTextBytes);
        } else if constexpr (std::is_same_v<T, JobResult>) {
          l.job(b.job);
          l.artifacts("result input", b.inputs);
          l.artifacts("result output", b.outputs);
          for (const auto& o : b.outputs) l.name("result output", o.name);
          l.bytes("result error", b.error, kMaxTextBytes);
          l.count("result bindings", b.bindings.size(), kMaxNamedArtifacts);
          for (const auto& x : b.bindings)
            l.bytes("result binding input", x.input, kMaxInputNameBytes);
        } else if constexpr (std::is_same_v<T, Horizon>) {
          l.count("horizon cuts", b.cuts.size(), kMaxHorizonCuts);
          const std::size_t entries = b.checkpoint ? kMaxCheckpointEntries : kMaxHorizonEntries;
          l.count("horizon retired ranges", b.retired.size(), entries);
          l.count("horizon settled results", b.settled.size(), entries);
        } else if constexpr (std::is_same_v<T, Accept>) {
          l.job(b.job);
          l.count("accept bindings", b.bindings.size(), kMaxNamedArtifacts);
          for (const auto& x : b.bindings) l.bytes("accept input", x.input, kMaxInputNameBytes);
        }
      },
      st.body);
  return l.take();
}

std::string quoted(std::string_view text, std::size_t max_bytes) {
  std::string inner = printable(text, max_bytes);
  std::size_t cut = inner.rfind("... (");
  bool was_cut = text.size() > max_bytes && cut != std::string::npos;
  if (!was_cut) return "\"" + inner + "\"";
  return "\"" + inner.substr(0, cut) + "\"" + inner.substr(cut);
}

std::string printable(std::string_view text, std::size_t max_bytes) {
  std::string out;
  std::size_t n = std::min(text.size(), max_bytes);
  for (std::size_t i = 0; i < n; ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c >= 0x7f) {
      char buf[5];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (n < text.size()) out += "... (" + std::to_string(text.size()) + " bytes)";
  return out;
}

std::string truncated(std::string text, std::size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  std::size_t n = max_bytes;
  // Back off continuation bytes so that a multi-byte character is not cut in two.
  while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xc0) == 0x80) --n;
  text.resize(n);
  return text;
}

bool IdleBudget::take(std::uint64_t cost, std::int64_t now_ms, const IdleBudgetLimits& limits) {
  tokens_ = tokens(now_ms, limits);
  at_ms_ = now_ms;
  if (tokens_ < static_cast<double>(cost)) return false;
  tokens_ -= static_cast<double>(cost);
  return true;
}

double IdleBudget::tokens(std::int64_t now_ms, const IdleBudgetLimits& limits) const {
  auto burst = static_cast<double>(limits.burst);
  if (tokens_ < 0) return burst;
  if (now_ms <= at_ms_) return tokens_;
  double refill = static_cast<double>(now_ms - at_ms_) / 1000.0 *
                  static_cast<double>(limits.tokens_per_second);
  return std::min(burst, tokens_ + refill);
}

std::size_t wire_size(const Statement& st) {
  constexpr std::size_t kOverhead = 128;  // signature, framing
  std::size_t size = st.signed_form.bytes.size();
  if (size == 0) {
    // Not signed (tests): the fields that can be large.
    if (const auto* a = std::get_if<Advert>(&st.body)) {
      size = a->name.size() + (a->promises.size() + a->sources.size()) * 96;
    } else if (const auto* p = std::get_if<PipelineDef>(&st.body)) {
      size = p->canonical.size();
    } else if (const auto* v = std::get_if<SourceVersion>(&st.body)) {
      for (const auto& e : v->artifact.entries) size += e.name.size() + 48;
    }
  }
  return size + kOverhead;
}

std::uint64_t idle_cost(const Statement& st) { return 1 + wire_size(st) / kIdleBytesPerToken; }

}  // namespace vow::promises
