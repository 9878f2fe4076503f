#include "agent/job_host.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <linux/capability.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/statvfs.h>
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
//   host -> agent  started PID | failed MESSAGE | exit PID alone|strays
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
  // In the sandbox (run_job_host's `sandbox_state_dir`): STATE/jobs, and the job's
  // work directory and inputs; empty for a bare job.
  std::string jobs_dir, work_dir, in_dir;
  std::string cannot_sandbox;  // "vow-job: cannot make the job's sandbox: "
};

// A failed step of the child: says it on the job's stderr and exits STATUS.
[[noreturn]] void fail_child(const std::string& prefix, const char* what, int status) {
  const int e = errno;
  say(2, prefix);
  say(2, what);
  say(2, ": ");
  say(2, std::strerror(e));
  say(2, "\n");
  ::_exit(status);
}

// The mount flags a read-only bind of `path` must keep (those locked in a user
// namespace: a remount that drops them is refused), as statvfs reports them.
unsigned long kept_flags(const char* path) {
  struct statvfs st {};
  if (::statvfs(path, &st) != 0) return 0;
  unsigned long out = 0;
  if (st.f_flag & ST_NOSUID) out |= MS_NOSUID;
  if (st.f_flag & ST_NODEV) out |= MS_NODEV;
  if (st.f_flag & ST_NOEXEC) out |= MS_NOEXEC;
  if (st.f_flag & ST_NOATIME) out |= MS_NOATIME;
  if (st.f_flag & ST_NODIRATIME) out |= MS_NODIRATIME;
  if (st.f_flag & ST_RELATIME) out |= MS_RELATIME;
  return out;
}

// The job's own view, made in its own mount namespace (and as the first process of its
// own PID namespace): what the job host's sandbox shows (docs/sandbox.md), less every
// other job: STATE/jobs is an empty tmpfs with only this job's work directory bound back
// (its inputs read-only), a /tmp, /dev/shm and /proc of its own; then no capability and
// no new privileges.
void enter_sandbox(const Prepared& p) {
  const std::string& why = p.cannot_sandbox;
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    fail_child(why, "private mounts", 126);
  }
  // The work directory, taken before anything covers it, then put back.
  int tree = static_cast<int>(::syscall(SYS_open_tree, AT_FDCWD, p.work_dir.c_str(),
                                        OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC));
  if (tree < 0) fail_child(why, "open_tree", 126);
  if (::mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") != 0) {
    fail_child(why, "/tmp", 126);
  }
  struct stat shm {};
  if (::stat("/dev/shm", &shm) == 0 &&
      ::mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") != 0) {
    fail_child(why, "/dev/shm", 126);
  }
  // A state directory under /tmp or /dev/shm is under the job's own now: its path is made
  // there (as bwrap does for a job of its own).
  char path[4096];
  if (p.jobs_dir.size() >= sizeof path) fail_child(why, "path", 126);
  for (std::size_t i = 1; i <= p.jobs_dir.size(); ++i) {
    if (i < p.jobs_dir.size() && p.jobs_dir[i] != '/') continue;
    std::memcpy(path, p.jobs_dir.data(), i);
    path[i] = '\0';
    if (::mkdir(path, 0755) != 0 && errno != EEXIST) fail_child(why, "mkdir", 126);
  }
  if (::mount("tmpfs", p.jobs_dir.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") != 0) {
    fail_child(why, "tmpfs over the jobs directory", 126);
  }
  if (::mkdir(p.work_dir.c_str(), 0755) != 0) fail_child(why, "mkdir", 126);
  if (::syscall(SYS_move_mount, tree, "", AT_FDCWD, p.work_dir.c_str(),
                MOVE_MOUNT_F_EMPTY_PATH) != 0) {
    fail_child(why, "move_mount", 126);
  }
  ::close(tree);
  if (::mount(p.in_dir.c_str(), p.in_dir.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0 ||
      ::mount(nullptr, p.in_dir.c_str(), nullptr,
              MS_BIND | MS_REMOUNT | MS_RDONLY | kept_flags(p.in_dir.c_str()), nullptr) != 0) {
    fail_child(why, "read-only inputs", 126);
  }
  if (::mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) {
    fail_child(why, "/proc", 126);
  }
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) fail_child(why, "no_new_privs", 126);
  ::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
  // Every capability out of the bounding set (CAP_SETPCAP, which that needs, last).
  for (int cap = 0; cap <= 63; ++cap) {
    if (cap != CAP_SETPCAP) ::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0);
  }
  ::prctl(PR_CAPBSET_DROP, CAP_SETPCAP, 0, 0, 0);
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct none[2] = {};
  if (::syscall(SYS_capset, &header, none) != 0) fail_child(why, "capset", 126);
}

// One of the job's standard streams opened on a log: onto FD itself, just closed (the
// lowest free descriptor, 0 being the host's /dev/null), else dup2'ed there. The log is
// empty (a spare's, a recycled directory's, truncated then) or new: an O_TRUNC of an
// empty file on ext4 still starts a journal transaction, on the way to the exec. One
// that is not empty (none should be) is truncated. Its size is found by a seek, not
// fstat: no buffer of this stack handed to the kernel (the sandboxed child runs on a
// stack of its own, which a sanitizer's interceptor does not know). False if it cannot.
bool open_log_on(int fd, const std::string& path) {
  ::close(fd);
  int got = ::open(path.c_str(), O_WRONLY | O_CREAT, 0644);
  if (got < 0) return false;
  if (got != fd) {
    if (::dup2(got, fd) != fd) return false;
    ::close(got);
  }
  const off_t end = ::lseek(fd, 0, SEEK_END);
  return end == 0 || (::ftruncate(fd, 0) == 0 && ::lseek(fd, 0, SEEK_SET) == 0);
}

// The child, between vfork and exec. Its failures are the job's (an exit status and a
// line on its stderr), as the supervisor shell's were. Every system call here is on the
// way to the job's first instruction: what the host sets up once (default signal
// dispositions, /dev/null as stdin; run_job_host) is not made again for each job.
[[noreturn]] void become_job(const Request& r, const Prepared& p) {
  sigset_t none;
  sigemptyset(&none);
  // What the host blocks (its signalfd's SIGCHLD, the signals it must outlive) the job
  // does not; the dispositions are the defaults already.
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  if (!open_log_on(1, r.out) || !open_log_on(2, r.err)) ::_exit(126);
  ::setsid();
  char pid[16];  // its pid in decimal, made without allocating (for a cgroup only)
  std::size_t len = 0;
  for (unsigned long v = r.cgroups.empty() ? 0 : static_cast<unsigned long>(::getpid());
       v > 0 || len == 0; v /= 10) {
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
  if (!p.jobs_dir.empty()) enter_sandbox(p);
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
pid_t start_job(Request& r, const std::string& sandbox_state_dir) {
  Prepared p;
  p.program = find_program(r.argv[0], r.env);
  p.argv = exec_strings(r.argv);
  p.envp = exec_strings(r.env);
  for (const auto& c : r.cgroups) {
    p.cgroup_failed.push_back("vow-job: cannot join the job's cgroup (" + c + ")\n");
  }
  p.cannot_enter = "vow-job: cannot enter " + r.cwd + ": ";
  p.not_found = "vow-job: " + r.argv[0] + ": not found\n";
  p.cannot_exec = "vow-job: " + r.argv[0] + ": ";
  if (sandbox_state_dir.empty()) {
    pid_t pid = ::vfork();
    if (pid < 0) return -errno;
    if (pid == 0) become_job(r, p);
    return pid;
  }
  p.jobs_dir = sandbox_state_dir + "/jobs";
  p.work_dir = r.cwd;
  p.in_dir = r.cwd + "/in";
  p.cannot_sandbox = "vow-job: cannot make the job's sandbox: ";
  const std::string name =
      r.cwd.rfind(p.jobs_dir + "/", 0) == 0 ? r.cwd.substr(p.jobs_dir.size() + 1) : "";
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos) {
    return -EINVAL;  // not a work directory of this agent's
  }
  // As vfork, with a mount and a PID namespace of the job's own: it is the first process
  // of its PID namespace (when it ends, the kernel kills whatever it left there).
  struct Child {
    const Request* r;
    const Prepared* p;
  } child{&r, &p};
  static std::vector<char> stack(256 * 1024);  // the child's until it execs
  pid_t pid = ::clone(
      [](void* arg) -> int {
        auto* c = static_cast<Child*>(arg);
        become_job(*c->r, *c->p);
      },
      stack.data() + stack.size(), CLONE_VM | CLONE_VFORK | CLONE_NEWNS | CLONE_NEWPID | SIGCHLD,
      &child);
  return pid < 0 ? -errno : pid;
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

namespace {

// In the sandbox: whether a job can be made here at all, by making one (`/bin/true` in a
// work directory of its own, removed after): "" if it can, else why not.
std::string probe_sandbox(const std::string& state_dir) {
  const std::string dir = state_dir + "/jobs/.host-probe-" + std::to_string(::getpid());
  Request r;
  r.cwd = dir;
  r.out = dir + "/stdout";
  r.err = dir + "/stderr";
  r.status = dir + "/status";
  r.argv = {"/bin/true"};
  r.env = {"PATH=/usr/bin:/bin"};
  std::string why;
  if (::mkdir(dir.c_str(), 0755) != 0 || ::mkdir((dir + "/in").c_str(), 0755) != 0) {
    why = "cannot make " + dir + ": " + std::strerror(errno);
  } else if (pid_t pid = start_job(r, state_dir); pid < 0) {
    why = std::string("clone: ") + std::strerror(-pid);
  } else {
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      char buf[512] = {};
      int in = ::open(r.err.c_str(), O_RDONLY | O_CLOEXEC);
      ssize_t n = in >= 0 ? ::read(in, buf, sizeof buf - 1) : 0;
      if (in >= 0) ::close(in);
      why = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "a job exited " +
                                                                       std::to_string(st);
      while (!why.empty() && why.back() == '\n') why.pop_back();
    }
  }
  for (const char* f : {"/stdout", "/stderr", "/status"}) ::unlink((dir + f).c_str());
  ::rmdir((dir + "/in").c_str());
  ::rmdir(dir.c_str());
  return why;
}

// Whether every child of the host (CHILDREN_PATH, its thread's children file) is a
// running job's command: false if one is not (something an ended job started, or one
// not reaped yet) or the list cannot be read.
bool only_jobs(const std::string& children_path, const std::map<pid_t, std::string>& jobs) {
  int fd = ::open(children_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) text.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  if (n < 0) return false;
  std::size_t at = 0;
  while (at < text.size()) {
    auto end = text.find(' ', at);
    if (end == std::string::npos) end = text.size();
    if (end > at) {
      const pid_t child = static_cast<pid_t>(std::strtol(text.c_str() + at, nullptr, 10));
      if (jobs.count(child) == 0) return false;
    }
    at = end + 1;
  }
  return true;
}

}  // namespace

int run_job_host(int fd, const std::string& sandbox_state_dir) {
  // Only for an agent on the other end: with none, no job would ever come, and the host
  // would wait for one forever.
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) return 2;
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  // Nothing else of the agent's: a job must not inherit its sockets or files.
  ::syscall(SYS_close_range, static_cast<unsigned>(fd + 1), ~0U, 0U);
  for (int other = 0; other < fd; ++other) {
    if (other > 2) ::close(other);
  }
  // A job's stdin, which its child leaves as it is (without close-on-exec).
  if (int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC); null > 0) {
    ::dup2(null, 0);  // dup2 clears FD_CLOEXEC
    ::close(null);
  } else if (null == 0) {
    ::fcntl(0, F_SETFD, 0);  // 0 was closed: the open took it
  }
  // Jobs start with every signal at its default: one the agent ignored is not ignored in
  // them (an exec keeps SIG_IGN). Set here once, so that no child has to.
  for (int sig = 1; sig < SIGRTMIN; ++sig) {
    struct sigaction old {};
    if (sig == SIGKILL || sig == SIGSTOP || ::sigaction(sig, nullptr, &old) != 0) continue;
    if (old.sa_handler == SIG_IGN) ::signal(sig, SIG_DFL);
  }
  // The agent's stop, a terminal's hangup, leave the jobs and so the host running: those
  // signals are blocked here (pending at most, never delivered), as is SIGCHLD, read from
  // a signalfd. A child unblocks them all before its exec.
  sigset_t blocked;
  sigemptyset(&blocked);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGCHLD}) sigaddset(&blocked, sig);
  ::sigprocmask(SIG_BLOCK, &blocked, nullptr);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  int sfd = ::signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sfd < 0) return 1;

  // What a job leaves running when it ends becomes the host's child, not init's: so the
  // host can say whether anything did (only_jobs).
  const bool subreaper = ::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0;
  const std::string children_path =
      "/proc/self/task/" + std::to_string(::getpid()) + "/children";
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
        add_field(msg, subreaper && only_jobs(children_path, status_of) ? "alone" : "strays");
        send(msg);
      }
    }
  };
  if (!sandbox_state_dir.empty()) {
    // The agent waits for this before it sends a job.
    std::string why = probe_sandbox(sandbox_state_dir);
    std::string msg;
    add_field(msg, why.empty() ? "ready" : "unavailable");
    if (!why.empty()) add_field(msg, why);
    send(msg);
    if (!why.empty()) return 1;
  }
  std::string buf(kMaxMessage, '\0');
  while (agent || !status_of.empty()) {
    struct pollfd fds[2] = {{sfd, POLLIN, 0}, {agent ? fd : -1, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0 && errno != EINTR) return 1;
    if (fds[0].revents & POLLIN) {
      // Every end raises SIGCHLD (ends close together may raise one): a wake with nothing
      // on the signalfd has no child to reap, and a spawn request goes straight to its fork.
      signalfd_siginfo si;
      while (::read(sfd, &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
      }
      reap();
    }
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
      } else if (pid_t pid = start_job(r, sandbox_state_dir); pid < 0) {
        add_field(reply, "failed");
        add_field(reply, std::string("cannot start it: ") + std::strerror(-pid));
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

std::optional<int> job_host_main(int argc, char** argv) {
  if (argc < 2 || std::string_view(argv[1]) != "job-host") return std::nullopt;
  if (argc == 2) return run_job_host(3);
  if (argc == 4 && std::string_view(argv[2]) == "--sandbox") return run_job_host(3, argv[3]);
  return std::nullopt;
}

// --- the agent's side ------------------------------------------------------------

Result<std::unique_ptr<JobHost>> JobHost::start(const std::string& exe, const std::string& bwrap,
                                                 const std::string& state_dir) {
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
  // The sandboxed host's stderr is bwrap's, read for why it did not start.
  int said[2] = {-1, -1};
  if (!bwrap.empty() && ::pipe2(said, O_CLOEXEC) == 0) {
    posix_spawn_file_actions_adddup2(&fa, said[1], 2);
  } else {
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  }
  // Its own session: the agent's terminal and process group signals do not reach it.
  set_own_session(attr);
  std::vector<std::string> argv{"vowd", "job-host"};
  std::string program = exe;
  if (!bwrap.empty()) {
    // The sandbox every job shares (docs/sandbox.md, "A sandbox that stays"): what a
    // job's own bwrap would make, less the PID namespace and the hiding of other jobs'
    // directories, which the host makes per job; with the capabilities for that, in a
    // user namespace of its own. No --die-with-parent: it outlives the agent, as jobs do.
    const std::string jobs = state_dir + "/jobs";
    // bwrap runs it by name: this program's own, not /proc/self/exe (bwrap's then).
    char self[4096];
    ssize_t len = ::readlink(exe.c_str(), self, sizeof self - 1);
    const std::string inner = len > 0 ? std::string(self, static_cast<std::size_t>(len)) : exe;
    // The program is bound in again after the tmpfs mounts: one under /tmp (a build
    // directory, a checkout) would otherwise not be there to run.
    argv = {bwrap,         "--unshare-user", "--unshare-ipc", "--unshare-uts", "--unshare-net",
            "--cap-add",   "CAP_SYS_ADMIN",  "--cap-add",     "CAP_SETPCAP",   "--ro-bind",
            "/",           "/",              "--dev",         "/dev",          "--proc",
            "/proc",       "--tmpfs",        "/tmp",          "--tmpfs",       state_dir,
            "--bind",      jobs,             jobs,            "--ro-bind",     inner,
            inner,         "--",             inner,           "job-host",      "--sandbox",
            state_dir};
    program = bwrap;
  }
  auto c_argv = exec_strings(argv);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, program.c_str(), &fa, &attr, c_argv.data(), ::environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  ::close(sv[1]);
  if (said[1] >= 0) ::close(said[1]);
  if (rc != 0) {
    if (said[0] >= 0) ::close(said[0]);
    ::close(sv[0]);
    return Status::io("cannot start the job host " + program + ": " + std::strerror(rc));
  }
  std::unique_ptr<JobHost> host(new JobHost(sv[0], pid));
  if (bwrap.empty()) return host;
  // The sandboxed host says whether it can make a job's sandbox before it takes one.
  struct pollfd p {
    host->fd_, POLLIN, 0
  };
  std::string buf(4096, '\0');
  ssize_t n = ::poll(&p, 1, kReplyTimeoutMs) > 0 ? ::recv(host->fd_, buf.data(), buf.size(), 0)
                                                 : -1;
  auto f = split_fields(std::string_view(buf.data(), n > 0 ? static_cast<std::size_t>(n) : 0));
  std::string why;
  if (!(f.size() == 1 && f[0] == "ready")) {
    // Whatever bwrap said before it gave up (it has: the socket closed with it).
    int flags = ::fcntl(said[0], F_GETFL);
    ::fcntl(said[0], F_SETFL, flags | O_NONBLOCK);
    ssize_t got = ::read(said[0], buf.data(), buf.size());
    why = got > 0 ? std::string(buf.data(), static_cast<std::size_t>(got)) : "";
    while (!why.empty() && (why.back() == '\n' || why.back() == '\r')) why.pop_back();
  }
  ::close(said[0]);
  if (f.size() == 1 && f[0] == "ready") return host;
  host->gone();
  if (f.size() == 2 && f[0] == "unavailable") return Status::unavailable(f[1]);
  return Status::unavailable("the sandboxed job host did not start (" + bwrap + ", with a " +
                             "user namespace and CAP_SYS_ADMIN in it" +
                             (why.empty() ? "" : ": " + why) + ")");
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
  if ((f.size() == 2 || f.size() == 3) && f[0] == "exit") {
    exits_.push_back(Exit{static_cast<pid_t>(std::strtol(f[1].c_str(), nullptr, 10)),
                          f.size() == 3 && f[2] == "alone"});
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

std::vector<JobHost::Exit> JobHost::take_exits(bool read) {
  std::string buf(read ? 4096 : 0, '\0');
  while (read && alive_) {
    ssize_t n = ::recv(fd_, buf.data(), buf.size(), MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n <= 0) {
      gone();
      break;
    }
    (void)handle(std::string(buf.data(), static_cast<std::size_t>(n)));
  }
  std::vector<Exit> out;
  out.swap(exits_);
  return out;
}

}  // namespace vow::agent
