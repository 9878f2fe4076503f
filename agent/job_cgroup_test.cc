#include "agent/job_cgroup.h"

#include <doctest/doctest.h>
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "agent/job_layout.h"
#include "agent/process.h"
#include "agent/sandbox.h"
#include "agent/process_test_util.h"

namespace fs = std::filesystem;

namespace vow::agent {
namespace {

using testing::slurp;
using testing::wait_exit;

// As this host's kernel writes them: cgroups v1 for memory, pids and cpu (the memory
// cgroup not the root), and a cgroup2 mount with only hugetlb.
constexpr const char* kProcCgroup =
    "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/abc\n2:cpuacct:/\n1:cpu:/\n0::/\n";
constexpr const char* kMountinfo =
    "30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "32 30 0:29 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n"
    "34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "37 30 0:34 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
    "39 30 0:36 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw\n";

promises::Stage shell(const std::string& command) {
  promises::Stage s;
  s.argv = {"/bin/sh", "-c", command};
  s.run_is_shell = true;
  return s;
}

// A job under a temporary state directory, started with the cgroup its stage gets.
struct CgroupJob {
  fs::path state;
  JobLayout layout;
  CgroupJob() {
    std::string tmpl = (fs::temp_directory_path() / "vow-cgroup-XXXXXX").string();
    state = ::mkdtemp(tmpl.data());
    layout = job_layout(state.string(), Digest{}, 1);
    fs::create_directories(layout.out_dir);
  }
  ~CgroupJob() { fs::remove_all(state); }
  ExitStatus run(const JobCgroups& cg, const promises::Stage& stage, const std::string& name) {
    promises::Stage wrapped = stage;
    wrapped.memory_bytes = 0;  // what the cgroup applies leaves the wrapper
    wrapped.pids = 0;
    SpawnSpec spec;
    spec.argv = sandboxed_argv("", state.string(), layout, wrapped);
    spec.env = {"PATH=/usr/bin:/bin"};
    spec.cwd = layout.work_dir;
    spec.stdout_path = layout.stdout_path;
    spec.stderr_path = layout.stderr_path;
    spec.status_path = layout.status_path;
    auto procs = cg.make(name, stage, 1);
    REQUIRE_MESSAGE(procs.is_ok(), procs.status().to_string());
    spec.cgroup_procs = *procs;
    auto p = JobProcess::spawn(spec);
    REQUIRE_MESSAGE(p.is_ok(), p.status().to_string());
    return wait_exit(*p);
  }
};

// Removes the job's cgroup, waiting for its killed processes to be reaped (by init).
bool remove_soon(const JobCgroups& cg, const std::string& name) {
  for (int i = 0; i < 250; ++i) {
    if (cg.remove(name)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

}  // namespace

TEST_CASE("/proc/self/cgroup and mountinfo: the agent's cgroup in each hierarchy") {
  CHECK(own_cgroup_v2(kProcCgroup) == "/");
  CHECK(own_cgroup_v2("0::/system.slice/vowd.service\n") == "/system.slice/vowd.service");
  CHECK(own_cgroup_v2("4:memory:/x\n").empty());
  CHECK(own_cgroup_v1(kProcCgroup, "memory") == "/process_api/abc");
  CHECK(own_cgroup_v1(kProcCgroup, "pids") == "/");
  CHECK(own_cgroup_v1("3:cpu,cpuacct:/a\n", "cpu") == "/a");
  CHECK(own_cgroup_v1(kProcCgroup, "blkio").empty());

  CHECK(find_cgroup_mount(kMountinfo, "").mount_point == "/sys/fs/cgroup/unified");
  CHECK(find_cgroup_mount(kMountinfo, "memory").mount_point == "/sys/fs/cgroup/memory");
  CHECK(find_cgroup_mount(kMountinfo, "cpu").mount_point == "/sys/fs/cgroup/cpu");
  CHECK(find_cgroup_mount(kMountinfo, "hugetlb").mount_point.empty());
  // A container that sees only its part of the tree: the mount's root is that part.
  auto m = find_cgroup_mount("40 30 0:40 /docker/c1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n", "");
  CHECK(m.mount_point == "/sys/fs/cgroup");
  CHECK(m.root == "/docker/c1");
}

TEST_CASE(
    "cgroups v2 delegated: the agent moves into a leaf, jobs get memory.max (the whole job "
    "killed at it), pids.max and cpu.max") {
  // A cgroup2 tree laid out in a plain directory, as a delegated service's would be.
  std::string tmpl = (fs::temp_directory_path() / "vow-cgroup2-XXXXXX").string();
  fs::path root = ::mkdtemp(tmpl.data());
  fs::path own = root / "system.slice" / "vowd.service";
  fs::create_directories(own);
  std::ofstream(own / "cgroup.controllers") << "cpuset cpu io memory pids\n";
  std::ofstream(own / "cgroup.subtree_control") << "";
  fs::create_directories(own / "vow-jobs");
  // As the kernel would show it once enabled (the writes land at its start).
  std::ofstream(own / "vow-jobs" / "cgroup.subtree_control") << "                cpu memory pids\n";
  std::string mountinfo = "39 30 0:36 / " + root.string() + " rw - cgroup2 cgroup2 rw\n";
  JobCgroups cg =
      JobCgroups::probe("/var/lib/vow", false, "0::/system.slice/vowd.service\n", mountinfo);
  CHECK(cg.kind() == JobCgroups::Kind::kV2);
  CHECK(cg.limits_memory());
  CHECK(cg.limits_pids());
  CHECK(cg.limits_cpu());
  CHECK(cg.description() ==
        "cgroups v2 (memory, pids, cpu under " + (own / "vow-jobs").string() + ")");
  // The agent wrote itself into the leaf.
  CHECK(slurp(own / "agent" / "cgroup.procs") == std::to_string(::getpid()));

  promises::Stage s = shell("true");
  s.memory_bytes = 64 << 20;
  s.pids = 16;
  s.cpus = 2;
  std::string name = cg.name_for("/var/lib/vow/jobs/abc.1");
  auto procs = cg.make(name, s, 3);
  REQUIRE_MESSAGE(procs.is_ok(), procs.status().to_string());
  fs::path dir = own / "vow-jobs" / name;
  CHECK(*procs == std::vector<std::string>{(dir / "cgroup.procs").string()});
  CHECK(slurp(dir / "memory.max") == std::to_string(64 << 20));
  CHECK(slurp(dir / "pids.max") == "19");
  CHECK(slurp(dir / "cpu.max") == "200000 100000");
  CHECK(slurp(dir / "memory.oom.group") == "1");  // the whole job goes at the limit
  std::ofstream(dir / "memory.events") << "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\n";
  std::ofstream(dir / "pids.events") << "max 0\n";
  LimitCounts c = cg.counts(name, s);
  CHECK(c.memory_by_cgroup);
  CHECK(c.oom_kills == 1);
  CHECK(c.pids_by_cgroup);
  CHECK(c.pids_refused == 0);
  fs::remove_all(root);
}

TEST_CASE("cgroups v2 without the memory controller: v1, or rlimits, saying why") {
  std::string tmpl = (fs::temp_directory_path() / "vow-cgroup2-XXXXXX").string();
  fs::path root = ::mkdtemp(tmpl.data());
  std::ofstream(root / "cgroup.controllers") << "hugetlb\n";
  std::string mountinfo = "39 30 0:36 / " + root.string() + " rw - cgroup2 cgroup2 rw\n";
  JobCgroups cg = JobCgroups::probe("/var/lib/vow", false, "0::/\n", mountinfo);
  CHECK_FALSE(cg.active());
  CHECK(cg.description() == "rlimits: no writable cgroup with the memory controller (cgroup v2 " +
                                root.string() +
                                " has not the memory controller (it has: "
                                "hugetlb); no cgroup v1 memory hierarchy)");
  fs::remove_all(root);
}

TEST_CASE("job_limits = rlimits: no cgroup, and the log says so") {
  JobCgroups cg = JobCgroups::probe("/var/lib/vow", true, kProcCgroup, kMountinfo);
  CHECK_FALSE(cg.active());
  CHECK_FALSE(cg.limits_memory());
  CHECK(cg.description().rfind("rlimits: ", 0) == 0);
  promises::Stage s = shell("true");
  s.memory_bytes = 64 << 20;
  CHECK_FALSE(cg.wants(s));
}

TEST_CASE("no cgroup mount: rlimits, saying why") {
  JobCgroups cg =
      JobCgroups::probe("/var/lib/vow", false, "0::/\n", "30 22 0:27 / /sys rw - sysfs sysfs rw\n");
  CHECK_FALSE(cg.active());
  CHECK(cg.description().find("no writable cgroup with the memory controller") !=
        std::string::npos);
}

TEST_CASE("a job's cgroup is named from its work directory and this agent") {
  JobCgroups a = JobCgroups::probe("/var/lib/a", true);
  JobCgroups b = JobCgroups::probe("/var/lib/b", true);
  std::string work = "/var/lib/a/jobs/0123abcd.3";
  CHECK(a.name_for(work) == a.name_for(work));
  CHECK(a.name_for(work) != b.name_for(work));
  CHECK(a.name_for(work).size() > std::string(".0123abcd.3").size());
  CHECK(a.name_for(work).substr(a.name_for(work).size() - 11) == ".0123abcd.3");
}

TEST_CASE("limits_note names the limit a cgroup counted a hit of, and only that") {
  promises::Stage s = shell("true");
  s.memory_bytes = 64 << 20;
  s.pids = 16;
  LimitCounts c;
  c.memory_by_cgroup = c.pids_by_cgroup = true;
  CHECK(limits_note(s, c).empty());  // the cgroup saw no hit: the limits were not why
  c.oom_kills = 1;
  CHECK(limits_note(s, c) ==
        " (the stage's memory limit is 64 MiB: the job's cgroup reached it, and the kernel "
        "killed 1 of its processes, out of memory)");
  c.oom_kills = 0;
  c.pids_refused = 3;
  CHECK(limits_note(s, c) ==
        " (the stage's pids limit is 16: the job's cgroup refused 3 new process(es) past it)");
  // pids by rlimit (no pids hierarchy), memory by cgroup with no hit.
  c.pids_by_cgroup = false;
  CHECK(limits_note(s, c) ==
        " (the stage's pids limit is 16: a process past it cannot be started)");
}

// On this host's kernel, where the agent may make cgroups (root, a writable hierarchy).
TEST_CASE("a job in its cgroup: killed past memory, refused past pids, and counted") {
  JobCgroups cg = JobCgroups::probe("/tmp/vow-cgroup-test-agent", false);
  if (!cg.active()) {
    MESSAGE("skipped: " << cg.description());
    return;
  }
  MESSAGE("job limits: " << cg.description());
  CgroupJob job;
  const std::string name = cg.name_for(job.layout.work_dir);

  // 200 MiB touched (resident), 64 MiB allowed. RLIMIT_AS is not set: only the cgroup
  // can stop it.
  promises::Stage greedy = shell("python3 -c 'b = bytearray(200 * 1024 * 1024); print(len(b))'");
  greedy.memory_bytes = 64 << 20;
  REQUIRE(cg.wants(greedy));
  ExitStatus e = job.run(cg, greedy, name);
  CHECK_FALSE(e.ok());
  CHECK(cg.exists(name));
  LimitCounts c = cg.counts(name, greedy);
  CHECK(c.memory_by_cgroup);
  CHECK_MESSAGE(c.oom_kills >= 1, slurp(job.layout.stderr_path));
  CHECK(cg.remove(name));
  CHECK_FALSE(cg.exists(name));

  // Under it: the same job fits.
  promises::Stage modest = shell("python3 -c 'b = bytearray(8 * 1024 * 1024)'");
  modest.memory_bytes = 64 << 20;
  CHECK_MESSAGE(job.run(cg, modest, name).ok(), slurp(job.layout.stderr_path));
  CHECK(cg.counts(name, modest).oom_kills == 0);
  CHECK(cg.remove(name));

  if (!cg.limits_pids()) {
    MESSAGE("skipped the pids half: " << cg.description());
    return;
  }
  // 40 background sleeps, 16 allowed: refused even as root (RLIMIT_NPROC would not be).
  promises::Stage forks = shell("i=0; while [ $i -lt 40 ]; do sleep 1 & i=$((i+1)); done; wait");
  forks.pids = 16;
  e = job.run(cg, forks, name);
  CHECK_FALSE(e.ok());
  c = cg.counts(name, forks);
  CHECK(c.pids_by_cgroup);
  CHECK(c.pids_refused >= 1);
  CHECK(limits_note(forks, c).find("pids limit is 16: the job's cgroup refused") !=
        std::string::npos);
  CHECK(remove_soon(cg, name));  // kills the sleeps left behind
  CHECK_FALSE(cg.exists(name));
}

TEST_CASE("sweep removes this agent's empty job cgroups, not the ones kept or busy") {
  JobCgroups cg = JobCgroups::probe("/tmp/vow-cgroup-test-sweep", false);
  if (!cg.active()) {
    MESSAGE("skipped: " << cg.description());
    return;
  }
  promises::Stage s = shell("true");
  s.memory_bytes = 64 << 20;
  auto kept = cg.make(cg.name_for("/x/jobs/kept.1"), s, 1);
  auto left = cg.make(cg.name_for("/x/jobs/left.1"), s, 1);
  REQUIRE(kept.is_ok());
  REQUIRE(left.is_ok());
  cg.sweep({cg.name_for("/x/jobs/kept.1")});
  CHECK(cg.exists(cg.name_for("/x/jobs/kept.1")));
  CHECK_FALSE(cg.exists(cg.name_for("/x/jobs/left.1")));
  CHECK(cg.remove(cg.name_for("/x/jobs/kept.1")));
}

}  // namespace vow::agent
