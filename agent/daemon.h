// Daemon: one vowd agent (docs/agent.md), the composition root that wires the
// coordination core (promises/core.h), the transport (CurveZMQ links, signed
// statements), the store (SQLite ledger, artifacts) and job processes together.
//
// One event-loop thread polls, in one zmq_poll: the transport's sockets, the control
// socket, a signalfd (SIGTERM, SIGINT, SIGHUP), the background workers' eventfd and the
// pidfd of every job process. Each input goes to the core, and the core's Output is
// carried out in its documented order: persist (sign own statements, write them with
// the peers' statements to SQLite), then send, then act (start/kill jobs, fetch and
// replicate artifacts, connect to peers), then log. Disk-heavy work (imports,
// materializing inputs, hashing sources) runs on a background worker that owns the
// artifact store (with its own SQLite connection) and reports back to the loop.
//
// Not thread-safe: run() owns the calling thread until shutdown.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "agent/log_format.h"
#include "promises/status.h"

namespace vow::agent {

struct DaemonOptions {
  std::string config_path;
  std::string state_dir;  // overrides [agent] state_dir when not empty
  std::string name;       // overrides [agent] name when not empty
  std::string advertise;  // overrides [agent] advertise when not empty
  std::string log_level = "info";
  LogFormat log_format = LogFormat::kText;  // --log-format (agent/log_format.h)
};

class Daemon {
 public:
  // Loads and validates the config (with located errors), opens the identity, the store
  // and the transport. Touches nothing on error.
  static Result<std::unique_ptr<Daemon>> create(const DaemonOptions& options);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Runs until SIGTERM or SIGINT (clean shutdown: claims released) and returns the exit
  // status for the process.
  int run();

  struct Impl;

 private:
  explicit Daemon(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace vow::agent
