#include "agent/sandbox.h"

#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <functional>

namespace vow::agent {
namespace {

// Options every sandbox has. The supervisor's session is the job's process group;
// bwrap keeps it (no --new-session), so a kill of the group reaches the command inside.
// stdin is /dev/null and there is no controlling terminal, so no terminal to abuse.
std::vector<std::string> base_options() {
  return {"--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
          "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent"};
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

}  // namespace

std::string find_bwrap() {
  for (const char* p : {"/usr/bin/bwrap", "/bin/bwrap", "/usr/local/bin/bwrap"}) {
    if (::access(p, X_OK) == 0) return p;
  }
  return "";
}

Status probe_bwrap(const std::string& bwrap) {
  if (bwrap.empty()) {
    return Status::not_found("bwrap is not installed (Debian package bubblewrap)");
  }
  std::string cmd = shell_quote(bwrap);
  for (const auto& o : base_options()) cmd += " " + shell_quote(o);
  cmd += " --unshare-net /bin/true 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return Status::io("cannot run " + bwrap);
  std::string said;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p) != nullptr) {
    if (said.size() < 2000) said += buf;
  }
  int st = ::pclose(p);
  if (st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0) return Status::ok();
  while (!said.empty() && (said.back() == '\n' || said.back() == '\r')) said.pop_back();
  if (said.empty()) said = "exit status " + std::to_string(WIFEXITED(st) ? WEXITSTATUS(st) : -1);
  return Status::io(bwrap + " does not work here: " + said);
}

std::vector<std::string> sandboxed_argv(const std::string& bwrap, const std::string& state_dir,
                                        const JobLayout& layout, const promises::Stage& stage,
                                        const std::vector<int>& allowed) {
  std::vector<std::string> argv;
  if (!bwrap.empty()) {
    argv.push_back(bwrap);
    for (auto& o : base_options()) argv.push_back(std::move(o));
    if (!stage.network) argv.push_back("--unshare-net");
    // The state directory (identity key, ledger, store, other jobs) is hidden under an
    // empty tmpfs; the job's work directory is bound back writable, its inputs
    // read-only over it.
    argv.insert(argv.end(), {"--tmpfs", state_dir, "--bind", layout.work_dir, layout.work_dir,
                             "--ro-bind", layout.in_dir, layout.in_dir});
    argv.insert(argv.end(), {"--chdir", layout.work_dir, "--"});
  }
  if (stage.cpus > 0 && !allowed.empty() && stage.cpus < static_cast<int>(allowed.size())) {
    // Children inherit the affinity: the job's processes share those CPUs.
    argv.insert(argv.end(), {"taskset", "-c", cpu_list(std::hash<std::string>{}(layout.work_dir), stage.cpus, allowed)});
  }
  if (stage.memory_bytes > 0 || stage.pids > 0) {
    // ulimit -v counts KiB; processes are ulimit -u in bash, -p in dash. The limits are
    // set by a shell that then becomes the command ("-" for a limit not set).
    argv.insert(argv.end(),
                {"/bin/sh", "-c",
                 "if [ \"$1\" != - ]; then ulimit -v \"$1\" || exit 126; fi; "
                 "if [ \"$2\" != - ]; then "
                 "ulimit -u \"$2\" 2> /dev/null || ulimit -p \"$2\" || exit 126; fi; "
                 "shift 2; exec \"$@\"",
                 "vow-limits",
                 stage.memory_bytes > 0 ? std::to_string(stage.memory_bytes / 1024) : "-",
                 stage.pids > 0 ? std::to_string(stage.pids) : "-"});
  }
  argv.insert(argv.end(), stage.argv.begin(), stage.argv.end());
  return argv;
}

std::string cpu_list(std::size_t seed, int cpus, const std::vector<int>& allowed) {
  if (allowed.empty()) return "";
  std::size_t n = std::min<std::size_t>(static_cast<std::size_t>(cpus), allowed.size());
  std::size_t start = seed % allowed.size();
  std::vector<int> picked;
  for (std::size_t i = 0; i < n; ++i) picked.push_back(allowed[(start + i) % allowed.size()]);
  std::sort(picked.begin(), picked.end());
  std::string out;
  for (int c : picked) out += (out.empty() ? "" : ",") + std::to_string(c);
  return out;
}

std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> out;
  if (::sched_getaffinity(0, sizeof(set), &set) != 0) return out;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &set)) out.push_back(c);
  }
  return out;
}

std::string limits_note(const promises::Stage& stage, const LimitCounts& counted) {
  std::vector<std::string> notes;
  if (stage.memory_bytes > 0 && counted.memory_by_cgroup) {
    // The OOM killer of the job's cgroup killed what needed memory past the limit.
    if (counted.oom_kills > 0) {
      notes.push_back("the stage's memory limit is " + format_bytes(stage.memory_bytes) +
                      ": the job's cgroup reached it, and the kernel killed " +
                      std::to_string(counted.oom_kills) + " of its processes, out of memory");
    }
  } else if (stage.memory_bytes > 0) {
    // RLIMIT_AS refuses the allocation; the command then fails its own way.
    notes.push_back("the stage's memory limit is " + format_bytes(stage.memory_bytes) +
                    ": memory past it cannot be allocated");
  }
  if (stage.pids > 0 && counted.pids_by_cgroup) {
    if (counted.pids_refused > 0) {
      notes.push_back("the stage's pids limit is " + std::to_string(stage.pids) +
                      ": the job's cgroup refused " + std::to_string(counted.pids_refused) +
                      " new process(es) past it");
    }
  } else if (stage.pids > 0) {
    // RLIMIT_NPROC refuses the fork; the command then fails its own way.
    notes.push_back("the stage's pids limit is " + std::to_string(stage.pids) +
                    ": a process past it cannot be started");
  }
  if (notes.empty()) return "";
  std::string out = " (";
  for (std::size_t i = 0; i < notes.size(); ++i) out += (i ? "; " : "") + notes[i];
  return out + ")";
}

std::string format_bytes(std::int64_t bytes) {
  constexpr std::int64_t kKiB = 1024, kMiB = kKiB << 10, kGiB = kMiB << 10;
  if (bytes % kGiB == 0) return std::to_string(bytes / kGiB) + " GiB";
  if (bytes % kMiB == 0) return std::to_string(bytes / kMiB) + " MiB";
  if (bytes % kKiB == 0) return std::to_string(bytes / kKiB) + " KiB";
  return std::to_string(bytes) + " bytes";
}

}  // namespace vow::agent
