// Parsing and validating the promise language: pipeline files and agent files, from TOML
// text to the value types of pipeline.h. The caller reads the files; nothing here touches
// the file system. The formats are documented in docs/config.md.
//
// Every problem in a file is reported, not only the first, each as a Diagnostic located
// at the offending key or value (FILE:LINE:COLUMN). A value is returned only when there
// are no errors; a parsed pipeline has its stages in topological order and its stage and
// pipeline digests filled.
//
// Free functions over values; thread-safe (no shared state).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "promises/pipeline.h"
#include "promises/status.h"

namespace vow::promises {

// Limits on what a config may hold, so that a hostile or broken file costs bounded
// memory and time.
inline constexpr std::size_t kMaxConfigBytes = 1 << 20;
inline constexpr std::size_t kMaxNameBytes = 128;
inline constexpr std::size_t kMaxStages = 1000;
inline constexpr std::size_t kMaxSources = 1000;
inline constexpr std::size_t kMaxStageInputs = 256;
inline constexpr std::size_t kMaxStageOutputs = 256;
inline constexpr int kMaxRetries = 100;
inline constexpr int kMaxCapacity = 1024;
inline constexpr int kMaxReplicas = 16;
inline constexpr std::int64_t kMaxHorizonEvery = 10'000'000;
inline constexpr std::int64_t kMaxDurationMs = 366LL * 24 * 3600 * 1000;  // a year

// The outcome of parsing one file: a value when there were no errors, else the errors
// (in file order).
template <typename T>
struct ParseOutput {
  std::optional<T> value;
  std::vector<Diagnostic> errors;
  bool ok() const { return value.has_value() && errors.empty(); }
};

// Parses a pipeline file. `file` names it in diagnostics.
ParseOutput<Pipeline> parse_pipeline(std::string_view text, std::string file);

// Parses an agent file. Checks only what the file alone can tell; see
// validate_agent_against for what depends on the pipelines it loads.
ParseOutput<AgentConfig> parse_agent(std::string_view text, std::string file);

// Errors for the agent's promises and sources that no pipeline in `pipelines` defines
// (with "did you mean" when one is close), and for promises of stages this agent cannot
// run as defined: a stage with an `image`, and one with a `root` on the Slurm executor or
// with [agent] sandbox = "none". Empty when there are none.
std::vector<Diagnostic> validate_agent_against(const AgentConfig& agent,
                                               const std::vector<Pipeline>& pipelines);

// Which kind of config a text is: by whether it has a [pipeline] or an [agent] table.
enum class ConfigKind { kPipeline, kAgent, kUnknown };
// kUnknown also for text that is not TOML (parse it to get the syntax error).
ConfigKind detect_config_kind(std::string_view text);

// "500ms", "90s", "5m", "1h", or a sum of such parts ("1m30s"). kInvalid with the reason.
Result<std::int64_t> parse_duration_ms(std::string_view text);
// Formats milliseconds the shortest way parse_duration_ms reads back ("1m30s").
std::string format_duration_ms(std::int64_t ms);

// "tcp://HOST:PORT" (port 1-65535), "ipc://PATH" or "inproc://NAME". kInvalid with the reason.
Status validate_endpoint(std::string_view endpoint);
// "HOST:PORT" (the [agent] http listener). kInvalid with the reason.
Status validate_http_address(std::string_view address);

// A name that may become an environment variable suffix: non-empty, at most
// kMaxNameBytes, only [A-Za-z0-9_-].
bool is_identifier(std::string_view name);

// Levenshtein distance, and the candidate close enough to `word` to suggest for a typo
// (nullopt when none is).
std::size_t edit_distance(std::string_view a, std::string_view b);
std::optional<std::string> closest_name(std::string_view word,
                                        const std::vector<std::string>& candidates);

}  // namespace vow::promises
