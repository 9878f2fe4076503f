#include "agent/job_host.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <string_view>

extern char** environ;

namespace vow::agent {
namespace {

// Messages are NUL-separated fields, one datagram each (SOCK_SEQPACKET):
//   agent -> host  spawn CWD STDOUT STDERR STATUS NCGROUP CGROUP... NARGV ARGV... ENV...
//   host -> agent  started PID | failed MESSAGE | exit PID
constexpr std::size_t kMaxMessage = 1 << 20;
constexpr int kReplyTimeoutMs = 30'000;

std::vector<std::string> split_fields(std::string_view msg) {
  std::vector<std::string> out;
  std::size_t at = 0;
  while (at < msg.size()) {
    auto end = msg.find('\0', at);
    if (end == std::string_view::npos) end = msg.size();
    out.emplace_back(msg.substr(at, end - at));
    at = end + 1;
  }
  return out;
}

void add_field(std::string& msg, std::string_view field) {
  msg.append(field);
  msg.push_back('\0');
}

std::vector<char*> c_strings(std::vector<std::string>& v) {
  std::vector<char*> out;
  out.reserve(v.size() + 1);
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// --- the host's side -------------------------------------------------------------

// Writes all of `text` to `fd`, ignoring failures (a child reporting on its stderr).
void say(int fd, std::string_view text) {
  while (!text.empty()) {
    ssize_t n = ::write(fd, text.data(), text.size());
    if (n <= 0) return;
    text.remove_prefix(static_cast<std::size_t>(n));
  }
}

// argv[0] as the shell finds it: as given when it has a slash, else the first
// executable file of that name on the job's PATH; as given when none is (the exec then
// fails with ENOENT and the job exits 127).
std::string find_program(const std::string& name, const std::vector<std::string>& env) {
  if (name.find('/') != std::string::npos) return name;
  std::string path = "/usr/local/bin:/usr/bin:/bin";
  for (const auto& e : env) {
    if (e.rfind("PATH=", 0) == 0) path = e.substr(5);
  }
  std::size_t at = 0;
  while (at <= path.size()) {
    auto end = path.find(':', at);
    if (end == std::string::npos) end = path.size();
    std::string dir = path.substr(at, end - at);
    std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    struct stat st {};
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        ::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
    at = end + 1;
  }
  return name;
}

struct Request {
  std::string cwd, out, err, status;
  std::vector<std::string> cgroups, argv, env;
};

bool parse_request(const std::vector<std::string>& f, Request& r) {
  if (f.size() < 7 || f[0] != "spawn") return false;
  r.cwd = f[1];
  r.out = f[2];
  r.err = f[3];
  r.status = f[4];
  std::size_t at = 5;
  auto count = [&](std::size_t& n) {
    if (at >= f.size()) return false;
    char* end = nullptr;
    n = std::strtoul(f[at].c_str(), &end, 10);
    ++at;
    return end != nullptr && *end == '\0' && n <= f.size();
  };
  std::size_t n = 0;
  if (!count(n) || at + n > f.size()) return false;
  r.cgroups.assign(f.begin() + static_cast<long>(at), f.begin() + static_cast<long>(at + n));
  at += n;
  if (!count(n) || n == 0 || at + n > f.size()) return false;
  r.argv.assign(f.begin() + static_cast<long>(at), f.begin() + static_cast<long>(at + n));
  at += n;
  r.env.assign(f.begin() + static_cast<long>(at), f.end());
  return true;
}

// What the child needs between vfork and exec, made before: it shares the host's memory
// until it execs, so it only makes system calls (no allocation) and writes what is here.
struct Prepared {
  std::string program;
  std::vector<char*> argv, envp;
  std::vector<std::string> cgroup_failed;  // the line for each cgroup it cannot join
  std::string cannot_enter, not_found, cannot_exec;
};

// The child, between vfork and exec. Its failures are the job's (an exit status and a
// line on its stderr), as the supervisor shell's were.
[[noreturn]] void become_job(const Request& r, const Prepared& p) {
  sigset_t none;
  sigemptyset(&none);
  // Dispositions are the child's own (vfork shares memory, not signal handlers).
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGCHLD}) ::signal(sig, SIG_DFL);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  int in = ::open("/dev/null", O_RDONLY);
  int out = ::open(r.out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  int err = ::open(r.err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (in < 0 || out < 0 || err < 0) ::_exit(126);
  ::dup2(in, 0);
  ::dup2(out, 1);
  ::dup2(err, 2);
  for (int fd : {in, out, err}) {
    if (fd > 2) ::close(fd);
  }
  ::setsid();
  char pid[16];  // its pid in decimal, made without allocating
  std::size_t len = 0;
  for (unsigned long v = static_cast<unsigned long>(::getpid()); v > 0 || len == 0; v /= 10) {
    pid[sizeof pid - 1 - len++] = static_cast<char>('0' + v % 10);
  }
  const std::string_view me(pid + sizeof pid - len, len);
  for (std::size_t i = 0; i < r.cgroups.size(); ++i) {
    int fd = ::open(r.cgroups[i].c_str(), O_WRONLY | O_CLOEXEC);
    bool joined = fd >= 0 && ::write(fd, me.data(), me.size()) == static_cast<ssize_t>(me.size());
    if (fd >= 0) ::close(fd);
    if (!joined) {
      say(2, p.cgroup_failed[i]);
      ::_exit(125);
    }
  }
  if (::chdir(r.cwd.c_str()) != 0) {
    say(2, p.cannot_enter);
    say(2, std::strerror(errno));
    say(2, "\n");
    ::_exit(126);
  }
  ::execve(p.program.c_str(), p.argv.data(), p.envp.data());
  const int e = errno;
  if (e == ENOENT) {
    say(2, p.not_found);
    ::_exit(127);
  }
  say(2, p.cannot_exec);
  say(2, std::strerror(e));
  say(2, "\n");
  ::_exit(126);
}

// Starts the job; returns its pid once it has exec'd (or failed to), so that its session
// exists before the agent may signal it; -errno if it could not. vfork: the host's
// address space is not copied for a process that is about to exec (a fork of it cost
// more than twice a whole bare spawn).
pid_t start_job(Request& r) {
  Prepared p;
  p.program = find_program(r.argv[0], r.env);
  p.argv = c_strings(r.argv);
  p.envp = c_strings(r.env);
  for (const auto& c : r.cgroups) {
    p.cgroup_failed.push_back("vow-job: cannot join the job's cgroup (" + c + ")\n");
  }
  p.cannot_enter = "vow-job: cannot enter " + r.cwd + ": ";
  p.not_found = "vow-job: " + r.argv[0] + ": not found\n";
  p.cannot_exec = "vow-job: " + r.argv[0] + ": ";
  pid_t pid = ::vfork();
  if (pid < 0) return -errno;
  if (pid == 0) become_job(r, p);
  return pid;
}

// Records a job's end in its status file: `exit CODE`, or `killed SIGNAL`. As the
// shell's `printf > file` did: not synced (it is read once the job has ended, and a lost
// one reads as a killed job).
void write_status(const std::string& path, const char* how, int number) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return;
  say(fd, std::string(how) + " " + std::to_string(number) + "\n");
  ::close(fd);
}

}  // namespace

int run_job_host(int fd) {
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  // Nothing else of the agent's: a job must not inherit its sockets or files.
  ::syscall(SYS_close_range, static_cast<unsigned>(fd + 1), ~0U, 0U);
  for (int other = 0; other < fd; ++other) {
    if (other > 2) ::close(other);
  }
  // The agent's stop, a terminal's hangup, leave the jobs and so the host running.
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) ::signal(sig, SIG_IGN);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  ::sigprocmask(SIG_BLOCK, &chld, nullptr);
  int sfd = ::signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sfd < 0) return 1;

  std::map<pid_t, std::string> status_of;
  bool agent = true;
  auto send = [&](const std::string& msg) {
    if (agent && ::send(fd, msg.data(), msg.size(), MSG_NOSIGNAL) < 0) agent = false;
  };
  auto reap = [&] {
    for (;;) {
      siginfo_t info{};
      // Looked at, not reaped: the status is written while the job is a zombie, so that
      // whoever sees it gone (its pidfd) finds the status file written.
      if (::waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid == 0) {
        return;
      }
      const pid_t pid = info.si_pid;
      auto it = status_of.find(pid);
      if (it != status_of.end()) {
        write_status(it->second, info.si_code == CLD_EXITED ? "exit" : "killed",
                     info.si_status & 0xff);
      }
      ::waitpid(pid, nullptr, 0);
      if (it != status_of.end()) {
        status_of.erase(it);
        std::string msg;
        add_field(msg, "exit");
        add_field(msg, std::to_string(pid));
        send(msg);
      }
    }
  };
  std::string buf(kMaxMessage, '\0');
  while (agent || !status_of.empty()) {
    struct pollfd fds[2] = {{sfd, POLLIN, 0}, {agent ? fd : -1, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0 && errno != EINTR) return 1;
    if (fds[0].revents & POLLIN) {
      signalfd_siginfo si;
      while (::read(sfd, &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
      }
    }
    reap();
    if (agent && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
      ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
      if (n <= 0) {
        if (n == 0 || (errno != EINTR && errno != EAGAIN)) agent = false;
        continue;
      }
      Request r;
      std::string reply;
      if (!parse_request(split_fields(std::string_view(buf.data(), static_cast<std::size_t>(n))),
                         r)) {
        add_field(reply, "failed");
        add_field(reply, "malformed request");
      } else if (pid_t pid = start_job(r); pid < 0) {
        add_field(reply, "failed");
        add_field(reply, std::string("fork: ") + std::strerror(-pid));
      } else {
        status_of.emplace(pid, r.status);
        add_field(reply, "started");
        add_field(reply, std::to_string(pid));
      }
      send(reply);
    }
  }
  return 0;
}

// --- the agent's side ------------------------------------------------------------

Result<std::unique_ptr<JobHost>> JobHost::start(const std::string& exe) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    return Status::io(std::string("socketpair: ") + std::strerror(errno));
  }
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_adddup2(&fa, sv[1], 3);  // dup2 clears FD_CLOEXEC
  // Nothing of the agent's standard streams: a pipe someone reads the agent's output
  // from must end with the agent, not with the host.
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  // Its own session: the agent's terminal and process group signals do not reach it.
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  std::vector<std::string> argv{"vowd", "job-host"};
  auto c_argv = c_strings(argv);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, exe.c_str(), &fa, &attr, c_argv.data(), ::environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  ::close(sv[1]);
  if (rc != 0) {
    ::close(sv[0]);
    return Status::io("cannot start the job host " + exe + ": " + std::strerror(rc));
  }
  return std::unique_ptr<JobHost>(new JobHost(sv[0], pid));
}

JobHost::~JobHost() {
  // The host carries on with the jobs it runs and exits after the last; it is reaped
  // here if it is already gone (else by whoever inherits it).
  if (fd_ >= 0) ::close(fd_);
  ::waitpid(pid_, nullptr, WNOHANG);
}

void JobHost::gone() {
  if (!alive_) return;
  alive_ = false;
  ::close(fd_);
  fd_ = -1;
  ::waitpid(pid_, nullptr, WNOHANG);
}

bool JobHost::handle(const std::string& msg) {
  auto f = split_fields(msg);
  if (f.size() == 2 && f[0] == "exit") {
    exits_.push_back(static_cast<pid_t>(std::strtol(f[1].c_str(), nullptr, 10)));
    return true;
  }
  return false;
}

Result<pid_t> JobHost::spawn(const SpawnSpec& spec) {
  if (!alive_) return Status::unavailable("the job host is gone");
  if (spec.argv.empty()) return Status::invalid("empty command");
  std::string msg;
  for (const std::string& f : {std::string("spawn"), spec.cwd, spec.stdout_path,
                               spec.stderr_path, spec.status_path}) {
    add_field(msg, f);
  }
  add_field(msg, std::to_string(spec.cgroup_procs.size()));
  for (const auto& c : spec.cgroup_procs) add_field(msg, c);
  add_field(msg, std::to_string(spec.argv.size()));
  for (const auto& a : spec.argv) add_field(msg, a);
  for (const auto& e : spec.env) add_field(msg, e);
  if (msg.size() > kMaxMessage) {
    return Status::unavailable("the job's command line and environment are too long for the "
                               "job host");
  }
  if (::send(fd_, msg.data(), msg.size(), MSG_NOSIGNAL) < 0) {
    if (errno == EMSGSIZE) {
      return Status::unavailable("the job's command line and environment are too long for the "
                                 "job host");
    }
    gone();
    return Status::unavailable("the job host is gone");
  }
  std::string buf(4096, '\0');
  for (;;) {
    struct pollfd p {
      fd_, POLLIN, 0
    };
    int ready = ::poll(&p, 1, kReplyTimeoutMs);
    if (ready < 0 && errno == EINTR) continue;
    ssize_t n = ready > 0 ? ::recv(fd_, buf.data(), buf.size(), 0) : -1;
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      gone();
      return Status::unavailable("the job host is gone");
    }
    std::string reply(buf.data(), static_cast<std::size_t>(n));
    if (handle(reply)) continue;
    auto f = split_fields(reply);
    if (f.size() == 2 && f[0] == "started") {
      return static_cast<pid_t>(std::strtol(f[1].c_str(), nullptr, 10));
    }
    if (f.size() == 2 && f[0] == "failed") {
      return Status::io("cannot start job in " + spec.cwd + ": " + f[1]);
    }
    gone();
    return Status::unavailable("the job host said something unexpected");
  }
}

std::vector<pid_t> JobHost::take_exits() {
  std::string buf(4096, '\0');
  while (alive_) {
    ssize_t n = ::recv(fd_, buf.data(), buf.size(), MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n <= 0) {
      gone();
      break;
    }
    (void)handle(std::string(buf.data(), static_cast<std::size_t>(n)));
  }
  std::vector<pid_t> out;
  out.swap(exits_);
  return out;
}

}  // namespace vow::agent
