// The command line's side of the control socket: finds the local agent's socket (from
// --agent, --state-dir or --config), sends one JSON request, and waits for the answer
// with a deadline. Not thread-safe; one request at a time.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <memory>
#include <string>

#include "promises/digest.h"
#include "promises/status.h"

namespace vow::agent::cli {

struct AgentAddress {
  // --agent ENDPOINT: ipc://... or a path to control.sock (the local agent), or
  // ID@tcp://HOST:PORT, a remote agent asked over CURVE with the client key --key.
  std::string agent;
  std::string key;        // --key FILE: client key for remote agents (or $VOW_KEY)
  std::string state_dir;  // --state-dir DIR
  std::string config;     // --config FILE (its [agent] state_dir)
};

// Ends a command: prints "vow CMD: MESSAGE" on stderr and throws CLI::RuntimeError(code).
[[noreturn]] void die(const char* cmd, const std::string& message, int code = 1);

// The exit status a failed request ends the command with: kExitNotFound when the
// agent says what was named does not exist, else kExitFailed (commands.h).
int exit_code_for(const Status& status);
// die() with the status's message and exit_code_for(status).
[[noreturn]] void die(const char* cmd, const Status& status);

// Arguments checked while parsing, before any agent is asked (a bad one is a usage
// error, exit 2): a job id or a prefix of 6+ hex digits; an artifact digest or
// PIPELINE/STAGE.OUTPUT.
CLI::Validator job_id_arg();
CLI::Validator artifact_arg();
// A duration as the config files write it ("500ms", "90s", "5m", "1m30s").
CLI::Validator duration_arg();

// Adds --agent, --key, --state-dir and --config to a subcommand.
void add_agent_options(CLI::App* cmd, AgentAddress* address);

// Sends {"method": METHOD, "args": ARGS} and returns the answer (kUnavailable if no agent
// answers in time, kInvalid with the agent's message if it refused the request).
Result<nlohmann::json> control_call(const AgentAddress& address, const std::string& method,
                                    const nlohmann::json& args = nlohmann::json::object(),
                                    int timeout_ms = 5000);

// Whether --agent names a remote agent (ID@tcp://HOST:PORT).
bool is_remote(const AgentAddress& address);

// A CURVE link with the client key to one remote agent, kept for several requests and
// artifact fetches (vow get from a host without an agent). Not thread-safe.
class RemoteAgent {
 public:
  // kInvalid for a bad address or key; the link itself is made lazily by ZeroMQ.
  static Result<std::unique_ptr<RemoteAgent>> connect(const AgentAddress& address);
  ~RemoteAgent();
  // One control request, as control_call().
  Result<nlohmann::json> call(const std::string& method, const nlohmann::json& args,
                              int timeout_ms);
  // Streams the store object `digest` (a file, or a tree's encoding) from the agent
  // into `path` (created, or resumed after a failure), verified by the transport
  // against its digest. kUnavailable if it does not finish within timeout_ms.
  Status fetch(const Digest& digest, const std::string& path, int timeout_ms);

 private:
  struct Impl;
  explicit RemoteAgent(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace vow::agent::cli
