#include "agent/cli/control_client.h"

#include <zmq.h>

#include <chrono>
#include <filesystem>
#include <iostream>

#include "agent/cli/commands.h"
#include "agent/config_files.h"
#include "promises/config.h"
#include "transport/link.h"

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

void die(const char* cmd, const std::string& message, int code) {
  std::cerr << "vow " << cmd << ": " << message << "\n";
  throw CLI::RuntimeError(code);
}

int exit_code_for(const Status& status) {
  return status.code() == StatusCode::kNotFound ? kExitNotFound : kExitFailed;
}

void die(const char* cmd, const Status& status) {
  die(cmd, status.message(), exit_code_for(status));
}

void add_agent_options(CLI::App* cmd, AgentAddress* address) {
  cmd->add_option("--agent", address->agent,
                  "Agent to ask: its control socket, or ID@tcp://HOST:PORT (remote, with --key)");
  cmd->add_option("--key", address->key, "Client key file for a remote agent (vow keys gen --out)")
      ->envname("VOW_KEY");
  cmd->add_option("--state-dir", address->state_dir, "The local agent's state directory");
  cmd->add_option("--config", address->config, "The local agent's agent file");
}

CLI::Validator job_id_arg() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        bool hex = text.find_first_not_of("0123456789abcdefABCDEF") == std::string::npos;
        if (hex && text.size() >= 6 && text.size() <= 64) return "";
        return "'" + text + "' is not a job id: 64 hex digits, or a prefix of 6 or more";
      },
      "JOB");
}

CLI::Validator artifact_arg() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        if (text.size() == 64 && text.find_first_not_of("0123456789abcdef") == std::string::npos) {
          return "";
        }
        auto slash = text.find('/');
        auto dot = text.rfind('.');
        if (slash != std::string::npos && slash > 0 && dot != std::string::npos &&
            dot > slash + 1 && dot + 1 < text.size()) {
          return "";
        }
        return "'" + text + "' is not an artifact: a digest (64 hex digits) or " +
               "PIPELINE/STAGE.OUTPUT";
      },
      "ARTIFACT");
}

CLI::Validator duration_arg() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        auto ms = promises::parse_duration_ms(text);
        return ms.is_ok() ? "" : ms.status().message();
      },
      "DURATION");
}

namespace {

Result<nlohmann::json> parse_answer(const std::string& body) {
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_discarded()) return Status::corrupt("the agent answered something that is not JSON");
  if (j.contains("error")) {
    std::string message = j["error"].is_string() ? j["error"].get<std::string>() : j.dump();
    if (j.value("code", "") == "not_found") return Status::not_found(message);
    return Status::invalid(message);
  }
  return j;
}

// A remote agent: a CURVE link with the client key, one ControlRequest, one answer.
Result<nlohmann::json> remote_call(const AgentAddress& address, const std::string& method,
                                   const nlohmann::json& args, int timeout_ms) {
  auto peer = transport::parse_peer_address(address.agent);
  if (!peer.is_ok()) return peer.status();
  if (address.key.empty()) {
    return Status::invalid("a remote agent needs a client key: --key FILE (vow keys gen --out)");
  }
  auto id = transport::load_key_file(address.key);
  if (!id.is_ok()) return id.status();
  transport::TrustSet trust;
  trust.add(peer->key);
  transport::NoSequences no_sequences;
  auto t = transport::Transport::create(*id, trust, transport::TransportOptions{}, &no_sequences,
                                        [](transport::LogLevel, std::string_view) {});
  if (!t.is_ok()) return t.status();
  auto& link = **t;
  VOW_RETURN_IF_ERROR(link.connect(peer->key, peer->endpoint));
  auto now = [] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  };
  std::int64_t deadline = now() + timeout_ms;
  std::uint64_t request_id = static_cast<std::uint64_t>(now());
  transport::ControlRequest req{request_id, method, args.dump()};
  VOW_RETURN_IF_ERROR(link.send(peer->key, transport::Message{transport::kProtocolVersion, req}));
  while (now() < deadline) {
    link.wait(static_cast<int>(std::min<std::int64_t>(100, deadline - now())));
    link.tick(now());
    for (auto& in : link.poll_inbound(now())) {
      if (in.peer != peer->key) continue;
      auto* resp = std::get_if<transport::ControlResponse>(&in.message.body);
      if (!resp || resp->request_id != request_id) continue;
      if (!resp->ok) {
        auto coded = parse_answer(resp->json);  // the code, from agents that send it
        if (!coded.is_ok() && coded.status().code() == StatusCode::kNotFound) return coded;
        return Status::invalid(resp->error);
      }
      return parse_answer(resp->json);
    }
  }
  return Status::unavailable("no answer from " + address.agent +
                             " (is it running, and is this client key in its [trust] clients?)");
}

}  // namespace

Result<nlohmann::json> control_call(const AgentAddress& address, const std::string& method,
                                    const nlohmann::json& args, int timeout_ms) {
  if (address.agent.find('@') != std::string::npos) {
    return remote_call(address, method, args, timeout_ms);
  }
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
        out = parse_answer(body);
      }
      zmq_msg_close(&m);
    }
  }
  zmq_close(sock);
  zmq_ctx_term(ctx);
  return out;
}

}  // namespace vow::agent::cli
