#include "tests/sim/sim.h"

#include <spdlog/details/null_mutex.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "agent/verify_ledger.h"
#include "promises/batch_proof.h"
#include "tests/sim/world.h"

namespace vow::sim {
namespace {

constexpr std::int64_t kTickMs = 20;
constexpr std::int64_t kQuietCheckMs = 50;
constexpr std::int64_t kConnectMs = 1;  // a link up -> both ends told
constexpr std::uint64_t kForgedSeqBase = 1'000'000;

}  // namespace

namespace {
// Hands "peer-state: peer NAME is STATE" lines of each agent's log to the world.
class PeerStateSink final : public spdlog::sinks::base_sink<spdlog::details::null_mutex> {
 public:
  explicit PeerStateSink(World* w) : w_(w) {}

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    std::string_view text(msg.payload.data(), msg.payload.size());
    constexpr std::string_view kPrefix = "peer-state: peer ";
    if (text.substr(0, kPrefix.size()) != kPrefix) return;
    text.remove_prefix(kPrefix.size());
    auto is = text.find(" is ");
    if (is == std::string_view::npos) return;
    std::string subject(text.substr(0, is));
    std::string state(text.substr(is + 4));
    state = state.substr(0, state.find(' '));
    w_->peer_state(std::string(msg.logger_name.data(), msg.logger_name.size()), subject, state);
  }
  void flush_() override {}

 private:
  World* w_;
};
}  // namespace

void World::peer_state(const std::string& observer, const std::string& subject,
                       const std::string& state) {
  // Agents are named "a<index>" (make_hosts).
  if (subject.size() < 2 || subject[0] != 'a') return;
  int s = std::atoi(subject.c_str() + 1);
  if (s < 0 || s >= static_cast<int>(hosts_.size()) || host(s).config.name != subject) return;
  if (s == victim_ && !host(s).up && now_ >= kMeasureKillMs) {
    if (state == "dead" && observer.size() > 1) {
      int o = std::atoi(observer.c_str() + 1);
      if (detected_.insert(o).second) {
        std::int64_t took = now_ - kMeasureKillMs;
        if (result_.detect_first_ms < 0) result_.detect_first_ms = took;
        int live = 0;
        for (const auto& h : hosts_) live += h.up ? 1 : 0;
        if (static_cast<int>(detected_.size()) == live) result_.detect_all_ms = took;
      }
    }
    return;
  }
  if (!host(s).up) return;
  if (state == "suspect") ++result_.false_suspicions;
  if (state == "dead") ++result_.false_deaths;
}

World::World(const SimOptions& o)
    : opt_(o),
      rng_(o.seed * 0x9E3779B97F4A7C15ULL + 17),
      clock_(this),
      hostile_rng_(o.seed * 0xD1B54A32D192ED03ULL + 29) {
  if (opt_.verbose) {
    log_ =
        std::make_shared<spdlog::logger>("sim", std::make_shared<spdlog::sinks::stdout_sink_st>());
    log_->set_pattern("         agent %l: %v");
    log_->set_level(spdlog::level::debug);
  } else {
    log_ = std::make_shared<spdlog::logger>("sim", std::make_shared<spdlog::sinks::null_sink_st>());
    log_->set_level(spdlog::level::off);
  }
}

// ---------------------------------------------------------------- machinery

int World::index_of(const AgentKey& key) const {
  auto it = index_.find(key);
  return it == index_.end() ? -1 : it->second;
}

const ArtifactRef* World::ref(const Digest& d) const {
  auto it = refs_.find(d);
  return it == refs_.end() ? nullptr : &it->second;
}

void World::fail(const std::string& what) {
  if (result_.failures.size() < 20) {
    result_.failures.push_back("t=" + std::to_string(now_) + "ms: " + what);
  }
}

void World::trace(const std::string& line) {
  trace_.update_field(line);
  if (opt_.verbose) std::printf("%8lld %s\n", static_cast<long long>(now_), line.c_str());
}

void World::add_to_store(Host& h, const Digest& d) {
  h.store.insert(d);
  auto it = refs_.find(d);
  if (it != refs_.end()) {
    for (const auto& e : it->second.entries) h.store.insert(e.digest);
  }
}

void World::note_broadcast(const promises::Message& m) {
  const auto* b = std::get_if<promises::StatementBatch>(&m.body);
  if (b == nullptr || b->answer || b->statements.empty()) return;
  ++result_.statement_broadcasts;
  result_.statements_broadcast += b->statements.size();
  for (const auto& st : b->statements) {
    if (first_of_batch(st.signed_form.path)) ++result_.broadcast_signatures;
  }
}

void World::send(int from, int to, const std::shared_ptr<const promises::Message>& m) {
  ++result_.messages;
  if (std::holds_alternative<promises::Probe>(m->body) ||
      std::holds_alternative<promises::Heartbeat>(m->body)) {
    ++result_.membership_messages;
  }
  int copies = 1;
  if (net_faults_) {
    if (chance(0.05)) return;
    if (chance(0.03)) copies = 2;
  }
  for (int c = 0; c < copies; ++c) {
    std::int64_t delay = 1 + static_cast<std::int64_t>(rnd(5));
    if (net_faults_ && chance(0.05)) delay += 20 + static_cast<std::int64_t>(rnd(250));
    Ev ev{EvType::kDeliver};
    ev.agent = to;
    ev.from = from;
    ev.message = m;
    schedule(now_ + delay, ev);
  }
}

// A link between two agents came up: each is told once per incarnation (the daemon
// tells its agent when a peer first speaks or is dialled).
void World::connect_pair(int a, int b) {
  if (!host(a).up || !host(b).up || side_[a] != side_[b]) return;
  for (auto [x, y] : {std::pair{a, b}, std::pair{b, a}}) {
    if (host(x).greeted.count(host(y).key)) continue;
    Ev ev{EvType::kConnected};
    ev.agent = x;
    ev.from = y;
    ev.incarnation = host(x).incarnation;
    schedule(now_ + kConnectMs, ev);
  }
}

// After every input to an agent: one that cannot go on (its disk is full) exits, and
// is started again shortly, as its service manager would.
void World::after_input(int i) {
  Host& h = host(i);
  if (opt_.crash_unsynced_runs && h.up && !h.agent->failed() && unsynced_crashes_ < 2 &&
      now_ + 1000 < heal_ms_ && runs_unsynced_claim(h)) {
    ++unsynced_crashes_;
    trace("a" + std::to_string(i) + " crashes running a job whose claim is not durable");
    crash(i);
    Ev r{EvType::kRestart};
    r.agent = i;
    schedule(now_ + 300 + static_cast<std::int64_t>(rnd(700)), r);
    return;
  }
  if (!h.up || !h.agent->failed()) return;
  ++result_.agent_failures;
  trace("a" + std::to_string(i) + " stopped: cannot persist");
  crash(i);
  Ev r{EvType::kRestart};
  r.agent = i;
  schedule(now_ + 300 + static_cast<std::int64_t>(rnd(700)), r);
}

bool World::runs_unsynced_claim(const Host& h) const {
  for (const auto& [job, row] : h.running_table) {
    bool durable = std::any_of(h.persisted.begin(), h.persisted.end(), [&](const Statement& st) {
      const auto* c = st.author == h.key ? std::get_if<Claim>(&st.body) : nullptr;
      return c != nullptr && c->job.job == job && c->epoch == row.epoch;
    });
    if (!durable) return true;
  }
  return false;
}

void World::deliver(const Ev& ev) {
  Host& h = host(ev.agent);
  // from = -1: the hostile host, outside every partition.
  if (!h.up || (ev.from >= 0 && side_[ev.from] != side_[ev.agent])) return;
  ++result_.deliveries;
  promises::Message msg = *ev.message;
  if (auto* b = std::get_if<promises::StatementBatch>(&msg.body)) {
    // The network's verification: statements whose signature fails are dropped.
    std::erase_if(b->statements, [&](const Statement& st) {
      if (sim_verify(st)) return false;
      trace("a" + std::to_string(ev.agent) + " drop forged statement");
      return true;
    });
  }
  h.agent->message(ev.from < 0 ? hostile_key_ : host(ev.from).key, std::move(msg));
  after_input(ev.agent);
}

void World::proc_exit(const Ev& ev) {
  Host& h = host(ev.agent);
  auto it = h.procs.find(ev.id);
  if (it == h.procs.end() || it->second.token != ev.token || it->second.exited) return;
  Proc& p = it->second;
  bool killed_now = ev.from == 1;
  if (p.killed && !killed_now) return;  // its natural end comes after the kill
  p.exited = true;
  if (killed_now) {
    p.exit = agent::ProcessExit{137, true};
  } else {
    // The job's own fate: its stage's flakiness, seeded per job, epoch and agent.
    int fail_pct = p.fail_pct;
    bool always = p.always_fails;
    std::string id(reinterpret_cast<const char*>(ev.id.bytes.data()), ev.id.bytes.size());
    std::uint64_t roll =
        hash_of({"fail", id, std::to_string(p.epoch), h.config.name}).bytes[0] % 100;
    bool failed = always || static_cast<int>(roll) < fail_pct;
    p.exit = agent::ProcessExit{failed ? 1 : 0, false};
  }
  trace("a" + std::to_string(ev.agent) + " exit " + ev.id.short_hex() + " e" +
        std::to_string(p.epoch) +
        (killed_now    ? " killed"
         : p.exit.ok() ? " ok"
                       : " failed"));
  crashed_claims_.erase(ev.id);
  if (!h.up || !p.watched) return;  // its status stays behind for adoption
  h.agent->process_exited(ev.id, p.exit);
  after_input(ev.agent);
}

void World::snapshot_sources(int i) {
  Host& h = host(i);
  if (!h.provides_sources || !h.up) return;
  ArtifactRef src = src_ref(), cfg = cfg_ref();
  refs_[src.digest] = src;
  refs_[cfg.digest] = cfg;
  add_to_store(h, src.digest);
  add_to_store(h, cfg.digest);
  // The files go with their versions, as vowd's small files do (the simulated bytes of
  // an object are sim_bytes of its digest).
  h.agent->source_snapshot(pipeline_.name, "cfg", cfg, {{cfg.digest, sim_bytes(cfg.digest)}});
  std::vector<promises::Attached> files;
  for (const auto& e : src.entries) files.push_back({e.digest, sim_bytes(e.digest)});
  h.agent->source_snapshot(pipeline_.name, "src", src, std::move(files));
  after_input(i);
}

// A sync of host i's log for every ticket requested so far (SimDisk::request_sync).
void World::start_sync(int i) {
  Host& h = host(i);
  h.sync_inflight = true;
  std::int64_t cost = slow_disk() ? 20 + static_cast<std::int64_t>(rnd(200))
                                  : 1 + static_cast<std::int64_t>(rnd(4));
  Ev ev{EvType::kSynced};
  ev.agent = i;
  ev.incarnation = h.incarnation;
  ev.token = h.sync_requested;
  schedule(now_ + cost, ev);
}

void World::crash(int i) {
  Host& h = host(i);
  if (!h.up) return;
  for (const auto& r : h.agent->core().running())
    crashed_claims_.emplace(r.job.job, std::make_pair(now_, i));
  // Peers' statements held for a batch, never committed: lost with the agent.
  result_.held_lost += h.agent->held_statements();
  result_.held_passes += h.agent->counters().held_passes;
  result_.attached_used += h.agent->counters().attached_used;
  result_.attached_refused += h.agent->counters().attached_refused;
  h.up = false;
  h.agent.reset();
  // Its worker tasks and transfers die with it; each process dies with it or lives on
  // (a process group outlives the agent unless its service manager kills it).
  h.worker_pending = 0;
  h.worker_free_at = 0;
  // What was committed but not yet synced is lost; objects in place without their rows
  // are indexed when the agent starts again.
  h.unindexed.clear();
  // What was placed and not stored since was never synced: lost.
  for (const auto& d : h.placed) h.store.erase(d);
  h.placed.clear();
  h.committed_claims.clear();
  h.unindexed_at_start.clear();
  h.unsynced.clear();
  h.sync_batches.clear();
  h.sync_inflight = false;
  h.sync_requested = 0;
  h.transfers = 0;
  h.cancelled.clear();
  h.incoming.clear();
  h.greeted.clear();
  for (auto it = h.procs.begin(); it != h.procs.end();) {
    if (!it->second.exited && chance(0.5)) {
      it = h.procs.erase(it);
    } else {
      it->second.watched = false;
      ++it;
    }
  }
  ++h.incarnation;
  trace("a" + std::to_string(i) + " crash");
}

void World::restart(int i, bool wipe) {
  Host& h = host(i);
  if (h.up) return;
  if (wipe) h.store.clear();
  promises::RestoredState rs;
  rs.statements = h.persisted;
  rs.proofs = h.persisted_proofs;
  rs.voids = h.persisted_voids;
  rs.last_seq = h.persisted_seq;
  rs.held.assign(h.store.begin(), h.store.end());
  std::vector<store::RunningJob> recovered;
  for (const auto& [job, row] : h.running_table) {
    // The job's reference comes from the agent's own claim of it, as in vowd; the core
    // decides every row, one without a claim too.
    promises::OwnRun r;
    r.job.job = job;
    r.epoch = row.epoch;
    bool claimed = false;
    for (const auto& st : h.persisted) {
      const auto* c = st.author == h.key ? std::get_if<Claim>(&st.body) : nullptr;
      if (c && c->job.job == job && c->epoch == row.epoch) {
        r.job = c->job;
        claimed = true;
      }
    }
    // A run started before its claim's sync, whose claim the crash lost.
    if (!claimed) ++result_.runs_without_claim;
    recovered.push_back(row);
    rs.running.push_back(std::move(r));
  }
  h.running_table.clear();
  for (const auto& r : recovered) h.running_table[r.job] = r;
  trace("a" + std::to_string(i) + " restart" + (wipe ? " wiped" : ""));
  boot(i, std::move(rs), std::move(recovered));
}

void World::boot(int i, promises::RestoredState restored,
                 std::vector<store::RunningJob> recovered) {
  Host& h = host(i);
  ++h.boots;
  agent::Effects fx{&clock_, h.net.get(), h.disk.get(), h.worker.get(), h.exec.get(), h.sink.get()};
  auto log = log_;
  if (opt_.membership && !opt_.verbose) {
    log = std::make_shared<spdlog::logger>(h.config.name, std::make_shared<PeerStateSink>(this));
    log->set_level(spdlog::level::warn);  // suspect and dead are warnings
  } else if (opt_.verbose) {
    log =
        std::make_shared<spdlog::logger>(h.config.name, log_->sinks().begin(), log_->sinks().end());
    log->set_pattern("         %n %l: %v");
    log->set_level(spdlog::level::debug);
  }
  h.agent =
      std::make_unique<agent::Agent>(h.config, std::move(restored), std::move(recovered), fx, log);
  h.up = true;
  h.agent->start();
  after_input(i);
  if (!h.up) return;
  snapshot_sources(i);
  for (int j = 0; j < opt_.agents; ++j) {
    if (j != i) connect_pair(i, j);
  }
}

void World::forge() {
  // Statements with signatures that fail verification, relayed by a real agent: a
  // source version hijacking the dataset, a result for a real job, a claim by a
  // stranger. The network drops them; no ledger may ever hold them.
  int i = static_cast<int>(rnd(hosts_.size()));
  int from = static_cast<int>(rnd(hosts_.size()));
  if (!host(i).up) return;
  promises::StatementBatch batch;
  Statement st;
  st.author = host(from).key;
  st.seq = kForgedSeqBase + next_id_;
  ArtifactRef bogus;
  bogus.digest = hash_of({"forged", u64s(next_id_)});
  switch (rnd(3)) {
    case 0:
      st.body = SourceVersion{pipeline_.name, "src", 1'000'000, bogus};
      break;
    case 1: {
      JobResult r;
      const auto& jobs = host(i).agent->core().plan().jobs;
      if (!jobs.empty()) r.job = jobs.begin()->second.ref;
      r.epoch = 0;
      r.ok = true;
      r.outputs = {NamedArtifact{"o0", bogus}};
      st.body = r;
      break;
    }
    default: {
      Digest k = hash_of({"stranger", u64s(next_id_)});
      std::copy(k.bytes.begin(), k.bytes.end(), st.author.bytes.begin());
      st.seq = 1;
      Claim c;
      c.epoch = 1'000;
      st.body = c;
      break;
    }
  }
  // Well-formed bytes, a signature that does not check.
  st.signed_form = sim_sign(st);
  st.signed_form.signature[0] ^= 0x5a;
  forged_.emplace_back(st.author, st.seq);
  batch.statements.push_back(st);
  auto m = std::make_shared<promises::Message>();
  m->body = std::move(batch);
  send(from, i, m);
}

void World::step(const Ev& ev) {
  auto live = [&](const Ev& e) {
    return host(e.agent).up && host(e.agent).incarnation == e.incarnation;
  };
  switch (ev.type) {
    case EvType::kDeliver:
      deliver(ev);
      return;
    case EvType::kConnected: {
      Host& h = host(ev.agent);
      if (!live(ev) || !host(ev.from).up || side_[ev.agent] != side_[ev.from]) return;
      if (!h.greeted.insert(host(ev.from).key).second) return;
      h.agent->peer_connected(host(ev.from).key);
      after_input(ev.agent);
      return;
    }
    case EvType::kTick: {
      Host& h = host(ev.agent);
      if (h.up) {
        h.agent->tick();
        after_input(ev.agent);
        // Now and then, a query as status and /metrics make it: the job index kept as
        // things happen must equal a recount of every job.
        // (after_input may have stopped the agent: a full disk.)
        // Larger meshes (run for scale) check it at the end of the seed only.
        if (h.up && h.agent && static_cast<int>(hosts_.size()) <= kCheckIndexesUpTo &&
            (now_ / kTickMs + ev.agent) % 16 == 0) {
          check_job_index(ev.agent);
        }
      }
      Ev next = ev;
      schedule(now_ + kTickMs, next);
      return;
    }
    case EvType::kFetchDone: {
      Host& h = host(ev.agent);
      if (!live(ev)) return;
      auto c = h.cancelled.find(ev.token);
      if (c == h.cancelled.end()) return;  // its outcome was fed already
      bool cancelled = c->second;
      h.cancelled.erase(c);
      --h.transfers;
      Status s = Status::ok();
      if (cancelled) {
        s = Status::unavailable("transfer cancelled");
      } else {
        if (ev.from < 0) {
          // The hostile host: it sends what it serves.
          if (hostile_serves(ev.id)) {
            h.incoming.insert(ev.id);
          } else {
            s = Status::unavailable("peer could not send " + ev.id.short_hex());
          }
        } else if (const Host& from = host(ev.from);
                   !from.up || side_[ev.from] != side_[ev.agent] || !from.store.count(ev.id)) {
          s = Status::unavailable("peer could not send " + ev.id.short_hex());
        } else {
          h.incoming.insert(ev.id);
        }
      }
      trace("a" + std::to_string(ev.agent) + " fetch " + ev.id.short_hex() +
            (s.is_ok() ? " ok" : " failed"));
      h.agent->fetch_outcome(ev.token, s);
      after_input(ev.agent);
      return;
    }
    case EvType::kWorkerDone: {
      Host& h = host(ev.agent);
      if (!live(ev)) return;
      --h.worker_pending;
      auto completion = ev.task();
      completion();
      after_input(ev.agent);
      return;
    }
    case EvType::kSynced: {
      Host& h = host(ev.agent);
      if (!live(ev)) return;
      // The writes of every ticket up to this one reach the disk, in order.
      while (!h.sync_batches.empty() && h.sync_batches.begin()->first <= ev.token) {
        for (auto& op : h.sync_batches.begin()->second) op();
        h.sync_batches.erase(h.sync_batches.begin());
      }
      h.sync_inflight = false;
      h.agent->synced(ev.token);
      if (h.sync_requested > ev.token) start_sync(ev.agent);
      after_input(ev.agent);
      return;
    }
    case EvType::kProcExit:
      proc_exit(ev);
      return;
    case EvType::kCrash:
      crash(ev.agent);
      return;
    case EvType::kRestart:
      restart(ev.agent, ev.wipe);
      return;
    case EvType::kPartition: {
      for (auto& s : side_) s = static_cast<int>(rnd(2));
      std::string sides;
      for (int s : side_) sides += std::to_string(s);
      trace("partition " + sides);
      return;
    }
    case EvType::kHeal: {
      std::vector<int> before = side_;
      std::fill(side_.begin(), side_.end(), 0);
      trace("heal");
      for (int a = 0; a < opt_.agents; ++a) {
        for (int b = a + 1; b < opt_.agents; ++b) {
          if (before[a] != before[b]) {
            // A cut link: both ends saw it go; it comes back as a new link.
            host(a).greeted.erase(host(b).key);
            host(b).greeted.erase(host(a).key);
            connect_pair(a, b);
          }
        }
      }
      return;
    }
    case EvType::kSourceUpdate:
      ++src_version_;
      trace("source update " + std::to_string(src_version_));
      for (int i = 0; i < opt_.agents; ++i) snapshot_sources(i);
      return;
    case EvType::kLose: {
      Host& h = host(ev.agent);
      if (!h.up || h.store.empty()) return;
      auto it = h.store.begin();
      if (ev.token == 1) {
        it = h.store.find(ev.id);  // SimOptions::lose_placed
        if (it == h.store.end()) return;
        ++result_.placed_lost;
      } else {
        std::advance(it, static_cast<long>(rnd(h.store.size())));
      }
      // A lost file takes every held tree it is an entry of with it: the store cannot
      // serve those whole any more, and says so.
      std::vector<Digest> lost = {*it};
      for (const Digest& held : h.store) {
        const ArtifactRef* r = ref(held);
        if (r && std::any_of(r->entries.begin(), r->entries.end(),
                             [&](const TreeEntry& e) { return e.digest == *it; })) {
          lost.push_back(held);
        }
      }
      for (const Digest& d : lost) {
        h.store.erase(d);
        trace("a" + std::to_string(ev.agent) + " lost " + d.short_hex());
        h.agent->artifact_lost(d);
        after_input(ev.agent);
        if (!h.up) return;
      }
      return;
    }
    case EvType::kForge:
      forge();
      return;
    case EvType::kDiskFull:
      disk_full_.insert(ev.agent);
      trace("a" + std::to_string(ev.agent) + " disk full");
      return;
    case EvType::kDiskOk:
      disk_full_.erase(ev.agent);
      trace("a" + std::to_string(ev.agent) + " disk has room");
      return;
    case EvType::kHostile:
      hostile_act();
      return;
  }
}

// ---------------------------------------------------------------- invariants

void World::check_job_index(int agent) {
  promises::Core& c = host(agent).agent->core();
  // A plan put off while catching up: the index waits for the plan made when it ends.
  if (c.plan_put_off() && c.catching_up()) return;
  std::map<promises::StageKey, promises::JobCounts> kept = c.job_counts();
  // Every job of the plan and the ledger, each looked at afresh.
  std::set<Digest> ids;
  for (const auto& [id, job] : c.plan().jobs) ids.insert(id);
  for (const auto& [id, js] : c.ledger().jobs()) ids.insert(id);
  std::map<promises::StageKey, promises::JobCounts> counted;
  for (const auto& id : ids) {
    auto v = c.job(id);
    if (!v) continue;
    auto& n = counted[{v->job.pipeline, v->job.stage}];
    ++n.of(v->state);
    if (v->nondeterministic) ++n.nondeterministic;
  }
  if (kept != counted) {
    fail(host(agent).config.name + ": job counts kept by the job index differ from a recount");
  }
  if (!c.plan_basis_current()) {
    fail(host(agent).config.name + ": the adverts and sources the plan read changed, no plan due");
  }
  if (!c.claim_summaries_consistent()) {
    fail(host(agent).config.name + ": a job's kept claim summary differs from one made afresh");
  }
  if (c.binding_summary().unbound != c.binding_report().unbound ||
      c.binding_summary().equivocators != c.binding_report().equivocators) {
    fail(host(agent).config.name + ": the binding summary differs from the binding report");
  }
  // Paging: every job exactly once, in id order, whatever the page size.
  std::vector<Digest> paged;
  promises::JobFilter f;
  f.limit = 1 + static_cast<std::size_t>(now_ / kTickMs) % 5;
  for (;;) {
    promises::JobPage page = c.jobs_page(f);
    for (const auto& v : page.jobs) paged.push_back(v.job.job);
    if (!page.next) break;
    f.after = page.next;
  }
  std::vector<Digest> all(ids.begin(), ids.end());
  if (paged != all) {
    std::set<Digest> once(paged.begin(), paged.end());
    std::size_t missing = 0;
    for (const auto& id : all) missing += once.count(id) ? 0 : 1;
    fail(host(agent).config.name + ": paging jobs gives " + std::to_string(paged.size()) +
         " jobs (" + std::to_string(once.size()) + " different, " + std::to_string(missing) +
         " missing) for " + std::to_string(all.size()) + " jobs");
  }
}

// Every agent's view of every other's holdings is at that agent's current version.
bool World::holdings_converged() {
  for (auto& a : hosts_) {
    for (auto& b : hosts_) {
      if (&a == &b || !a.up || !b.up) continue;
      if (a.agent->core().peer_holdings_version(b.key) != b.agent->core().holdings_version()) {
        return false;
      }
    }
  }
  return true;
}

bool World::quiet() {
  const std::set<std::string> poisoned = poisoned_stages();
  std::optional<std::size_t> size;
  for (auto& h : hosts_) {
    if (!h.up || h.agent->jobs_here() != 0) {
      unquiet_ = h.config.name + " is down or runs jobs";
      return false;
    }
    // A run of a stage a tree bomb holds back waits for an input nobody can give.
    for (const auto& r : h.agent->core().running()) {
      if (!poisoned.count(r.job.stage)) {
        unquiet_ = h.config.name + " runs jobs";
        return false;
      }
    }
    for (const auto& [job, p] : h.procs) {
      if (!p.exited) {
        unquiet_ = h.config.name + " has a process running";
        return false;
      }
    }
    if (h.agent->held_statements() != 0) {
      unquiet_ = h.config.name + " holds peers' statements for a batch";
      return false;
    }
    const auto& ledger = h.agent->core().ledger();
    // Slots filled: held, void (a superseded advert, Ledger) or retired by a horizon.
    std::size_t filled = ledger.size() + ledger.void_count() + ledger.retired_count();
    // An equivocator's slots are not synced once it is proven (its statements count
    // nowhere): agents may keep different parts of its line.
    for (const auto& [author, proof] : ledger.proofs()) {
      std::size_t theirs = ledger.held_of(author) + ledger.voids_of(author);
      filled -= std::min(filled, theirs);
    }
    if (std::getenv("VOW_SIM_DEBUG_QUIET")) {
      std::fprintf(stderr, "%s: horizon %llu vv %llu held %zu void %llu retired %llu fp %s\n",
                   h.config.name.c_str(), (unsigned long long)ledger.horizon_number(),
                   (unsigned long long)ledger.vv_sum(), ledger.size(),
                   (unsigned long long)ledger.void_count(),
                   (unsigned long long)ledger.retired_count(),
                   ledger.fingerprint().short_hex().c_str());
      for (const auto& [a, m] : ledger.version_vector()) {
        std::fprintf(stderr, "   %s mark %llu max %llu floor %llu retired %d\n",
                     a.hex().substr(0, 6).c_str(), (unsigned long long)m,
                     (unsigned long long)ledger.max_seq(a), (unsigned long long)ledger.floor(a),
                     (int)ledger.is_retired(a, m + 1));
      }
    }
    if (size && filled != *size) {
      unquiet_ = h.config.name + "'s ledger differs from the agents' before it";
      return false;
    }
    size = filled;
    for (const auto& sp : h.agent->core().plan().stages) {
      if ((sp.state == promises::StageState::kPending ||
           sp.state == promises::StageState::kPlanned) &&
          !poisoned.count(sp.stage)) {
        unquiet_ = h.config.name + " has stage " + sp.stage + " pending or planned";
        if (std::getenv("VOW_SIM_DEBUG_QUIET")) {
          for (const auto& v : h.agent->core().jobs()) {
            if (v.job.stage != sp.stage) continue;
            std::fprintf(stderr, "  job %s state %s claims %zu results %zu\n",
                         v.job.job.short_hex().c_str(), promises::job_state_name(v.state),
                         v.claims.size(), v.results.size());
            for (const auto& c : v.claims)
              std::fprintf(stderr, "    claim %s e%u released %d live %d bound %d\n",
                           c.author.hex().substr(0, 6).c_str(), c.epoch, c.released, c.live,
                           c.bound);
            for (const auto& r : v.results)
              std::fprintf(stderr, "    result %s/%llu e%u ok %d canonical %d bound %d\n",
                           r.author.hex().substr(0, 6).c_str(), (unsigned long long)r.seq,
                           r.epoch, r.ok, r.canonical, r.bound);
          }
        }
        return false;
      }
    }
  }
  // The same statements, not only as many (an equivocator's two halves have equal
  // version vectors): the fingerprint covers marks, content and known equivocators.
  // Computed once every cheaper test passed, and again for a host only once its ledger
  // changed (it reads every author's prefix digest).
  std::optional<Digest> fingerprint;
  std::optional<std::pair<std::uint64_t, Digest>> horizon;
  for (auto& h : hosts_) {
    const auto& ledger = h.agent->core().ledger();
    Fingerprint& f = fingerprints_[h.index];
    if (f.boots != h.boots || f.size != ledger.size() || f.voids != ledger.void_count() ||
        f.proofs != ledger.proofs().size() || f.retired != ledger.retired_count() ||
        f.size == 0) {
      f = Fingerprint{h.boots,        ledger.size(),          ledger.void_count(),
                      ledger.proofs().size(), ledger.retired_count(), ledger.fingerprint()};
    }
    const Digest& mine = f.digest;
    if (fingerprint && mine != *fingerprint) {
      // The cache is keyed by counts, which a change can leave equal (a hinted void
      // replaced by the statement while another slot turns void): before calling them
      // different, compute every host's afresh once.
      bool stale = false;
      for (auto& g : hosts_) {
        Digest now = g.agent->core().ledger().fingerprint();
        stale = stale || now != fingerprints_[g.index].digest;
        fingerprints_[g.index].digest = now;
      }
      if (stale) return false;  // looked at again at the next check, with fresh digests
      unquiet_ = h.config.name + "'s ledger differs from the agents' before it";
      return false;
    }
    fingerprint = mine;
    // One chain of horizons: the same last one everywhere.
    std::pair<std::uint64_t, Digest> at{ledger.horizon_number(), ledger.horizon_content()};
    if (horizon && at != *horizon) {
      unquiet_ = h.config.name + " is at horizon " + std::to_string(at.first) +
                 ", the agents before it at " + std::to_string(horizon->first);
      return false;
    }
    horizon = at;
  }
  // Holdings have reached every peer (as complete sets or deltas).
  if (!holdings_converged()) {
    unquiet_ = "holdings have not reached every peer";
    return false;
  }
  // Every canonical output is held by a live agent (or cannot be made again: the job is
  // non-deterministic). Failed re-runs back off and are tried again (docs/coordination.md
  // section 7), so a lost output must come back.
  promises::Core& c = hosts_[0].agent->core();
  for (const auto& [id, job] : c.plan().jobs) {
    const Statement* canon = c.canonical(id);
    if (canon == nullptr || c.nondeterministic(id) || poisoned.count(job.ref.stage)) continue;
    for (const auto& o : std::get<JobResult>(canon->body).outputs) {
      bool held = std::any_of(hosts_.begin(), hosts_.end(),
                              [&](const Host& h) { return h.store.count(o.artifact.digest); });
      if (!held) {
        unquiet_ = "a canonical output is held by no agent";
        return false;
      }
    }
  }
  return true;
}

void World::check_end() {
  for (const auto& h : hosts_) {
    if (!h.up) {
      fail(h.config.name + " is down at the end");
      return;
    }
  }
  // (0) no honest agent signed two statements with one sequence number (an agent that
  // sent a statement it had not made durable would, after a crash lost it).
  for (const auto& h : hosts_) {
    for (const auto& [author, proof] : h.agent->core().ledger().proofs()) {
      if (hostile_ && author == hostile_key_) continue;
      for (const auto& g : hosts_) {
        if (g.key == author) fail(g.config.name + " equivocated (proof held by " + h.config.name + ")");
      }
    }
  }
  // (1) one ledger and one canonical result per job everywhere.
  promises::Core& ref = hosts_[0].agent->core();
  for (std::size_t i = 1; i < hosts_.size(); ++i) {
    promises::Core& c = hosts_[i].agent->core();
    auto honest_vv = [](const promises::Ledger& l) {
      VersionVector v = l.version_vector();
      for (const auto& [author, proof] : l.proofs()) v.erase(author);
      return v;
    };
    if (honest_vv(c.ledger()) != honest_vv(ref.ledger())) {
      fail("a" + std::to_string(i) + " ledger differs from a0");
    }
    for (const auto& [id, js] : ref.ledger().jobs()) {
      const Statement* x = ref.canonical(id);
      const Statement* y = c.canonical(id);
      if ((x == nullptr) != (y == nullptr) || (x && (x->author != y->author || x->seq != y->seq))) {
        fail("a" + std::to_string(i) + " disagrees with a0 on the canonical result of " +
             id.short_hex());
      }
    }
    std::map<std::string, std::string> sa, sb;
    const std::set<std::string> poisoned = poisoned_stages();
    for (const auto& sp : ref.plan().stages) {
      if (!poisoned.count(sp.stage)) sa[sp.stage] = stage_state_name(sp.state);
    }
    for (const auto& sp : c.plan().stages) {
      if (!poisoned.count(sp.stage)) sb[sp.stage] = stage_state_name(sp.state);
    }
    if (sa != sb) fail("a" + std::to_string(i) + " plans the pipeline differently from a0");
  }
  // (5) forged statements never accepted.
  for (auto& h : hosts_) {
    for (const auto& [author, seq] : forged_) {
      if (h.agent->core().ledger().contains(author, seq)) {
        fail(h.config.name + " accepted a statement with a bad signature");
      }
    }
    result_.worker_backlogged += h.agent->counters().worker_backlogged;
    result_.carried_before_sync += h.agent->counters().carried_before_sync;
    result_.synced_in_pass += h.agent->counters().synced_in_pass;
    result_.started_before_sync += h.agent->counters().started_before_sync;
    result_.started_from_placed += h.agent->counters().started_from_placed;
    result_.held_passes += h.agent->counters().held_passes;
    result_.attached_used += h.agent->counters().attached_used;
    result_.attached_refused += h.agent->counters().attached_refused;
  }
  // (6) at most one claim per job and epoch kept (not released by its author) that
  // binds. A claim that bound when made stops binding when the claim it superseded turns
  // out to be an equivocator's (its epoch is no longer earned); the next honest claim at
  // that epoch is then the only one that binds.
  for (const auto& [id, js] : ref.ledger().jobs()) {
    std::map<std::uint32_t, int> kept;
    std::set<std::pair<AgentKey, std::uint32_t>> bound;
    if (auto v = ref.job(id)) {
      for (const auto& c : v->claims) {
        if (c.bound) bound.insert({c.author, c.epoch});
      }
    }
    for (const Statement* st : js.claims) {
      if (index_of(st->author) < 0) continue;  // the hostile host keeps no rule
      if (!bound.count({st->author, std::get<Claim>(st->body).epoch})) continue;
      std::uint32_t e = std::get<Claim>(st->body).epoch;
      bool rel = std::any_of(js.releases.begin(), js.releases.end(), [&](const Statement* r) {
        return r->author == st->author && std::get<Release>(r->body).epoch == e;
      });
      if (!rel && ++kept[e] > 1 && std::getenv("VOW_SIM_DEBUG_QUIET")) {
        for (const Statement* c : js.claims)
          std::fprintf(stderr, "  claim %s/%llu e%u floor %llu\n", c->author.hex().substr(0, 6).c_str(),
                       (unsigned long long)c->seq, std::get<Claim>(c->body).epoch,
                       (unsigned long long)ref.ledger().floor(c->author));
        for (const Statement* r : js.releases)
          std::fprintf(stderr, "  release %s/%llu e%u\n", r->author.hex().substr(0, 6).c_str(),
                       (unsigned long long)r->seq, std::get<Release>(r->body).epoch);
        for (const Statement* r : js.results)
          std::fprintf(stderr, "  result %s/%llu e%u ok %d settled %d\n", r->author.hex().substr(0, 6).c_str(),
                       (unsigned long long)r->seq, std::get<JobResult>(r->body).epoch,
                       std::get<JobResult>(r->body).ok, ref.ledger().settled(r->author, r->seq));
      }
      if (!rel && kept[e] > 1) {
        fail("job " + id.short_hex() + " has two kept claims at epoch " + std::to_string(e));
      }
    }
  }
  // (7) a peer's holdings as its Haves (deltas included) told them are what it holds.
  for (auto& a : hosts_) {
    for (auto& b : hosts_) {
      if (&a == &b) continue;
      const promises::Core& ca = a.agent->core();
      const promises::Core& cb = b.agent->core();
      if (ca.peer_holdings_version(b.key) != cb.holdings_version()) continue;  // quiet() failed
      const std::set<Digest>* seen = ca.peer_holdings(b.key);
      if (seen == nullptr || *seen != cb.held()) {
        fail(a.config.name + " thinks " + b.config.name + " holds other artifacts than it does");
      }
    }
  }
  // (8) lineage of what the pipeline is now stays whole whatever horizons retired: from
  // each planned job's canonical result, every input read is an output of a result held
  // or in a source version held, and so on up (docs/storage.md, "Old source versions").
  // A superseded job's late result is not among them: it goes with a later horizon.
  for (auto& h : hosts_) {
    promises::Core& c = h.agent->core();
    const promises::Ledger& l = c.ledger();
    std::set<Digest> known;
    std::map<Digest, std::vector<const Statement*>> producers;
    l.for_each([&](const Statement& st) {
      if (const auto* r = std::get_if<JobResult>(&st.body)) {
        for (const auto& o : r->outputs) {
          known.insert(o.artifact.digest);
          if (r->ok) producers[o.artifact.digest].push_back(&st);
          for (const auto& e : o.artifact.entries) known.insert(e.digest);
        }
      } else if (const auto* v = std::get_if<SourceVersion>(&st.body)) {
        known.insert(v->artifact.digest);
        for (const auto& e : v->artifact.entries) known.insert(e.digest);
      }
    });
    std::vector<const Statement*> todo;
    for (const auto& [id, job] : c.plan().jobs) {
      if (const Statement* canon = c.canonical(id)) todo.push_back(canon);
    }
    std::set<const Statement*> seen;
    while (!todo.empty()) {
      const Statement* st = todo.back();
      todo.pop_back();
      if (!seen.insert(st).second || index_of(st->author) < 0) continue;
      const auto& r = std::get<JobResult>(st->body);
      for (const auto& in : r.inputs) {
        // A fan-out's outputs arrive gathered in a tree of their own: each entry counts.
        const auto& es = in.artifact.entries;
        bool gathered = in.artifact.is_tree && !es.empty() &&
                        std::all_of(es.begin(), es.end(),
                                    [&](const auto& e) { return known.count(e.digest) != 0; });
        if (!known.count(in.artifact.digest) && !gathered) {
          fail(h.config.name + ": input " + in.name + " of job " + r.job.job.short_hex() +
               " (in the lineage of the current plan) comes from no result or source version held");
        }
        auto follow = [&](const Digest& d) {
          if (auto p = producers.find(d); p != producers.end())
            todo.insert(todo.end(), p->second.begin(), p->second.end());
        };
        follow(in.artifact.digest);
        for (const auto& e : es) follow(e.digest);
      }
    }
  }
  // (9) what each agent's disk holds verifies as `vow verify` reads it: the horizons in
  // force applied from the newest checkpoint held (those before it are retired), every
  // successful result that counts reading source versions and canonical outputs held.
  // Not with the hostile host, whose results may name inputs nobody made.
  for (auto& h : hosts_) {
    if (hostile_) break;
    agent::VerifyReport report = agent::verify_statements(h.persisted, h.persisted_proofs);
    if (!report.problems.empty()) {
      fail(h.config.name + ": its disk does not verify: " + report.problems.front());
    }
  }
  // (10) every fetched object a running agent stored has its index row committed: none
  // is left for whenever a pass next persists something.
  for (auto& h : hosts_) {
    if (h.up && !h.unindexed.empty()) {
      fail(h.config.name + ": " + std::to_string(h.unindexed.size()) +
           " fetched object(s) stored, their index rows never committed (first " +
           h.unindexed.begin()->short_hex() + ")");
    }
  }
  // (11) no peer's statement is left uncommitted: an agent that hears nothing more
  // commits what it held for a batch within kMaxHeldPeerStatementsMs.
  for (auto& h : hosts_) {
    if (h.up && h.agent->held_statements() != 0) {
      fail(h.config.name + ": " + std::to_string(h.agent->held_statements()) +
           " peer statement(s) held and never committed");
    }
  }
  // (12) an agent's running-job table names only runs it still has: an ended run's row
  // goes with the commit of its result.
  for (auto& h : hosts_) {
    if (!h.up) continue;
    std::set<Digest> running;
    for (const auto& r : h.agent->core().running()) running.insert(r.job.job);
    for (const auto& [job, row] : h.running_table) {
      if (!running.count(job)) {
        fail(h.config.name + ": running-job row of " + job.short_hex() + " left after its run");
      }
    }
  }
  for (std::size_t i = 0; i < hosts_.size(); ++i) check_job_index(static_cast<int>(i));
  check_hostile_end();
  // Every planned stage is done, or blocked by a job that failed past its retries (or
  // held back by a canonical tree bomb).
  const std::set<std::string> poisoned = poisoned_stages();
  for (const auto& sp : ref.plan().stages) {
    if ((sp.state == promises::StageState::kPending ||
         sp.state == promises::StageState::kPlanned) &&
        !poisoned.count(sp.stage)) {
      fail("stage " + sp.stage + " did not finish: " + stage_state_name(sp.state) + " " +
           sp.reason);
    }
  }
}

// ---------------------------------------------------------------- the run

SimResult World::run() {
  trace_.update_field("vow-sim-trace-v2");
  make_pipeline();
  make_hosts();
  int n = opt_.agents;
  if (opt_.membership) {
    // No faults but one agent killed once the mesh has settled, back when the watch ends.
    victim_ = static_cast<int>(opt_.seed % static_cast<std::uint64_t>(n));
    // --faults net: a lossy network (drops, duplicates, late messages) until the watch
    // ends, no partition: what false suspicions loss alone causes.
    net_faults_ = opt_.faults == Faults::kNet;
    Ev kill{EvType::kCrash};
    kill.agent = victim_;
    schedule(kMeasureKillMs, kill);
  } else {
    schedule_faults();
  }
  std::string faults;
  if (slow_disk_) faults += " slow-disk";
  if (squeeze_worker_) faults += " worker-full";
  if (spawn_faults_) faults += " spawn-fails";
  trace("faults:" + faults);
  // In some seeds the last agent joins late, after horizons were applied: it catches up
  // from its peers' ledgers as they are then (docs/storage.md, "The ledger horizon").
  const int late = !opt_.membership && n >= 3 && rnd(3) == 0 ? n - 1 : -1;
  for (int i = 0; i < n; ++i) {
    Ev t{EvType::kTick};
    t.agent = i;
    if (i == late) {
      Ev join{EvType::kRestart};
      join.agent = i;
      std::int64_t at = kFaultWindowMs / 2 + static_cast<std::int64_t>(rnd(kFaultWindowMs / 2));
      schedule(at, join);
      trace("a" + std::to_string(i) + " joins late");
      schedule(at + static_cast<std::int64_t>(rnd(kTickMs)), t);
      continue;
    }
    boot(i, promises::RestoredState{}, {});
    schedule(static_cast<std::int64_t>(rnd(kTickMs)), t);
  }
  if (rnd(3) == 0) schedule(300 + static_cast<std::int64_t>(rnd(2000)), Ev{EvType::kSourceUpdate});
  for (int k = 0; k < opt_.source_updates; ++k) {
    schedule(300 + static_cast<std::int64_t>(rnd(static_cast<std::uint64_t>(kFaultWindowMs))),
             Ev{EvType::kSourceUpdate});
  }
  // Run the fault window, then heal everything and run until quiet or the bound.
  heal_ms_ = opt_.membership ? kMeasureKillMs + kMeasureWatchMs : kFaultWindowMs;
  const promises::Timing timing;
  std::int64_t bound_ms = heal_ms_ + 20 * timing.dead_after_ms +
                          static_cast<std::int64_t>(opt_.stages) * 1'500 +
                          static_cast<std::int64_t>(opt_.shards) * 100;
  // A fan-out's jobs take their time whatever the agents do: a stage of N shards of up
  // to 1.25 x SIM_MS each, run by the capacity its promisers have, all over again after
  // the heal at worst (a 60-shard stage of 500 ms jobs on 2 slots is 19 s alone).
  if (opt_.shards > 0) {
    for (const auto& st : pipeline_.stages) {
      if (st.foreach == std::nullopt) continue;
      int slots = 0;
      for (const auto& h : hosts_) {
        for (const auto& p : h.config.promises) slots += p.stage == st.name ? p.capacity : 0;
      }
      auto ms = st.env.find("SIM_MS");
      if (slots == 0 || ms == st.env.end()) continue;
      bound_ms += static_cast<std::int64_t>(opt_.shards) * std::stoll(ms->second) * 5 / 4 / slots;
    }
  }
  bool healed = false;
  std::int64_t next_quiet_check = heal_ms_;
  while (!queue_.empty()) {
    auto it = queue_.begin();
    if (!healed && it->first.first >= heal_ms_) {
      healed = true;
      now_ = heal_ms_;
      net_faults_ = false;
      slow_disk_ = false;
      spawn_faults_ = false;
      squeeze_worker_ = opt_.squeeze_worker;
      disk_full_.clear();
      step(Ev{EvType::kHeal});
      for (int i = 0; i < n; ++i) restart(i, false);
      continue;
    }
    if (healed && it->first.first >= next_quiet_check) {
      now_ = next_quiet_check;
      next_quiet_check += kQuietCheckMs;
      if (quiet()) break;
      if (now_ > bound_ms) {
        fail("not quiet " + std::to_string(now_ - heal_ms_) +
             " ms after the last fault healed (invariant 3): " + unquiet_);
        break;
      }
      continue;
    }
    Ev ev = std::move(it->second);
    now_ = it->first.first;
    queue_.erase(it);
    step(ev);
  }
  check_end();
  result_.sim_end_ms = now_;
  result_.hostile = hostile_;
  if (hosts_[0].agent) result_.ledger_size = hosts_[0].agent->core().ledger().size();
  for (const Host& h : hosts_) {
    if (!h.agent) continue;
    result_.horizons = std::max(result_.horizons, h.agent->core().ledger().horizon_number());
    result_.retired = std::max(result_.retired, h.agent->core().ledger().retired_count());
    result_.checkpoints =
        std::max(result_.checkpoints, h.agent->core().ledger().checkpoints_applied());
    if (h.agent->core().ledger().checkpoints_alone() > 0) ++result_.checkpoints_alone;
    result_.jobs_emptied = std::max(result_.jobs_emptied, h.agent->core().ledger().jobs_emptied());
    result_.line_base = std::max(result_.line_base, h.agent->core().ledger().highest_line_base());
  }
  result_.trace_hash = trace_.finish();
  return result_;
}

SimResult run_seed(const SimOptions& options) {
  World w(options);
  return w.run();
}

}  // namespace vow::sim
