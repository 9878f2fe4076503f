// The agent's Network over the transport (CurveZMQ links), and what arrives on it:
// peers' messages fed to the agent, clients' control requests answered, seed
// endpoints identified (docs/agent.md).
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>

#include "agent/daemon_internal.h"
#include "transport/codec.h"

namespace fs = std::filesystem;

namespace vow::agent {
namespace {

std::string short_id(const AgentKey& key) { return transport::agent_id(key).substr(0, 12); }

std::string errno_text() { return std::strerror(errno); }

// Where a transfer's bytes arrive: a file in STATE/incoming.
class FileSink final : public transport::ChunkSink {
 public:
  static Result<std::unique_ptr<transport::ChunkSink>> create(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return Status::io("open " + path + ": " + errno_text());
    return std::unique_ptr<transport::ChunkSink>(new FileSink(fd, path));
  }
  ~FileSink() override {
    if (fd_ >= 0) ::close(fd_);
  }
  Status write(std::uint64_t offset, std::span<const std::uint8_t> data) override {
    std::size_t done = 0;
    while (done < data.size()) {
      ssize_t n =
          ::pwrite(fd_, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return Status::io("write " + path_ + ": " + errno_text());
      done += static_cast<std::size_t>(n);
    }
    return Status::ok();
  }
  Status read(std::uint64_t offset, std::span<std::uint8_t> out) override {
    std::size_t done = 0;
    while (done < out.size()) {
      ssize_t n =
          ::pread(fd_, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return Status::io("read " + path_ + ": " + (n == 0 ? "short" : errno_text()));
      done += static_cast<std::size_t>(n);
    }
    return Status::ok();
  }
  Status finish(std::uint64_t total_bytes) override {
    if (::ftruncate(fd_, static_cast<off_t>(total_bytes)) != 0) {
      return Status::io("truncate " + path_ + ": " + errno_text());
    }
    return Status::ok();
  }
  void abort(const Status&) override { ::unlink(path_.c_str()); }

 private:
  FileSink(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  int fd_;
  std::string path_;
};

}  // namespace

// ---- the Network ----

std::optional<transport::Message> DaemonNetwork::to_wire(const promises::Message& message) const {
  transport::Message msg;
  bool empty = false;
  std::visit(
      [&](const auto& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, promises::Hello>) {
          transport::Hello h;
          h.agent = d_->identity->key();
          h.name = d_->config.name;
          h.endpoints = {d_->transport->endpoint()};
          h.version_vector = m.have;
          msg.body = h;
        } else if constexpr (std::is_same_v<T, promises::Heartbeat>) {
          transport::Heartbeat h;
          h.running = m.running;
          h.capacity = m.capacity;
          h.active_claims = static_cast<std::uint32_t>(m.active_claims.size());
          h.highest_seq = d_->agent->core().last_seq();
          h.claims = m.active_claims;
          h.vv_sum = m.vv_sum;
          h.holdings_incarnation = m.holdings_incarnation;
          h.holdings_version = m.holdings_version;
          msg.body = h;
        } else if constexpr (std::is_same_v<T, promises::SyncRequest>) {
          msg.body = transport::LedgerRequest{m.have};
        } else if constexpr (std::is_same_v<T, promises::StatementBatch>) {
          transport::LedgerBatch b;
          for (const auto& st : m.statements) {
            if (!st.signed_form.empty()) b.signed_statements.push_back(st.signed_form);
          }
          empty = b.signed_statements.empty();
          msg.body = std::move(b);
        } else if constexpr (std::is_same_v<T, promises::HaveRequest>) {
          msg.body = transport::HaveRequest{};
        } else if constexpr (std::is_same_v<T, promises::Have>) {
          msg.body = transport::Have{m.incarnation, m.version, m.digests};
        }
      },
      message.body);
  if (empty) return std::nullopt;
  return msg;
}

void DaemonNetwork::send(const AgentKey& to, const promises::Message& message) {
  auto msg = to_wire(message);
  if (!msg) return;
  Status s = d_->transport->send(to, *msg);
  if (!s.is_ok()) d_->log->debug("send to {}: {}", short_id(to), s.to_string());
}

void DaemonNetwork::broadcast(const promises::Message& message) {
  if (auto msg = to_wire(message)) d_->transport->broadcast(*msg);
}

void DaemonNetwork::connect(const AgentKey& peer, const std::vector<std::string>& endpoints) {
  if (!endpoints.empty()) d_->connect_peer(peer, endpoints.front());
}

Result<std::uint64_t> DaemonNetwork::fetch(const AgentKey& from, const Digest& digest) {
  std::string part = incoming_path(d_->state_dir, digest);
  std::error_code ec;
  fs::create_directories(fs::path(part).parent_path(), ec);
  auto sink = FileSink::create(part);
  if (!sink.is_ok()) return sink.status();
  auto id =
      d_->transport->fetch(from, digest, 0, std::nullopt, std::move(sink).value(), d_->now_ms());
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
    transport::Hello h;
    h.agent = identity->key();
    h.name = config.name;
    h.endpoints = {transport->endpoint()};
    h.version_vector = state->version_vector();
    Status s = transport->send(key, transport::Message{transport::kProtocolVersion, h});
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
      nlohmann::json answer = control_request(req->method, args);
      transport::ControlResponse resp;
      resp.request_id = req->request_id;
      resp.ok = !answer.contains("error");
      if (resp.ok) {
        resp.json = answer.dump();
      } else {
        resp.error = answer["error"].get<std::string>();
      }
      Status s = transport->send(in.peer, transport::Message{transport::kProtocolVersion, resp});
      if (!s.is_ok()) log->debug("control answer to {}: {}", short_id(in.peer), s.to_string());
    }
    return;
  }
  const AgentKey& peer = in.peer;
  std::visit(
      [&](auto& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, transport::Hello>) {
          // It told us where it listens: link to it (or keep the link we have).
          if (!m.endpoints.empty()) connect_peer(peer, m.endpoints.front());
          greet(peer);
          agent->message(peer, {promises::Hello{m.name, m.version_vector}});
        } else if constexpr (std::is_same_v<T, transport::Heartbeat>) {
          greet(peer);
          promises::Heartbeat h;
          h.running = m.running;
          h.capacity = m.capacity;
          h.active_claims = m.claims;
          h.vv_sum = m.vv_sum;
          h.holdings_incarnation = m.holdings_incarnation;
          h.holdings_version = m.holdings_version;
          agent->message(peer, {h});
        } else if constexpr (std::is_same_v<T, transport::StatementMsg>) {
          agent->statement(peer, std::move(m.statement));
        } else if constexpr (std::is_same_v<T, transport::LedgerRequest>) {
          greet(peer);
          agent->message(peer, {promises::SyncRequest{m.have}});
        } else if constexpr (std::is_same_v<T, transport::LedgerBatch>) {
          agent->message(peer, {promises::StatementBatch{std::move(m.statements)}});
        } else if constexpr (std::is_same_v<T, transport::HaveRequest>) {
          agent->message(peer, {promises::HaveRequest{}});
        } else if constexpr (std::is_same_v<T, transport::Have>) {
          agent->message(peer, {promises::Have{m.incarnation, m.version, m.digests}});
        }
      },
      in.message.body);
}

}  // namespace vow::agent
