// Bounds on what a peer's statement can make an agent hold, do or print (rule 6,
// docs/coordination.md section 10).
//
// - Field limits: every name, free text and list a statement carries has a named
//   maximum, and names are identifiers as in config files. A statement over any of them is refused before it is kept (it is never
//   stored, relayed or planned), counted by reason, and logged with the offending field
//   named and its text quoted truncated. Honest agents cannot produce such statements:
//   config names are identifiers of at most kMaxNameBytes, and the core truncates its
//   own free text (error, reason) to kMaxTextBytes before signing.
// - Log quoting: text that came from a peer enters a log line only through quoted():
//   escaped (control bytes, quotes, backslashes, bytes >= 0x80 as \xNN) and cut to a
//   few dozen bytes with the full length said.
// - The per-author budget (IdleBudget) bounds the statements an author can add that do
//   not count (docs/coordination.md section 10): a token bucket per author in the core's
//   clock.
//
// Pure functions and a value type; thread-compatible.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "promises/statement.h"

namespace vow::promises {

// Names (pipeline, stage, source, output, input, agent): config identifiers.
inline constexpr std::size_t kMaxStatementNameBytes = 128;
// A fan-out shard key: a path inside a tree (entry names are at most 255 bytes).
inline constexpr std::size_t kMaxShardBytes = 4096;
// An input name with its shard suffix ("name" or "name/shard").
inline constexpr std::size_t kMaxInputNameBytes = kMaxStatementNameBytes + 1 + kMaxShardBytes;
// Free text for humans: a result's error, a release's or retry's reason.
inline constexpr std::size_t kMaxTextBytes = 4096;
// Endpoints in an advert, and the length of each.
inline constexpr std::size_t kMaxEndpoints = 16;
inline constexpr std::size_t kMaxEndpointBytes = 256;
// Promises plus sources in one advert.
inline constexpr std::size_t kMaxAdvertEntries = 10'000;
// A pipeline definition's canonical text (configs are at most 1 MiB).
inline constexpr std::size_t kMaxPipelineTextBytes = 2u << 20;
// Inputs, outputs (results) or bindings (accepts) in one statement.
inline constexpr std::size_t kMaxNamedArtifacts = 4096;

// A horizon: authors cut, and retired ranges or settled results in one proposal (a
// proposal over these is not made: its proposer waits for a smaller one). A checkpoint
// lists every result kept (docs/storage.md, "Checkpoints"): about 80 bytes each, so
// kMaxCheckpointEntries of both lists keep it well under kMaxStatementBytes; a proposer
// whose checkpoint would be larger makes a horizon of what changed instead.
inline constexpr std::size_t kMaxHorizonCuts = 10'000;
inline constexpr std::size_t kMaxHorizonEntries = 65'536;
inline constexpr std::size_t kMaxCheckpointEntries = 140'000;
inline constexpr std::size_t kMaxCheckpointBytes = 10u << 20;  // estimated, of both lists

// What a quoted() text is cut to by default.
inline constexpr std::size_t kLogQuoteBytes = 48;

// The first field of `st` over its limit, as "advert name: 1048576 bytes (limit 128)";
// nullopt if every field is within its limit.
std::optional<std::string> check_limits(const Statement& st);

// `text` for a log line: in double quotes, escaped, at most `max_bytes` of it, and if
// cut, followed by "... (N bytes)".
std::string quoted(std::string_view text, std::size_t max_bytes = kLogQuoteBytes);

// As quoted(), without the quotes: for names that are usually plain (a shard key, a
// file name) inside a log line's own punctuation.
std::string printable(std::string_view text, std::size_t max_bytes = kLogQuoteBytes);

// `text` cut to at most `max_bytes` (at a UTF-8 boundary), for own free text.
std::string truncated(std::string text, std::size_t max_bytes = kMaxTextBytes);

// The per-author budget of statements that do not count when they arrive (a superseded
// or superseding advert, an unbound claim or source version, a claim of a job not in
// the plan, a result, release or accept of a run its author never claimed or already
// spoke for, a retry, a checkpoint, a pipeline definition its author's advert does not
// name or that is held already): a token bucket of kIdleBurst tokens refilled at
// kIdleTokensPerSecond, where such a statement costs 1 + its signed size / 4 KiB. A
// statement that finds too few tokens is refused (not kept; a peer offers it again
// later, and it is taken once its author's bucket has refilled).
inline constexpr std::uint64_t kIdleBurst = 10'000;
inline constexpr std::uint64_t kIdleTokensPerSecond = 1;
inline constexpr std::size_t kIdleBytesPerToken = 4096;

struct IdleBudgetLimits {
  std::uint64_t burst = kIdleBurst;
  std::uint64_t tokens_per_second = kIdleTokensPerSecond;
};

class IdleBudget {
 public:
  // Takes `cost` tokens at `now_ms` if the bucket holds them.
  bool take(std::uint64_t cost, std::int64_t now_ms, const IdleBudgetLimits& limits);
  double tokens(std::int64_t now_ms, const IdleBudgetLimits& limits) const;

 private:
  double tokens_ = -1;  // full, until first used
  std::int64_t at_ms_ = INT64_MIN;
};

// About how many bytes a statement takes on the wire (its signed form and framing).
std::size_t wire_size(const Statement& st);

// The cost of a statement that does not count.
std::uint64_t idle_cost(const Statement& st);

}  // namespace vow::promises
