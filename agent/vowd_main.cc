// vowd: the vow agent daemon. `vowd --config FILE [--state-dir DIR] [--name NAME]
// [--advertise ENDPOINT] [--log-level LEVEL] [--log-format text|json]`.
// Exit status: 0 after a clean shutdown (SIGTERM, SIGINT), 1 on a bad config or a
// failure to start (the error says what and where), 2 on bad arguments.
#include <pthread.h>
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <iostream>
#include <string_view>

#include "agent/daemon.h"
#include "agent/heap.h"
#include "agent/job_host.h"
#include "agent/version.h"
#include "promises/config.h"

int main(int argc, char** argv) {
  // The job host an agent starts (agent/job_host.h), on the socket it passes as fd 3.
  if (auto host = vow::agent::job_host_main(argc, argv)) return *host;
  vow::agent::DaemonOptions options;
  std::string log_format = "text";
  CLI::App app{"vowd: a vow agent, running the pipeline stages it promises", "vowd"};
  app.set_version_flag("--version", vow::agent::version_text("vowd"),
                       "Print the version, protocol and ledger schema, and exit");
  app.add_option("--config", options.config_path, "The agent file")->required();
  app.add_option("--state-dir", options.state_dir, "State directory (overrides [agent] state_dir)");
  app.add_option("--name", options.name, "Agent name (overrides [agent] name)")
      ->check(CLI::Validator(
          [](std::string& v) -> std::string {
            return vow::promises::is_identifier(v)
                       ? ""
                       : "agent name '" + v + "' is not an identifier: letters, digits, '_', '-'";
          },
          "NAME"));
  app.add_option("--advertise", options.advertise,
                 "Endpoint peers are told to dial, tcp://HOST:PORT (overrides [agent] advertise)")
      ->check(CLI::Validator(
          [](std::string& v) -> std::string {
            auto s = vow::promises::validate_endpoint(v);
            if (!s.is_ok()) return "bad endpoint '" + v + "': " + s.message();
            return v.rfind("tcp://", 0) == 0 ? "" : "'" + v + "' is not tcp://HOST:PORT";
          },
          "ENDPOINT"));
  app.add_option("--log-level", options.log_level, "trace, debug, info, warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  app.add_option("--log-format", log_format, "text (the default) or json: one object per line")
      ->check(CLI::IsMember({"text", "json"}))
      ->envname("VOWD_LOG_FORMAT");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "vowd: " << e.what() << "\nusage: vowd --config FILE [--state-dir DIR] "
              << "[--name NAME] [--advertise ENDPOINT] [--log-level LEVEL] "
              << "[--log-format text|json] ('vowd --help' for more)\n";
    return 2;
  }
  options.log_format = *vow::agent::parse_log_format(log_format);
  if (auto bad = vow::agent::heap_choice_error(std::getenv("VOWD_MALLOC"))) {
    std::cerr << "vowd: " << *bad << "\n";
    return 2;
  }
  // Restores the environment in a process run again; runs this one again if it should.
  if (!vow::agent::restore_environment_after_heap_tuning()) {
    vow::agent::run_again_with_heap_tuned(argv);
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
