// vowd: the vow agent daemon. `vowd --config FILE [--state-dir DIR] [--log-level LEVEL]`.
// Exit status: 0 after a clean shutdown (SIGTERM, SIGINT), 1 on a bad config or a
// failure to start (the error says what and where), 2 on bad arguments.
#include <pthread.h>
#include <signal.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "agent/daemon.h"

int main(int argc, char** argv) {
  vow::agent::DaemonOptions options;
  CLI::App app{"vowd: a vow agent, running the pipeline stages it promises", "vowd"};
  app.add_option("--config", options.config_path, "The agent file")->required();
  app.add_option("--state-dir", options.state_dir, "State directory (overrides [agent] state_dir)");
  app.add_option("--log-level", options.log_level, "trace, debug, info, warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "vowd: " << e.what() << "\nusage: vowd --config FILE [--state-dir DIR] "
              << "[--log-level LEVEL]\n";
    return 2;
  }
  // Signals are taken from a signalfd by the event loop: block them before any thread
  // starts, so that no thread inherits them unblocked (and dies of SIGTERM).
  sigset_t mask;
  sigemptyset(&mask);
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGPIPE}) sigaddset(&mask, s);
  ::pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  auto daemon = vow::agent::Daemon::create(options);
  if (!daemon.is_ok()) {
    std::cerr << "vowd: " << daemon.status().message() << "\n";
    return 1;
  }
  return (*daemon)->run();
}
