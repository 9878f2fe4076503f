#include "agent/job_cgroup.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "promises/digest.h"

namespace fs = std::filesystem;

namespace vow::agent {
namespace {

constexpr const char* kJobsDir = "vow-jobs";
// cpu.max / cpu.cfs_period_us: the period a quota of `cpus` periods is given in.
constexpr std::int64_t kCpuPeriodUs = 100000;

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

// Writes `value` to a cgroup file in one write(2), as the kernel wants it. (O_CREAT
// changes nothing on a cgroup file system, where files cannot be made, and lets the
// tests lay out a cgroup tree in a plain directory.)
Status write_file(const std::string& path, const std::string& value) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return Status::io("cannot open " + path + ": " + std::strerror(errno));
  ssize_t n = ::write(fd, value.data(), value.size());
  int err = errno;
  ::close(fd);
  if (n != static_cast<ssize_t>(value.size())) {
    return Status::io("cannot write '" + value + "' to " + path + ": " + std::strerror(err));
  }
  return Status::ok();
}

bool file_exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == sep) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(cur);
  return out;
}

bool has_word(const std::string& text, const std::string& word) {
  std::istringstream in(text);
  std::string w;
  while (in >> w) {
    if (w == word) return true;
  }
  return false;
}

// "KEY N" lines (memory.events, pids.events, memory.oom_control): N of KEY, 0 if absent.
std::int64_t counter(const std::string& path, const std::string& key) {
  std::istringstream in(read_text(path));
  std::string k;
  std::int64_t v = 0;
  while (in >> k >> v) {
    if (k == key) return v;
  }
  return 0;
}

// The directory of cgroup PATH under a mount whose root is `m.root`; "" when the path
// is outside what the mount shows.
std::string dir_under(const CgroupMount& m, const std::string& path) {
  if (m.mount_point.empty() || path.empty()) return "";
  std::string rest = path;
  if (m.root != "/") {
    if (path != m.root && path.rfind(m.root + "/", 0) != 0) return "";
    rest = path.substr(m.root.size());
  }
  if (rest == "/") rest.clear();
  return m.mount_point + rest;
}

std::vector<pid_t> procs_of(const std::string& dir) {
  std::vector<pid_t> out;
  std::istringstream in(read_text(dir + "/cgroup.procs"));
  long pid = 0;
  while (in >> pid) out.push_back(static_cast<pid_t>(pid));
  return out;
}

// Whether the cgroup and its children hold no process.
bool empty_tree(const std::string& dir) {
  if (!procs_of(dir).empty()) return false;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.is_directory(ec) && !empty_tree(e.path().string())) return false;
  }
  return true;
}

// Kills every process of the cgroup (cgroup.kill where the kernel has it, v2 >= 5.14),
// then removes it, waiting a little for the killed to go. False if it is still busy:
// a killed process stays in its cgroup until its parent (init, for the orphans a job
// leaves) has reaped it, which may take longer than the loop should wait.
bool kill_and_remove(const std::string& dir, int attempts) {
  if (!file_exists(dir)) return true;
  const bool has_kill = file_exists(dir + "/cgroup.kill");
  for (int attempt = 0; attempt < attempts; ++attempt) {
    if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return true;
    if (errno != EBUSY) return false;
    if (has_kill) {
      (void)write_file(dir + "/cgroup.kill", "1");
    } else {
      for (pid_t pid : procs_of(dir)) ::kill(pid, SIGKILL);
    }
    if (attempt + 1 < attempts) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return ::rmdir(dir.c_str()) == 0 || errno == ENOENT;
}

std::string agent_tag(const std::string& state_dir) {
  return blake2b(state_dir).hex().substr(0, 12);
}

}  // namespace

std::string own_cgroup_v2(const std::string& proc_cgroup) {
  std::istringstream in(proc_cgroup);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("0::", 0) == 0) return line.substr(3);
  }
  return "";
}

std::string own_cgroup_v1(const std::string& proc_cgroup, const std::string& controller) {
  std::istringstream in(proc_cgroup);
  std::string line;
  while (std::getline(in, line)) {
    // ID:CONTROLLERS:PATH, the controllers comma-separated ("cpu,cpuacct").
    auto a = line.find(':');
    auto b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    for (const auto& c : split(line.substr(a + 1, b - a - 1), ',')) {
      if (c == controller) return line.substr(b + 1);
    }
  }
  return "";
}

CgroupMount find_cgroup_mount(const std::string& proc_mountinfo, const std::string& controller) {
  std::istringstream in(proc_mountinfo);
  std::string line;
  while (std::getline(in, line)) {
    // ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS
    std::istringstream f(line);
    std::vector<std::string> fields;
    std::string w;
    while (f >> w) fields.push_back(w);
    std::size_t dash = 0;
    while (dash < fields.size() && fields[dash] != "-") ++dash;
    if (dash < 6 || dash + 3 >= fields.size()) continue;
    const std::string& type = fields[dash + 1];
    bool match = false;
    if (controller.empty()) {
      match = type == "cgroup2";
    } else if (type == "cgroup") {
      for (const auto& o : split(fields[dash + 3], ',')) match = match || o == controller;
    }
    if (match) return CgroupMount{fields[4], fields[3]};
  }
  return {};
}

JobCgroups JobCgroups::probe(const std::string& state_dir, bool force_rlimits,
                             const std::string& proc_cgroup_in,
                             const std::string& proc_mountinfo_in) {
  JobCgroups out;
  out.tag_ = agent_tag(state_dir);
  if (force_rlimits) {
    out.description_ = "rlimits: cgroups not tried ([agent] job_limits = \"rlimits\")";
    return out;
  }
  const std::string proc_cgroup =
      proc_cgroup_in.empty() ? read_text("/proc/self/cgroup") : proc_cgroup_in;
  const std::string mountinfo =
      proc_mountinfo_in.empty() ? read_text("/proc/self/mountinfo") : proc_mountinfo_in;
  const std::vector<std::string> wanted = {"memory", "pids", "cpu"};
  std::vector<std::string> why_not;

  // cgroups v2: the agent's own cgroup, delegated to it.
  std::string own = own_cgroup_v2(proc_cgroup);
  std::string base = dir_under(find_cgroup_mount(mountinfo, ""), own);
  if (!base.empty()) {
    std::string have = read_text(base + "/cgroup.controllers");
    if (!has_word(have, "memory")) {
      why_not.push_back(
          "cgroup v2 " + base + " has not the memory controller" +
          (have.empty() ? std::string() : " (it has: " + have.substr(0, have.find('\n')) + ")"));
    } else if (::access(base.c_str(), W_OK) != 0 ||
               ::access((base + "/cgroup.subtree_control").c_str(), W_OK) != 0) {
      why_not.push_back("cgroup v2 " + base + " is not writable by this agent (not delegated)");
    } else {
      Status st = Status::ok();
      // No internal processes: a cgroup (other than the root) that hands controllers
      // to its children holds no process itself, so the agent moves into a leaf.
      if (own != "/") {
        std::string leaf = base + "/agent";
        if (::mkdir(leaf.c_str(), 0755) != 0 && errno != EEXIST) {
          st = Status::io("cannot make " + leaf + ": " + std::strerror(errno));
        } else {
          st = write_file(leaf + "/cgroup.procs", std::to_string(::getpid()));
        }
      }
      std::string jobs = base + "/" + kJobsDir;
      std::vector<std::string> enabled;
      if (st.is_ok()) {
        for (const auto& c : wanted) {
          if (!has_word(have, c)) continue;
          Status e = write_file(base + "/cgroup.subtree_control", "+" + c);
          if (e.is_ok()) {
            enabled.push_back(c);
          } else if (c == "memory") {
            // EBUSY: processes other than the agent are in its cgroup.
            bool busy = e.message().find("busy") != std::string::npos;
            st = Status(e.code(), e.message() + (busy ? " (other processes share the agent's "
                                                        "cgroup)"
                                                      : ""));
          }
        }
      }
      if (st.is_ok() && ::mkdir(jobs.c_str(), 0755) != 0 && errno != EEXIST) {
        st = Status::io("cannot make " + jobs + ": " + std::strerror(errno));
      }
      std::vector<std::string> in_jobs;
      if (st.is_ok()) {
        for (const auto& c : enabled) {
          if (write_file(jobs + "/cgroup.subtree_control", "+" + c).is_ok()) in_jobs.push_back(c);
        }
        if (!has_word(read_text(jobs + "/cgroup.subtree_control"), "memory")) {
          st = Status::io("cannot enable the memory controller in " + jobs);
        }
      }
      if (st.is_ok()) {
        out.kind_ = Kind::kV2;
        out.hierarchies_.push_back(Hierarchy{jobs, true});
        std::string list;
        for (const auto& c : in_jobs) {
          if (c == "memory") out.memory_ = 0;
          if (c == "pids") out.pids_ = 0;
          if (c == "cpu") out.cpu_ = 0;
          list += (list.empty() ? "" : ", ") + c;
        }
        out.description_ = "cgroups v2 (" + list + " under " + jobs + ")";
        return out;
      }
      why_not.push_back("cgroup v2 " + base + ": " + st.message());
    }
  } else if (!own.empty()) {
    why_not.push_back("no cgroup2 mount shows this agent's cgroup " + own);
  }

  // cgroups v1: a hierarchy per controller; memory is needed, pids and cpu are taken
  // where they can be.
  std::string list, where;
  for (const auto& c : wanted) {
    std::string dir = dir_under(find_cgroup_mount(mountinfo, c), own_cgroup_v1(proc_cgroup, c));
    if (dir.empty()) {
      if (c == "memory") why_not.push_back("no cgroup v1 memory hierarchy");
      if (c == "memory") break;
      continue;
    }
    std::string jobs = dir + "/" + kJobsDir;
    if ((::mkdir(jobs.c_str(), 0755) != 0 && errno != EEXIST) ||
        ::access(jobs.c_str(), W_OK) != 0) {
      if (c == "memory") {
        why_not.push_back("cgroup v1 " + dir + " is not writable by this agent (" +
                          std::strerror(errno) + ")");
        break;
      }
      continue;
    }
    std::size_t index = out.hierarchies_.size();
    out.hierarchies_.push_back(Hierarchy{jobs, false});
    if (c == "memory") out.memory_ = index;
    if (c == "pids") out.pids_ = index;
    if (c == "cpu") out.cpu_ = index;
    list += (list.empty() ? "" : ", ") + c;
    where += (where.empty() ? "" : ", ") + jobs;
  }
  if (out.memory_ != kNoHierarchy) {
    out.kind_ = Kind::kV1;
    out.description_ = "cgroups v1 (" + list + " under " + where + ")";
    return out;
  }
  out.hierarchies_.clear();
  out.pids_ = out.cpu_ = kNoHierarchy;
  std::string reasons;
  for (const auto& r : why_not) reasons += (reasons.empty() ? "" : "; ") + r;
  out.description_ = "rlimits: no writable cgroup with the memory controller" +
                     (reasons.empty() ? std::string() : " (" + reasons + ")");
  return out;
}

std::string JobCgroups::name_for(const std::string& work_dir) const {
  return tag_ + "." + fs::path(work_dir).filename().string();
}

bool JobCgroups::wants(const promises::Stage& stage) const {
  return (stage.memory_bytes > 0 && limits_memory()) || (stage.pids > 0 && limits_pids()) ||
         (stage.cpus > 0 && limits_cpu());
}

std::vector<std::string> JobCgroups::dirs_of(const std::string& name) const {
  std::vector<std::string> out;
  for (const auto& h : hierarchies_) out.push_back(h.jobs_dir + "/" + name);
  return out;
}

Result<std::vector<std::string>> JobCgroups::make(const std::string& name,
                                                  const promises::Stage& stage,
                                                  int overhead_pids) const {
  std::vector<std::string> procs;
  for (std::size_t i = 0; i < hierarchies_.size(); ++i) {
    const Hierarchy& h = hierarchies_[i];
    const bool memory = i == memory_ && stage.memory_bytes > 0;
    const bool pids = i == pids_ && stage.pids > 0;
    const bool cpu = i == cpu_ && stage.cpus > 0;
    if (!memory && !pids && !cpu) continue;
    std::string dir = h.jobs_dir + "/" + name;
    if (!kill_and_remove(dir, 10)) {
      return Status::io("a leftover cgroup " + dir + " is still busy");
    }
    if (::mkdir(dir.c_str(), 0755) != 0) {
      return Status::io("cannot make the job's cgroup " + dir + ": " + std::strerror(errno));
    }
    // The limits, in order: memory + swap (v1) may not be set below memory.
    std::vector<std::pair<std::string, std::string>> writes;
    const std::string bytes = std::to_string(stage.memory_bytes);
    if (memory && h.v2) {
      writes.emplace_back("memory.max", bytes);
      // No swap: past the limit the job is killed (and counted), not paged out.
      if (file_exists(dir + "/memory.swap.max")) writes.emplace_back("memory.swap.max", "0");
    } else if (memory) {
      writes.emplace_back("memory.limit_in_bytes", bytes);
      if (file_exists(dir + "/memory.memsw.limit_in_bytes")) {
        writes.emplace_back("memory.memsw.limit_in_bytes", bytes);
      }
    }
    if (pids) writes.emplace_back("pids.max", std::to_string(stage.pids + overhead_pids));
    if (cpu) {
      const std::string quota = std::to_string(stage.cpus * kCpuPeriodUs);
      if (h.v2) {
        writes.emplace_back("cpu.max", quota + " " + std::to_string(kCpuPeriodUs));
      } else {
        writes.emplace_back("cpu.cfs_period_us", std::to_string(kCpuPeriodUs));
        writes.emplace_back("cpu.cfs_quota_us", quota);
      }
    }
    for (const auto& [file, value] : writes) {
      Status st = write_file(dir + "/" + file, value);
      if (!st.is_ok()) {
        ::rmdir(dir.c_str());
        return st;
      }
    }
    // v2: past the limit the OOM killer takes the whole job, not one process of it (a
    // shell whose child was killed would go on and might exit 0). Kernels before 4.19
    // lack the file: there one process goes, and the job still fails on the oom_kill
    // count (counts()).
    if (memory && h.v2) (void)write_file(dir + "/memory.oom.group", "1");
    procs.push_back(dir + "/cgroup.procs");
  }
  return procs;
}

bool JobCgroups::exists(const std::string& name) const {
  for (const auto& d : dirs_of(name)) {
    if (file_exists(d)) return true;
  }
  return false;
}

LimitCounts JobCgroups::counts(const std::string& name, const promises::Stage& stage) const {
  LimitCounts c;
  if (stage.memory_bytes > 0 && limits_memory()) {
    const Hierarchy& h = hierarchies_[memory_];
    std::string dir = h.jobs_dir + "/" + name;
    c.memory_by_cgroup = true;
    c.oom_kills = h.v2 ? counter(dir + "/memory.events", "oom_kill")
                       : counter(dir + "/memory.oom_control", "oom_kill");
  }
  if (stage.pids > 0 && limits_pids()) {
    c.pids_by_cgroup = true;
    c.pids_refused = counter(hierarchies_[pids_].jobs_dir + "/" + name + "/pids.events", "max");
  }
  return c;
}

bool JobCgroups::remove(const std::string& name, int attempts) const {
  bool gone = true;
  for (const auto& d : dirs_of(name)) gone = kill_and_remove(d, attempts) && gone;
  return gone;
}

void JobCgroups::sweep(const std::set<std::string>& keep) const {
  for (const auto& h : hierarchies_) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(h.jobs_dir, ec)) {
      std::string name = e.path().filename().string();
      if (name.rfind(tag_ + ".", 0) != 0 || keep.count(name) != 0) continue;
      if (e.is_directory(ec) && empty_tree(e.path().string())) ::rmdir(e.path().c_str());
    }
  }
}

}  // namespace vow::agent
