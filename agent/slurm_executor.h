// Jobs on a Slurm cluster (docs/executors.md): each run is a batch job submitted with
// sbatch, its work directory (inputs, outputs, logs, status) under a directory the agent
// and the compute nodes share. The batch script runs the command under the same
// supervisor as a local job, which writes the exit status to the shared directory.
//
// Nothing here blocks the loop on Slurm: sbatch, squeue and scancel run as child
// processes whose pidfds the loop polls with its other descriptors; reap() reads what
// they said. A run's end is its status file, or (no status) its absence from squeue
// twice in a row (cancelled, timed out, node failure). After a restart a run is
// re-adopted by the Slurm job id that sbatch wrote into its work directory.
//
// JobExecutors sends each run to the executor its stage is promised with.
//
// Not thread-safe: loop calls from the loop, worker calls (effects.h) from the worker.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "agent/effects.h"
#include "agent/job_layout.h"
#include "agent/local_effects.h"
#include "agent/process.h"
#include "promises/pipeline.h"

namespace vow::agent {

// The batch script of a run: cd to its work directory, then the supervisor with the
// job's whole environment and its command line (limits included).
std::string slurm_batch_script(const JobLayout& layout, const std::vector<std::string>& env,
                               const std::vector<std::string>& argv);

// sbatch's command line for a run (without the script path, which comes last).
std::vector<std::string> sbatch_options(const promises::SlurmConfig& config,
                                        const JobLayout& layout, const promises::StartJob& start);

class SlurmExecutor final : public Executor {
 public:
  // `state_dir`: the agent's own (for squeue's and scancel's output); the runs' files
  // live under config.shared_dir.
  SlurmExecutor(promises::SlurmConfig config, std::string state_dir,
                store::ArtifactStore* worker_store);
  Status create_work_dir(const promises::StartJob& start) override;
  Status materialize_inputs(const promises::StartJob& start) override;
  // Writes the batch script and starts sbatch; returns sbatch's pid (the Slurm job id
  // comes later, into WORK/slurm-job).
  Result<std::int64_t> spawn(const promises::StartJob& start) override;
  // scancel, once the Slurm job id is known.
  void kill(const Digest& job) override;
  Adoption adopt(const store::RunningJob& row, const promises::StartJob& start) override;
  void discard_leftover(const store::RunningJob& row) override;
  std::string refused_outputs(const promises::StartJob& start) override;
  promises::JobOutcome collect(const promises::StartJob& start, const ProcessExit& exit,
                               const std::string& error,
                               std::vector<store::ArtifactRecord>* index_rows) override;
  void remove_work_dir(const promises::StartJob& start) override;
  std::string work_dir(const promises::StartJob& start) const override;

  // For the loop: the helpers' pidfds; the runs that ended since (and a poll of squeue
  // started when one is due).
  std::vector<int> pidfds() const;
  std::vector<std::pair<Digest, ProcessExit>> reap();
  // Whether `work_dir` is a run's of this executor (under the shared directory).
  bool owns(const std::string& work_dir) const;
  const promises::SlurmConfig& config() const { return config_; }

 private:
  struct Run {
    JobLayout layout;
    std::string slurm_id;               // empty until sbatch said it
    std::optional<JobProcess> sbatch;   // while it runs
    bool cancel = false;                // killed before its id was known
    int missing = 0;                    // squeue answers in a row without it
  };
  using Clock = std::chrono::steady_clock;

  Result<JobProcess> helper(const std::vector<std::string>& argv, const std::string& out,
                            const std::string& err, const std::string& status);
  void cancel(const std::string& slurm_id);
  void start_poll();
  void end_poll(std::vector<std::pair<Digest, ProcessExit>>& ended);

  promises::SlurmConfig config_;
  std::string helper_dir_;  // STATE/slurm
  LocalExecutor files_;     // the runs' files, under the shared directory
  std::map<Digest, Run> runs_;
  std::optional<JobProcess> squeue_;
  std::set<std::string> polled_;  // the ids known when the squeue in flight started
  std::vector<JobProcess> cancels_;
  Clock::time_point next_poll_{};
  std::uint64_t helpers_ = 0;
};

// Routes each run to the executor its stage is promised with ("slurm" or "local").
class JobExecutors final : public Executor {
 public:
  JobExecutors(LocalExecutor* local, SlurmExecutor* slurm) : local_(local), slurm_(slurm) {}
  // The stages promised with executor = "slurm" (pipeline, stage).
  void set_slurm_stages(std::set<std::pair<std::string, std::string>> stages) {
    slurm_stages_ = std::move(stages);
  }
  Status create_work_dir(const promises::StartJob& s) override {
    return pick(s)->create_work_dir(s);
  }
  Status materialize_inputs(const promises::StartJob& s) override {
    return pick(s)->materialize_inputs(s);
  }
  Status link_placed_inputs(const promises::StartJob& s, const PlacedSource& source) override {
    return pick(s)->link_placed_inputs(s, source);
  }
  Result<std::int64_t> spawn(const promises::StartJob& s) override;
  void kill(const Digest& job) override;
  Adoption adopt(const store::RunningJob& row, const promises::StartJob& s) override;
  void discard_leftover(const store::RunningJob& row) override;
  std::string refused_outputs(const promises::StartJob& s) override {
    return pick(s)->refused_outputs(s);
  }
  promises::JobOutcome collect(const promises::StartJob& s, const ProcessExit& exit,
                               const std::string& error,
                               std::vector<store::ArtifactRecord>* index_rows) override {
    return pick(s)->collect(s, exit, error, index_rows);
  }
  void remove_work_dir(const promises::StartJob& s) override;
  std::string work_dir(const promises::StartJob& s) const override {
    return pick(s)->work_dir(s);
  }
  std::vector<int> pidfds() const;
  // FIRED: which of pidfds() fired since the last reap (nullptr: look at every one).
  std::vector<std::pair<Digest, ProcessExit>> reap(const std::vector<int>* fired = nullptr);

 private:
  Executor* pick(const promises::StartJob& s) const;
  LocalExecutor* local_;
  SlurmExecutor* slurm_;  // nullptr: no [slurm]
  std::set<std::pair<std::string, std::string>> slurm_stages_;
  std::set<Digest> on_slurm_;  // runs started or adopted there
};

}  // namespace vow::agent
