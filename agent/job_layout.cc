#include "agent/job_layout.h"

#include <map>

namespace vow::agent {

JobLayout job_layout(const std::string& state_dir, const Digest& job, std::uint32_t epoch) {
  JobLayout l;
  l.work_dir = state_dir + "/jobs/" + job.hex() + "." + std::to_string(epoch);
  l.in_dir = l.work_dir + "/in";
  l.out_dir = l.work_dir + "/out";
  l.stdout_path = l.work_dir + "/stdout";
  l.stderr_path = l.work_dir + "/stderr";
  l.status_path = l.work_dir + "/status";
  return l;
}

std::vector<std::string> job_environment(const JobLayout& layout, const promises::Stage& stage,
                                         const JobIdentity& id) {
  std::map<std::string, std::string> env{
      {"PATH", "/usr/local/bin:/usr/bin:/bin"},
      {"HOME", layout.work_dir},
      {"LANG", "C.UTF-8"},
      {"TMPDIR", layout.work_dir},
  };
  for (const auto& [k, v] : stage.env) env[k] = v;
  env["VOW_JOB"] = id.job.hex();
  env["VOW_STAGE"] = stage.name;
  env["VOW_PIPELINE"] = id.pipeline;
  env["VOW_SHARD"] = id.shard;
  env["VOW_WORKDIR"] = layout.work_dir;
  for (const auto& in : stage.inputs) {
    env["VOW_IN_" + in.local_name()] = layout.input_path(in.local_name());
  }
  for (const auto& out : stage.outputs) env["VOW_OUT_" + out] = layout.output_path(out);
  std::vector<std::string> out;
  out.reserve(env.size());
  for (const auto& [k, v] : env) out.push_back(k + "=" + v);
  return out;
}

}  // namespace vow::agent
