#include "agent/daemon.h"

#include <glob.h>
#include <grp.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "agent/config_files.h"
#include "agent/daemon_internal.h"
#include "promises/assert.h"
#include "store/sqlite_ledger.h"
#include "transport/codec.h"

namespace fs = std::filesystem;

namespace vow::agent {

class Daemon::Impl::Sequences final : public transport::SequenceView {
 public:
  explicit Sequences(const VersionVector* vv) : vv_(vv) {}
  std::uint64_t highest_seq(const AgentKey& author) const override {
    auto it = vv_->find(author);
    return it == vv_->end() ? 0 : it->second;
  }
  bool holds_identical(const AgentKey& author, std::uint64_t seq,
                       std::string_view bytes) const override {
    auto st = ledger_->get(author, seq);
    return st.is_ok() && st->has_value() && (*st)->bytes == bytes;
  }
  void set_ledger(store::Ledger* ledger) { ledger_ = ledger; }

 private:
  const VersionVector* vv_;
  store::Ledger* ledger_ = nullptr;
};

store::StoredStatement to_stored(const Statement& st, const transport::SignedStatement& signed_st,
                                 std::int64_t received_unix_ms) {
  store::StoredStatement s;
  s.author = st.author;
  s.seq = st.seq;
  s.kind = st.kind();
  s.job = st.job();
  std::visit(
      [&](const auto& b) {
        if constexpr (requires { b.epoch; }) s.epoch = b.epoch;
      },
      st.body);
  if (const auto* r = std::get_if<JobResult>(&st.body)) {
    s.outputs_digest = outputs_digest(*r);
    s.ok = r->ok;
  }
  s.bytes = signed_st.bytes;
  s.signature = signed_st.signature;
  s.received_unix_ms = received_unix_ms;
  return s;
}

namespace {

std::string short_id(const AgentKey& key) { return transport::agent_id(key).substr(0, 12); }

// Relative paths in an agent file are relative to the file's directory.
std::string resolve(const fs::path& base, const std::string& p) {
  if (p.empty()) return p;
  fs::path path(p);
  return (path.is_absolute() ? path : base / path).lexically_normal().string();
}

Status load_trust(const promises::AgentConfig& cfg, const fs::path& base,
                  transport::TrustSet* trust) {
  for (const auto& k : cfg.trust_keys) VOW_RETURN_IF_ERROR(trust->add(k));
  for (const auto& k : cfg.trust_clients)
    VOW_RETURN_IF_ERROR(trust->add(k, transport::PeerRole::kClient));
  for (const auto& pattern : cfg.trust_key_files) {
    std::string full = resolve(base, pattern);
    glob_t g{};
    int rc = ::glob(full.c_str(), 0, nullptr, &g);
    for (std::size_t i = 0; rc == 0 && i < g.gl_pathc; ++i) {
      std::ifstream in(g.gl_pathv[i]);
      std::string line;
      int n = 0;
      while (std::getline(in, line)) {
        ++n;
        auto b = line.find_first_not_of(" \t\r");
        if (b == std::string::npos || line[b] == '#') continue;
        auto e = line.find_last_not_of(" \t\r");
        Status s = trust->add(line.substr(b, e - b + 1));
        if (!s.is_ok()) {
          ::globfree(&g);
          return Status::invalid(std::string(g.gl_pathv[i]) + ":" + std::to_string(n) + ": " +
                                 s.message());
        }
      }
    }
    ::globfree(&g);
  }
  return Status::ok();
}

}  // namespace

// ---- reload (SIGHUP) ----

void Daemon::Impl::reload() {
  auto loaded = load_config_files({options.config_path});
  if (!loaded.errors.empty() || loaded.agents.size() != 1) {
    for (const auto& d : loaded.errors) log->error("SIGHUP: {}", format_diagnostic(d));
    if (loaded.errors.empty()) log->error("SIGHUP: {}: not an agent file", options.config_path);
    log->error("SIGHUP: config not reloaded; running on with the previous one");
    return;
  }
  promises::AgentConfig next = loaded.agents.front();
  fs::path base = fs::absolute(options.config_path).parent_path();
  transport::TrustSet next_trust;
  Status t = load_trust(next, base, &next_trust);
  if (!t.is_ok()) {
    log->error("SIGHUP: {}; config not reloaded", t.to_string());
    return;
  }
  for (auto& src : next.sources) src.path = resolve(base, src.path);
  // What a running agent cannot change: said, and kept as it was.
  auto kept = [&](const char* what, bool same) {
    if (!same) log->warn("SIGHUP: '{}' changes with a restart; kept as it was", what);
  };
  kept("name", next.name == config.name);
  kept("listen", next.listen == config.listen);
  kept("state_dir", next.state_dir == config.state_dir || !options.state_dir.empty());
  kept("control", next.control == config.control);
  kept("control_group", next.control_group == config.control_group);
  kept("http", next.http == config.http);
  kept("replicas", next.replicas == config.replicas);
  kept("[timing]", next.timing == config.timing);
  bool same_sources = next.sources.size() == config.sources.size();
  for (std::size_t i = 0; same_sources && i < next.sources.size(); ++i) {
    same_sources = next.sources[i].pipeline == config.sources[i].pipeline &&
                   next.sources[i].source == config.sources[i].source &&
                   next.sources[i].path == config.sources[i].path &&
                   next.sources[i].watch == config.sources[i].watch;
  }
  kept("[[source]]", same_sources);
  // Trust: new keys are admitted from now on; removed ones at their next handshake.
  if (next_trust.keys() != trust.keys()) {
    log->info("SIGHUP: trust list reloaded ({} keys)", next_trust.size());
    trust = next_trust;
    transport->set_trust(std::move(next_trust));
  }
  // Promises and pipelines: the core publishes a new advert; jobs of withdrawn stages
  // are released so others take them at once.
  auto names = [](const std::vector<promises::PromiseDecl>& ps) {
    std::set<std::string> out;
    for (const auto& p : ps) out.insert(p.pipeline + "/" + p.stage + "*" + std::to_string(p.capacity));
    return out;
  };
  std::set<Digest> old_digests, new_digests;
  for (const auto& p : pipelines) old_digests.insert(p.digest);
  for (const auto& p : loaded.pipelines) new_digests.insert(p.digest);
  auto before = names(config.promises);
  auto after = names(next.promises);
  if (before == after && old_digests == new_digests) {
    log->info("SIGHUP: promises and pipelines unchanged");
    return;
  }
  for (const auto& p : after) {
    if (!before.count(p)) log->info("SIGHUP: promise added: {}", p);
  }
  for (const auto& p : before) {
    if (!after.count(p)) log->info("SIGHUP: promise withdrawn: {}", p);
  }
  config.promises = next.promises;
  config.pipelines = next.pipelines;
  pipelines = loaded.pipelines;
  std::vector<promises::CorePromise> core_promises;
  for (const auto& p : config.promises) core_promises.push_back({p.pipeline, p.stage, p.capacity});
  std::vector<AdvertSource> sources;
  for (const auto& s : config.sources) sources.push_back({s.pipeline, s.source});
  carry_out(core->reconfigure(std::move(core_promises), pipelines, std::move(sources)));
}

// ---- creation ----

Result<std::unique_ptr<Daemon>> Daemon::create(const DaemonOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  auto loaded = load_config_files({options.config_path});
  if (!loaded.errors.empty()) {
    std::string all;
    for (const auto& d : loaded.errors) all += format_diagnostic(d) + "\n";
    if (!all.empty()) all.pop_back();
    return Status::invalid(all);
  }
  if (loaded.agents.size() != 1) {
    return Status::invalid(options.config_path + ": not an agent file (no [agent] table)");
  }
  impl->config = loaded.agents.front();
  impl->pipelines = loaded.pipelines;
  fs::path base = fs::absolute(options.config_path).parent_path();
  impl->state_dir = options.state_dir.empty() ? resolve(base, impl->config.state_dir)
                                              : fs::absolute(options.state_dir).string();
  if (impl->state_dir.empty()) {
    return Status::invalid(options.config_path +
                           ": no state directory ([agent] state_dir or --state-dir)");
  }
  VOW_RETURN_IF_ERROR(load_trust(impl->config, base, &impl->trust));
  for (auto& src : impl->config.sources) src.path = resolve(base, src.path);
  if (!impl->config.control_group.empty() && !::getgrnam(impl->config.control_group.c_str())) {
    return Status::invalid(options.config_path + ": control_group '" +
                           impl->config.control_group + "' is no group on this host");
  }

  // From here on the state directory is touched.
  std::error_code ec;
  fs::create_directories(impl->state_dir, ec);
  if (ec) return Status::io("cannot create " + impl->state_dir + ": " + ec.message());
  ::chmod(impl->state_dir.c_str(), 0700);

  auto logger = spdlog::stderr_color_mt("vowd-" + impl->config.name);
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%f %^%l%$ [%n] %v");
  logger->set_level(spdlog::level::from_str(options.log_level));
  impl->log = logger;

  bool created = false;
  auto identity = transport::load_or_create_identity(impl->state_dir, &created);
  if (!identity.is_ok()) return identity.status();
  impl->identity = std::move(identity).value();
  // Every line names the agent and its id (peers' ids are added where an event has one).
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%n " + impl->identity->id().substr(0, 12) +
                      "] %v");
  impl->log->info("agent {} id {}{}", impl->config.name, impl->identity->id(),
                  created ? " (new identity)" : "");

  auto ledger = store::open_sqlite_ledger(store::ledger_path(impl->state_dir));
  if (!ledger.is_ok()) return ledger.status();
  impl->ledger = std::move(ledger).value();
  impl->worker = std::make_unique<Worker>();
  impl->worker->state_dir = impl->state_dir;
  auto index = store::open_sqlite_ledger(store::ledger_path(impl->state_dir));
  if (!index.is_ok()) return index.status();
  impl->worker->index = std::move(index).value();
  auto artifacts =
      store::ArtifactStore::open(store::artifacts_root(impl->state_dir), *impl->worker->index);
  if (!artifacts.is_ok()) return artifacts.status();
  impl->worker->artifacts = std::move(artifacts).value();

  // Restore: every statement we hold, our sequence, the jobs we were running.
  promises::RestoredState restored;
  Status scan = impl->ledger->scan_statements(
      [&](const store::StoredStatement& s, const Status& row) -> Status {
        if (!row.is_ok()) return row;
        auto st = transport::decode_and_verify(s.bytes, s.signature);
        if (!st.is_ok()) {
          return Status::corrupt("statement " + transport::agent_id(s.author) + "/" +
                                 std::to_string(s.seq) +
                                 " in the ledger: " + st.status().message() + " (run vow fsck)");
        }
        restored.statements.push_back(std::move(st).value());
        return Status::ok();
      });
  VOW_RETURN_IF_ERROR(scan);
  auto last = impl->ledger->own_last_seq();
  if (!last.is_ok()) return last.status();
  restored.last_seq = *last;
  auto vv = impl->ledger->version_vector();
  if (!vv.is_ok()) return vv.status();
  impl->vv = *vv;
  auto held = impl->worker->artifacts->list();
  if (!held.is_ok()) return held.status();
  for (const auto& r : *held) restored.held.push_back(r.digest);
  for (const auto& st : restored.statements) impl->remember_refs(st);
  restored.running = impl->recover_running_jobs(restored.statements);

  auto sequences = std::make_unique<Impl::Sequences>(&impl->vv);
  sequences->set_ledger(impl->ledger.get());
  impl->sequences = std::move(sequences);
  transport::TransportOptions topts;
  topts.listen = impl->config.listen;
  // A restarted peer must hear us again before it suspects us: our links to it must not
  // back off for longer than its suspicion window.
  topts.reconnect_max_ms = static_cast<int>(std::clamp<std::int64_t>(
      impl->config.timing.suspect_after_ms, kReconnectCapMinMs, kReconnectCapMaxMs));
  auto* log = impl->log.get();
  auto t = transport::Transport::create(*impl->identity, impl->trust, topts, impl->sequences.get(),
                                        [log](transport::LogLevel level, std::string_view line) {
                                          switch (level) {
                                            case transport::LogLevel::kDebug:
                                              log->debug("{}", line);
                                              break;
                                            case transport::LogLevel::kInfo:
                                              log->info("{}", line);
                                              break;
                                            case transport::LogLevel::kWarn:
                                              log->warn("{}", line);
                                              break;
                                            case transport::LogLevel::kError:
                                              log->error("{}", line);
                                              break;
                                          }
                                        });
  if (!t.is_ok()) return t.status();
  impl->transport = std::move(t).value();
  impl->provider = make_store_provider(impl->state_dir);
  impl->transport->set_artifact_provider(impl->provider.get());

  promises::CoreConfig cc;
  cc.key = impl->identity->key();
  cc.name = impl->config.name;
  cc.endpoints = {impl->transport->endpoint()};
  for (const auto& p : impl->config.promises)
    cc.promises.push_back({p.pipeline, p.stage, p.capacity});
  for (const auto& s : impl->config.sources) cc.sources.push_back({s.pipeline, s.source});
  cc.pipelines = impl->pipelines;
  cc.timing = impl->config.timing;
  cc.replicas = impl->config.replicas;
  impl->core = std::make_unique<promises::Core>(cc, std::move(restored), impl->now_ms());

  impl->background = std::make_unique<Background>(1);
  VOW_RETURN_IF_ERROR(impl->open_control());
  if (!impl->config.http.empty()) {
    auto http = HttpServer::start(impl->config.http);
    if (!http.is_ok()) return http.status();
    impl->http = std::move(http).value();
    impl->log->info("serving /metrics and /api/status on http://{}", impl->config.http);
  }
  return std::unique_ptr<Daemon>(new Daemon(std::move(impl)));
}

Daemon::Daemon(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Daemon::~Daemon() {
  if (!impl_) return;
  impl_->http.reset();  // stops serving before what it reports goes away
  impl_->background.reset();  // joins the worker before what it uses goes away
  if (impl_->control) zmq_close(impl_->control);
  if (impl_->control_ctx) zmq_ctx_term(impl_->control_ctx);
  if (impl_->signal_fd >= 0) ::close(impl_->signal_fd);
  if (impl_->inotify_fd >= 0) ::close(impl_->inotify_fd);
  spdlog::drop(impl_->log->name());
}

int Daemon::run() { return impl_->loop(); }

// ---- time ----

std::int64_t Daemon::Impl::now_ms() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::int64_t Daemon::Impl::wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// ---- carrying out the core's output ----

void Daemon::Impl::carry_out(promises::Output out) {
  if (out.empty()) return;
  Status s = persist(out.persist);
  if (!s.is_ok()) {
    // Nothing may be sent or done that is not on disk: stop, the operator must act.
    log->error("cannot persist statements: {}; shutting down", s.to_string());
    stopping = true;
    exit_code = 1;
    return;
  }
  for (const auto& m : out.messages) send(m);
  fresh.clear();
  for (auto& a : out.actions) act(a);
  log_events(out.events);
}

Status Daemon::Impl::persist(const std::vector<Statement>& statements) {
  std::vector<store::StoredStatement> others;
  std::int64_t now = wall_ms();
  for (const auto& st : statements) {
    auto key = std::make_pair(st.author, st.seq);
    if (st.author == identity->key()) {
      if (const auto* c = std::get_if<Claim>(&st.body)) {
        ++metrics.claims;
        if (c->epoch > 1) ++metrics.takeovers;
      } else if (const auto* r = std::get_if<JobResult>(&st.body)) {
        ++(r->ok ? metrics.results_ok : metrics.results_failed);
      }
      auto signed_st = transport::sign_statement(*identity, st);
      if (!signed_st.is_ok()) return signed_st.status();
      VOW_RETURN_IF_ERROR(ledger->append_own(to_stored(st, *signed_st, now)));
      fresh[key] = *signed_st;
    } else {
      auto it = stash.find(key);
      if (it == stash.end()) {
        // The core only persists what it was given, and it was given only stashed ones.
        log->warn("statement {}/{} to persist has no signed form; dropped", short_id(st.author),
                  st.seq);
        continue;
      }
      others.push_back(to_stored(st, it->second, now));
      fresh[key] = it->second;
      stash.erase(it);
    }
    remember_refs(st);
  }
  if (!others.empty()) VOW_RETURN_IF_ERROR(ledger->insert_batch(others));
  statements_persisted += statements.size();
  if (!statements.empty()) {
    auto vv_now = ledger->version_vector();
    if (vv_now.is_ok()) vv = *vv_now;
  }
  return Status::ok();
}

void Daemon::Impl::remember_refs(const Statement& st) {
  auto note = [&](const ArtifactRef& r) {
    is_tree[r.digest] = r.is_tree;
    for (const auto& e : r.entries) is_tree[e.digest] = e.kind == EntryKind::kTree;
  };
  if (const auto* r = std::get_if<JobResult>(&st.body)) {
    for (const auto& o : r->outputs) note(o.artifact);
    for (const auto& i : r->inputs) note(i.artifact);
  } else if (const auto* v = std::get_if<SourceVersion>(&st.body)) {
    note(v->artifact);
  }
}

void Daemon::Impl::send(const promises::Outbound& out) {
  transport::Message msg;
  std::visit(
      [&](const auto& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, promises::Hello>) {
          transport::Hello h;
          h.agent = identity->key();
          h.name = config.name;
          h.endpoints = {transport->endpoint()};
          h.version_vector = m.have;
          msg.body = h;
        } else if constexpr (std::is_same_v<T, promises::Heartbeat>) {
          transport::Heartbeat h;
          h.running = m.running;
          h.capacity = m.capacity;
          h.active_claims = static_cast<std::uint32_t>(m.active_claims.size());
          h.highest_seq = core->last_seq();
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
            auto key = std::make_pair(st.author, st.seq);
            if (auto it = fresh.find(key); it != fresh.end()) {
              b.signed_statements.push_back(it->second);
              continue;
            }
            auto stored = ledger->get(st.author, st.seq);
            if (stored.is_ok() && stored->has_value()) {
              b.signed_statements.push_back({(*stored)->bytes, (*stored)->signature});
            }
          }
          if (b.signed_statements.empty()) return;
          msg.body = std::move(b);
        } else if constexpr (std::is_same_v<T, promises::HaveRequest>) {
          msg.body = transport::HaveRequest{};
        } else if constexpr (std::is_same_v<T, promises::Have>) {
          msg.body = transport::Have{m.incarnation, m.version, m.digests};
        }
      },
      out.message.body);
  if (msg.body.index() == 0 && !std::holds_alternative<promises::Hello>(out.message.body)) {
    return;  // nothing to send (an empty batch)
  }
  if (out.to) {
    Status s = transport->send(*out.to, msg);
    if (!s.is_ok()) log->debug("send to {}: {}", short_id(*out.to), s.to_string());
  } else {
    transport->broadcast(msg);
  }
}

void Daemon::Impl::act(promises::Action& action) {
  std::visit(
      [&](auto& a) {
        using T = std::decay_t<decltype(a)>;
        if constexpr (std::is_same_v<T, promises::StartJob>) {
          start_job(std::move(a));
        } else if constexpr (std::is_same_v<T, promises::KillJob>) {
          kill_job(a);
        } else if constexpr (std::is_same_v<T, promises::FetchArtifact>) {
          fetch_artifact(a.digest, a.holders, false);
        } else if constexpr (std::is_same_v<T, promises::ReplicateArtifact>) {
          fetch_artifact(a.digest, a.holders, true);
        } else if constexpr (std::is_same_v<T, promises::Connect>) {
          if (!a.endpoints.empty()) connect_peer(a.peer, a.endpoints.front());
        } else if constexpr (std::is_same_v<T, promises::PeerDeclaredDead>) {
          abandon_fetches_from(a.peer);
        }
      },
      action);
}

void Daemon::Impl::log_events(const std::vector<promises::Event>& events) {
  for (const auto& e : events) {
    const char* kind = promises::event_kind_name(e.kind);
    std::string peer = e.peer ? " [peer " + short_id(*e.peer) + "]" : "";
    switch (e.level) {
      case promises::EventLevel::kDebug:
        log->debug("{}: {}{}", kind, e.text, peer);
        break;
      case promises::EventLevel::kInfo:
        log->info("{}: {}{}", kind, e.text, peer);
        break;
      case promises::EventLevel::kWarn:
        log->warn("{}: {}{}", kind, e.text, peer);
        break;
      case promises::EventLevel::kError:
        log->error("{}: {}{}", kind, e.text, peer);
        break;
    }
  }
}

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
  carry_out(core->peer_connected(peer));
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
    h.version_vector = vv;
    (void)transport->send(key, transport::Message{transport::kProtocolVersion, h});
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
      (void)transport->send(in.peer, transport::Message{transport::kProtocolVersion, resp});
    }
    return;
  }
  const AgentKey& peer = in.peer;
  std::visit(
      [&](auto& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, transport::Hello>) {
          if (!m.endpoints.empty()) {
            // It told us where it listens: link to it (or keep the link we have).
            connect_peer(peer, m.endpoints.front());
          }
          greet(peer);
          carry_out(core->on_message(peer, {promises::Hello{m.name, m.version_vector}}));
        } else if constexpr (std::is_same_v<T, transport::Heartbeat>) {
          greet(peer);
          promises::Heartbeat h;
          h.running = m.running;
          h.capacity = m.capacity;
          h.active_claims = m.claims;
          h.vv_sum = m.vv_sum;
          h.holdings_incarnation = m.holdings_incarnation;
          h.holdings_version = m.holdings_version;
          carry_out(core->on_message(peer, {h}));
        } else if constexpr (std::is_same_v<T, transport::StatementMsg>) {
          ++statements_in;
          if (stash.size() < kMaxStash) {
            stash[{m.statement.author, m.statement.seq}] = m.signed_statement;
          }
          carry_out(core->on_statement(peer, m.statement));
        } else if constexpr (std::is_same_v<T, transport::LedgerRequest>) {
          greet(peer);
          carry_out(core->on_message(peer, {promises::SyncRequest{m.have}}));
        } else if constexpr (std::is_same_v<T, transport::LedgerBatch>) {
          statements_in += m.statements.size();
          for (std::size_t i = 0; i < m.statements.size() && stash.size() < kMaxStash; ++i) {
            stash[{m.statements[i].author, m.statements[i].seq}] = m.signed_statements[i];
          }
          carry_out(core->on_message(peer, {promises::StatementBatch{m.statements}}));
        } else if constexpr (std::is_same_v<T, transport::HaveRequest>) {
          carry_out(core->on_message(peer, {promises::HaveRequest{}}));
        } else if constexpr (std::is_same_v<T, transport::Have>) {
          carry_out(core->on_message(peer, {promises::Have{m.incarnation, m.version, m.digests}}));
        }
      },
      in.message.body);
  // Whatever the core did not persist of what arrived is not kept.
  if (stash.size() >= kMaxStash / 2) stash.clear();
}

// ---- the loop ----

int Daemon::Impl::loop() {
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGHUP);
  sigaddset(&mask, SIGPIPE);
  ::pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  signal_fd = ::signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  if (signal_fd < 0) {
    log->error("signalfd: {}", std::strerror(errno));
    return 1;
  }

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
  carry_out(core->tick(now_ms(), wall_ms()));  // own statements carry a wall time
  carry_out(core->start());
  start_sources();
  log->info("listening on {}; control at {}", transport->endpoint(), control_endpoint);

  while (!stopping) {
    std::vector<zmq_pollitem_t> items = transport->poll_items();
    std::size_t n_transport = items.size();
    items.push_back({control, 0, ZMQ_POLLIN, 0});
    items.push_back({nullptr, signal_fd, ZMQ_POLLIN, 0});
    items.push_back({nullptr, background->fd(), ZMQ_POLLIN, 0});
    if (inotify_fd >= 0) items.push_back({nullptr, inotify_fd, ZMQ_POLLIN, 0});
    for (const auto& [id, job] : jobs) {
      if (job.process) items.push_back({nullptr, job.process->pidfd(), ZMQ_POLLIN, 0});
    }
    int rc = zmq_poll(items.data(), static_cast<int>(items.size()), kLoopTickMs);
    if (rc < 0 && zmq_errno() != EINTR) {
      log->error("zmq_poll: {}", zmq_strerror(zmq_errno()));
      exit_code = 1;
      break;
    }
    std::int64_t now = now_ms();
    if (items[n_transport + 1].revents & ZMQ_POLLIN) {
      signalfd_siginfo si{};
      while (::read(signal_fd, &si, sizeof(si)) == sizeof(si)) {
        if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
          log->info("signal {}: shutting down, releasing claims", si.ssi_signo);
          stopping = true;
        } else if (si.ssi_signo == SIGHUP) {
          reload();
        }
      }
    }
    if (stopping) break;
    background->drain();
    if (inotify_fd >= 0) on_inotify();
    auto inbound = transport->poll_inbound(now, std::span(items.data(), n_transport));
    for (auto& in : inbound) handle_inbound(in);
    for (const auto& o : transport->take_fetch_outcomes()) on_fetch_outcome(o);
    if (!fetch_queue.empty()) start_queued_fetches();
    serve_control();
    check_jobs();
    report_stopped_runs();
    poll_sources();
    rotate_seeds();
    transport->tick(now);
    carry_out(core->tick(now, wall_ms()));
    if (http && now >= next_http_publish_ms) {
      http->publish(metrics_text(), status_json().dump());
      next_http_publish_ms = now + kHttpRefreshMs;
    }
  }
  shutdown();
  return exit_code;
}

void Daemon::Impl::shutdown() {
  // Release claims so that others take over at once, kill what runs, flush.
  carry_out(core->withdraw());
  for (auto& [id, job] : jobs) {
    if (job.process) job.process->kill_group(SIGKILL);
    (void)ledger->remove_running_job(id);
  }
  // Give the links a moment to carry the releases out (bounded, not a sleep on a result).
  std::int64_t until = now_ms() + 200;
  while (now_ms() < until) {
    transport->wait(20);
    for (auto& in : transport->poll_inbound(now_ms())) (void)in;
    transport->tick(now_ms());
  }
  log->info("stopped");
}

}  // namespace vow::agent
