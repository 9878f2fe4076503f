#include "agent/sandbox.h"

#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <functional>

namespace vow::agent {
namespace {

// Options every sandbox has. The supervisor's session is the job's process group;
// bwrap keeps it (no --new-session), so a kill of the group reaches the command inside.
// stdin is /dev/null and there is no controlling terminal, so no terminal to abuse.
// The host's `/` is bound read-only unless the job has a root of its own.
// Under a supervisor shell, bwrap dies with it (--die-with-parent); as the supervisor
// itself (its parent vowd), it must not.
std::vector<std::string> base_options(bool host_root = true, bool supervisor = false) {
  std::vector<std::string> o;
  if (host_root) o = {"--ro-bind", "/", "/"};
  o.insert(o.end(), {"--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--unshare-pid",
                     "--unshare-ipc", "--unshare-uts"});
  if (supervisor) {
    o.insert(o.end(), {"--json-status-fd", "3"});
  } else {
    o.push_back("--die-with-parent");
  }
  return o;
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
                                        const std::vector<int>& allowed, const JobRoot* root,
                                        bool bwrap_supervises) {
  const bool rooted = root != nullptr && !bwrap.empty();
  std::vector<std::string> limits;
  if (stage.cpus > 0 && !allowed.empty() && stage.cpus < static_cast<int>(allowed.size())) {
    // Children inherit the affinity: the job's processes share those CPUs.
    limits.insert(limits.end(),
                  {"taskset", "-c",
                   cpu_list(std::hash<std::string>{}(layout.work_dir), stage.cpus, allowed)});
  }
  if (stage.memory_bytes > 0 || stage.pids > 0) {
    // ulimit -v counts KiB; processes are ulimit -u in bash, -p in dash. The limits are
    // set by a shell that then becomes the command ("-" for a limit not set). Before
    // bwrap (a root), bwrap's two processes (itself and the namespace's init) count too.
    int pids = stage.pids > 0 && rooted ? stage.pids + 2 : stage.pids;
    limits.insert(
        limits.end(),
        {"/bin/sh", "-c",
         "if [ \"$1\" != - ]; then ulimit -v \"$1\" || exit 126; fi; "
         "if [ \"$2\" != - ]; then "
         "ulimit -u \"$2\" 2> /dev/null || ulimit -p \"$2\" || exit 126; fi; "
         "shift 2; exec \"$@\"",
         "vow-limits", stage.memory_bytes > 0 ? std::to_string(stage.memory_bytes / 1024) : "-",
         pids > 0 ? std::to_string(pids) : "-"});
  }
  std::vector<std::string> argv;
  const bool supervisor = bwrap_supervises && !(rooted && !limits.empty());
  if (rooted) argv = std::move(limits);
  if (!bwrap.empty()) {
    argv.push_back(bwrap);
    if (rooted) {
      // `/` is bwrap's own tmpfs with the root's entries bound on it read-only, rather
      // than the root bound at `/`: the job's directories are mounted at their host
      // paths, which the root need not have, and bwrap makes them in the tmpfs. The
      // root's dev, proc and tmp would be covered by the sandbox's own.
      for (const auto& e : root->entries) {
        if (e == "dev" || e == "proc" || e == "tmp") continue;
        argv.insert(argv.end(), {"--ro-bind", root->dir + "/" + e, "/" + e});
      }
      if (!root->shadowed.empty()) {
        argv.insert(argv.end(), {"--tmpfs", root->shadowed});
        for (const auto& e : root->shadowed_entries) {
          argv.insert(argv.end(), {"--ro-bind", root->dir + root->shadowed + "/" + e,
                                   root->shadowed + "/" + e});
        }
      }
    }
    for (auto& o : base_options(!rooted, supervisor)) argv.push_back(std::move(o));
    if (!stage.network) argv.push_back("--unshare-net");
    if (rooted) {
      argv.insert(argv.end(), {"--bind", layout.work_dir, layout.work_dir, "--ro-bind",
                               layout.in_dir, layout.in_dir, "--remount-ro", "/"});
      if (!root->shadowed.empty()) argv.insert(argv.end(), {"--remount-ro", root->shadowed});
    } else {
      // The state directory (identity key, ledger, store, other jobs) is hidden under an
      // empty tmpfs; the job's work directory is bound back writable, its inputs
      // read-only over it.
      argv.insert(argv.end(), {"--tmpfs", state_dir, "--bind", layout.work_dir, layout.work_dir,
                               "--ro-bind", layout.in_dir, layout.in_dir});
    }
    argv.insert(argv.end(), {"--chdir", layout.work_dir, "--"});
  }
  if (!rooted) argv.insert(argv.end(), limits.begin(), limits.end());
  argv.insert(argv.end(), stage.argv.begin(), stage.argv.end());
  return argv;
}

Result<JobRoot> job_root(const JobLayout& layout, const promises::Stage& stage,
                         const std::string& path) {
  namespace fs = std::filesystem;
  const std::string name = stage.root ? stage.root->to_string() : "";
  JobRoot root;
  root.dir = stage.root ? layout.input_path(stage.root->local_name()) : "";
  std::error_code ec;
  if (!stage.root || !fs::is_directory(fs::symlink_status(root.dir, ec))) {
    return Status::invalid("the stage's root '" + name +
                           "' is not a directory: a root is a directory artifact, the `/` of "
                           "the job (docs/sandbox.md)");
  }
  for (const auto& e : fs::directory_iterator(root.dir, ec)) {
    root.entries.push_back(e.path().filename().string());
  }
  if (ec) return Status::io("cannot list the stage's root '" + name + "': " + ec.message());
  std::sort(root.entries.begin(), root.entries.end());
  const fs::path work(layout.work_dir);
  for (auto part = std::next(work.begin()); part != work.end(); ++part) {
    std::string next = root.shadowed + "/" + part->string();
    bool own = root.shadowed.empty() && (next == "/dev" || next == "/proc" || next == "/tmp");
    if (own || !fs::is_directory(fs::symlink_status(root.dir + next, ec))) break;
    root.shadowed = std::move(next);
  }
  if (root.shadowed == layout.work_dir) root.shadowed.clear();  // a mount point already
  if (!root.shadowed.empty()) {
    for (const auto& e : fs::directory_iterator(root.dir + root.shadowed, ec)) {
      root.shadowed_entries.push_back(e.path().filename().string());
    }
    if (ec) return Status::io("cannot list the stage's root '" + name + "': " + ec.message());
  }
  // The command's program, looked up in the root as bwrap's execvp will.
  const std::string& program = stage.argv.at(0);
  auto runnable = [&](const std::string& p) {
    auto st = fs::status(root.dir + p, ec);
    return fs::is_regular_file(st) &&
           (st.permissions() & (fs::perms::owner_exec | fs::perms::others_exec)) != fs::perms::none;
  };
  bool found = false;
  if (program.find('/') != std::string::npos) {
    found = program.front() == '/' && runnable(program);
  } else {
    for (std::size_t at = 0; !found && at <= path.size();) {
      std::size_t end = std::min(path.find(':', at), path.size());
      found = runnable(path.substr(at, end - at) + "/" + program);
      at = end + 1;
    }
  }
  if (!found) {
    return Status::invalid("the stage's root '" + name + "' has no executable " + program +
                           (program.find('/') == std::string::npos ? " in " + path : "") +
                           ", the command's program: a root must hold what its command runs "
                           "(docs/sandbox.md)");
  }
  return root;
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
