#include "agent/cli/control_client.h"

#include <zmq.h>

#include <chrono>
#include <filesystem>
#include <fstream>
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

}  // namespace

namespace {

std::int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Writes a fetched object to a file, resumable (stream.h ChunkSink).
class FileSink final : public transport::ChunkSink {
 public:
  FileSink(std::string path, bool* finished) : path_(std::move(path)), finished_(finished) {}
  Status write(std::uint64_t offset, std::span<const std::uint8_t> data) override {
    std::fstream f(path_, std::ios::in | std::ios::out | std::ios::binary);
    if (!f) f.open(path_, std::ios::out | std::ios::binary);
    if (!f) return Status::io("create " + path_);
    f.seekp(static_cast<std::streamoff>(offset));
    f.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
    return f ? Status::ok() : Status::io("write " + path_);
  }
  Status read(std::uint64_t offset, std::span<std::uint8_t> out) override {
    std::ifstream f(path_, std::ios::binary);
    f.seekg(static_cast<std::streamoff>(offset));
    f.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(out.size()));
    return f ? Status::ok() : Status::io("read " + path_);
  }
  Status finish(std::uint64_t total_bytes) override {
    std::error_code ec;
    if (!fs::exists(path_, ec)) std::ofstream(path_, std::ios::binary);  // an empty file
    fs::resize_file(path_, total_bytes, ec);
    if (ec) return Status::io("truncate " + path_ + ": " + ec.message());
    *finished_ = true;
    return Status::ok();
  }
  void abort(const Status&) override {}

 private:
  std::string path_;
  bool* finished_;
};

}  // namespace

struct RemoteAgent::Impl {
  AgentAddress address;
  AgentKey peer;
  std::unique_ptr<transport::TrustSet> trust;
  std::unique_ptr<transport::NoSequences> no_sequences;
  std::unique_ptr<transport::Transport> link;
  std::uint64_t next_request = 0;
};

RemoteAgent::RemoteAgent(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RemoteAgent::~RemoteAgent() = default;

bool is_remote(const AgentAddress& address) {
  return address.agent.find('@') != std::string::npos;
}

Result<std::unique_ptr<RemoteAgent>> RemoteAgent::connect(const AgentAddress& address) {
  auto peer = transport::parse_peer_address(address.agent);
  if (!peer.is_ok()) return peer.status();
  if (address.key.empty()) {
    return Status::invalid("a remote agent needs a client key: --key FILE (vow keys gen --out)");
  }
  auto id = transport::load_key_file(address.key);
  if (!id.is_ok()) return id.status();
  auto impl = std::make_unique<Impl>();
  impl->address = address;
  impl->peer = peer->key;
  impl->trust = std::make_unique<transport::TrustSet>();
  impl->trust->add(peer->key);
  impl->no_sequences = std::make_unique<transport::NoSequences>();
  auto t = transport::Transport::create(*id, *impl->trust, transport::TransportOptions{},
                                        impl->no_sequences.get(),
                                        [](transport::LogLevel, std::string_view) {});
  if (!t.is_ok()) return t.status();
  impl->link = std::move(t).value();
  VOW_RETURN_IF_ERROR(impl->link->connect(peer->key, peer->endpoint));
  impl->next_request = static_cast<std::uint64_t>(steady_ms());
  return std::unique_ptr<RemoteAgent>(new RemoteAgent(std::move(impl)));
}

Result<nlohmann::json> RemoteAgent::call(const std::string& method, const nlohmann::json& args,
                                         int timeout_ms) {
  auto& link = *impl_->link;
  const AgentKey& peer = impl_->peer;
  std::int64_t deadline = steady_ms() + timeout_ms;
  std::uint64_t request_id = ++impl_->next_request;
  transport::ControlRequest req{request_id, method, args.dump()};
  VOW_RETURN_IF_ERROR(link.send(peer, transport::Message{transport::kProtocolVersion, req}));
  while (steady_ms() < deadline) {
    link.wait(static_cast<int>(std::min<std::int64_t>(100, deadline - steady_ms())));
    link.tick(steady_ms());
    for (auto& in : link.poll_inbound(steady_ms())) {
      if (in.peer != peer) continue;
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
  return Status::unavailable("no answer from " + impl_->address.agent +
                             " (is it running, and is this client key in its [trust] clients?)");
}

Status RemoteAgent::fetch(const Digest& digest, const std::string& path, int timeout_ms) {
  auto& link = *impl_->link;
  std::int64_t deadline = steady_ms() + timeout_ms;
  std::uint64_t offset = 0;
  Status last = Status::unavailable("no answer from " + impl_->address.agent);
  while (steady_ms() < deadline) {
    bool finished = false;
    auto id = link.fetch(impl_->peer, digest, offset, std::nullopt,
                         std::make_unique<FileSink>(path, &finished), steady_ms());
    if (!id.is_ok()) return id.status();
    for (bool done = false; !done && steady_ms() < deadline;) {
      link.wait(static_cast<int>(std::min<std::int64_t>(100, deadline - steady_ms())));
      link.tick(steady_ms());
      (void)link.poll_inbound(steady_ms());
      for (const auto& f : link.take_fetch_outcomes()) {
        if (f.stream_id != *id) continue;
        done = true;
        if (f.status.is_ok() && finished) return Status::ok();
        last = f.status;
        offset = f.received_bytes;  // resume from what arrived
      }
    }
    if (last.code() == StatusCode::kNotFound || last.code() == StatusCode::kCorrupt) break;
  }
  if (last.code() == StatusCode::kCorrupt) {
    // vow get asks that agent to replace its copy from another holder (`repair`).
    return Status::corrupt("the copy of " + digest.hex() + " at " + impl_->address.agent +
                           " is corrupt (" + last.message() + ")");
  }
  return Status::unavailable("fetching " + digest.hex() + " from " + impl_->address.agent +
                             ": " + last.message());
}

Result<nlohmann::json> control_call(const AgentAddress& address, const std::string& method,
                                    const nlohmann::json& args, int timeout_ms) {
  if (is_remote(address)) {
    auto remote = RemoteAgent::connect(address);
    if (!remote.is_ok()) return remote.status();
    return (*remote)->call(method, args, timeout_ms);
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
