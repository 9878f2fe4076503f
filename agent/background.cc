#include "agent/background.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>

#include "promises/assert.h"

namespace vow::agent {

Background::Background(std::size_t threads) {
  event_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  VOW_ASSERT(event_fd_ >= 0, "eventfd failed");
  VOW_ASSERT(threads >= 1, "Background needs a thread, got %zu", threads);
  for (std::size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { worker(); });
}

Background::~Background() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    tasks_.clear();
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
  ::close(event_fd_);
}

Status Background::submit(Task task) {
  {
    std::lock_guard lock(mu_);
    if (tasks_.size() + running_ >= kMaxPendingTasks) {
      return Status::overloaded("background queue full (" + std::to_string(kMaxPendingTasks) +
                                " tasks)");
    }
    tasks_.push_back(std::move(task));
  }
  cv_.notify_one();
  return Status::ok();
}

std::size_t Background::pending() const {
  std::lock_guard lock(mu_);
  return tasks_.size() + running_;
}

void Background::worker() {
  for (;;) {
    Task task;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
      if (stopping_) return;
      task = std::move(tasks_.front());
      tasks_.pop_front();
      ++running_;
    }
    auto completion = task();
    {
      std::lock_guard lock(mu_);
      --running_;
      if (completion) done_.push_back(std::move(completion));
    }
    std::uint64_t one = 1;
    ssize_t n = ::write(event_fd_, &one, sizeof(one));
    (void)n;  // EAGAIN only when the counter is saturated: the loop is woken anyway
  }
}

std::size_t Background::drain() {
  std::uint64_t count = 0;
  ssize_t n = ::read(event_fd_, &count, sizeof(count));
  (void)n;
  std::deque<std::function<void()>> done;
  {
    std::lock_guard lock(mu_);
    done.swap(done_);
  }
  for (auto& f : done) f();
  return done.size();
}

}  // namespace vow::agent
