// Config files as the vow tools and the agent meet them on disk: read, told apart
// (pipeline or agent file), parsed, and checked together. An agent file's `pipelines`
// globs are resolved relative to the agent file's directory and the pipeline files they
// match are loaded too, so an agent file is checked against the pipelines it will run.
//
// This is the file-system edge of the promise language: promises/config.h parses text
// only. Plain functions; thread-compatible.
#pragma once

#include <istream>
#include <string>
#include <vector>

#include "promises/config.h"
#include "promises/pipeline.h"

namespace vow::agent {

// Limits on what one check may load, so a glob over a big directory stays bounded.
inline constexpr std::size_t kMaxConfigFiles = 1000;

struct LoadedConfigs {
  // Every pipeline loaded without error, given directly or named by an agent file, each
  // once (by canonical path), in the order first met.
  std::vector<promises::Pipeline> pipelines;
  std::vector<promises::AgentConfig> agents;
  // Every problem found, file by file in the order met; a whole-file problem (cannot
  // read) has line 0.
  std::vector<promises::Diagnostic> errors;
  // What may stop the agent working on this host without being wrong in the file: a
  // `key_files` pattern that matches no file (keys are often installed after the agent
  // file is written), a `control_group` that is no group here, a source path that is
  // missing, unreadable or a symbolic link here. vow check prints them;
  // vowd logs them at start and on reload.
  std::vector<promises::Diagnostic> warnings;
};

// Loads the given files (pipeline or agent files, in any order) and the pipeline files
// the agent files name, and checks each agent file against the pipelines it names and
// those given directly, and its trust lists as vowd reads them at start: every id in
// [trust] keys and clients, and every line of the files its key_files patterns match.
LoadedConfigs load_config_files(const std::vector<std::string>& paths);

// "FILE:LINE:COLUMN: message", or "FILE: message" for a whole-file problem.
std::string format_diagnostic(const promises::Diagnostic& d);

// One id of a trusted-keys file (`[trust] key_files`): blank lines and `#` comments are
// skipped, the id trimmed; line and column are 1-based. vowd at start and vow check read
// the files through this, so they agree on what a file says.
struct KeyFileLine {
  int line = 0;
  int column = 0;
  std::string id;
};
std::vector<KeyFileLine> read_key_file(std::istream& in);

}  // namespace vow::agent
