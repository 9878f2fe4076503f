#include "agent/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string_view>

namespace vow::agent {
using namespace std::string_view_literals;
namespace {

// The supervisor: runs "$@", then records its exit status. $1 is the status path (so
// /proc/PID/cmdline names it, for adoption). The file is written with a shell builtin,
// not through a temporary file and mv(1), which cost one more process per job (a third
// of a short job's cost, BENCHMARKS.md): it is read only once the supervisor has
// exited, and one killed while writing leaves a file that reads as corrupt, which is
// taken as killed (poll_exit), as is a missing file.
constexpr const char* kSupervisor =
    "st=$1; shift; \"$@\"; s=$?; printf 'exit %d\\n' \"$s\" > \"$st\"; exit \"$s\"";
// With a cgroup (agent/job_cgroup.h): $2 is how many cgroup.procs files follow, which the
// supervisor joins first, so that the command and all it starts are in the job's
// cgroup from their first instruction. Done by the supervisor itself rather than by
// vowd after the fork: nothing runs outside the cgroup, whatever happens to vowd.
constexpr const char* kSupervisorInCgroup =
    "st=$1; n=$2; shift 2; while [ \"$n\" -gt 0 ]; do "
    "echo $$ > \"$1\" || { echo \"vow-job: cannot join the job's cgroup ($1)\" >&2; "
    "printf 'exit 125\\n' > \"$st\"; exit 125; }; shift; n=$((n-1)); done; "
    "\"$@\"; s=$?; printf 'exit %d\\n' \"$s\" > \"$st\"; exit \"$s\"";
constexpr const char* kSupervisorName = "vow-job";

std::string errno_text(int err) { return std::strerror(err); }

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

// Whether `pid` is still there (a zombie, here) with a job host (agent/job_host.h) for
// its parent.
bool reaped_by_job_host(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  auto close = line.rfind(')');
  if (close == std::string::npos) return false;
  std::istringstream rest(line.substr(close + 1));
  char state = 0;
  long ppid = 0;
  if (!(rest >> state >> ppid) || ppid <= 1) return false;
  std::ifstream in("/proc/" + std::to_string(ppid) + "/cmdline", std::ios::binary);
  std::stringstream buf;
  buf << in.rdbuf();
  // `vowd job-host` or `vowd job-host --sandbox STATE`: its first argument.
  const std::string cmdline = buf.str();
  const auto first = cmdline.find('\0');
  return first != std::string::npos &&
         cmdline.compare(first, 10, "\0job-host\0"sv) == 0;
}

}  // namespace

Result<std::optional<ExitStatus>> read_status_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    if (errno == ENOENT) return std::optional<ExitStatus>{};
    return Status::io("cannot read " + path + ": " + errno_text(errno));
  }
  if (in.peek() == std::ifstream::traits_type::eof()) {
    // Empty: a recycled work directory's status before its run ended (LocalExecutor).
    return std::optional<ExitStatus>{};
  }
  if (in.peek() == '{') {
    // bubblewrap's: `{ "child-pid": ... }` when the command starts, `{ "exit-code": N }`
    // when it ends (N is 128 + signal for a command killed by one, as a shell says).
    std::string line;
    std::optional<ExitStatus> out;
    while (std::getline(in, line)) {
      static constexpr std::string_view kKey = "\"exit-code\":";
      auto at = line.find(kKey);
      if (at == std::string::npos) continue;
      int code = -1;
      std::istringstream num(line.substr(at + kKey.size()));
      num >> code;
      if (!num || code < 0 || code > 255) {
        return Status::corrupt("status file " + path + " has no exit code in '" + line + "'");
      }
      out = ExitStatus{code, false};
    }
    return out;
  }
  std::string word;
  int code = -1;
  in >> word >> code;
  if (word == "killed" && code > 0 && code < 128) {
    // The job host's, for a command a signal ended (agent/job_host.h).
    return std::optional<ExitStatus>(ExitStatus{128 + code, true});
  }
  if (word != "exit" || code < 0 || code > 255) {
    return Status::corrupt("status file " + path + " is not 'exit N' or 'killed SIGNAL'");
  }
  return std::optional<ExitStatus>(ExitStatus{code, false});
}

std::vector<char*> exec_strings(std::vector<std::string>& v) {
  std::vector<char*> out;
  out.reserve(v.size() + 1);
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

void set_own_session(posix_spawnattr_t& attr) {
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
}

Result<JobProcess> JobProcess::spawn(const SpawnSpec& spec) {
  if (spec.argv.empty()) return Status::invalid("empty command");
  const bool bwrap = spec.bwrap_supervises && spec.cgroup_procs.empty();
  std::vector<std::string> argv;
  if (bwrap) {
    argv = spec.argv;
  } else {
    argv = {"/bin/sh", "-c", spec.cgroup_procs.empty() ? kSupervisor : kSupervisorInCgroup,
            kSupervisorName, spec.status_path};
    if (!spec.cgroup_procs.empty()) {
      argv.push_back(std::to_string(spec.cgroup_procs.size()));
      argv.insert(argv.end(), spec.cgroup_procs.begin(), spec.cgroup_procs.end());
    }
    argv.insert(argv.end(), spec.argv.begin(), spec.argv.end());
  }
  std::vector<std::string> env = spec.env;
  auto c_argv = exec_strings(argv);
  auto c_env = exec_strings(env);

  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, spec.stdout_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  posix_spawn_file_actions_addopen(&fa, 2, spec.stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  if (bwrap) {
    posix_spawn_file_actions_addopen(&fa, 3, spec.status_path.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
  }
  posix_spawn_file_actions_addchdir_np(&fa, spec.cwd.c_str());
  set_own_session(attr);

  pid_t pid = -1;
  int rc = posix_spawn(&pid, argv[0].c_str(), &fa, &attr, c_argv.data(), c_env.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    return Status::io("cannot start job in " + spec.cwd + ": " + errno_text(rc));
  }
  int fd = pidfd_open(pid);
  if (fd < 0) {
    int err = errno;
    ::kill(-pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return Status::io("pidfd_open: " + errno_text(err) + " (vowd needs Linux >= 5.3)");
  }
  JobProcess p(pid, fd, true, spec.status_path);
  p.bwrap_ = bwrap;
  return p;
}

Result<JobProcess> JobProcess::adopt(pid_t pid, const std::string& status_path) {
  if (pid <= 0) return Status::not_found("no process");
  // While bwrap sets up a sandbox its command line reads empty for a few milliseconds: a
  // restart that soon after a start asks again rather than take the job for gone.
  std::string cmdline;
  bool read = false;
  for (int tries = 0; tries < 50; ++tries) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
    std::stringstream buf;
    buf << in.rdbuf();
    cmdline = buf.str();
    read = static_cast<bool>(in);
    if (!cmdline.empty() || ::kill(pid, 0) != 0) break;
    ::usleep(4000);
  }
  // argv: /bin/sh -c SCRIPT vow-job STATUS_PATH ..., or bwrap supervising: its status
  // fd option, and --chdir to the work directory that holds STATUS_PATH.
  std::string expected = std::string(kSupervisorName) + '\0' + status_path + '\0';
  const auto slash = status_path.rfind('/');
  const std::string chdir = std::string("\0--chdir\0"sv) +
                            status_path.substr(0, slash == std::string::npos ? 0 : slash) +
                            '\0';
  const bool bwrap = cmdline.find("\0--json-status-fd\0"sv) != std::string::npos &&
                     cmdline.find(chdir) != std::string::npos;
  // Started by the job host: the command itself, whose environment names its work
  // directory (the host passes the job's environment whole).
  auto hosted = [&] {
    std::ifstream in("/proc/" + std::to_string(pid) + "/environ", std::ios::binary);
    std::stringstream buf;
    buf << in.rdbuf();
    const std::string env = '\0' + buf.str();
    const std::string dir = status_path.substr(0, slash == std::string::npos ? 0 : slash);
    return env.find(std::string("\0VOW_WORKDIR="sv) + dir + '\0') != std::string::npos;
  };
  if (!read ||
      (!bwrap && cmdline.find(expected) == std::string::npos && !hosted())) {
    return Status::not_found("process " + std::to_string(pid) + " is not the job of " +
                             status_path);
  }
  int fd = pidfd_open(pid);
  if (fd < 0) return Status::not_found("process " + std::to_string(pid) + " is gone");
  return JobProcess(pid, fd, false, status_path);
}

JobProcess JobProcess::hosted(pid_t pid, const std::string& status_path) {
  // -1 when it has already ended (and been reaped): the host's word comes all the same.
  JobProcess p(pid, pidfd_open(pid), false, status_path);
  p.hosted_ = true;
  return p;
}

JobProcess::JobProcess(pid_t pid, int pidfd, bool is_child, std::string status_path)
    : pid_(pid), pidfd_(pidfd), is_child_(is_child), status_path_(std::move(status_path)) {}

JobProcess::JobProcess(JobProcess&& o) noexcept
    : pid_(o.pid_),
      pidfd_(o.pidfd_),
      is_child_(o.is_child_),
      status_path_(std::move(o.status_path_)),
      exit_(o.exit_),
      bwrap_(o.bwrap_),
      hosted_(o.hosted_),
      host_ended_(o.host_ended_),
      ended_alone_(o.ended_alone_) {
  o.pidfd_ = -1;
  o.pid_ = -1;
}

JobProcess& JobProcess::operator=(JobProcess&& o) noexcept {
  if (this != &o) {
    close_fd();
    pid_ = o.pid_;
    pidfd_ = o.pidfd_;
    is_child_ = o.is_child_;
    status_path_ = std::move(o.status_path_);
    exit_ = o.exit_;
    bwrap_ = o.bwrap_;
    hosted_ = o.hosted_;
    host_ended_ = o.host_ended_;
    ended_alone_ = o.ended_alone_;
    o.pidfd_ = -1;
    o.pid_ = -1;
  }
  return *this;
}

JobProcess::~JobProcess() { close_fd(); }

void JobProcess::close_fd() {
  if (pidfd_ >= 0) ::close(pidfd_);
  pidfd_ = -1;
}

void JobProcess::kill_group(int signal) const {
  if (pid_ > 0 && !exit_) ::kill(-pid_, signal);
}

std::optional<ExitStatus> JobProcess::poll_exit() {
  if (exit_) return exit_;
  if (hosted_ && !host_ended_) return std::nullopt;
  std::optional<ExitStatus> from_wait;
  if (is_child_) {
    int wstatus = 0;
    pid_t r = ::waitpid(pid_, &wstatus, WNOHANG);
    if (r == 0) return std::nullopt;
    if (r == pid_) {
      if (WIFSIGNALED(wstatus)) {
        from_wait = ExitStatus{128 + WTERMSIG(wstatus), true};
      } else {
        from_wait = ExitStatus{WEXITSTATUS(wstatus), false};
      }
    }
  } else if (!host_ended_) {
    // Not our child (adopted after a restart, or its job host is gone): its pidfd turns
    // readable when it exits.
    struct pollfd p {
      pidfd_, POLLIN, 0
    };
    if (pidfd_ >= 0 && ::poll(&p, 1, 0) == 0) return std::nullopt;
    // Ended, but not reaped by a job host yet, which writes the status file before it
    // reaps (a supervisor shell writes it before it exits): wait for the reaping.
    auto file = read_status_file(status_path_);
    if (!(file.is_ok() && file.value().has_value()) && reaped_by_job_host(pid_)) {
      return std::nullopt;
    }
  }
  auto file = read_status_file(status_path_);
  if (file.is_ok() && file.value().has_value()) {
    exit_ = *file.value();
  } else if (from_wait && !from_wait->signaled && bwrap_) {
    // bwrap ended without the command's exit code: it could not start it (it says why
    // on stderr, and exits 1).
    exit_ = *from_wait;
  } else if (from_wait) {
    // The supervisor died before writing a status: it was killed (cancel, timeout).
    exit_ = from_wait->signaled ? *from_wait : ExitStatus{128 + SIGKILL, true};
  } else {
    exit_ = ExitStatus{128 + SIGKILL, true};
  }
  return exit_;
}

}  // namespace vow::agent
