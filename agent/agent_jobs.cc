// Carrying out StartJob and KillJob: a run's phases (inputs materialized on the worker,
// the process, outputs collected on the worker), timeouts, and the processes left from
// before a restart (docs/agent.md).
#include <algorithm>

#include "agent/agent.h"
#include "agent/sandbox.h"
#include "promises/config.h"
#include "promises/limits.h"

namespace vow::agent {
namespace {

std::string describe(const ProcessExit& e) {
  if (e.signaled) return "killed by signal " + std::to_string(e.exit_status - 128);
  return "exit status " + std::to_string(e.exit_status);
}

promises::JobOutcome failure(const std::string& error) {
  promises::JobOutcome o;
  o.exit_status = -1;
  o.error = error;
  return o;
}

}  // namespace

void Agent::start_job(promises::StartJob start) {
  Digest id = start.job.job;
  if (auto it = jobs_.find(id); it != jobs_.end()) {
    // The core starts no epoch of a job before the run it stopped is reported gone.
    if (it->second.start.epoch != start.epoch) {
      log_->error("job {} epoch {}: start ignored, epoch {} is still here", id.short_hex(),
                  start.epoch, it->second.start.epoch);
    }
    return;
  }
  // After a restart: take over what the earlier incarnation started.
  if (auto it = recovered_.find(id); it != recovered_.end()) {
    store::RunningJob row = std::move(it->second);
    recovered_.erase(it);
    if (adopt(row, start)) return;
  }
  Job job;
  job.start = std::move(start);
  job.started_unix_ms = fx_.clock->wall_ms();
  job.started_mono_ms = fx_.clock->now_ms();
  Status made = fx_.executor->create_work_dir(job.start);
  jobs_.emplace(id, job);
  if (!made.is_ok()) {
    finish_job(id, failure(made.to_string()));
    return;
  }
  log_->info("job {} epoch {}: materializing {} inputs", job_name(job.start), job.start.epoch,
             job.start.inputs.size());
  Executor* ex = fx_.executor;
  // Inputs that came with their result moments ago, placed and not stored since, are
  // linked here: the start makes no trip to the worker and back.
  if (inputs_placed(job.start) &&
      ex->link_placed_inputs(job.start, [this](const Digest& d) {
          return fx_.sink->placed_source(d);
        }).is_ok()) {
    ++counters_.started_from_placed;
    spawn_job(id);
    return;
  }
  promises::StartJob s = job.start;
  submit(
      [this, ex, id, s]() -> std::function<void()> {
        Status st = ex->materialize_inputs(s);
        return [this, id, st] {
          auto jt = jobs_.find(id);
          if (jt == jobs_.end()) return;
          if (jt->second.stopping) {
            job_gone(id);
          } else if (!st.is_ok()) {
            finish_job(id, failure(st.to_string()));
          } else {
            spawn_job(id);
          }
        };
      },
      [this, id](const Status& st) { finish_job(id, failure(st.to_string())); });
}

// Takes over a process the previous incarnation left, for the run the core resumed;
// false if there is nothing to take over (start it afresh).
bool Agent::adopt(const store::RunningJob& row, promises::StartJob& start) {
  Digest id = start.job.job;
  if (row.epoch != start.epoch) {
    fx_.executor->discard_leftover(row);
    return false;
  }
  Adoption a = fx_.executor->adopt(row, start);
  if (a.kind == Adoption::Kind::kGone) {
    fx_.executor->discard_leftover(row);
    return false;
  }
  Job job;
  job.start = std::move(start);
  job.started_unix_ms =
      a.kind == Adoption::Kind::kRunning ? row.started_unix_ms : a.started_unix_ms;
  job.started_mono_ms = fx_.clock->now_ms();
  job.phase = Job::Phase::kRunning;
  ++counters_.jobs_adopted;
  jobs_.emplace(id, std::move(job));
  if (a.kind == Adoption::Kind::kFinished) {
    ProcessExit exit{a.exit_status, a.signaled, a.limits};
    log_->info("job {} finished while this agent was down ({}): adopting its outputs",
               id.short_hex(), describe(exit));
    collect_job(id, exit);
  } else {
    log_->info("job {} still running (pid {}): re-adopted", id.short_hex(), row.pid);
  }
  return true;
}

// Whether every input of the start is an object placed here and not stored since
// (Agent::fetch), so the loop may link them (Executor::link_placed_inputs).
bool Agent::inputs_placed(const promises::StartJob& start) const {
  return !start.inputs.empty() &&
         std::all_of(start.inputs.begin(), start.inputs.end(), [&](const auto& in) {
           return std::find(placed_.begin(), placed_.end(), in.artifact.digest) != placed_.end();
         });
}

void Agent::spawn_job(const Digest& id) {
  Job& job = jobs_.at(id);
  auto pid = fx_.executor->spawn(job.start);
  if (!pid.is_ok()) {
    finish_job(id, failure(pid.status().to_string()));
    return;
  }
  job.phase = Job::Phase::kRunning;
  job.started_unix_ms = fx_.clock->wall_ms();
  job.started_mono_ms = fx_.clock->now_ms();
  if (job.start.timeout_ms > 0) job.deadline_ms = job.started_mono_ms + job.start.timeout_ms;
  ++counters_.jobs_started;
  observe_handoff(id, job.started_unix_ms);
  rows_ended_.erase(id);  // an earlier run's row, replaced by this one's
  // Noted at once (one write: a crash from here on leaves it to the restart to take over
  // or stop); its row goes in the next commit, with the pass's statements, rather than
  // in a transaction of its own on the way to the next start (docs/agent.md).
  store::RunningJob row{id, job.start.epoch, *pid, fx_.executor->work_dir(job.start),
                        job.started_unix_ms};
  Status s = fx_.state->note_running_job(row);
  if (!s.is_ok()) log_->warn("cannot record running job {}: {}", id.short_hex(), s.to_string());
  rows_started_.insert_or_assign(id, std::move(row));
  log_->info("job {} started (pid {})", job_name(job.start), *pid);
  store_placed();
}

// Hand-off latency: the newest upstream result this job consumes was signed, then its
// process started (wall clocks; one clock when the agents share a host).
void Agent::observe_handoff(const Digest& id, std::int64_t started_unix_ms) {
  const auto* planned = core_->plan().find(id);
  if (planned == nullptr) return;
  std::int64_t newest = 0;
  for (const auto& b : planned->bindings) {
    const Statement* up = core_->ledger().get(b.producer, b.producer_seq);
    if (up && std::holds_alternative<JobResult>(up->body))
      newest = std::max(newest, up->wall_unix_ms);
  }
  if (newest > 0) {
    metrics_.handoff.observe(
        static_cast<double>(std::max<std::int64_t>(0, started_unix_ms - newest)) / 1000.0);
  }
}

// A kill is a request: the core keeps the run "stopping" (holding its place) until it
// hears job_stopped, which is fed once the run's process is gone, or at once when there
// is none.
void Agent::kill_job(const promises::KillJob& kill) {
  if (auto r = recovered_.find(kill.job); r != recovered_.end() && r->second.epoch == kill.epoch) {
    store::RunningJob row = std::move(r->second);
    recovered_.erase(r);
    stop_leftover(row, kill);
    return;
  }
  auto it = jobs_.find(kill.job);
  if (it == jobs_.end() || it->second.start.epoch != kill.epoch) {
    Digest id = kill.job;
    std::uint32_t epoch = kill.epoch;
    queue("job-stopped", [this, id, epoch] { return core_->job_stopped(id, epoch); });  // no process here
    return;
  }
  Job& job = it->second;
  if (job.stopping) return;  // reported once gone
  job.stopping = true;
  log_->info("job {} stopped: {}", kill.job.short_hex(), kill.reason);
  // A run still materializing or collecting ends when its worker task does.
  if (job.phase == Job::Phase::kRunning) fx_.executor->kill(kill.job);
}

// A process left by the previous incarnation that the core did not resume: taken over
// only to be stopped, and reported once gone.
void Agent::stop_leftover(const store::RunningJob& row, const promises::KillJob& kill) {
  log_->info("job {} left from before the restart stopped: {}", kill.job.short_hex(), kill.reason);
  promises::StartJob start;
  start.job.job = kill.job;
  start.epoch = kill.epoch;
  if (fx_.executor->adopt(row, start).kind == Adoption::Kind::kRunning) {
    Job job;
    job.start = std::move(start);
    job.phase = Job::Phase::kRunning;
    job.stopping = true;
    jobs_.emplace(kill.job, std::move(job));
    fx_.executor->kill(kill.job);
    return;
  }
  fx_.executor->discard_leftover(row);
  Status s = fx_.state->remove_running_job(kill.job);
  if (!s.is_ok()) log_->warn("running-job table: {}", s.to_string());
  Digest id = kill.job;
  std::uint32_t epoch = kill.epoch;
  queue("job-stopped", [this, id, epoch] { return core_->job_stopped(id, epoch); });
}

void Agent::process_exited(const Digest& id, const ProcessExit& exit) {
  auto it = jobs_.find(id);
  if (it != jobs_.end() && it->second.phase == Job::Phase::kRunning) {
    if (it->second.stopping) {
      job_gone(id);
    } else {
      metrics_.observe_job(
          it->second.start.job.pipeline, it->second.start.job.stage,
          static_cast<double>(fx_.clock->now_ms() - it->second.started_mono_ms) / 1000.0);
      collect_job(id, exit);
    }
  }
  pump();
}

void Agent::collect_job(const Digest& id, const ProcessExit& exit) {
  Job& job = jobs_.at(id);
  job.phase = Job::Phase::kCollecting;
  log_->debug("job {} exited ({}): collecting its outputs", job_name(job.start), describe(exit));
  std::string error;
  if (job.timed_out) {
    error = "timed out after " + promises::format_duration_ms(job.start.timeout_ms);
  } else if (!exit.ok()) {
    error = describe(exit) + limits_note(job.start.stage, exit.limits);
  }
  Executor* ex = fx_.executor;
  ArtifactSink* sink = fx_.sink;
  promises::StartJob s = job.start;
  std::int64_t started = job.started_unix_ms;
  std::int64_t ended = fx_.clock->wall_ms();
  submit(
      [this, ex, sink, id, s, exit, error, started, ended]() -> std::function<void()> {
        std::vector<store::ArtifactRecord> rows;
        std::string refused = error.empty() ? ex->refused_outputs(s) : std::string();
        promises::JobOutcome o =
            ex->collect(s, exit, refused.empty() ? error : refused, &rows);
        o.started_unix_ms = started;
        o.ended_unix_ms = ended;
        bool was_refused = !refused.empty();
        // The small outputs, read while their pages are warm, to go with the result.
        std::vector<promises::Attached> small;
        for (const auto& out : o.outputs) {
          const ArtifactRef& a = out.artifact;
          if (a.is_tree || a.size_bytes > promises::kMaxAttachedBytes) continue;
          if (auto bytes = sink->held_bytes(a.digest, promises::kMaxAttachedBytes)) {
            small.push_back(promises::Attached{a.digest, std::move(*bytes)});
          }
        }
        return [this, id, was_refused, o = std::move(o), rows = std::move(rows),
                small = std::move(small)]() mutable {
          for (auto& a : small) own_attached_.put(a.digest, std::move(a.bytes));
          if (was_refused) ++counters_.outputs_refused;
          // Committed with the next pass's statements: the result among them.
          index_rows_.insert(index_rows_.end(), rows.begin(), rows.end());
          finish_job(id, std::move(o));
        };
      },
      [this, id, exit](const Status& st) {
        promises::JobOutcome o = failure(st.to_string());
        o.exit_status = exit.exit_status;
        finish_job(id, std::move(o));
      });
}

void Agent::finish_job(const Digest& id, promises::JobOutcome outcome) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  if (it->second.stopping) {
    job_gone(id);
    return;
  }
  Job job = std::move(it->second);
  jobs_.erase(it);
  // The row goes in the commit of the pass that publishes the result: a crash before it
  // leaves the row, and the restart finds the run ended (or its directory gone) and
  // the core decides, as for any row it finds.
  rows_ended_.insert(id);
  rows_started_.erase(id);  // noted, and never committed: nothing to remove
  if (outcome.ok) {
    log_->info("job {} done", job_name(job.start));
    fx_.executor->remove_work_dir(job.start);
  } else {
    log_->warn("job {} failed: {} (work directory kept: {})", job_name(job.start),
               promises::printable(outcome.error, 512),
               fx_.executor->work_dir(job.start));
  }
  std::uint32_t epoch = job.start.epoch;
  queue("job-finished", [this, id, epoch, o = std::move(outcome)]() mutable {
    return core_->job_exited(id, epoch, std::move(o));
  });
}

// A stopped run is gone: its files go, and the core hears it (its place is free).
void Agent::job_gone(const Digest& id) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  rows_ended_.insert(id);
  rows_started_.erase(id);
  fx_.executor->remove_work_dir(it->second.start);
  std::uint32_t epoch = it->second.start.epoch;
  jobs_.erase(it);
  queue("job-stopped", [this, id, epoch] { return core_->job_stopped(id, epoch); });
}

void Agent::check_deadlines() {
  std::int64_t now = fx_.clock->now_ms();
  for (auto& [id, job] : jobs_) {
    if (job.phase != Job::Phase::kRunning || job.deadline_ms == 0) continue;
    if (now >= job.deadline_ms && !job.timed_out) {
      job.timed_out = true;
      fx_.executor->kill(id);
    }
  }
}

}  // namespace vow::agent
