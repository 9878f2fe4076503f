// Job processes: how vowd starts, watches, stops and re-adopts the process of a job
// (docs/agent.md, with recovery after a restart).
//
// Each job runs under a tiny /bin/sh supervisor in its own session (so its own process
// group): the supervisor runs the command, waits for it, and writes the exit status to
// `status_path` (temp file + rename), then exits. So:
//   - cancel and timeout kill the whole group (kill(-pgid)), the command's children too;
//   - a job that finishes while vowd is down leaves its status behind, to be adopted
//     instead of run again;
//   - a job still running when vowd restarts is found by its pid and re-adopted (its exit
//     is watched with a pidfd), never started a second time.
// Exits are learned from pidfds, which the event loop polls with its sockets.
//
// JobProcess owns its pidfd (closed on destruction; the process is not killed by that).
// Not thread-safe: used from the event-loop thread.
#pragma once

#include <spawn.h>
#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "promises/status.h"

namespace vow::agent {

struct SpawnSpec {
  std::vector<std::string> argv;  // argv[0] is looked up in PATH
  std::vector<std::string> env;   // complete environment, "KEY=VALUE"
  std::string cwd;
  std::string stdout_path;  // created, truncated
  std::string stderr_path;
  std::string status_path;  // written by the supervisor when the command ends
  // cgroup.procs files of the job's cgroup (agent/job_cgroup.h) the supervisor writes
  // its pid into before it runs the command; when it cannot, the job ends with exit
  // status 125 and says why in its stderr.
  std::vector<std::string> cgroup_procs;
  // argv[0] is bubblewrap, with --json-status-fd 3 and without --die-with-parent
  // (agent/sandbox.h): bwrap is the supervisor, and writes the command's exit status
  // (`{ "exit-code": N }`) to fd 3, opened on status_path. No supervisor shell, one
  // process less per job. Not with cgroup_procs (the shell joins the cgroup first).
  bool bwrap_supervises = false;
};

// How a command ended: an exit code, or the signal that killed it (exit_status is then
// 128 + signal, as a shell reports it).
struct ExitStatus {
  int exit_status = 0;
  bool signaled = false;
  bool ok() const { return !signaled && exit_status == 0; }
};

// Reads a status file written by the supervisor: the shell's `exit N`, the job host's
// `exit N` or `killed SIGNAL` (agent/job_host.h), or bubblewrap's
// JSON lines (the exit code on the last; a file with its first line only, the child's
// pid, is a command that has not ended, or a supervisor killed). nullopt if absent or
// without an exit status; kCorrupt if unreadable.
Result<std::optional<ExitStatus>> read_status_file(const std::string& path);

// Pointers to each string of `v` and a null one after: an argv or envp for exec (valid
// while `v` is, unchanged).
std::vector<char*> exec_strings(std::vector<std::string>& v);

// Spawn attributes for a process that must outlive vowd and be killed as a group: a
// session of its own (its own process group, away from vowd's terminal and signals), no
// signal blocked, every signal's action the default.
void set_own_session(posix_spawnattr_t& attr);

class JobProcess {
 public:
  // Starts the supervisor and the command. kIo if the fork/exec machinery fails (a
  // missing command is not an error here: the supervisor reports exit 127).
  static Result<JobProcess> spawn(const SpawnSpec& spec);
  // A job the job host (agent/job_host.h) started as `pid`: its end is learned from the
  // host (host_ended), or, once the host is gone, from its pidfd (watch_pidfd).
  static JobProcess hosted(pid_t pid, const std::string& status_path);
  // Re-adopts a job started by an earlier vowd: checks that `pid` is alive and is the
  // supervisor of `status_path` (its command line names it), or the command itself as
  // the job host started it (its environment names the work directory that holds
  // `status_path`). kNotFound otherwise.
  static Result<JobProcess> adopt(pid_t pid, const std::string& status_path);

  JobProcess(JobProcess&& other) noexcept;
  JobProcess& operator=(JobProcess&& other) noexcept;
  JobProcess(const JobProcess&) = delete;
  JobProcess& operator=(const JobProcess&) = delete;
  ~JobProcess();

  pid_t pid() const { return pid_; }
  // Readable (POLLIN) once the process has exited.
  int pidfd() const { return pidfd_; }
  // Sends `signal` to the whole process group (the supervisor and everything under it).
  void kill_group(int signal) const;
  // Non-blocking: the exit status once the supervisor has exited (reaps it if it is our
  // child), read from the status file; a supervisor killed before it could write one
  // reports the signal that killed it (or 128+SIGKILL if unknown).
  std::optional<ExitStatus> poll_exit();
  // A hosted job: the host says it has ended (its status file is written); ALONE: the
  // host, a subreaper, had no process then that is not a running job's command (nothing
  // the job started outlived it).
  void host_ended(bool alone = false) {
    host_ended_ = true;
    ended_alone_ = alone;
  }
  bool ended_alone() const { return host_ended_ && ended_alone_; }
  // A hosted job whose host is gone: its end is learned from its pidfd from now on.
  void watch_pidfd() { hosted_ = false; }
  // Whether its end is learned from its pidfd (not from the job host).
  bool watched_by_pidfd() const { return !hosted_; }

 private:
  JobProcess(pid_t pid, int pidfd, bool is_child, std::string status_path);
  void close_fd();

  pid_t pid_ = -1;
  int pidfd_ = -1;
  bool is_child_ = false;
  std::string status_path_;
  std::optional<ExitStatus> exit_;
  bool bwrap_ = false;  // spawned with bwrap as its supervisor (SpawnSpec::bwrap_supervises)
  bool hosted_ = false;      // its end comes from the job host
  bool host_ended_ = false;  // ... and has come
  bool ended_alone_ = false;  // ... with nothing the job started left (host_ended)
};

}  // namespace vow::agent
