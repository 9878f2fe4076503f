#include "agent/process.h"

#include <doctest/doctest.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include "agent/process_test_util.h"

namespace fs = std::filesystem;

namespace vow::agent {
namespace {

using testing::slurp;
using testing::wait_exit;

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "vow-process-XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { fs::remove_all(path); }
};

SpawnSpec spec_in(const TempDir& dir, std::vector<std::string> argv) {
  SpawnSpec s;
  s.argv = std::move(argv);
  s.env = {"PATH=/usr/bin:/bin", "VOW_TEST=42"};
  s.cwd = dir.path.string();
  s.stdout_path = (dir.path / "stdout").string();
  s.stderr_path = (dir.path / "stderr").string();
  s.status_path = (dir.path / "status").string();
  return s;
}

// Waits for the process to exit, with a deadline (never a fixed sleep).
bool alive(pid_t pid) { return ::kill(pid, 0) == 0; }

}  // namespace

TEST_CASE("a job's exit code, output and environment are reported") {
  TempDir dir;
  auto p = JobProcess::spawn(
      spec_in(dir, {"sh", "-c", "echo out-$VOW_TEST; echo err >&2; pwd; exit 3"}));
  REQUIRE(p.is_ok());
  auto e = wait_exit(*p);
  CHECK(e.exit_status == 3);
  CHECK_FALSE(e.ok());
  CHECK(slurp(dir.path / "stdout") == "out-42\n" + dir.path.string() + "\n");
  CHECK(slurp(dir.path / "stderr") == "err\n");
  auto st = read_status_file((dir.path / "status").string());
  REQUIRE(st.is_ok());
  REQUIRE(st.value().has_value());
  CHECK(st.value()->exit_status == 3);
}

TEST_CASE("a missing command exits 127") {
  TempDir dir;
  auto p = JobProcess::spawn(spec_in(dir, {"/nonexistent/vow-no-such-command"}));
  REQUIRE(p.is_ok());
  CHECK(wait_exit(*p).exit_status == 127);
}

TEST_CASE("a supervisor that cannot join the job's cgroup runs nothing, exits 125, says why") {
  TempDir dir;
  SpawnSpec spec = spec_in(dir, {"sh", "-c", "echo ran > ran"});
  spec.cgroup_procs = {(dir.path / "no-such-cgroup" / "cgroup.procs").string()};
  auto p = JobProcess::spawn(spec);
  REQUIRE(p.is_ok());
  CHECK(wait_exit(*p).exit_status == 125);
  CHECK_FALSE(fs::exists(dir.path / "ran"));
  CHECK(slurp(dir.path / "stderr").find("vow-job: cannot join the job's cgroup") !=
        std::string::npos);
  auto st = read_status_file((dir.path / "status").string());
  REQUIRE(st.is_ok());
  REQUIRE(st.value().has_value());
  CHECK(st.value()->exit_status == 125);
}

TEST_CASE("a supervisor writes its pid into the job's cgroup before the command runs, and "
          "is re-adopted as any other") {
  // Plain files stand for cgroup.procs: what the supervisor writes is its own pid.
  TempDir dir;
  SpawnSpec spec = spec_in(dir, {"sh", "-c", "while [ ! -e gate ]; do sleep 0.02; done"});
  spec.cgroup_procs = {(dir.path / "a.procs").string(), (dir.path / "b.procs").string()};
  auto p = JobProcess::spawn(spec);
  REQUIRE(p.is_ok());
  for (int i = 0; i < 250 && slurp(dir.path / "b.procs").empty(); ++i) ::usleep(20000);
  CHECK(slurp(dir.path / "a.procs") == std::to_string(p->pid()) + "\n");
  CHECK(slurp(dir.path / "b.procs") == std::to_string(p->pid()) + "\n");
  auto again = JobProcess::adopt(p->pid(), spec.status_path);
  CHECK(again.is_ok());
  std::ofstream(dir.path / "gate") << "";
  CHECK(wait_exit(*p).ok());
}

TEST_CASE("kill_group stops the job and the processes it started") {
  TempDir dir;
  auto p = JobProcess::spawn(spec_in(dir, {"sh", "-c", "sleep 300 & echo $! > child; wait"}));
  REQUIRE(p.is_ok());
  // Wait until the grandchild has written its pid.
  pid_t child = -1;
  for (int i = 0; i < 2000 && child <= 0; ++i) {
    std::string s = slurp(dir.path / "child");
    if (!s.empty() && s.back() == '\n') child = std::atoi(s.c_str());
    if (child <= 0) ::usleep(5000);
  }
  REQUIRE(child > 0);
  CHECK(alive(child));
  p->kill_group(SIGKILL);
  auto e = wait_exit(*p);
  CHECK(e.signaled);
  CHECK_FALSE(e.ok());
  // The grandchild was in the group: it is gone too (reaped by init, maybe not at once).
  CHECK(testing::process_gone(child));
  // No status file: a killed job did not finish.
  auto st = read_status_file((dir.path / "status").string());
  REQUIRE(st.is_ok());
  CHECK_FALSE(st.value().has_value());
}

TEST_CASE("a running job is re-adopted by pid and its exit is seen") {
  TempDir dir;
  fs::path gate = dir.path / "gate";
  auto p = JobProcess::spawn(spec_in(
      dir, {"sh", "-c",
            "touch started; while [ ! -e " + gate.string() + " ]; do sleep 0.01; done; exit 5"}));
  REQUIRE(p.is_ok());
  // As after a restart: the job is well under way when it is adopted.
  for (int i = 0; i < 2000 && !fs::exists(dir.path / "started"); ++i) ::usleep(5000);
  auto adopted = JobProcess::adopt(p->pid(), (dir.path / "status").string());
  INFO(adopted.status().to_string());
  REQUIRE(adopted.is_ok());
  CHECK_FALSE(adopted->poll_exit().has_value());
  // Another job's status path does not match.
  CHECK(JobProcess::adopt(p->pid(), (dir.path / "other").string()).status().code() ==
        StatusCode::kNotFound);
  std::ofstream(gate).put('x');
  CHECK(wait_exit(*adopted).exit_status == 5);
  CHECK(wait_exit(*p).exit_status == 5);
}

TEST_CASE("bubblewrap's status lines: the exit code of the last, none while only started") {
  TempDir dir;
  const std::string path = (dir.path / "status").string();
  std::ofstream(path) << "{ \"child-pid\": 41, \"pid-namespace\": 4026532177 }\n";
  auto started = read_status_file(path);
  REQUIRE(started.is_ok());
  CHECK_FALSE(started->has_value());
  std::ofstream(path, std::ios::app) << "{ \"exit-code\": 137 }\n";
  auto ended = read_status_file(path);
  REQUIRE(ended.is_ok());
  REQUIRE(ended->has_value());
  CHECK((*ended)->exit_status == 137);
  std::ofstream(path) << "{ \"exit-code\": nine }\n";
  CHECK(read_status_file(path).status().code() == StatusCode::kCorrupt);
}

TEST_CASE("a status file that is not 'exit N' is reported corrupt") {
  TempDir dir;
  std::ofstream(dir.path / "status") << "garbage";
  CHECK(read_status_file((dir.path / "status").string()).status().code() == StatusCode::kCorrupt);
}

}  // namespace vow::agent
