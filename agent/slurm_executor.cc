#include "agent/slurm_executor.h"

#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "agent/sandbox.h"

extern char** environ;

namespace fs = std::filesystem;

namespace vow::agent {
namespace {

std::string quote(const std::string& s) {
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

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The Slurm job id sbatch --parsable wrote ("ID" or "ID;CLUSTER"); empty if none yet.
std::string read_slurm_id(const std::string& work_dir) {
  std::string text = read_text(work_dir + "/slurm-job");
  return text.substr(0, text.find_first_not_of("0123456789"));
}

// What a run whose status file is there said.
std::optional<ProcessExit> status_of(const JobLayout& l) {
  auto st = read_status_file(l.status_path);
  if (!st.is_ok() || !st->has_value()) return std::nullopt;
  return ProcessExit{(*st)->exit_status, (*st)->signaled};
}

void append(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::app) << text;
}

constexpr const char* kSupervisor =
    "st=$1; shift; \"$@\"; s=$?; printf 'exit %d\\n' \"$s\" > \"$st\"; exit \"$s\"";

}  // namespace

std::string slurm_batch_script(const JobLayout& layout, const std::vector<std::string>& env,
                               const std::vector<std::string>& argv) {
  std::string s = "#!/bin/sh\n# A vow job (docs/executors.md): the supervisor writes its status.\n";
  s += "cd " + quote(layout.work_dir) + " || exit 1\n";
  s += "exec env -i";
  for (const auto& e : env) s += " \\\n  " + quote(e);
  s += " \\\n  /bin/sh -c " + quote(kSupervisor) + " vow-job " + quote(layout.status_path);
  for (const auto& a : argv) s += " \\\n  " + quote(a);
  return s + "\n";
}

std::vector<std::string> sbatch_options(const promises::SlurmConfig& config,
                                        const JobLayout& layout,
                                        const promises::StartJob& start) {
  std::vector<std::string> o{"sbatch", "--parsable",
                             "--job-name=vow-" + start.job.job.hex().substr(0, 16) + "." +
                                 std::to_string(start.epoch),
                             "--output=" + layout.stdout_path, "--error=" + layout.stderr_path,
                             "--chdir=" + layout.work_dir};
  // The environment sbatch passes on (the agent's) is replaced by the job's in the script
  // (env -i); --export=NONE would instead have the node read a login environment, which
  // costs seconds per job.
  if (start.timeout_ms > 0) {
    // The agent kills the run at its timeout (scancel); Slurm's limit, a minute later,
    // is the backstop for an agent that is down then.
    std::int64_t minutes = (start.timeout_ms + 59'999) / 60'000 + 1;
    o.push_back("--time=" + std::to_string(minutes));
  }
  const promises::Stage& s = start.stage;
  if (s.memory_bytes > 0) {
    o.push_back("--mem=" + std::to_string((s.memory_bytes + (1 << 20) - 1) >> 20) + "M");
  }
  if (s.cpus > 0) o.push_back("--cpus-per-task=" + std::to_string(s.cpus));
  if (!config.partition.empty()) o.push_back("--partition=" + config.partition);
  return o;
}

SlurmExecutor::SlurmExecutor(promises::SlurmConfig config, std::string state_dir,
                             store::ArtifactStore* worker_store)
    : config_(std::move(config)),
      helper_dir_(std::move(state_dir) + "/slurm"),
      files_(config_.shared_dir, worker_store) {
  std::error_code ec;
  fs::create_directories(helper_dir_, ec);
}

Status SlurmExecutor::create_work_dir(const promises::StartJob& start) {
  return files_.create_work_dir(start);
}

Status SlurmExecutor::materialize_inputs(const promises::StartJob& start) {
  return files_.materialize_inputs(start);
}

std::string SlurmExecutor::refused_outputs(const promises::StartJob& start) {
  return files_.refused_outputs(start);
}

promises::JobOutcome SlurmExecutor::collect(const promises::StartJob& start,
                                            const ProcessExit& exit, const std::string& error,
                                            std::vector<store::ArtifactRecord>* index_rows) {
  return files_.collect(start, exit, error, index_rows);
}

std::string SlurmExecutor::work_dir(const promises::StartJob& start) const {
  return files_.work_dir(start);
}

bool SlurmExecutor::owns(const std::string& work_dir) const {
  return work_dir.rfind(config_.shared_dir + "/jobs/", 0) == 0;
}

Result<JobProcess> SlurmExecutor::helper(const std::vector<std::string>& argv,
                                         const std::string& out, const std::string& err,
                                         const std::string& status) {
  SpawnSpec spec;
  spec.argv = argv;
  // The agent's own environment: PATH to find the Slurm commands, SLURM_CONF.
  for (char** e = environ; *e != nullptr; ++e) spec.env.emplace_back(*e);
  spec.cwd = helper_dir_;
  spec.stdout_path = out;
  spec.stderr_path = err;
  spec.status_path = status;
  ++helpers_;
  return JobProcess::spawn(spec);
}

Result<std::int64_t> SlurmExecutor::spawn(const promises::StartJob& start) {
  if (start.stage.root) {
    // Refused at start too: the nodes run jobs on their own file system, and a job run
    // there under the root's name would be another job.
    return Status::unavailable("the stage runs in root '" + start.stage.root->to_string() +
                               "', and the Slurm executor runs jobs on the compute nodes' own "
                               "file system (docs/sandbox.md)");
  }
  JobLayout l = job_layout(config_.shared_dir, start.job.job, start.epoch);
  std::vector<std::string> env =
      job_environment(l, start.stage, {start.job.job, start.job.pipeline, start.job.shard});
  // The cluster's nodes are the sandbox: no bubblewrap; `cpus` is sbatch's.
  promises::Stage stage = start.stage;
  stage.cpus = 0;
  std::vector<std::string> argv = sandboxed_argv("", config_.shared_dir, l, stage);
  std::string script = l.work_dir + "/job.sh";
  {
    std::ofstream f(script);
    f << slurm_batch_script(l, env, argv);
    if (!f) return Status::io("cannot write " + script);
  }
  std::vector<std::string> cmd = sbatch_options(config_, l, start);
  cmd.push_back(script);
  ::unlink((l.work_dir + "/slurm-job").c_str());
  auto p = helper(cmd, l.work_dir + "/slurm-job", l.work_dir + "/sbatch.err",
                  l.work_dir + "/sbatch.status");
  if (!p.is_ok()) return p.status();
  std::int64_t pid = p->pid();
  Run run;
  run.layout = l;
  run.sbatch = std::move(p).value();
  runs_.insert_or_assign(start.job.job, std::move(run));
  return pid;
}

void SlurmExecutor::cancel(const std::string& slurm_id) {
  std::string base = helper_dir_ + "/scancel-" + slurm_id;
  auto p = helper({"scancel", slurm_id}, base + ".out", base + ".err", base + ".status");
  if (p.is_ok()) cancels_.push_back(std::move(p).value());
  next_poll_ = Clock::now();  // learn the end soon
}

void SlurmExecutor::kill(const Digest& job) {
  auto it = runs_.find(job);
  if (it == runs_.end()) return;
  if (it->second.slurm_id.empty()) {
    it->second.cancel = true;
  } else {
    cancel(it->second.slurm_id);
  }
}

Adoption SlurmExecutor::adopt(const store::RunningJob& row, const promises::StartJob& start) {
  JobLayout l = job_layout(config_.shared_dir, start.job.job, start.epoch);
  Adoption a;
  if (row.work_dir != l.work_dir) return a;
  a.started_unix_ms = row.started_unix_ms;
  if (auto e = status_of(l)) {
    a.kind = Adoption::Kind::kFinished;
    a.exit_status = e->exit_status;
    a.signaled = e->signaled;
    return a;
  }
  std::string id = read_slurm_id(l.work_dir);
  if (id.empty()) return a;  // never submitted: started afresh
  Run run;
  run.layout = l;
  run.slurm_id = id;
  runs_.insert_or_assign(start.job.job, std::move(run));
  next_poll_ = Clock::now();
  a.kind = Adoption::Kind::kRunning;
  return a;
}

void SlurmExecutor::discard_leftover(const store::RunningJob& row) {
  std::string id = read_slurm_id(row.work_dir);
  if (!id.empty()) cancel(id);
  std::error_code ec;
  (void)store::make_writable_recursive(row.work_dir);
  fs::remove_all(row.work_dir, ec);
}

void SlurmExecutor::remove_work_dir(const promises::StartJob& start) {
  runs_.erase(start.job.job);
  files_.remove_work_dir(start);
}

std::vector<int> SlurmExecutor::pidfds() const {
  std::vector<int> out;
  for (const auto& [id, r] : runs_) {
    if (r.sbatch) out.push_back(r.sbatch->pidfd());
  }
  if (squeue_) out.push_back(squeue_->pidfd());
  for (const auto& c : cancels_) out.push_back(c.pidfd());
  return out;
}

void SlurmExecutor::start_poll() {
  polled_.clear();
  for (const auto& [job, r] : runs_) {
    if (!r.slurm_id.empty()) polled_.insert(r.slurm_id);
  }
  if (polled_.empty()) return;
  // Every job of this user: a job long gone is simply not listed (squeue -j with an id
  // Slurm forgot fails).
  std::string base = helper_dir_ + "/squeue";
  auto p = helper({"squeue", "--noheader", "--me", "--format=%i"}, base + ".out",
                  base + ".err", base + ".status");
  if (p.is_ok()) squeue_ = std::move(p).value();
}

void SlurmExecutor::end_poll(std::vector<std::pair<Digest, ProcessExit>>& ended) {
  auto e = squeue_->poll_exit();
  if (!e) return;
  squeue_.reset();
  if (!e->ok()) return;  // the controller did not answer: asked again at the next poll
  std::set<std::string> listed;
  std::istringstream out(read_text(helper_dir_ + "/squeue.out"));
  for (std::string id; out >> id;) listed.insert(id);
  for (auto it = runs_.begin(); it != runs_.end();) {
    Run& r = it->second;
    if (!polled_.count(r.slurm_id) || listed.count(r.slurm_id)) {
      r.missing = 0;
      ++it;
      continue;
    }
    if (auto st = status_of(r.layout)) {
      ended.emplace_back(it->first, *st);
      it = runs_.erase(it);
      continue;
    }
    // Gone from the queue without a status (cancelled, over its time, its node lost).
    // Asked twice: a status written just after one answer is seen at the next.
    if (++r.missing < 2) {
      ++it;
      continue;
    }
    append(r.layout.stderr_path, "vow: Slurm job " + r.slurm_id +
                                     " ended without a status (cancelled, over its time "
                                     "limit, or its node failed)\n");
    ended.emplace_back(it->first, ProcessExit{128 + SIGKILL, true});
    it = runs_.erase(it);
  }
}

std::vector<std::pair<Digest, ProcessExit>> SlurmExecutor::reap() {
  std::vector<std::pair<Digest, ProcessExit>> ended;
  for (auto it = cancels_.begin(); it != cancels_.end();) {
    it = it->poll_exit() ? cancels_.erase(it) : it + 1;
  }
  for (auto it = runs_.begin(); it != runs_.end();) {
    Run& r = it->second;
    if (r.sbatch) {
      auto e = r.sbatch->poll_exit();
      if (!e) {
        ++it;
        continue;
      }
      r.sbatch.reset();
      r.slurm_id = read_slurm_id(r.layout.work_dir);
      if (!e->ok() || r.slurm_id.empty()) {
        // Not submitted: what sbatch said goes to the run's stderr, imported with it.
        append(r.layout.stderr_path,
               "vow: sbatch failed: " + read_text(r.layout.work_dir + "/sbatch.err"));
        ended.emplace_back(it->first, ProcessExit{e->ok() ? 1 : e->exit_status, e->signaled});
        it = runs_.erase(it);
        continue;
      }
      if (r.cancel) cancel(r.slurm_id);
    }
    ++it;
  }
  if (squeue_) end_poll(ended);
  Clock::time_point now = Clock::now();
  if (!squeue_ && now >= next_poll_) {
    next_poll_ = now + std::chrono::milliseconds(config_.poll_ms);
    // A status is the end, whatever squeue still says (the job may be completing).
    // Looked for once a poll, not every turn: on a network file system each look is a
    // round trip.
    for (auto it = runs_.begin(); it != runs_.end();) {
      auto st = it->second.sbatch ? std::nullopt : status_of(it->second.layout);
      if (st) {
        ended.emplace_back(it->first, *st);
        it = runs_.erase(it);
      } else {
        ++it;
      }
    }
    start_poll();
  }
  return ended;
}

// ---- routing ----

Executor* JobExecutors::pick(const promises::StartJob& s) const {
  if (slurm_ != nullptr && (on_slurm_.count(s.job.job) ||
                            slurm_stages_.count({s.job.pipeline, s.stage.name}))) {
    return slurm_;
  }
  return local_;
}

Result<std::int64_t> JobExecutors::spawn(const promises::StartJob& s) {
  Executor* e = pick(s);
  if (e == slurm_) on_slurm_.insert(s.job.job);
  return e->spawn(s);
}

void JobExecutors::kill(const Digest& job) {
  if (on_slurm_.count(job)) {
    slurm_->kill(job);
  } else {
    local_->kill(job);
  }
}

Adoption JobExecutors::adopt(const store::RunningJob& row, const promises::StartJob& s) {
  if (slurm_ != nullptr && slurm_->owns(row.work_dir)) {
    on_slurm_.insert(s.job.job);
    return slurm_->adopt(row, s);
  }
  return local_->adopt(row, s);
}

void JobExecutors::discard_leftover(const store::RunningJob& row) {
  if (slurm_ != nullptr && slurm_->owns(row.work_dir)) {
    slurm_->discard_leftover(row);
  } else {
    local_->discard_leftover(row);
  }
}

void JobExecutors::remove_work_dir(const promises::StartJob& s) {
  pick(s)->remove_work_dir(s);
  on_slurm_.erase(s.job.job);
}

std::vector<int> JobExecutors::pidfds() const {
  std::vector<int> out = local_->pidfds();
  if (slurm_ != nullptr) {
    for (int fd : slurm_->pidfds()) out.push_back(fd);
  }
  return out;
}

std::vector<std::pair<Digest, ProcessExit>> JobExecutors::reap(const std::vector<int>* fired) {
  auto out = local_->reap(fired);
  if (slurm_ != nullptr) {
    for (auto& e : slurm_->reap()) out.push_back(std::move(e));
  }
  return out;
}

}  // namespace vow::agent
