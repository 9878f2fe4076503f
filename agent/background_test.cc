#include "agent/background.h"

#include <doctest/doctest.h>
#include <poll.h>

#include <atomic>
#include <chrono>

namespace vow::agent {

TEST_CASE("background tasks run off the loop and complete on it, signalled by the fd") {
  Background bg(2);
  const auto loop_thread = std::this_thread::get_id();
  std::atomic<int> on_worker{0};
  int completed = 0;
  for (int i = 0; i < 50; ++i) {
    REQUIRE(bg.submit([&, loop_thread] {
                if (std::this_thread::get_id() != loop_thread) ++on_worker;
                return [&completed, loop_thread] {
                  CHECK(std::this_thread::get_id() == loop_thread);
                  ++completed;
                };
              }).is_ok());
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (completed < 50 && std::chrono::steady_clock::now() < deadline) {
    struct pollfd p {
      bg.fd(), POLLIN, 0
    };
    if (::poll(&p, 1, 100) > 0) bg.drain();
  }
  CHECK(completed == 50);
  CHECK(on_worker == 50);
  CHECK(bg.pending() == 0);
}

TEST_CASE("a full background queue refuses work instead of growing") {
  Background bg(1);
  std::atomic<bool> release{false};
  REQUIRE(bg.submit([&] {
              while (!release) std::this_thread::yield();
              return std::function<void()>();
            }).is_ok());
  Status last;
  std::size_t accepted = 1;
  for (std::size_t i = 0; i < Background::kMaxPendingTasks + 10; ++i) {
    last = bg.submit([] { return std::function<void()>(); });
    if (!last.is_ok()) break;
    ++accepted;
  }
  CHECK(last.code() == StatusCode::kOverloaded);
  CHECK(accepted == Background::kMaxPendingTasks);
  release = true;
}

}  // namespace vow::agent
