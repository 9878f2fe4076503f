// `vow diff A B`: what differs between the lineages of two results, step by step
// (docs/cli.md). Pure functions over two answers of the `lineage` control method, so
// the comparison is the same whichever agent answered.
//
// Steps are matched by what they are, not by statement: a job step by
// PIPELINE/STAGE[SHARD], a source version by PIPELINE/SOURCE. A matched pair is the
// same when it is one job (one job id, hence one stage definition and the same input
// artifacts) with one canonical result, or one source version; otherwise it differs,
// and the difference is explained: the stage definition (with a line diff of the
// command and the changed environment), the input artifacts and where they came from,
// the source version, the executor, and whether either job is non-deterministic.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace vow::agent {

// One line of a line diff: ' ' kept, '-' only in the first text, '+' only in the second.
struct DiffLine {
  char op = ' ';
  std::string text;
  bool operator==(const DiffLine&) const = default;
};

// A shortest edit script (longest common subsequence) from `a` to `b`.
std::vector<DiffLine> line_diff(const std::vector<std::string>& a,
                                const std::vector<std::string>& b);

// The command of a stage definition (stage_definition_json) as lines: a shell script's
// lines, or one argv element per line.
std::vector<std::string> command_lines(const nlohmann::json& definition);

// The comparison of two lineages (docs/cli.md `vow diff --json`).
nlohmann::json diff_lineages(const nlohmann::json& a, const nlohmann::json& b);

// Human text and Graphviz DOT renderings of diff_lineages' answer. `colour`: ANSI
// colours in the text.
std::string diff_text(const nlohmann::json& diff, bool colour);
std::string diff_dot(const nlohmann::json& diff);

}  // namespace vow::agent
