#include "agent/service_notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace vow::agent {

ServiceNotifier::ServiceNotifier() {
  if (const char* path = std::getenv("NOTIFY_SOCKET")) {
    std::string p = path;
    if ((p.front() == '/' || p.front() == '@') && p.size() < sizeof(sockaddr_un::sun_path)) {
      socket_path_ = p;
    }
  }
  const char* usec = std::getenv("WATCHDOG_USEC");
  const char* pid = std::getenv("WATCHDOG_PID");
  bool for_us = pid == nullptr || std::strtoll(pid, nullptr, 10) == ::getpid();
  if (usec != nullptr && for_us) {
    long long us = std::strtoll(usec, nullptr, 10);
    if (us > 0) watchdog_interval_ms_ = std::max<std::int64_t>(us / 2000, 1);
  }
  // Job processes do not inherit them: the manager's socket is the agent's alone.
  ::unsetenv("NOTIFY_SOCKET");
  ::unsetenv("WATCHDOG_USEC");
  ::unsetenv("WATCHDOG_PID");
}

ServiceNotifier::~ServiceNotifier() {
  if (fd_ >= 0) ::close(fd_);
}

bool ServiceNotifier::notify(const std::string& state) {
  if (socket_path_.empty()) return false;
  if (fd_ < 0) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return false;
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, socket_path_.data(), socket_path_.size());
  if (socket_path_.front() == '@') addr.sun_path[0] = '\0';  // abstract namespace
  auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + socket_path_.size());
  ssize_t n = ::sendto(fd_, state.data(), state.size(), MSG_NOSIGNAL,
                       reinterpret_cast<const sockaddr*>(&addr), len);
  return n == static_cast<ssize_t>(state.size());
}

void ServiceNotifier::watchdog_tick(std::int64_t now_ms) {
  if (watchdog_interval_ms_ == 0 || now_ms < next_watchdog_ms_) return;
  notify("WATCHDOG=1");
  next_watchdog_ms_ = now_ms + watchdog_interval_ms_;
}

}  // namespace vow::agent
