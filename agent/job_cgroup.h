// Per-job cgroups (docs/sandbox.md, "Limits"): where the host lets the agent make
// cgroups, a job with a `memory`, `pids` or `cpus` limit runs in a cgroup of its own
// that applies them exactly and counts when one is hit, in place of the rlimits and
// CPU affinity of the limit wrapper (agent/sandbox.h).
//
// Chosen once at start (JobCgroups::probe):
//   - cgroups v2, when the agent's own cgroup (/proc/self/cgroup "0::PATH", under the
//     cgroup2 mount of /proc/self/mountinfo) is writable and has the memory controller.
//     The agent moves itself into the leaf OWN/agent (a cgroup with processes cannot
//     hand controllers to its children), enables memory, pids and cpu in OWN and in
//     OWN/vow-jobs, and makes jobs' cgroups in OWN/vow-jobs;
//   - else cgroups v1, when the memory hierarchy (and, each if it can, pids and cpu) is
//     mounted and the agent's cgroup there is writable: jobs' cgroups in
//     MOUNT/OWN/vow-jobs of each hierarchy;
//   - else none: the limit wrapper's rlimits.
//
// A job's cgroup is named from its work directory (this agent's tag, then the
// directory's name), so a restarted agent finds a re-adopted job's cgroup again. The
// job supervisor (agent/process.h) writes its own pid into the cgroup before it runs
// the command, so everything the job starts is in it, and kill by process group and
// re-adoption stay as they are.
//
// A value made once; its methods touch only the cgroup file system. Thread-safe for
// distinct job names.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "promises/pipeline.h"
#include "promises/status.h"

namespace vow::agent {

// What a job's cgroup counted, for the limits a cgroup applied (all false and zero
// when none did: then the rlimits' note stands, agent/sandbox.h limits_note).
struct LimitCounts {
  bool memory_by_cgroup = false;  // the stage's memory limit was the cgroup's
  bool pids_by_cgroup = false;
  std::int64_t oom_kills = 0;     // processes the OOM killer killed in the job's cgroup
  std::int64_t pids_refused = 0;  // forks refused at pids.max
};

class JobCgroups {
 public:
  enum class Kind : std::uint8_t { kNone, kV2, kV1 };

  // Decides how job limits are applied on this host, and prepares the parent cgroups.
  // `state_dir` makes this agent's tag (agents of one host may share a cgroup);
  // `force_rlimits`: none, without looking. The proc_* arguments are for tests: the
  // texts of /proc/self/cgroup and /proc/self/mountinfo (read when empty).
  static JobCgroups probe(const std::string& state_dir, bool force_rlimits,
                          const std::string& proc_cgroup = "",
                          const std::string& proc_mountinfo = "");

  Kind kind() const { return kind_; }
  bool active() const { return kind_ != Kind::kNone; }
  // For the log: "cgroups v1 (memory, pids, cpu under /sys/fs/cgroup/...)", or
  // "rlimits: " and why no cgroup.
  const std::string& description() const { return description_; }
  bool limits_memory() const { return memory_ != kNoHierarchy; }
  bool limits_pids() const { return pids_ != kNoHierarchy; }
  bool limits_cpu() const { return cpu_ != kNoHierarchy; }

  // The name of the cgroup of the job whose work directory is `work_dir`.
  std::string name_for(const std::string& work_dir) const;
  // Whether a job of `stage` gets a cgroup: it has a limit a cgroup here applies.
  bool wants(const promises::Stage& stage) const;

  // Makes the job's cgroup `name` (removing a leftover of that name first) with
  // `stage`'s limits; `overhead_pids` processes are added to `pids` (the supervisor's
  // and the sandbox's own, so that the limit is the command's). Returns the
  // cgroup.procs files the supervisor writes its pid into.
  Result<std::vector<std::string>> make(const std::string& name, const promises::Stage& stage,
                                        int overhead_pids) const;
  // Whether the job's cgroup exists (in any hierarchy).
  bool exists(const std::string& name) const;
  // What the job's cgroup counted (the hits of the limits it applies).
  LimitCounts counts(const std::string& name, const promises::Stage& stage) const;
  // Kills what is left in the job's cgroup and removes it, trying `attempts` times
  // 2 ms apart. False when it is still busy (a killed process not yet reaped): try
  // again later.
  bool remove(const std::string& name, int attempts = 3) const;
  // This agent's job cgroups with no process in them and not in `keep`: removed.
  void sweep(const std::set<std::string>& keep) const;

 private:
  struct Hierarchy {
    std::string jobs_dir;  // where jobs' cgroups are made: PARENT/vow-jobs
    bool v2 = false;
  };
  static constexpr std::size_t kNoHierarchy = static_cast<std::size_t>(-1);
  std::vector<std::string> dirs_of(const std::string& name) const;

  Kind kind_ = Kind::kNone;
  std::string description_;
  std::string tag_;
  std::vector<Hierarchy> hierarchies_;
  std::size_t memory_ = kNoHierarchy;  // index into hierarchies_, or none
  std::size_t pids_ = kNoHierarchy;
  std::size_t cpu_ = kNoHierarchy;
};

// Parses /proc/self/cgroup: the v2 path ("0::PATH"), "" if none.
std::string own_cgroup_v2(const std::string& proc_cgroup);
// Parses /proc/self/cgroup: the v1 path of the hierarchy holding `controller`, "" if none.
std::string own_cgroup_v1(const std::string& proc_cgroup, const std::string& controller);
// A cgroup mount of /proc/self/mountinfo: where it is mounted, and the cgroup path its
// root is (not "/" when a container sees only part of the tree).
struct CgroupMount {
  std::string mount_point;
  std::string root;
};
// The cgroup2 mount (`controller` empty), or the v1 mount of `controller`; empty
// mount_point if none.
CgroupMount find_cgroup_mount(const std::string& proc_mountinfo, const std::string& controller);

}  // namespace vow::agent
