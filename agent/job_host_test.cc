#include "agent/job_host.h"

#include <doctest/doctest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "agent/process_test_util.h"
#include "agent/sandbox.h"

namespace fs = std::filesystem;

namespace vow::agent {
namespace {

using testing::slurp;

struct TempDir {
  fs::path path;
  explicit TempDir(const fs::path& in = fs::temp_directory_path()) {
    std::string tmpl = (in / "vow-host-XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { fs::remove_all(path); }
};

// A job's files in DIR; its environment names DIR as its work directory, as a job's does.
SpawnSpec spec_in(const fs::path& dir, std::vector<std::string> argv) {
  SpawnSpec s;
  s.argv = std::move(argv);
  s.env = {"PATH=/usr/bin:/bin", "VOW_TEST=42", "VOW_WORKDIR=" + dir.string()};
  s.cwd = dir.string();
  s.stdout_path = (dir / "stdout").string();
  s.stderr_path = (dir / "stderr").string();
  s.status_path = (dir / "status").string();
  return s;
}

// The test program is its own job host (agent/test_main.cc), as vowd is.
std::unique_ptr<JobHost> start_host() {
  auto h = JobHost::start("/proc/self/exe");
  REQUIRE(h.is_ok());
  return std::move(h).value();
}

// Waits, as the agent's loop does, for the host to say the job ended; fails after 30 s.
ExitStatus wait_hosted(JobHost& host, JobProcess& p) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    struct pollfd fd {
      host.alive() ? host.fd() : p.pidfd(), POLLIN, 0
    };
    ::poll(&fd, 1, 100);
    for (const auto& e : host.take_exits()) {
      if (e.pid == p.pid()) p.host_ended(e.alone);
    }
    if (!host.alive()) p.watch_pidfd();
    if (auto e = p.poll_exit()) return *e;
  }
  FAIL("job did not end in time");
  return {};
}

std::string wait_for_file(const fs::path& p) {
  for (int i = 0; i < 3000; ++i) {
    std::string s = slurp(p);
    if (!s.empty() && s.back() == '\n') return s;
    ::usleep(5000);
  }
  return "";
}

// The host is this process's child: true once it has exited (reaped here).
bool host_exits(pid_t host) {
  for (int i = 0; i < 3000; ++i) {
    if (::waitpid(host, nullptr, WNOHANG) == host || ::kill(host, 0) != 0) return true;
    ::usleep(5000);
  }
  return false;
}

}  // namespace

TEST_CASE("the job host runs a job as one process: exit code, output, environment, status") {
  TempDir dir;
  auto host = start_host();
  auto pid = host->spawn(spec_in(
      dir.path, {"sh", "-c", "echo out-$VOW_TEST; echo err >&2; pwd; echo $PPID > ppid; exit 3"}));
  REQUIRE(pid.is_ok());
  auto p = JobProcess::hosted(*pid, (dir.path / "status").string());
  auto e = wait_hosted(*host, p);
  CHECK(e.exit_status == 3);
  CHECK_FALSE(e.signaled);
  CHECK(slurp(dir.path / "stdout") == "out-42\n" + dir.path.string() + "\n");
  CHECK(slurp(dir.path / "stderr") == "err\n");
  // No shell between the host and the command: the command's parent is the host.
  CHECK(slurp(dir.path / "ppid") == std::to_string(host->pid()) + "\n");
  CHECK(slurp(dir.path / "status") == "exit 3\n");
}

TEST_CASE("the job host: logs left with something in them are emptied before the job writes") {
  // A spare directory's logs are empty; one that is not (none should be) must not leave
  // its tail after the job's own, shorter, output.
  TempDir dir;
  std::ofstream(dir.path / "stdout") << "an earlier run's much longer output\n";
  std::ofstream(dir.path / "stderr") << "";
  auto host = start_host();
  auto pid = host->spawn(spec_in(dir.path, {"sh", "-c", "echo short; echo e >&2"}));
  REQUIRE(pid.is_ok());
  auto p = JobProcess::hosted(*pid, (dir.path / "status").string());
  auto e = wait_hosted(*host, p);
  CHECK(e.exit_status == 0);
  CHECK(slurp(dir.path / "stdout") == "short\n");
  CHECK(slurp(dir.path / "stderr") == "e\n");
}

TEST_CASE("a hosted job starts with no signal ignored or blocked, and /dev/null as stdin") {
  // An agent that ignores a signal (ZeroMQ's SIGPIPE, an operator's nohup) must not pass
  // that on to its jobs: an exec keeps SIG_IGN. Nor what the host blocks for itself.
  struct sigaction ign {}, old_pipe {}, old_usr1 {};
  ign.sa_handler = SIG_IGN;
  ::sigaction(SIGPIPE, &ign, &old_pipe);
  ::sigaction(SIGUSR1, &ign, &old_usr1);
  auto host = start_host();
  ::sigaction(SIGPIPE, &old_pipe, nullptr);
  ::sigaction(SIGUSR1, &old_usr1, nullptr);
  TempDir dir;
  // cat reads its own status: what it was given, with no shell in between.
  auto pid = host->spawn(spec_in(dir.path, {"cat", "/proc/self/status"}));
  REQUIRE(pid.is_ok());
  auto p = JobProcess::hosted(*pid, (dir.path / "status").string());
  CHECK(wait_hosted(*host, p).exit_status == 0);
  const std::string status = slurp(dir.path / "stdout");
  INFO(status);
  // Signals 1-31 (32 and 33 are the C library's own, which posix_spawn sets ignored in
  // every process it starts, the host included; a program's C library takes them over).
  auto mask = [&](const std::string& field) -> unsigned long long {
    auto at = status.find("\n" + field + ":\t");
    REQUIRE(at != std::string::npos);
    return std::stoull(status.substr(at + field.size() + 3, 16), nullptr, 16) & 0x7fffffffULL;
  };
  CHECK(mask("SigIgn") == 0);
  CHECK(mask("SigBlk") == 0);
  TempDir second;
  pid = host->spawn(spec_in(second.path, {"readlink", "/proc/self/fd/0"}));
  REQUIRE(pid.is_ok());
  auto q = JobProcess::hosted(*pid, (second.path / "status").string());
  CHECK(wait_hosted(*host, q).exit_status == 0);
  CHECK(slurp(second.path / "stdout") == "/dev/null\n");
}

TEST_CASE("the job host says whether a job ended alone or left a process running") {
  auto host = start_host();
  auto end_of = [&](JobHost& h, pid_t pid) {
    for (int i = 0; i < 3000; ++i) {
      struct pollfd fd {
        h.fd(), POLLIN, 0
      };
      ::poll(&fd, 1, 10);
      for (const auto& e : h.take_exits()) {
        if (e.pid == pid) return e;
      }
    }
    FAIL("no end announced");
    return JobHost::Exit{};
  };
  TempDir a;
  auto pid = host->spawn(spec_in(a.path, {"sh", "-c", "echo done"}));
  REQUIRE(pid.is_ok());
  CHECK(end_of(*host, *pid).alone);
  // Its background sleep outlives it: the host (a subreaper) has it as a child.
  TempDir b;
  pid = host->spawn(spec_in(b.path, {"sh", "-c", "sleep 30 & echo $! > sleeper"}));
  REQUIRE(pid.is_ok());
  CHECK_FALSE(end_of(*host, *pid).alone);
  const pid_t sleeper = static_cast<pid_t>(std::stol(slurp(b.path / "sleeper")));
  ::kill(sleeper, SIGKILL);
  // Once it is gone (reaped by the host), a job ends alone again.
  for (int i = 0; i < 3000 && ::kill(sleeper, 0) == 0; ++i) ::usleep(2000);
  TempDir c;
  pid = host->spawn(spec_in(c.path, {"true"}));
  REQUIRE(pid.is_ok());
  CHECK(end_of(*host, *pid).alone);
}

TEST_CASE("the job host: a missing command exits 127 and says so on the job's stderr") {
  TempDir dir;
  auto host = start_host();
  auto pid = host->spawn(spec_in(dir.path, {"vow-no-such-command"}));
  REQUIRE(pid.is_ok());
  auto p = JobProcess::hosted(*pid, (dir.path / "status").string());
  CHECK(wait_hosted(*host, p).exit_status == 127);
  CHECK(slurp(dir.path / "stderr") == "vow-job: vow-no-such-command: not found\n");
  // The job's PATH is searched, not the host's.
  fs::create_directories(dir.path / "bin");
  std::ofstream(dir.path / "bin" / "hello") << "#!/bin/sh\necho hello from $0\n";
  fs::permissions(dir.path / "bin" / "hello", fs::perms::owner_all);
  SpawnSpec s = spec_in(dir.path, {"hello"});
  s.env[0] = "PATH=" + (dir.path / "bin").string();
  auto found = host->spawn(s);
  REQUIRE(found.is_ok());
  auto q = JobProcess::hosted(*found, s.status_path);
  CHECK(wait_hosted(*host, q).exit_status == 0);
  CHECK(slurp(dir.path / "stdout") == "hello from " + (dir.path / "bin" / "hello").string() + "\n");
}

TEST_CASE("the job host joins the job's cgroup before the command runs, or runs nothing") {
  // Plain files stand for cgroup.procs: what the job writes there is its own pid.
  TempDir dir;
  auto host = start_host();
  SpawnSpec spec = spec_in(dir.path, {"sh", "-c", "echo $$ > me"});
  spec.cgroup_procs = {(dir.path / "a.procs").string(), (dir.path / "b.procs").string()};
  for (const auto& f : spec.cgroup_procs) std::ofstream{f};  // a cgroup's file is there
  auto pid = host->spawn(spec);
  REQUIRE(pid.is_ok());
  auto p = JobProcess::hosted(*pid, spec.status_path);
  CHECK(wait_hosted(*host, p).ok());
  CHECK(slurp(dir.path / "a.procs") == std::to_string(*pid));
  CHECK(slurp(dir.path / "b.procs") == std::to_string(*pid));
  CHECK(slurp(dir.path / "me") == std::to_string(*pid) + "\n");

  SpawnSpec bad = spec_in(dir.path, {"sh", "-c", "echo ran > ran"});
  bad.cgroup_procs = {(dir.path / "no-such-cgroup" / "cgroup.procs").string()};
  auto q_pid = host->spawn(bad);
  REQUIRE(q_pid.is_ok());
  auto q = JobProcess::hosted(*q_pid, bad.status_path);
  CHECK(wait_hosted(*host, q).exit_status == 125);
  CHECK_FALSE(fs::exists(dir.path / "ran"));
  CHECK(slurp(dir.path / "stderr").find("vow-job: cannot join the job's cgroup") !=
        std::string::npos);
}

TEST_CASE("a hosted job killed at once is killed with what it started, and recorded so") {
  TempDir dir;
  auto host = start_host();
  auto pid = host->spawn(spec_in(dir.path, {"sh", "-c", "sleep 300 & echo $! > child; wait"}));
  REQUIRE(pid.is_ok());
  auto p = JobProcess::hosted(*pid, (dir.path / "status").string());
  pid_t child = std::atoi(wait_for_file(dir.path / "child").c_str());
  REQUIRE(child > 0);
  p.kill_group(SIGKILL);
  auto e = wait_hosted(*host, p);
  CHECK(e.signaled);
  CHECK(e.exit_status == 128 + SIGKILL);
  CHECK(slurp(dir.path / "status") == "killed 9\n");
  CHECK(testing::process_gone(child));

  // Killed the moment the pid is known: the job's session exists by then.
  TempDir other;
  auto quick = host->spawn(spec_in(other.path, {"sleep", "300"}));
  REQUIRE(quick.is_ok());
  auto q = JobProcess::hosted(*quick, (other.path / "status").string());
  q.kill_group(SIGKILL);
  CHECK(wait_hosted(*host, q).exit_status == 128 + SIGKILL);
}

TEST_CASE("the job host outlives its agent: the job is adopted, its status written, and the "
          "host exits after it") {
  // Bare and in the sandbox, a few times each: the adopting agent sees the job end (its
  // pidfd) as the host writes the status, and must wait for the host to have written it.
  const std::string bwrap = find_bwrap();
  for (bool sandboxed : {false, true}) {
    for (int round = 0; round < 5; ++round) {
      CAPTURE(sandboxed);
      TempDir state("/var/tmp");
      const fs::path dir = state.path / "jobs" / "gated.1";
      fs::create_directories(dir / "in");
      std::unique_ptr<JobHost> host;
      if (!sandboxed) {
        host = start_host();
      } else {
        if (bwrap.empty() || !probe_bwrap(bwrap).is_ok()) break;  // no sandbox here
        auto h = JobHost::start("/proc/self/exe", bwrap, state.path.string());
        if (!h.is_ok()) break;
        host = std::move(h).value();
      }
      const pid_t host_pid = host->pid();
      auto pid = host->spawn(spec_in(
          dir, {"sh", "-c", "touch started; while [ ! -e gate ]; do sleep 0.01; done; exit 5"}));
      REQUIRE(pid.is_ok());
      for (int i = 0; i < 3000 && !fs::exists(dir / "started"); ++i) ::usleep(2000);
      host.reset();  // the agent is gone: its end of the socket closed
      // Another agent takes the job over by its pid: the process is the job's own
      // command, known by the work directory its environment names; not the job of
      // another directory.
      TempDir elsewhere;
      CHECK(JobProcess::adopt(*pid, (elsewhere.path / "status").string()).status().code() ==
            StatusCode::kNotFound);
      auto adopted = JobProcess::adopt(*pid, (dir / "status").string());
      REQUIRE(adopted.is_ok());
      CHECK(::kill(host_pid, 0) == 0);  // still there, for the job
      std::ofstream(dir / "gate") << "";
      auto e = testing::wait_exit(*adopted);
      CHECK(e.exit_status == 5);  // from the status file the host wrote
      CHECK_FALSE(e.signaled);
      CHECK(host_exits(host_pid));
    }
  }
}

TEST_CASE("a job whose host is killed is still seen to end") {
  TempDir dir;
  auto host = start_host();
  auto pid = host->spawn(
      spec_in(dir.path, {"sh", "-c", "while [ ! -e gate ]; do sleep 0.01; done; exit 5"}));
  REQUIRE(pid.is_ok());
  auto p = JobProcess::hosted(*pid, (dir.path / "status").string());
  ::kill(host->pid(), SIGKILL);
  for (int i = 0; i < 3000 && host->alive(); ++i) {
    (void)host->take_exits();
    ::usleep(2000);
  }
  CHECK_FALSE(host->alive());
  CHECK_FALSE(p.poll_exit().has_value());  // still running
  std::ofstream(dir.path / "gate") << "";
  // Nobody wrote its status: it ended, its code unknown, as a killed job.
  auto e = wait_hosted(*host, p);
  CHECK(e.signaled);
  CHECK_FALSE(fs::exists(dir.path / "status"));
  // A host gone takes no more jobs; the agent starts another.
  CHECK(host->spawn(spec_in(dir.path, {"true"})).status().code() == StatusCode::kUnavailable);
}

}  // namespace vow::agent

namespace vow::agent {

TEST_CASE("the sandboxed job host: one sandbox for the agent, a view of its own for each job") {
  const std::string bwrap = find_bwrap();
  if (bwrap.empty() || !probe_bwrap(bwrap).is_ok()) return;  // no sandbox here
  TempDir state("/var/tmp");  // not under /tmp, which each job has of its own
  fs::create_directories(state.path / "jobs");
  std::ofstream(state.path / "key") << "the agent's secret\n";
  auto job_dir = [&](const std::string& name) {
    fs::path d = state.path / "jobs" / name;
    fs::create_directories(d / "in");
    fs::create_directories(d / "out");
    std::ofstream(d / "in" / "data") << "input\n";
    return d;
  };
  fs::path other = job_dir("other.1");
  fs::path mine = job_dir("mine.1");
  auto host = JobHost::start("/proc/self/exe", bwrap, state.path.string());
  if (!host.is_ok() && host.status().code() == StatusCode::kUnavailable) {
    // Where bwrap works, the one reason that is this program's own: it could not be run
    // inside the sandbox (under /tmp, covered by the sandbox's tmpfs, before the bind).
    CHECK_MESSAGE(host.status().message().find("execvp") == std::string::npos,
                  host.status().message());
    MESSAGE("no sandboxed job host here: " << host.status().message());
    return;
  }
  REQUIRE(host.is_ok());
  // What the job sees, one line each; what it can do to its own directory.
  const std::string probe =
      "echo pid=$$; "
      "test -e " + (state.path / "key").string() + " && echo key=visible || echo key=hidden; "
      "test -e " + other.string() + " && echo other=visible || echo other=hidden; "
      "echo data=$(cat in/data); "
      "{ echo x > in/new; } 2> /dev/null && echo in=writable || echo in=read-only; "
      "echo made > out/o && echo out=writable; "
      "echo tmp=$(ls -A /tmp | wc -l); touch /tmp/mine; "
      "test -e /proc/" + std::to_string(::getpid()) + " && echo agent=visible || "
      "echo agent=hidden; "
      "grep CapEff /proc/self/status | tr -d '\\t'; "
      "grep NoNewPrivs /proc/self/status | tr -d '\\t'; exit 7";
  auto pid = (*host)->spawn(spec_in(mine, {"/bin/sh", "-c", probe}));
  REQUIRE(pid.is_ok());
  auto p = JobProcess::hosted(*pid, (mine / "status").string());
  auto e = wait_hosted(**host, p);
  CHECK(e.exit_status == 7);
  CHECK(slurp(mine / "stderr") == "");
  CHECK(slurp(mine / "stdout") ==
        "pid=1\nkey=hidden\nother=hidden\ndata=input\nin=read-only\nout=writable\ntmp=0\n"
        "agent=hidden\nCapEff:0000000000000000\nNoNewPrivs:1\n");
  CHECK(slurp(mine / "out" / "o") == "made\n");
  // Its /tmp was its own: the next job's is empty again.
  auto again = (*host)->spawn(spec_in(other, {"/bin/sh", "-c", "ls -A /tmp | wc -l"}));
  REQUIRE(again.is_ok());
  auto q = JobProcess::hosted(*again, (other / "status").string());
  CHECK(wait_hosted(**host, q).ok());
  CHECK(slurp(other / "stdout") == "0\n");
  // A directory that is not one of this agent's jobs' is refused.
  TempDir elsewhere;
  CHECK_FALSE((*host)->spawn(spec_in(elsewhere.path, {"true"})).is_ok());
  for (const char* name : {"..", ".", "mine.1/in"}) {
    CHECK_FALSE((*host)->spawn(spec_in(state.path / "jobs" / name, {"true"})).is_ok());
  }
}

}  // namespace vow::agent

namespace vow::agent {

TEST_CASE("a job host without an agent's socket on fd 3 does not start (it would wait forever)") {
  char self[4096];
  ssize_t len = ::readlink("/proc/self/exe", self, sizeof self - 1);
  REQUIRE(len > 0);
  const std::string program(self, static_cast<std::size_t>(len));
  // fd 3 a file, then no fd 3 at all: exit status 2 at once, not a host waiting (it
  // ignores SIGTERM, so a waiting one is killed).
  for (const std::string& fd3 : {std::string(" 3< /dev/null"), std::string(" 3<&-")}) {
    int st = std::system(("timeout -s KILL 10 '" + program + "' job-host" + fd3).c_str());
    REQUIRE(WIFEXITED(st));
    CHECK(WEXITSTATUS(st) == 2);
  }
}

}  // namespace vow::agent
