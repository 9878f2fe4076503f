// The service manager's readiness protocol (systemd Type=notify, docs/operations.md):
// state lines ("READY=1", "RELOADING=1", "STOPPING=1", "WATCHDOG=1", "STATUS=...") sent
// as one datagram to the AF_UNIX socket named by $NOTIFY_SOCKET (a path, or an abstract
// name written "@name"). Without $NOTIFY_SOCKET every call does nothing, so vowd behaves
// the same outside systemd. Not thread-safe (one socket, the loop thread).
#pragma once

#include <cstdint>
#include <string>

namespace vow::agent {

class ServiceNotifier {
 public:
  ServiceNotifier();  // reads $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID
  ~ServiceNotifier();
  ServiceNotifier(const ServiceNotifier&) = delete;
  ServiceNotifier& operator=(const ServiceNotifier&) = delete;

  bool enabled() const { return !socket_path_.empty(); }
  // Sends the state lines; false if there is no socket or the send failed.
  bool notify(const std::string& state);
  // How often to send WATCHDOG=1: half the manager's watchdog timeout; 0 when the
  // manager asked for none (or asked another process).
  std::int64_t watchdog_interval_ms() const { return watchdog_interval_ms_; }
  // Sends WATCHDOG=1 if an interval has passed since the last one (now: steady ms).
  void watchdog_tick(std::int64_t now_ms);

 private:
  std::string socket_path_;
  int fd_ = -1;
  std::int64_t watchdog_interval_ms_ = 0;
  std::int64_t next_watchdog_ms_ = 0;
};

}  // namespace vow::agent
