// WalSyncer: makes the loop's ledger commits durable off the loop (docs/agent.md,
// "Durability off the loop").
//
// vowd's loop commits each group of statements without syncing (SQLite in WAL mode with
// synchronous=NORMAL: a commit survives a crash of the process at once), then asks for
// a sync with a ticket. This thread runs fdatasync on the write-ahead log (its own
// descriptor on the same file) for the highest ticket asked so far, so a burst of
// commits shares one sync, and signals an eventfd; the loop reads the highest ticket
// made durable and hands it to the agent, which then sends and does what waited for it.
// In WAL mode a transaction is durable once its frames are on disk in the log; the
// checkpoint that copies them into the database syncs the database itself (the worker's
// connection, synchronous=FULL).
//
// Thread-safety: request(), take() and sync_now() from the loop thread; the sync runs
// on the syncer's own thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "promises/status.h"

namespace vow::agent {

class WalSyncer {
 public:
  // `db_path`: the SQLite database; its log is db_path + "-wal". `cheap_sync_us`: see
  // sync_if_cheap (tests set it).
  explicit WalSyncer(std::string db_path, std::int64_t cheap_sync_us = kCheapSyncUs);
  ~WalSyncer();
  WalSyncer(const WalSyncer&) = delete;
  WalSyncer& operator=(const WalSyncer&) = delete;

  // Readable when take() has something new.
  int fd() const { return event_fd_; }
  // Every commit made so far is to be durable as `ticket` (tickets only grow).
  void request(std::uint64_t ticket);
  // The highest ticket made durable, and the first error (which stops the syncer).
  std::uint64_t durable() const;
  Status error() const;
  // Clears the eventfd; call when fd() is readable.
  void clear();
  // Syncs now on the calling thread (at shutdown, once the thread is idle) and returns
  // the highest ticket asked for, durable.
  Result<std::uint64_t> sync_now();
  // Makes every commit so far durable as `ticket` on the calling thread, but only where
  // that costs the loop less than handing it to the thread would (a wake of the thread
  // and, once it is done, of the loop): the last sync took at most kCheapSyncUs (tmpfs,
  // a disk whose cache survives power loss), the thread is idle and nothing has failed.
  // True if it did (the ticket is durable); false otherwise (a failed sync also
  // signals fd(), so that the loop reads error()).
  bool sync_if_cheap(std::uint64_t ticket);
  // Syncs at most this long (measured, the last one) are made on the loop.
  static constexpr std::int64_t kCheapSyncUs = 50;

 private:
  void run();
  Status sync_log();
  Status sync_as(std::uint64_t target);
  void signal_loop();  // wakes the loop: fd() readable

  std::string db_path_;
  std::string wal_path_;
  int event_fd_ = -1;
  int wal_fd_ = -1;  // owned by whichever thread syncs (the syncer's, or sync_now's)
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::uint64_t requested_ = 0;
  std::uint64_t durable_ = 0;
  bool syncing_ = false;
  bool stopping_ = false;
  std::int64_t cheap_sync_us_;
  std::int64_t last_sync_us_ = -1;  // how long the last sync took; -1 before the first
  Status error_;
  std::thread thread_;
};

}  // namespace vow::agent
