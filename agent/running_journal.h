// The running-job journal (docs/agent.md, "The running-job table"): where a run's row is
// noted at the moment its process starts, before the row is committed with the pass that
// follows. One write a run, where a row committed on its own was a SQLite transaction
// (its locks, its log frames, its commit) on the way from the spawn to the next job; the
// note survives a crash of the agent's process as that commit did (neither is synced: a
// power loss ends the process too).
//
// STATE/running.journal holds lines
//   GEN JOB EPOCH PID STARTED_MS CHECK WORK_DIR
// (JOB in hex, CHECK a hash of the rest of the line in hex), written one after another
// from the start of the file. Once every run noted so far has its row committed (or has
// ended), settle() starts the file again: it writes `GEN+1 -` at offset 0 and the next
// note goes there. A reader takes the lines from the start while they are whole, check
// out and carry the first line's GEN: what follows (an earlier generation's lines, or
// the tail of one) is not read.
//
// Not thread-safe: the agent's loop owns it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "promises/status.h"
#include "store/ledger.h"

namespace vow::agent {

// STATE/running.journal.
std::string running_journal_path(const std::string& state_dir);

class RunningJournal {
 public:
  // The journal at PATH; the file is made (emptied) at the first note.
  explicit RunningJournal(std::string path);
  ~RunningJournal();
  RunningJournal(const RunningJournal&) = delete;
  RunningJournal& operator=(const RunningJournal&) = delete;

  // The runs noted since the last settle: the last line for each job, in file order.
  // Empty for a missing file; kIo if it cannot be read.
  static Result<std::vector<store::RunningJob>> read(const std::string& path);

  // Notes a run: one positioned write, done when this returns ok.
  Status note(const store::RunningJob& row);
  // Every run noted so far has its row committed, or has ended: the next note starts
  // the file again. A no-op when nothing was noted since the last.
  void settle();
  // Bytes noted since the last settle (tests).
  std::uint64_t noted_bytes() const { return offset_; }

 private:
  std::string path_;
  int fd_ = -1;
  std::uint64_t gen_ = 1;
  std::uint64_t offset_ = 0;
};

// The rows a restart takes over: the ledger's ROWS, with each run NOTED that the ledger
// has no row for (a crash came between its start and the commit of its row) added, or
// put in place of the ledger's row of the same job (a later run of it). In the ledger's
// order, then the noted ones in theirs.
std::vector<store::RunningJob> merge_noted_runs(std::vector<store::RunningJob> rows,
                                                const std::vector<store::RunningJob>& noted,
                                                std::vector<store::RunningJob>* added);

}  // namespace vow::agent
