#include "agent/cli/control_client.h"

#include <zmq.h>

#include <filesystem>

#include "agent/config_files.h"

namespace fs = std::filesystem;

namespace vow::agent::cli {
namespace {

Result<std::string> endpoint_of(const AgentAddress& a) {
  if (!a.agent.empty()) {
    if (a.agent.find("://") != std::string::npos) return a.agent;
    return "ipc://" + fs::absolute(a.agent).string();
  }
  std::string dir = a.state_dir;
  if (dir.empty() && !a.config.empty()) {
    auto loaded = load_config_files({a.config});
    if (loaded.agents.size() != 1) {
      return Status::invalid(a.config + ": not a valid agent file (run vow check " + a.config +
                             ")");
    }
    fs::path base = fs::absolute(a.config).parent_path();
    dir = loaded.agents.front().state_dir;
    if (!dir.empty() && !fs::path(dir).is_absolute()) dir = (base / dir).string();
    if (!loaded.agents.front().control.empty()) return loaded.agents.front().control;
  }
  if (dir.empty()) dir = "/var/lib/vow";
  return "ipc://" + fs::absolute(dir).string() + "/control.sock";
}

}  // namespace

void add_agent_options(CLI::App* cmd, AgentAddress* address) {
  cmd->add_option("--agent", address->agent, "Control endpoint of the agent to ask");
  cmd->add_option("--state-dir", address->state_dir, "The local agent's state directory");
  cmd->add_option("--config", address->config, "The local agent's agent file");
}

Result<nlohmann::json> control_call(const AgentAddress& address, const std::string& method,
                                    const nlohmann::json& args, int timeout_ms) {
  auto endpoint = endpoint_of(address);
  if (!endpoint.is_ok()) return endpoint.status();
  if (endpoint->rfind("ipc://", 0) == 0 && !fs::exists(endpoint->substr(6))) {
    return Status::unavailable("no agent at " + *endpoint + " (is vowd running?)");
  }
  void* ctx = zmq_ctx_new();
  void* sock = zmq_socket(ctx, ZMQ_REQ);
  int linger = 0;
  zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof(linger));
  Result<nlohmann::json> out = Status::unavailable("no answer from " + *endpoint);
  if (zmq_connect(sock, endpoint->c_str()) != 0) {
    out = Status::invalid("bad endpoint " + *endpoint + ": " + zmq_strerror(zmq_errno()));
  } else {
    std::string req = nlohmann::json{{"method", method}, {"args", args}}.dump();
    zmq_send(sock, req.data(), req.size(), 0);
    zmq_pollitem_t item{sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, timeout_ms) == 1) {
      zmq_msg_t m;
      zmq_msg_init(&m);
      if (zmq_msg_recv(&m, sock, 0) >= 0) {
        std::string body(static_cast<const char*>(zmq_msg_data(&m)), zmq_msg_size(&m));
        auto j = nlohmann::json::parse(body, nullptr, false);
        if (j.is_discarded()) {
          out = Status::corrupt("the agent answered something that is not JSON");
        } else if (j.contains("error")) {
          out = Status::invalid(j["error"].get<std::string>());
        } else {
          out = std::move(j);
        }
      }
      zmq_msg_close(&m);
    }
  }
  zmq_close(sock);
  zmq_ctx_term(ctx);
  return out;
}

}  // namespace vow::agent::cli
