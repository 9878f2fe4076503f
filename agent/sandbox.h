// The sandbox jobs run in (docs/sandbox.md): bubblewrap (bwrap) around the command,
// with the whole file system read-only, the agent's state directory hidden except for
// the job's own work directory (its inputs read-only), a private /tmp, its own PID
// namespace and no network unless the stage says `network = true`; and the stage's
// limits that no cgroup of the job applies (agent/job_cgroup.h): `memory` as an
// address-space limit (RLIMIT_AS), `pids` as RLIMIT_NPROC and `cpus` as a CPU affinity.
//
// The wrapper goes between the job supervisor (agent/process.h) and the command: the
// supervisor stays outside, so the status file, kill by process group and re-adoption
// after a restart work as they do without a sandbox.
//
// Pure functions over values except probe_bwrap, which runs bwrap once, and job_root.
// Thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "agent/job_cgroup.h"
#include "agent/job_layout.h"
#include "promises/pipeline.h"
#include "promises/status.h"

namespace vow::agent {

// Where bwrap is, among the usual places; empty if none.
std::string find_bwrap();

// Runs `bwrap ... true` with the options jobs use: ok if it works, else the reason
// (bwrap's own message, or that it is not installed).
Status probe_bwrap(const std::string& bwrap);

// The root file system of a job of a stage with `root` (docs/sandbox.md,
// "Environments"): the materialized root input and the names at its top.
struct JobRoot {
  std::string dir;
  std::vector<std::string> entries;
  // The deepest directory of the root on the path of the job's work directory
  // ("/var/lib" for /var/lib/vow/jobs/... when the root has /var/lib), where bwrap
  // must make the work directory's mount point: a tmpfs goes over it, with its entries
  // bound back read-only. Empty when the path leaves the root at its top, or goes
  // through the sandbox's own /tmp.
  std::string shadowed;
  std::vector<std::string> shadowed_entries;
};

// The command line that runs `stage`'s command for the job laid out in `layout`:
// bwrap and its options when `bwrap` is not empty, then the limit wrapper when the
// stage has limits (`cpus`: taskset to CPUS of `allowed_cpus`, chosen from the job's
// work directory so that jobs spread; `memory` and `pids`: ulimit), then the stage's argv.
// With `root` (only with bwrap), `/` of the job is made of the root's entries instead
// of the host's, and the limit wrapper goes before bwrap, on the host's /bin/sh and
// taskset, so that the root needs to hold only what its command runs.
std::vector<std::string> sandboxed_argv(const std::string& bwrap, const std::string& state_dir,
                                        const JobLayout& layout, const promises::Stage& stage,
                                        const std::vector<int>& allowed_cpus = {},
                                        const JobRoot* root = nullptr,
                                        bool bwrap_supervises = false);
// With `bwrap_supervises` and bwrap first on the command line (no limit wrapper before
// it), bwrap is the job's supervisor (SpawnSpec::bwrap_supervises): it writes the
// command's exit status to fd 3 (--json-status-fd 3), and has no --die-with-parent,
// as its parent is vowd, whose restart must leave the job running.

// Why the job laid out in `layout` cannot run in its stage's root: the root input is
// not a directory, or it does not hold the command's program as an executable file
// (an absolute argv[0], or one found in `path`, "/usr/bin:/bin"); the top names of
// the root when it can. Reads the file system.
Result<JobRoot> job_root(const JobLayout& layout, const promises::Stage& stage,
                         const std::string& path);

// The CPUs a job of a stage with `cpus` is kept to: `cpus` of `allowed` (all of them
// when it has no more), starting at a place `seed` (the job's) picks; as taskset's list.
std::string cpu_list(std::size_t seed, int cpus, const std::vector<int>& allowed);

// The CPUs this process may run on (sched_getaffinity).
std::vector<int> allowed_cpus();

// What a failed job of `stage` adds to its error about its limits, "" when it has
// none: " (the stage's memory limit is 64 MiB: memory past it cannot be allocated)".
// A limit its cgroup applied (`counted`) is named only when the cgroup counted a hit:
// " (the stage's memory limit is 64 MiB: the job's cgroup reached it, and the kernel
// killed 1 of its processes, out of memory)".
std::string limits_note(const promises::Stage& stage, const LimitCounts& counted = {});

// "512 MiB", "2 GiB": a limit as written in messages.
std::string format_bytes(std::int64_t bytes);

}  // namespace vow::agent
