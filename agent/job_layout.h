// Where a job runs and what it sees (docs/agent.md): its work directory under the
// state directory, the read-only inputs, the expected outputs, the captured logs, the
// supervisor's status file, and the environment.
//
//   STATE/jobs/<job hex>.<epoch>/
//     in/<name>       inputs, materialized read-only        VOW_IN_<name>
//     out/<name>      outputs, written by the command        VOW_OUT_<name>
//     stdout, stderr  captured, imported as artifacts
//     status          "exit N", written when the command ends
//
// Pure functions over values; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "promises/digest.h"
#include "promises/pipeline.h"

namespace vow::agent {

struct JobLayout {
  std::string work_dir;
  std::string in_dir;
  std::string out_dir;
  std::string stdout_path;
  std::string stderr_path;
  std::string status_path;

  std::string input_path(const std::string& name) const { return in_dir + "/" + name; }
  std::string output_path(const std::string& name) const { return out_dir + "/" + name; }
};

JobLayout job_layout(const std::string& state_dir, const Digest& job, std::uint32_t epoch);

// What a job is told about itself.
struct JobIdentity {
  Digest job;
  std::string pipeline;
  std::string shard;  // empty unless a fan-out shard
};

// The complete environment of a job: a small, fixed base (PATH, HOME=work dir, LANG=C.UTF-8,
// TMPDIR), the stage's `env` (which may override the base), then the VOW_ variables
// (which may not be overridden): VOW_JOB, VOW_STAGE, VOW_PIPELINE, VOW_SHARD, VOW_WORKDIR,
// VOW_IN_<name> per input and VOW_OUT_<name> per output. Sorted by name.
std::vector<std::string> job_environment(const JobLayout& layout, const promises::Stage& stage,
                                         const JobIdentity& id);

}  // namespace vow::agent
