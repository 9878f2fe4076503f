#include "agent/daemon.h"

#include <glob.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include "agent/config_files.h"
#include "agent/daemon_internal.h"
#include "agent/sandbox.h"
#include "agent/web.h"
#include "promises/assert.h"
#include "store/sqlite_ledger.h"
#include "transport/codec.h"

namespace fs = std::filesystem;

namespace vow::agent {

class Daemon::Impl::Sequences final : public transport::SequenceView {
 public:
  explicit Sequences(const SqliteState* state) : state_(state) {}
  std::uint64_t highest_seq(const AgentKey& author) const override {
    const auto& vv = state_->version_vector();
    auto it = vv.find(author);
    return it == vv.end() ? 0 : it->second;
  }
  bool holds_identical(const AgentKey& author, std::uint64_t seq,
                       std::string_view bytes) const override {
    // The core's ledger holds every statement it counts with its signed bytes: a
    // duplicate costs a lookup in memory, not a read of the ledger file (which is read
    // only at or below the frontier it holds without a gap).
    if (core_ != nullptr) {
      if (const auto* held = core_->ledger().get(author, seq)) {
        return held->signed_form.bytes == bytes;
      }
    }
    if (seq > highest_seq(author)) return false;
    auto st = ledger_->get(author, seq);
    return st.is_ok() && st->has_value() && (*st)->bytes == bytes;
  }
  bool is_void(const AgentKey& author, std::uint64_t seq) const override {
    return core_ != nullptr && core_->ledger().is_proven_void(author, seq);
  }
  bool is_retired(const AgentKey& author, std::uint64_t seq) const override {
    return core_ != nullptr && core_->ledger().is_retired(author, seq);
  }
  std::optional<Digest> vouched(const AgentKey& author, std::uint64_t seq) const override {
    const Digest* d = core_ != nullptr ? core_->ledger().vouched(author, seq) : nullptr;
    return d != nullptr ? std::optional<Digest>(*d) : std::nullopt;
  }
  void set_ledger(store::LedgerStore* ledger) { ledger_ = ledger; }
  void set_core(const promises::Core* core) { core_ = core; }

 private:
  const SqliteState* state_;
  store::LedgerStore* ledger_ = nullptr;
  const promises::Core* core_ = nullptr;
};

namespace {

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
    std::vector<std::string> files;
    for (std::size_t i = 0; rc == 0 && i < g.gl_pathc; ++i) files.emplace_back(g.gl_pathv[i]);
    ::globfree(&g);
    for (const auto& file : files) {
      std::ifstream in(file);
      for (const auto& k : read_key_file(in)) {
        Status s = trust->add(k.id);
        if (!s.is_ok()) {
          return Status::invalid(file + ":" + std::to_string(k.line) + ": " + s.message());
        }
      }
    }
  }
  return Status::ok();
}


// The stages promised with executor = "slurm".
std::set<std::pair<std::string, std::string>> slurm_stages(
    const std::vector<promises::PromiseDecl>& promises) {
  std::set<std::pair<std::string, std::string>> out;
  for (const auto& p : promises) {
    if (p.executor == "slurm") out.emplace(p.pipeline, p.stage);
  }
  return out;
}

// Why an agent whose jobs run without bubblewrap cannot keep its promises: the first
// promise of a stage with a `root`, which only the bubblewrap sandbox makes
// (docs/sandbox.md, "Environments"); "" when there is none. [agent] sandbox = "none"
// is refused by the config's own checks; this is for "auto" without a working bwrap.
std::string root_without_bwrap(const promises::AgentConfig& config,
                               const std::vector<promises::Pipeline>& pipelines,
                               const std::string& bwrap_problem) {
  for (const auto& pr : config.promises) {
    for (const auto& p : pipelines) {
      const promises::Stage* s = p.name == pr.pipeline ? p.find_stage(pr.stage) : nullptr;
      if (s == nullptr || !s->root || pr.executor != "local") continue;
      return pr.where.to_string() + ": promise for stage '" + pr.pipeline + "/" + pr.stage +
             "': the stage runs in root '" + s->root->to_string() + "' (" + s->where.to_string() +
             "), which only the bubblewrap sandbox makes, and jobs here run without it: " +
             bwrap_problem + " (docs/sandbox.md)";
    }
  }
  return "";
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
  for (const auto& d : loaded.warnings) log->warn("SIGHUP: {}", format_diagnostic(d));
  if (bwrap.empty()) {
    std::string why = root_without_bwrap(loaded.agents[0], loaded.pipelines, bwrap_problem);
    if (!why.empty()) {
      log->error("SIGHUP: {}; config not reloaded", why);
      return;
    }
  }
  promises::AgentConfig next = loaded.agents.front();
  if (!options.name.empty()) next.name = options.name;
  if (!options.advertise.empty()) next.advertise = options.advertise;
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
  kept("advertise", next.advertise == config.advertise);
  kept("state_dir", next.state_dir == config.state_dir || !options.state_dir.empty());
  kept("control", next.control == config.control);
  kept("control_group", next.control_group == config.control_group);
  kept("http", next.http == config.http);
  kept("http_token_file", next.http_token_file == config.http_token_file);
  kept("replicas", next.replicas == config.replicas);
  kept("sandbox", next.sandbox == config.sandbox);
  kept("job_limits", next.job_limits == config.job_limits);
  kept("bulk_transfer", next.bulk_transfer == config.bulk_transfer);
  kept("bulk_port", next.bulk_port == config.bulk_port);
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
    for (const auto& p : ps)
      out.insert(p.pipeline + "/" + p.stage + "*" + std::to_string(p.capacity));
    return out;
  };
  std::set<Digest> old_digests, new_digests;
  for (const auto& p : pipelines) old_digests.insert(p.digest);
  for (const auto& p : loaded.pipelines) new_digests.insert(p.digest);
  auto before = names(config.promises);
  auto after = names(next.promises);
  kept("[slurm]", next.slurm.shared_dir == config.slurm.shared_dir &&
                      next.slurm.partition == config.slurm.partition &&
                      next.slurm.poll_ms == config.slurm.poll_ms);
  // Runs already started stay where they are; a stage moved to slurm without a [slurm]
  // at start runs here until a restart.
  executor->set_slurm_stages(slurm_stages(next.promises));
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
  for (const auto& p : pipelines) {
    for (const auto& st : p.stages) retired_stages.emplace(st.digest, st);
  }
  pipelines = loaded.pipelines;
  std::vector<promises::CorePromise> core_promises;
  for (const auto& p : config.promises) core_promises.push_back({p.pipeline, p.stage, p.capacity});
  std::vector<AdvertSource> sources;
  for (const auto& s : config.sources) sources.push_back({s.pipeline, s.source});
  agent->reconfigure(std::move(core_promises), pipelines, std::move(sources));
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
  // One config for many agents (a Kubernetes StatefulSet): each names itself.
  if (!options.name.empty()) impl->config.name = options.name;
  if (!options.advertise.empty()) impl->config.advertise = options.advertise;
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
    return Status::invalid(options.config_path + ": control_group '" + impl->config.control_group +
                           "' is no group on this host");
  }

  // From here on the state directory is touched.
  std::error_code ec;
  fs::create_directories(impl->state_dir, ec);
  if (ec) return Status::io("cannot create " + impl->state_dir + ": " + ec.message());
  ::chmod(impl->state_dir.c_str(), 0700);

  auto logger = spdlog::stderr_color_mt("vowd-" + impl->config.name);
  const bool journal = stderr_is_journal();
  logger->set_formatter(make_log_formatter(options.log_format, journal, ""));
  logger->set_level(spdlog::level::from_str(options.log_level));
  impl->log = logger;

  bool created = false;
  auto identity = transport::load_or_create_identity(impl->state_dir, &created);
  if (!identity.is_ok()) return identity.status();
  impl->identity = std::move(identity).value();
  // Every line names the agent and its id (peers' ids are added where an event has one).
  logger->set_formatter(
      make_log_formatter(options.log_format, journal, impl->identity->id().substr(0, 12)));
  impl->log->info("agent {} id {}{}", impl->config.name, impl->identity->id(),
                  created ? " (new identity)" : "");
  for (const auto& d : loaded.warnings) impl->log->warn("{}", format_diagnostic(d));

  VOW_RETURN_IF_ERROR(impl->choose_sandbox());
  if (impl->bwrap.empty()) {
    std::string why = root_without_bwrap(impl->config, impl->pipelines, impl->bwrap_problem);
    if (!why.empty()) return Status::unavailable(why);
  }
  VOW_RETURN_IF_ERROR(impl->choose_job_limits());
  promises::RestoredState restored;
  std::vector<store::RunningJob> recovered;
  // What a restart costs before the agent listens, in its log (docs/agent.md).
  auto since = [t = std::chrono::steady_clock::now()]() mutable {
    auto now = std::chrono::steady_clock::now();
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now - t).count();
    t = now;
    return ms;
  };
  VOW_RETURN_IF_ERROR(impl->open_stores());
  const auto opened_ms = since();
  VOW_RETURN_IF_ERROR(impl->restore(&restored, &recovered));
  const auto read_ms = since();
  const std::size_t statements = restored.statements.size();
  VOW_RETURN_IF_ERROR(impl->open_transport());
  impl->make_agent(std::move(restored), std::move(recovered));
  impl->log->info("state restored: {} statement(s); stores opened in {} ms, ledger read in {} ms, "
                  "agent made in {} ms",
                  statements, opened_ms, read_ms, since());
  VOW_RETURN_IF_ERROR(impl->open_control());
  if (!impl->config.http.empty()) {
    // The web view (agent/web.h): asks the loop through the control socket.
    WebOptions web;
    web.control_endpoint = impl->control_endpoint;
    web.beyond_loopback = !is_loopback_http(impl->config.http);
    if (!impl->config.http_token_file.empty()) {
      auto token = read_http_token(resolve(base, impl->config.http_token_file),
                                   impl->config.http_token_file_where);
      if (!token.is_ok()) return token.status();
      web.token = std::move(token).value();
    }
    auto http = HttpServer::start(impl->config.http,
                                  [&web](httplib::Server& s) { add_web_routes(s, web); });
    if (!http.is_ok()) return http.status();
    impl->http = std::move(http).value();
    impl->log->info("serving /metrics, /api/status and the web view on http://{}{}",
                    impl->config.http,
                    !web.token.empty()    ? " (the web view asks for the token)"
                    : web.beyond_loopback ? "; the web view is off beyond loopback without "
                                            "http_token_file"
                                          : "");
  }
  return std::unique_ptr<Daemon>(new Daemon(std::move(impl)));
}

// The loop's ledger connection, and the worker's own with the artifact store.
Status Daemon::Impl::choose_sandbox() {
  if (config.sandbox == "none") {
    log->info("jobs run without a sandbox ([agent] sandbox = \"none\")");
    bwrap_problem = "[agent] sandbox = \"none\"";
    return Status::ok();
  }
  std::string found = find_bwrap();
  Status works = probe_bwrap(found);
  if (works.is_ok()) {
    bwrap = found;
    log->info("jobs run in a sandbox ({})", bwrap);
    return Status::ok();
  }
  if (config.sandbox == "bwrap") {
    return Status(works.code(), config.file + ": [agent] sandbox = \"bwrap\", but " +
                                    works.message());
  }
  bwrap_problem = works.message();
  log->warn("jobs run WITHOUT a sandbox, with this agent's uid, files and network: {} "
            "(set [agent] sandbox = \"none\" to say so, or \"bwrap\" to refuse to start)",
            works.message());
  return Status::ok();
}

Status Daemon::Impl::choose_job_limits() {
  job_cgroups = JobCgroups::probe(state_dir, config.job_limits == "rlimits");
  if (config.job_limits == "cgroups" && !job_cgroups.active()) {
    return Status::unavailable(config.file + ": [agent] job_limits = \"cgroups\", but " +
                               job_cgroups.description());
  }
  log->info("job limits: {}", job_cgroups.description());
  return Status::ok();
}

// RLIMIT_NPROC, the only `pids` limit without a cgroup per job, does not bind root.
void Daemon::Impl::warn_unenforced_limits() {
  if (::geteuid() != 0 || job_cgroups.limits_pids()) return;
  for (const auto& pr : config.promises) {
    for (const auto& p : pipelines) {
      const promises::Stage* s = p.name == pr.pipeline ? p.find_stage(pr.stage) : nullptr;
      if (s == nullptr || s->pids == 0) continue;
      log->warn("stage {}/{}: its pids limit ({}) is not enforced here: this agent runs as "
                "root, whom RLIMIT_NPROC does not limit (docs/sandbox.md, \"Limits\")",
                pr.pipeline, pr.stage, s->pids);
    }
  }
}

Status Daemon::Impl::open_stores() {
  // The loop's commits never checkpoint: writing the log back into the database (and
  // syncing it) would hold the loop for hundreds of ms; the worker does it
  // (checkpoint_tick).
  store::SqliteOptions loop_options;
  loop_options.auto_checkpoint = false;
  // With kDeferSync its commits do not sync either: the syncer thread does, off the
  // loop, and the agent holds back what depends on them until then (docs/agent.md).
  loop_options.synchronous_full = !kDeferSync;
  auto l = store::open_sqlite_ledger(store::ledger_path(state_dir), loop_options);
  if (!l.is_ok()) return l.status();
  ledger = std::move(l).value();
  worker = std::make_unique<WorkerStores>();
  auto index = store::open_sqlite_ledger(store::ledger_path(state_dir));
  if (!index.is_ok()) return index.status();
  worker->index = std::move(index).value();
  auto artifacts = store::ArtifactStore::open(store::artifacts_root(state_dir), *worker->index);
  if (!artifacts.is_ok()) return artifacts.status();
  worker->artifacts = std::move(artifacts).value();
  if (kDeferSync) syncer = std::make_unique<WalSyncer>(store::ledger_path(state_dir));
  state = std::make_unique<SqliteState>(ledger.get(), identity->key(), &clock, syncer.get(),
                                        running_journal_path(state_dir));
  return state->load_version_vector();
}

// Every statement held (decoded, carrying its signed form), the own sequence, the
// artifacts held, and the running-job table: the core decides about each row (resumed,
// or stopped). Signatures are not checked again here: the ledger file holds only
// statements verified when they arrived (or signed here), and sits beside the agent's
// secret key, so whoever could forge a row could sign one; checking every signature made
// a restart cost about 60 us per statement ever kept (30 s at 500,000). `vow fsck`
// verifies every signature; peers verify whatever this agent sends them.
Status Daemon::Impl::restore(promises::RestoredState* restored,
                             std::vector<store::RunningJob>* recovered) {
  // The rows are read in order, then decoded on two threads (each half in place): at
  // 30,000 jobs reading the ledger back was a quarter of a restart, before the agent
  // listens, and decoding most of that.
  std::vector<store::StoredStatement> rows_read;
  Status scan =
      ledger->scan_statements([&](store::StoredStatement& s, const Status& row) -> Status {
        if (!row.is_ok()) return row;
        rows_read.push_back(std::move(s));
        return Status::ok();
      });
  VOW_RETURN_IF_ERROR(scan);
  // Read in row order (cheaper); restored in (author, seq) order, as the ledger keeps them.
  std::sort(rows_read.begin(), rows_read.end(),
            [](const store::StoredStatement& a, const store::StoredStatement& b) {
              return std::tie(a.author, a.seq) < std::tie(b.author, b.seq);
            });
  std::vector<std::optional<Statement>> decoded(rows_read.size());
  std::vector<Status> failed(rows_read.size(), Status::ok());
  auto decode = [&](std::size_t first, std::size_t step) {
    for (std::size_t i = first; i < rows_read.size(); i += step) {
      store::StoredStatement& s = rows_read[i];
      auto st = transport::decode_statement_unverified(s.bytes);
      if (st.is_ok() && (st->author != s.author || st->seq != s.seq)) {
        st = Status::corrupt("its bytes name statement " + transport::agent_id(st->author) +
                             "/" + std::to_string(st->seq));
      }
      if (!st.is_ok()) {
        failed[i] = st.status();
        continue;
      }
      st->signed_form.bytes = std::move(s.bytes);
      st->signed_form.signature = s.signature;
      st->signed_form.path = std::move(s.path);
      decoded[i] = std::move(st).value();
    }
  };
  if (rows_read.size() >= 1024) {
    std::thread other(decode, 1, 2);
    decode(0, 2);
    other.join();
  } else {
    decode(0, 1);
  }
  restored->statements.reserve(rows_read.size());
  for (std::size_t i = 0; i < rows_read.size(); ++i) {
    if (!decoded[i]) {
      const store::StoredStatement& s = rows_read[i];
      return Status::corrupt("statement " + transport::agent_id(s.author) + "/" +
                             std::to_string(s.seq) + " in the ledger: " + failed[i].message() +
                             " (run vow fsck)");
    }
    restored->statements.push_back(std::move(*decoded[i]));
  }
  rows_read.clear();
  auto proofs = ledger->proofs();
  if (!proofs.is_ok()) return proofs.status();
  for (const auto& s : *proofs) {
    auto st = transport::decode_and_verify(s.bytes, s.signature, s.path);
    if (!st.is_ok() || st->author != s.author) {
      log->warn("equivocation proof of {} in the ledger does not verify; ignored",
                transport::agent_id(s.author));
      continue;
    }
    restored->proofs.push_back(std::move(st).value());
  }
  auto voids = ledger->voids();
  if (!voids.is_ok()) return voids.status();
  restored->voids = std::move(voids).value();
  auto last = ledger->own_last_seq();
  if (!last.is_ok()) return last.status();
  restored->last_seq = *last;
  auto held = worker->artifacts->held();
  if (!held.is_ok()) return held.status();
  restored->held = std::move(held).value();
  auto rows = ledger->running_jobs();
  if (!rows.is_ok()) {
    log->warn("cannot read the running-job table: {}", rows.status().to_string());
    return Status::ok();
  }
  // Runs noted at their start whose rows were not committed (the agent stopped in
  // between): rows like the others, written now, before the journal starts again.
  auto noted = RunningJournal::read(running_journal_path(state_dir));
  if (!noted.is_ok()) {
    log->warn("cannot read the running-job journal: {}", noted.status().to_string());
  } else if (!noted->empty()) {
    std::vector<store::RunningJob> added;
    *rows = merge_noted_runs(std::move(rows).value(), *noted, &added);
    for (const auto& row : added) {
      log->info("job {} epoch {} (pid {}) was started with no row committed: taken as one",
                row.job.short_hex(), row.epoch, row.pid);
      Status put = ledger->put_running_job(row);
      if (!put.is_ok()) log->warn("cannot record running job: {}", put.to_string());
    }
  }
  for (const auto& row : *rows) {
    // The job's reference comes from our own claim of it. The core decides every row
    // (resumed: StartJob; else KillJob), a row without a claim too.
    promises::OwnRun r;
    r.job.job = row.job;
    r.epoch = row.epoch;
    for (const auto& st : restored->statements) {
      if (st.author != identity->key()) continue;
      const auto* c = std::get_if<Claim>(&st.body);
      if (c && c->job.job == row.job && c->epoch == row.epoch) r.job = c->job;
    }
    recovered->push_back(row);
    restored->running.push_back(std::move(r));
  }
  return Status::ok();
}

Status Daemon::Impl::open_transport() {
  auto seqs = std::make_unique<Impl::Sequences>(state.get());
  seqs->set_ledger(ledger.get());
  sequences = std::move(seqs);
  transport::TransportOptions topts;
  topts.listen = config.listen;
  topts.bulk_integrity_only = config.bulk_transfer == "integrity";
  topts.bulk_port = static_cast<std::uint16_t>(config.bulk_port);
  topts.reconnect_max_ms = static_cast<int>(
      std::clamp<std::int64_t>(config.timing.suspect_after_ms, kMinReconnectMs, kMaxReconnectMs));
  auto* l = log.get();
  auto t = transport::Transport::create(*identity, trust, topts, sequences.get(),
                                        [l](transport::LogLevel level, std::string_view line) {
                                          switch (level) {
                                            case transport::LogLevel::kDebug:
                                              l->debug("{}", line);
                                              break;
                                            case transport::LogLevel::kInfo:
                                              l->info("{}", line);
                                              break;
                                            case transport::LogLevel::kWarn:
                                              l->warn("{}", line);
                                              break;
                                            case transport::LogLevel::kError:
                                              l->error("{}", line);
                                              break;
                                          }
                                        });
  if (!t.is_ok()) return t.status();
  transport = std::move(t).value();
  provider = make_store_provider(state_dir);
  transport->set_artifact_provider(provider.get());
  return Status::ok();
}

void Daemon::Impl::make_agent(promises::RestoredState restored,
                              std::vector<store::RunningJob> recovered) {
  promises::CoreConfig cc;
  cc.key = identity->key();
  cc.name = config.name;
  cc.endpoints = {advertised_endpoint()};
  for (const auto& p : config.promises) cc.promises.push_back({p.pipeline, p.stage, p.capacity});
  for (const auto& s : config.sources) cc.sources.push_back({s.pipeline, s.source});
  cc.pipelines = pipelines;
  cc.timing = config.timing;
  cc.replicas = config.replicas;
  cc.horizon_every = config.horizon_every;
  cc.retire_superseded = config.retire_superseded;
  cc.checkpoint_percent = config.checkpoint_percent;
  for (const auto& seed : config.peers) {
    if (seed.find('@') == std::string::npos) continue;  // a key learned later: not counted
    if (auto addr = transport::parse_peer_address(seed); addr.is_ok()) {
      cc.configured_peers.push_back(addr->key);
    }
  }
  const transport::Identity* id = &*identity;
  cc.sign = [id](const Statement& st) { return transport::sign_or_empty(*id, st); };
  // What one input of the core publishes is signed at once: one signature over the batch
  // (docs/protocol.md, "Statements signed together").
  cc.encode = [](const Statement& st) {
    auto bytes = transport::encode_statement(st);
    return bytes.is_ok() ? std::move(bytes).value() : std::string();
  };
  cc.sign_together = [id](const std::vector<SignedForm*>& forms) {
    transport::sign_together(*id, forms);
  };
  cc.attest = [this](Statement& st) { attest_own_statement(st); };
  background = std::make_unique<Background>(1);
  warn_unenforced_limits();
  // The job host is this program again (`vowd job-host`, agent/job_host.h).
  local_executor = std::make_unique<LocalExecutor>(state_dir, worker->artifacts.get(), bwrap,
                                                   job_cgroups, "/proc/self/exe");
  if (auto how = local_executor->start_job_hosts(); !how.empty()) log->info("{}", how);
  if (!config.slurm.shared_dir.empty()) {
    slurm_executor =
        std::make_unique<SlurmExecutor>(config.slurm, state_dir, worker->artifacts.get());
    log->info("jobs of stages promised with executor = \"slurm\" are submitted with sbatch; "
              "their files are under {}", config.slurm.shared_dir);
  }
  executor = std::make_unique<JobExecutors>(local_executor.get(), slurm_executor.get());
  executor->set_slurm_stages(slurm_stages(config.promises));
  // Objects placed ahead of being stored go only into fan-out directories the store
  // made and synced (StoreSink::place): all of them, once.
  if (Status s = worker->artifacts->make_fanouts(); !s.is_ok()) {
    log->warn("artifact store: cannot make its directories ahead: {}", s.to_string());
  }
  sink = std::make_unique<StoreSink>(state_dir, worker->artifacts.get(), &received);
  sink->make_spares();
  network = std::make_unique<DaemonNetwork>(this);
  Effects fx{&clock, network.get(), state.get(), background.get(), executor.get(), sink.get()};
  agent =
      std::make_unique<Agent>(std::move(cc), std::move(restored), std::move(recovered), fx, log);
  static_cast<Impl::Sequences*>(sequences.get())->set_core(&agent->core());
}

Daemon::Daemon(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Daemon::~Daemon() {
  if (!impl_) return;
  impl_->http.reset();  // stops serving before what it reports goes away
  // A source import under way stops at its next file rather than walking on: its
  // result would not be taken, and the next start imports the source again.
  if (impl_->worker && impl_->worker->artifacts) impl_->worker->artifacts->stop_imports();
  impl_->background.reset();  // joins the worker before what it uses goes away
  impl_->save_source_caches();  // the worker is gone: what it held is the loop's now
  if (impl_->control) zmq_close(impl_->control);
  if (impl_->control_ctx) zmq_ctx_term(impl_->control_ctx);
  if (impl_->signal_fd >= 0) ::close(impl_->signal_fd);
  if (impl_->inotify_fd >= 0) ::close(impl_->inotify_fd);
  spdlog::drop(impl_->log->name());
}

int Daemon::run() { return impl_->loop(); }

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
  agent->start();
  connect_seeds();
  start_sources();
  std::string advertised = advertised_endpoint();
  log->info("listening on {}{}; control at {}", transport->endpoint(),
            advertised == transport->endpoint() ? "" : " (advertised as " + advertised + ")",
            control_endpoint);
  notifier.notify("READY=1\nSTATUS=listening on " + transport->endpoint());

  while (!stopping && !agent->failed()) {
    // One descriptor stands for every link's socket: the loop's cost per turn does not
    // grow with the number of peers (Transport::wait_fd).
    // Every item is a plain descriptor, the control socket's too (its ZMQ_FD): one
    // poll(2) a turn, and no ZeroMQ call for a socket that has nothing to say.
    std::vector<pollfd> items;
    items.push_back({transport->wait_fd(), POLLIN, 0});
    items.push_back({control_fd, POLLIN, 0});
    items.push_back({signal_fd, POLLIN, 0});
    items.push_back({background->fd(), POLLIN, 0});
    const std::size_t at_syncer = items.size();
    if (syncer) items.push_back({syncer->fd(), POLLIN, 0});
    const std::size_t at_inotify = items.size();
    if (inotify_fd >= 0) items.push_back({inotify_fd, POLLIN, 0});
    const std::size_t at_executor = items.size();
    for (int fd : executor->pidfds()) items.push_back({fd, POLLIN, 0});
    int timeout = transport->prepare_wait() || control_unread ? 0 : kLoopTickMs;
    int rc = ::poll(items.data(), items.size(), timeout);
    if (rc < 0 && errno != EINTR) {
      log->error("poll: {}", std::strerror(errno));
      exit_code = 1;
      break;
    }
    auto fired = [&](std::size_t i) { return rc > 0 && (items[i].revents & POLLIN) != 0; };
    transport_signalled = fired(0);
    if (fired(1)) control_unread = true;
    background_signalled = fired(3);
    synced_signalled = syncer && fired(at_syncer);
    inotify_signalled = inotify_fd >= 0 && fired(at_inotify);
    executor_fired.clear();
    for (std::size_t i = at_executor; rc > 0 && i < items.size(); ++i) {
      if (items[i].revents != 0) executor_fired.push_back(items[i].fd);
    }
    if (fired(2)) on_signals();
    if (stopping) break;
    poll_once();
  }
  if (agent->failed()) exit_code = 1;
  shutdown();
  return exit_code;
}

// One turn of the loop: every source of inputs is drained into the agent, then time
// passes; the agent is held meanwhile, so the outputs of all of the turn's inputs are
// persisted in one commit (group commit) before any is sent or carried out.
void Daemon::Impl::poll_once() {
  std::int64_t now = now_ms();
  // Where the turn's time goes, for the slow-turn log (a turn longer than a peer's
  // suspicion gets this agent suspected; docs/agent.md "One loop").
  TurnClock turn;
  agent->hold();
  // Each descriptor is read only when it fired: an eventfd or inotify read that finds
  // nothing is a system call for nothing, and a turn comes for every message.
  if (std::exchange(synced_signalled, false)) take_synced();
  if (std::exchange(background_signalled, false)) background->drain();
  if (std::exchange(inotify_signalled, false)) on_inotify();
  turn.lap("background");
  auto inbound = transport->poll_ready(now, std::exchange(transport_signalled, true));
  turn.lap("receive");
  for (auto& in : inbound) handle_inbound(in);
  for (const auto& o : transport->take_fetch_outcomes())
    agent->fetch_outcome(o.stream_id, o.status);
  turn.lap("inbound");
  if (control_unread) serve_control();
  turn.lap("control");
  for (const auto& [job, exit] : executor->reap(&executor_fired)) agent->process_exited(job, exit);
  poll_sources();
  rotate_seeds();
  transport->tick(now);
  agent->tick();
  turn.lap("timers");
  agent->release();
  // The versions checks found this turn are in the core now: their checks are done.
  for (const auto& [i, ticket] : refreshed_at_release) {
    if (i < sources.size()) sources[i].refresh_done = std::max(sources[i].refresh_done, ticket);
  }
  refreshed_at_release.clear();
  turn.lap("agent");
  local_executor->keep_spares();  // after the turn's starts, off their way
  // Files for placements are made in a turn that started no job: not while a process
  // starts, which two inode allocations on the other CPU slow (docs/storage.md).
  if (local_executor->spawned() == spawned_before_turn) sink->make_spares();
  spawned_before_turn = local_executor->spawned();
  gc_tick(now);
  checkpoint_tick(now);
  if (http && now >= next_http_publish_ms) {
    std::string why;
    bool is_ready = ready(&why);
    // An idle agent's snapshot changes only in its times and frame counts: it is made
    // again when something else changed, or once it is kHttpMaxAgeMs old.
    const std::uint64_t key = http_snapshot_key(is_ready, why);
    if (key != http_key || now - http_published_ms >= kHttpMaxAgeMs) {
      const std::int64_t began = now_ms();
      http->publish(metrics_text(), status_json().dump(), is_ready, why);
      ++http_snapshots;
      http_key = key;
      http_published_ms = now;
      // The snapshot is made on the loop: where making it is slow (a mesh with very many
      // jobs not yet behind a horizon), it is made less often, so that it takes at most
      // a tenth of the loop's time, up to every kHttpMaxAgeMs.
      next_http_publish_ms =
          now + std::clamp<std::int64_t>(10 * (now_ms() - began), kHttpRefreshMs, kHttpMaxAgeMs);
    } else {
      next_http_publish_ms = now + kHttpRefreshMs;
    }
  }
  turn.lap("publish");
  notifier.watchdog_tick(now);
  note_turn(turn, inbound.size());
}

void Daemon::Impl::take_synced() {
  if (!syncer) return;
  syncer->clear();
  Status e = syncer->error();
  if (!e.is_ok()) {
    agent->sync_failed(e);
    return;
  }
  agent->synced(syncer->durable());
}

void Daemon::Impl::checkpoint_tick(std::int64_t now) {
  if (checkpointing || now < next_checkpoint_ms) return;
  next_checkpoint_ms = now + kCheckpointMs;
  store::LedgerStore* index = worker->index.get();
  // A log the loop writes all the time is never emptied by passive checkpoints (the
  // writer restarts it only after one copied every frame): past kWalTruncateBytes the
  // worker waits for a moment between the loop's commits and empties it. Its size is
  // what a restart reads back.
  struct stat wal {};
  bool truncate = ::stat((store::ledger_path(state_dir) + "-wal").c_str(), &wal) == 0 &&
                  wal.st_size > kWalTruncateBytes;
  checkpointing = background->submit([this, index, truncate]() -> std::function<void()> {
    Status s = index->checkpoint(truncate);
    return [this, s] {
      checkpointing = false;
      if (!s.is_ok()) log->warn("ledger checkpoint: {}", s.to_string());
    };
  }).is_ok();
}

void Daemon::Impl::note_turn(const TurnClock& turn, std::size_t messages) {
  std::int64_t total = turn.total_us();
  turn_max_us = std::max(turn_max_us, total);
  if (total < kSlowTurnMs * 1000) return;
  ++slow_turns;
  const TurnProfile& p = agent->turn();
  std::string laps;
  for (const auto& [what, us] : turn.laps()) {
    if (us < 1000) continue;
    laps += fmt::format("{}{} {} ms", laps.empty() ? "" : ", ", what, us / 1000);
  }
  log->warn("slow turn: {} ms ({}); {} messages, {} core inputs: core {} ms (slowest {} "
            "{} ms), commit {} ms, carry out {} ms",
            total / 1000, laps, messages, p.inputs, p.core_us / 1000, p.slowest,
            p.slowest_us / 1000, p.persist_us / 1000, p.carry_us / 1000);
}

bool Daemon::Impl::ready(std::string* reason) const {
  int others = 0;
  for (const auto& [key, role] : trust.keys()) {
    if (role == transport::PeerRole::kAgent && key != identity->key()) ++others;
  }
  if (others == 0) {
    *reason = "ready: no other agent is trusted";
    return true;
  }
  int alive = 0;
  for (const auto& p : core().peers()) alive += p.liveness == promises::Liveness::kAlive;
  if (alive > 0) {
    *reason = "ready: " + std::to_string(alive) + " of " + std::to_string(others) +
              " trusted agents alive";
    return true;
  }
  *reason = "not ready: no peer heard yet (" + std::to_string(others) + " trusted agents)";
  return false;
}

std::string Daemon::Impl::advertised_endpoint() const {
  if (!config.advertise.empty()) return config.advertise;
  // A wildcard address is no place to dial: peers are told this host's name instead.
  std::string bound = transport->endpoint();
  for (std::string_view wildcard : {"tcp://0.0.0.0:", "tcp://*:", "tcp://[::]:"}) {
    if (bound.rfind(wildcard, 0) != 0) continue;
    char host[256] = {};
    if (::gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0') return bound;
    return "tcp://" + std::string(host) + ":" + bound.substr(wildcard.size());
  }
  return bound;
}

void Daemon::Impl::on_signals() {
  signalfd_siginfo si{};
  while (::read(signal_fd, &si, sizeof(si)) == sizeof(si)) {
    if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
      log->info("signal {}: shutting down, releasing claims", si.ssi_signo);
      stopping = true;
    } else if (si.ssi_signo == SIGHUP) {
      notifier.notify("RELOADING=1");
      reload();
      notifier.notify("READY=1");
    }
  }
}

void Daemon::Impl::shutdown() {
  notifier.notify("STOPPING=1");
  // Release claims so that others take over at once, stop what runs, flush.
  if (!agent->failed()) {
    agent->withdraw();
  }
  // Fetched objects the worker is storing get their index rows committed and synced
  // with the releases (bounded: a group of small objects takes milliseconds), rather
  // than left in place for the next start to index. After the withdrawal, so that
  // nothing they were waited for starts now.
  for (std::int64_t until = now_ms() + kShutdownFlushMs; agent->storing() && now_ms() < until;) {
    struct pollfd p {
      background->fd(), POLLIN, 0
    };
    if (::poll(&p, 1, 20) > 0) background->drain();
  }
  if (!agent->failed() && syncer) {
    // The releases wait for their sync: made here, at once.
    auto durable = syncer->sync_now();
    if (durable.is_ok()) {
      agent->synced(*durable);
    } else {
      agent->sync_failed(durable.status());
    }
  }
  // Give the links a moment to carry the releases out (bounded, not a sleep on a result).
  std::int64_t until = now_ms() + kShutdownFlushMs;
  while (now_ms() < until) {
    transport->wait(20);
    for (auto& in : transport->poll_inbound(now_ms())) (void)in;
    transport->tick(now_ms());
    // Stopped jobs leave the running-job table as their processes go.
    for (const auto& [job, exit] : executor->reap()) agent->process_exited(job, exit);
  }
  log->info("stopped");
}

}  // namespace vow::agent
