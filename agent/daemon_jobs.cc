// The executor (DESIGN.md section 6) and the recovery of jobs across restarts (section 5).
#include <signal.h>

#include <filesystem>
#include <fstream>

#include "agent/daemon_internal.h"
#include "promises/config.h"

namespace fs = std::filesystem;

namespace vow::agent {
namespace {

void remove_work_dir(const std::string& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) return;
  (void)store::make_writable_recursive(dir);
  fs::remove_all(dir, ec);
}

std::string describe(const ExitStatus& e) {
  if (e.signaled) return "killed by signal " + std::to_string(e.exit_status - 128);
  return "exit status " + std::to_string(e.exit_status);
}

}  // namespace

std::vector<promises::RunningJob> Daemon::Impl::recover_running_jobs(
    const std::vector<Statement>& statements) {
  std::vector<promises::RunningJob> out;
  auto rows = ledger->running_jobs();
  if (!rows.is_ok()) {
    log->warn("cannot read the running-job table: {}", rows.status().to_string());
    return out;
  }
  for (const auto& row : *rows) {
    // The job's reference comes from our own claim of it. The core decides every row
    // (resumed: StartJob; else KillJob), a row without a claim too.
    promises::RunningJob r;
    r.job.job = row.job;
    r.epoch = row.epoch;
    for (const auto& st : statements) {
      if (st.author != identity->key()) continue;
      const auto* c = std::get_if<Claim>(&st.body);
      if (c && c->job.job == row.job && c->epoch == row.epoch) r.job = c->job;
    }
    recovered[row.job] = row;
    out.push_back(std::move(r));
  }
  return out;
}

void Daemon::Impl::start_job(promises::StartJob start) {
  Digest id = start.job.job;
  if (auto it = jobs.find(id); it != jobs.end()) {
    // The core starts no epoch of a job before the one it killed is reported stopped.
    if (it->second.start.epoch != start.epoch) {
      log->warn("job {} epoch {}: start ignored, epoch {} is still here", id.short_hex(),
                start.epoch, it->second.start.epoch);
    }
    return;
  }
  Job job;
  job.layout = job_layout(state_dir, id, start.epoch);
  job.start = std::move(start);
  job.started_unix_ms = wall_ms();
  job.started_mono_ms = now_ms();
  if (job.start.timeout_ms > 0) job.deadline_mono_ms = job.started_mono_ms + job.start.timeout_ms;

  // After a restart: adopt what the earlier vowd started instead of starting it again.
  if (auto it = recovered.find(id); it != recovered.end()) {
    store::RunningJob row = it->second;
    recovered.erase(it);
    if (row.epoch == job.start.epoch && row.work_dir == job.layout.work_dir) {
      auto status = read_status_file(job.layout.status_path);
      if (status.is_ok() && status.value().has_value()) {
        log->info("job {} finished while this agent was down ({}): adopting its outputs",
                  id.short_hex(), describe(**status));
        ++jobs_adopted;
        jobs.emplace(id, std::move(job));
        job_finished(id, **status);
        return;
      }
      auto proc = JobProcess::adopt(static_cast<pid_t>(row.pid), job.layout.status_path);
      if (proc.is_ok()) {
        log->info("job {} still running (pid {}): re-adopted", id.short_hex(), row.pid);
        ++jobs_adopted;
        job.process = std::move(proc).value();
        job.started_unix_ms = row.started_unix_ms;
        jobs.emplace(id, std::move(job));
        return;
      }
    } else {
      auto proc = JobProcess::adopt(static_cast<pid_t>(row.pid), row.work_dir + "/status");
      if (proc.is_ok()) proc->kill_group(SIGKILL);
      remove_work_dir(row.work_dir);
    }
  }

  remove_work_dir(job.layout.work_dir);
  std::error_code ec;
  fs::create_directories(job.layout.in_dir, ec);
  if (!ec) fs::create_directories(job.layout.out_dir, ec);
  if (ec) {
    promises::JobOutcome o;
    o.error = "cannot create work directory " + job.layout.work_dir + ": " + ec.message();
    o.exit_status = -1;
    jobs.emplace(id, std::move(job));
    finish_job(id, std::move(o));
    return;
  }
  log->info("job {} {}/{}{} epoch {}: materializing {} inputs", id.short_hex(),
            job.start.job.pipeline, job.start.job.stage,
            job.start.job.shard.empty() ? "" : "[" + job.start.job.shard + "]", job.start.epoch,
            job.start.inputs.size());
  auto inputs = job.start.inputs;
  std::string in_dir = job.layout.in_dir;
  jobs.emplace(id, std::move(job));
  Worker* w = worker.get();
  Status submitted = background->submit([this, w, id, inputs, in_dir]() -> std::function<void()> {
    Status s;
    for (const auto& in : inputs) {
      // A fan-in input (the directory of every shard's output) is a tree no job wrote:
      // make it from its children, which are held.
      auto held = w->artifacts->has(in.artifact.digest);
      if (held.is_ok() && !*held && in.artifact.is_tree && !in.artifact.entries.empty()) {
        auto made = w->artifacts->put_tree(in.artifact.entries);
        if (made.is_ok() && *made != in.artifact.digest) {
          s = Status::corrupt("input '" + in.name + "': fan-in tree made as " + made->hex());
          break;
        }
      }
      s = w->artifacts->materialize(in.artifact.digest, in_dir + "/" + in.name);
      if (!s.is_ok()) {
        s = Status(s.code(), "input '" + in.name + "': " + s.message());
        break;
      }
    }
    return [this, id, s] {
      auto it = jobs.find(id);
      if (it == jobs.end()) return;
      if (it->second.killed) {
        remove_work_dir(it->second.layout.work_dir);
        stopped_runs.emplace_back(id, it->second.start.epoch);
        jobs.erase(it);
        return;
      }
      if (!s.is_ok()) {
        promises::JobOutcome o;
        o.exit_status = -1;
        o.error = s.to_string();
        finish_job(id, std::move(o));
        return;
      }
      spawn_job(id);
    };
  });
  if (!submitted.is_ok()) {
    promises::JobOutcome o;
    o.exit_status = -1;
    o.error = submitted.to_string();
    finish_job(id, std::move(o));
  }
}

void Daemon::Impl::spawn_job(const Digest& id) {
  Job& job = jobs.at(id);
  SpawnSpec spec;
  spec.argv = job.start.stage.argv;
  spec.env = job_environment(job.layout, job.start.stage,
                             {id, job.start.job.pipeline, job.start.job.shard});
  spec.cwd = job.layout.work_dir;
  spec.stdout_path = job.layout.stdout_path;
  spec.stderr_path = job.layout.stderr_path;
  spec.status_path = job.layout.status_path;
  auto proc = JobProcess::spawn(spec);
  if (!proc.is_ok()) {
    promises::JobOutcome o;
    o.exit_status = -1;
    o.error = proc.status().to_string();
    finish_job(id, std::move(o));
    return;
  }
  job.process = std::move(proc).value();
  job.started_unix_ms = wall_ms();
  job.started_mono_ms = now_ms();
  // Hand-off latency: the newest upstream result this job consumes was signed, then
  // this process started (wall clocks; one clock when the agents share a host).
  if (const auto* planned = core->plan().find(id)) {
    std::int64_t newest = 0;
    for (const auto& b : planned->bindings) {
      const Statement* up = core->ledger().get(b.producer, b.producer_seq);
      if (up && std::holds_alternative<JobResult>(up->body)) {
        newest = std::max(newest, up->wall_unix_ms);
      }
    }
    if (newest > 0) {
      metrics.handoff.observe(static_cast<double>(std::max<std::int64_t>(
                                  0, job.started_unix_ms - newest)) / 1000.0);
    }
  }
  if (job.start.timeout_ms > 0) job.deadline_mono_ms = job.started_mono_ms + job.start.timeout_ms;
  ++jobs_started;
  Status s = ledger->put_running_job(
      {id, job.start.epoch, job.process->pid(), job.layout.work_dir, job.started_unix_ms});
  if (!s.is_ok()) log->warn("cannot record running job {}: {}", id.short_hex(), s.to_string());
  log->info("job {} {}/{}{} started (pid {})", id.short_hex(), job.start.job.pipeline,
            job.start.job.stage, job.start.job.shard.empty() ? "" : "[" + job.start.job.shard + "]",
            job.process->pid());
}

void Daemon::Impl::kill_job(const promises::KillJob& kill) {
  if (auto r = recovered.find(kill.job); r != recovered.end() && r->second.epoch == kill.epoch) {
    // Left running by the previous vowd and not resumable: stop it now; it is reported
    // stopped once reaped (check_jobs), or at once if it is gone already.
    store::RunningJob row = r->second;
    recovered.erase(r);
    log->info("job {} left from before the restart stopped: {}", kill.job.short_hex(), kill.reason);
    auto proc = JobProcess::adopt(static_cast<pid_t>(row.pid), row.work_dir + "/status");
    if (proc.is_ok() && !jobs.count(kill.job)) {
      proc->kill_group(SIGKILL);
      Job job;
      job.start.job.job = kill.job;
      job.start.epoch = kill.epoch;
      job.layout = job_layout(state_dir, kill.job, kill.epoch);
      job.layout.work_dir = row.work_dir;
      job.process = std::move(proc).value();
      job.killed = true;
      jobs.emplace(kill.job, std::move(job));
      return;
    }
    if (proc.is_ok()) proc->kill_group(SIGKILL);
    // The table's row is the job's, not this run's, if another run of it is here.
    if (!jobs.count(kill.job)) (void)ledger->remove_running_job(kill.job);
    remove_work_dir(row.work_dir);
    stopped_runs.emplace_back(kill.job, kill.epoch);
    return;
  }
  auto it = jobs.find(kill.job);
  if (it == jobs.end() || it->second.start.epoch != kill.epoch) {
    stopped_runs.emplace_back(kill.job, kill.epoch);  // no process of that run here
    return;
  }
  Job& job = it->second;
  if (job.killed) return;  // reported once gone
  job.killed = true;
  log->info("job {} stopped: {}", kill.job.short_hex(), kill.reason);
  // Without a process yet (inputs being materialized) or any more (outputs being
  // imported), the background work's end reports it.
  if (job.process) job.process->kill_group(SIGKILL);
}

void Daemon::Impl::report_stopped_runs() {
  std::vector<std::pair<Digest, std::uint32_t>> gone;
  gone.swap(stopped_runs);
  for (const auto& [id, epoch] : gone) carry_out(core->job_stopped(id, epoch));
}

void Daemon::Impl::check_jobs() {
  std::int64_t now = now_ms();
  std::vector<std::pair<Digest, ExitStatus>> exited;
  for (auto& [id, job] : jobs) {
    if (!job.process) continue;
    if (job.deadline_mono_ms && now >= job.deadline_mono_ms && !job.timed_out) {
      job.timed_out = true;
      job.process->kill_group(SIGKILL);
    }
    if (auto e = job.process->poll_exit()) exited.emplace_back(id, *e);
  }
  for (const auto& [id, e] : exited) job_finished(id, e);
}

void Daemon::Impl::job_finished(const Digest& id, ExitStatus status) {
  auto it = jobs.find(id);
  if (it == jobs.end()) return;
  Job& job = it->second;
  job.process.reset();
  if (!job.killed && job.started_mono_ms > 0) {
    metrics.job_duration.observe(static_cast<double>(now_ms() - job.started_mono_ms) / 1000.0);
  }
  if (job.killed) {
    (void)ledger->remove_running_job(id);
    remove_work_dir(job.layout.work_dir);
    stopped_runs.emplace_back(id, job.start.epoch);
    jobs.erase(it);
    return;
  }
  bool timed_out = job.timed_out;
  std::int64_t timeout_ms = job.start.timeout_ms;
  std::vector<std::string> outputs = job.start.stage.outputs;
  JobLayout layout = job.layout;
  std::int64_t started = job.started_unix_ms;
  Worker* w = worker.get();
  Status submitted = background->submit([=, this]() -> std::function<void()> {
    promises::JobOutcome o;
    o.exit_status = status.exit_status;
    o.started_unix_ms = started;
    o.ended_unix_ms = wall_ms();
    auto log_digest = [&](const std::string& path) -> std::optional<Digest> {
      // An empty log (most jobs' stderr) is the empty object. Once the store holds it,
      // importing it again would only rewrite it and sync the file, its directory and
      // the index: three syncs per log, for nothing.
      std::error_code ec;
      if (fs::file_size(path, ec) == 0 && !ec) {
        Digest empty = blake2b(std::string_view());
        auto held = w->artifacts->has(empty);
        if (held.is_ok() && *held) return empty;
      }
      auto ref = w->artifacts->import_path(path);
      if (!ref.is_ok()) return std::nullopt;
      return ref->digest;
    };
    o.stdout_digest = log_digest(layout.stdout_path);
    o.stderr_digest = log_digest(layout.stderr_path);
    if (timed_out) {
      o.error = "timed out after " + promises::format_duration_ms(timeout_ms);
    } else if (!status.ok()) {
      o.error = describe(status);
    } else {
      o.ok = true;
      for (const auto& name : outputs) {
        std::string path = layout.output_path(name);
        std::error_code ec;
        if (!fs::exists(fs::symlink_status(path, ec))) {
          o.ok = false;
          o.error = "output '" + name + "' missing: the command exited 0 but wrote nothing at " +
                    "$VOW_OUT_" + name;
          break;
        }
        auto ref = w->artifacts->import_path(path);
        if (!ref.is_ok()) {
          o.ok = false;
          o.error = "output '" + name + "': " + ref.status().to_string();
          break;
        }
        o.outputs.push_back({name, *ref});
      }
      if (!o.ok) o.outputs.clear();
    }
    return [this, id, o = std::move(o)]() mutable { finish_job(id, std::move(o)); };
  });
  if (!submitted.is_ok()) {
    promises::JobOutcome o;
    o.exit_status = status.exit_status;
    o.error = submitted.to_string();
    finish_job(id, std::move(o));
  }
}

void Daemon::Impl::finish_job(const Digest& id, promises::JobOutcome outcome) {
  auto it = jobs.find(id);
  if (it == jobs.end()) return;
  Job job = std::move(it->second);
  jobs.erase(it);
  (void)ledger->remove_running_job(id);
  if (job.killed) {
    remove_work_dir(job.layout.work_dir);
    stopped_runs.emplace_back(id, job.start.epoch);
    return;
  }
  if (outcome.ok) {
    log->info("job {} {}/{} done", id.short_hex(), job.start.job.pipeline, job.start.job.stage);
    remove_work_dir(job.layout.work_dir);
  } else {
    log->warn("job {} {}/{} failed: {} (work directory kept: {})", id.short_hex(),
              job.start.job.pipeline, job.start.job.stage, outcome.error, job.layout.work_dir);
  }
  carry_out(core->job_exited(id, job.start.epoch, std::move(outcome)));
}

}  // namespace vow::agent
