// The agent's Network over the transport (CurveZMQ links), and what arrives on it:
// peers' messages fed to the agent, clients' control requests answered, seed
// endpoints identified (docs/agent.md).
#include <fcntl.h>
#include <unistd.h>

#include "promises/limits.h"
#include "agent/daemon_internal.h"
#include "agent/fetch_sink.h"
#include "transport/codec.h"

namespace vow::agent {
namespace {

std::string short_id(const AgentKey& key) { return transport::agent_id(key).substr(0, 12); }

}  // namespace

// ---- the Network ----

void DaemonNetwork::send(const AgentKey& to, const promises::Message& message) {
  Status s = d_->transport->send(to, transport::wire_message(message));
  if (s.is_ok()) return;
  // Unavailable or overloaded is the network's weather; invalid means it cannot be
  // encoded (over the frame limit, or a statement without its signed form: a bug).
  if (s.code() == StatusCode::kInvalid) {
    d_->log->warn("send to {}: {}", short_id(to), s.to_string());
  } else {
    d_->log->debug("send to {}: {}", short_id(to), s.to_string());
  }
}

void DaemonNetwork::broadcast(const promises::Message& message) {
  d_->transport->broadcast(transport::wire_message(message));
}

void DaemonNetwork::connect(const AgentKey& peer, const std::vector<std::string>& endpoints) {
  if (!endpoints.empty()) d_->connect_peer(peer, endpoints.front());
}

void DaemonNetwork::peer_dead(const AgentKey& peer) { d_->transport->dial_slowly(peer); }

// Into memory, or past kInMemoryFetchBytes into STATE/incoming (agent/fetch_sink.h).
Result<std::uint64_t> DaemonNetwork::fetch(const AgentKey& from, const Digest& digest) {
  std::string part = incoming_path(d_->state_dir, digest);
  auto id = d_->transport->fetch(from, digest, 0, std::nullopt,
                                 make_fetch_sink(part, digest, &d_->received), d_->now_ms());
  if (!id.is_ok()) ::unlink(part.c_str());
  return id;
}

void DaemonNetwork::cancel_fetch(std::uint64_t id) { d_->transport->cancel_fetch(id); }

// ---- peers ----

void Daemon::Impl::connect_peer(const AgentKey& peer, const std::string& endpoint) {
  if (peer == identity->key() || !trust.trusts_agent(peer)) return;
  auto it = peer_endpoint.find(peer);
  if (it != peer_endpoint.end() && it->second == endpoint) return;
  Status s = transport->connect(peer, endpoint);
  if (!s.is_ok()) {
    log->warn("cannot connect to {} at {}: {}", short_id(peer), endpoint, s.to_string());
    return;
  }
  peer_endpoint[peer] = endpoint;
  // Remembered, so that a restart reconnects at once instead of probing the seeds.
  Status saved = ledger->put_peer({peer, {endpoint}, wall_ms()});
  if (!saved.is_ok()) log->warn("cannot record peer: {}", saved.to_string());
  std::erase(unmapped_seeds, endpoint);
  log->info("peer {} at {}", short_id(peer), endpoint);
  greet(peer);
}

void Daemon::Impl::greet(const AgentKey& peer) {
  if (!greeted.insert(peer).second) return;
  agent->peer_connected(peer);
}

void Daemon::Impl::connect_seeds() {
  for (const auto& seed : config.peers) {
    if (seed.find('@') != std::string::npos) {
      auto addr = transport::parse_peer_address(seed);
      if (addr.is_ok()) {
        connect_peer(addr->key, addr->endpoint);
      } else {
        log->error("seed peer '{}': {}", seed, addr.status().message());
      }
    } else {
      unmapped_seeds.push_back(seed);
    }
  }
  // Peers we met before: reconnect to them directly.
  if (auto peers = ledger->peers(); peers.is_ok()) {
    for (const auto& p : *peers) {
      if (!p.endpoints.empty()) connect_peer(p.id, p.endpoints.front());
    }
  }
}

// A seed endpoint names no key, and CURVE needs the server's key to connect: try the
// trusted agent keys whose endpoint is not known yet, one per seed, rotating until a
// hello (or an advert) tells which key is where. See docs/agent.md.
void Daemon::Impl::rotate_seeds() {
  std::int64_t now = now_ms();
  if (unmapped_seeds.empty() || now < next_seed_rotation_ms) return;
  next_seed_rotation_ms = now + kSeedRotateMs;
  std::vector<AgentKey> unknown;
  for (const auto& [key, role] : trust.keys()) {
    if (role != transport::PeerRole::kAgent || key == identity->key()) continue;
    if (!peer_endpoint.count(key) && !greeted.count(key)) unknown.push_back(key);
  }
  if (unknown.empty()) return;
  for (std::size_t i = 0; i < unmapped_seeds.size() && i < unknown.size(); ++i) {
    const AgentKey& key = unknown[(i + seed_rotation) % unknown.size()];
    if (!transport->connect(key, unmapped_seeds[i]).is_ok()) continue;
    // If the guess is right the peer answers this hello with its own, naming its
    // endpoints, and the link is kept (handle_inbound).
    std::uint64_t vv_sum = 0;
    for (const auto& [author, seq] : state->version_vector()) vv_sum += seq;
    promises::Hello h{identity->key(), config.name, {advertised_endpoint()}, vv_sum};
    Status s = transport->send(key, transport::wire_message({h}));
    if (!s.is_ok()) log->debug("seed hello to {}: {}", unmapped_seeds[i], s.to_string());
  }
  ++seed_rotation;
}

// ---- inbound ----

void Daemon::Impl::handle_inbound(transport::Inbound& in) {
  if (in.role == transport::PeerRole::kClient) {
    if (auto* req = std::get_if<transport::ControlRequest>(&in.message.body)) {
      nlohmann::json args = nlohmann::json::parse(req->json, nullptr, false);
      if (args.is_discarded()) args = nlohmann::json::object();
      nlohmann::json answer = control_request(req->method, args, /*remote=*/true);
      transport::ControlResponse resp;
      resp.request_id = req->request_id;
      resp.ok = !answer.contains("error");
      // A refusal carries its code in the JSON too (docs/cli.md: the exit status).
      resp.json = answer.dump();
      if (!resp.ok) resp.error = answer["error"].get<std::string>();
      Status s = transport->send(in.peer, transport::Message{transport::kProtocolVersion, resp});
      if (!s.is_ok()) log->debug("control answer to {}: {}", short_id(in.peer), s.to_string());
    }
    return;
  }
  const AgentKey& peer = in.peer;
  auto message = transport::core_message(std::move(in.message));
  if (!message) return;  // streaming is the transport's; control is for clients only
  if (const auto* hello = std::get_if<promises::Hello>(&message->body)) {
    // It told us where it listens: link to it (or keep the link we have).
    if (!hello->endpoints.empty() && hello->endpoints.front().size() <= promises::kMaxEndpointBytes) {
      connect_peer(peer, hello->endpoints.front());
    }
  }
  // A hello, a heartbeat, a probe or a sync request means the peer runs and talks to us.
  if (std::holds_alternative<promises::Hello>(message->body) ||
      std::holds_alternative<promises::Heartbeat>(message->body) ||
      std::holds_alternative<promises::Probe>(message->body) ||
      std::holds_alternative<promises::SyncRequest>(message->body)) {
    greet(peer);
  }
  agent->message(peer, std::move(*message));
}

}  // namespace vow::agent
