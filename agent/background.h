// Background: work that must not run on the event loop (hashing and importing large
// artifacts, materializing inputs, fsync-heavy writes) runs here, on worker threads,
// and reports back to the loop.
//
// The loop submits a task (a function run on a worker) and a completion (run later on
// the loop thread, from drain()). The loop polls fd() for POLLIN and calls drain() when
// it is readable; completions run in the order their tasks finished.
//
// Limits: at most kMaxPendingTasks queued; submit() refuses more (kOverloaded) so a
// burst cannot grow memory without bound.
//
// Thread-safety: submit(), drain() and fd() are for the loop thread only; tasks run on
// workers and must not touch loop state (capture what they need by value). The
// destructor finishes running tasks, drops queued ones, and joins the workers.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "agent/effects.h"
#include "promises/status.h"

namespace vow::agent {

class Background final : public Worker {
 public:
  static constexpr std::size_t kMaxPendingTasks = 4096;

  // A task returns the completion to run on the loop thread (Worker::Task).

  explicit Background(std::size_t threads);
  ~Background();
  Background(const Background&) = delete;
  Background& operator=(const Background&) = delete;

  Status submit(Task task) override;
  int fd() const { return event_fd_; }
  // Runs the completions of finished tasks. Returns how many ran.
  std::size_t drain();
  // Tasks queued or running.
  std::size_t pending() const;

 private:
  void worker();

  int event_fd_ = -1;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> tasks_;
  std::deque<std::function<void()>> done_;
  std::size_t running_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace vow::agent
