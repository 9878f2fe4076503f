// The job host (docs/agent.md, "Jobs"): one small process per agent that starts the
// agent's bare jobs and records how each ended, so that a job costs one process (its
// command) instead of two (a supervisor shell and the command).
//
// The agent starts it once (`vowd job-host`, in its own session) and talks to it on a
// socket pair. For each job the host forks a child that opens the job's logs, starts a
// session of its own (so the job is killed as a group), joins the job's cgroup if it
// has one, and execs the command; the host replies with the pid once the exec has
// happened (or failed). When a job ends, the host writes its status file (`exit N`,
// N = 128 + signal for a killed one), and only then reaps it and tells the agent, and
// whether the job ended alone: the host is a subreaper, so what a job leaves running
// becomes its child, and it says whether it has any child that is not a running job's.
//
// The host outlives the agent as jobs do: with the agent gone it keeps reaping and
// writing status files, and exits when its last job has; a restarted agent adopts the
// jobs still running (JobProcess::adopt) and starts a host of its own.
//
// JobHost is the agent's end. Not thread-safe: used from the event-loop thread.
#pragma once

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/process.h"
#include "promises/status.h"

namespace vow::agent {

// The host's own loop, on the socket `fd` (its end of the pair): returns its exit code.
// With `sandbox_state_dir`, it runs in the sandbox JobHost::start made, and makes each
// job a mount and a PID namespace of its own in it (docs/sandbox.md).
int run_job_host(int fd, const std::string& sandbox_state_dir = "");
// The job host's main, for a program whose main hands it its arguments: runs the host
// and returns its exit code for `PROGRAM job-host [--sandbox STATE_DIR]`, nullopt for
// any other command line.
std::optional<int> job_host_main(int argc, char** argv);

class JobHost {
 public:
  // Starts `exe job-host` (exe: a program whose main runs job_host_main, as vowd's
  // does). With `bwrap`, inside one sandbox made by it for the agent whose state
  // directory is `state_dir`, and only once the host has made a job's sandbox there
  // (kUnavailable, with why, if it cannot). kIo if it cannot be started.
  static Result<std::unique_ptr<JobHost>> start(const std::string& exe,
                                                const std::string& bwrap = "",
                                                const std::string& state_dir = "");
  ~JobHost();
  JobHost(const JobHost&) = delete;
  JobHost& operator=(const JobHost&) = delete;

  // Starts a job as `spec` says (not spec.bwrap_supervises: the host is the supervisor).
  // The pid of the command once it runs. kUnavailable if the host is gone (the caller
  // starts the job some other way); kIo if the host could not fork.
  Result<pid_t> spawn(const SpawnSpec& spec);
  // Readable when the host has said something (a job's end) or has gone.
  int fd() const { return fd_; }
  bool alive() const { return alive_; }
  pid_t pid() const { return pid_; }
  // A job's end as the host announces it (its status file is written). ALONE: the host
  // (a subreaper: what a job leaves behind becomes its child) had, when it saw the end,
  // no child that was not a running job's command, so no process the job started
  // outlived it (a bare run's work directory may then serve another run).
  struct Exit {
    pid_t pid = 0;
    bool alone = false;
  };
  // The jobs whose end the host has announced since the last call. Does not block.
  // READ: whether its socket may have something (it fired): if not, only the exits
  // already read (while waiting for a start's answer) are taken.
  std::vector<Exit> take_exits(bool read = true);

 private:
  JobHost(int fd, pid_t pid) : fd_(fd), pid_(pid) {}
  void gone();
  bool handle(const std::string& msg);  // an exit announcement: true, kept
  int fd_ = -1;
  pid_t pid_ = -1;
  bool alive_ = true;
  std::vector<Exit> exits_;
};

}  // namespace vow::agent
