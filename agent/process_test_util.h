// Helpers shared by the tests that start real job processes (process_test.cc,
// sandbox_test.cc, job_cgroup_test.cc). Test-only: include after <doctest/doctest.h>.
#pragma once

#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "agent/process.h"

namespace vow::agent::testing {

// The whole content of a file ("" if it cannot be read).
inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Waits for the job's exit through its pidfd; fails the test after 30 s.
inline ExitStatus wait_exit(JobProcess& p) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    struct pollfd fd {
      p.pidfd(), POLLIN, 0
    };
    ::poll(&fd, 1, 100);
    if (auto e = p.poll_exit()) return *e;
  }
  FAIL("process did not exit in time");
  return {};
}

// Whether `pid` is gone (or a zombie, not reaped yet) within 10 s.
inline bool process_gone(pid_t pid) {
  for (int i = 0; i < 2000; ++i) {
    std::string stat = slurp("/proc/" + std::to_string(pid) + "/stat");
    if (stat.empty() || stat.find(") Z") != std::string::npos) return true;
    ::usleep(5000);
  }
  return false;
}

}  // namespace vow::agent::testing
