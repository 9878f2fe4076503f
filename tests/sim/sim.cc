#include "tests/sim/sim.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>

#include "promises/core.h"

namespace vow::sim {
namespace {

using promises::Core;
using promises::Output;
using promises::Pipeline;

constexpr std::int64_t kTickMs = 20;
constexpr std::int64_t kFaultWindowMs = 2'500;  // faults happen in [0, this)
constexpr std::int64_t kWallBaseMs = 1'800'000'000'000;
constexpr std::int64_t kQuietCheckMs = 50;
constexpr std::uint64_t kForgedSeqBase = 1'000'000;
// A killed fake process is gone after 0-kSlowStopMaxMs (a job that ignores the signal for
// a while) one time in kSlowStopOneIn, else within kQuickStopMaxMs.
constexpr std::uint64_t kQuickStopMaxMs = 30;
constexpr std::uint64_t kSlowStopMaxMs = 400;
constexpr std::uint64_t kSlowStopOneIn = 5;

Digest hash_of(std::initializer_list<std::string_view> parts) {
  Hasher h;
  for (auto p : parts) h.update_field(p);
  return h.finish();
}

std::string u64s(std::uint64_t v) { return std::to_string(v); }
std::string dstr(const Digest& d) {
  return std::string(reinterpret_cast<const char*>(d.bytes.data()), d.bytes.size());
}

// One packet on the wire: a message, and which statements of a batch carry a
// signature that fails verification (forged by the harness).
struct Packet {
  promises::Message msg;
  std::vector<bool> forged;
};

enum class EvType {
  kDeliver,
  kTick,
  kJobExit,
  kJobStopped,
  kFetchDone,
  kCrash,
  kRestart,
  kPartition,
  kHeal,
  kSourceUpdate,
  kLose,
  kForge,
};

struct Ev {
  explicit Ev(EvType t) : type(t) {}
  EvType type;
  int agent = -1;
  int from = -1;
  std::shared_ptr<const Packet> packet;
  Digest id;  // job or artifact
  std::uint32_t epoch = 0;
  std::uint64_t incarnation = 0;
  std::uint64_t token = 0;
  std::vector<AgentKey> holders;
  bool wipe = false;
};

struct SimAgent {
  int index = 0;
  AgentKey key;
  promises::CoreConfig config;
  std::unique_ptr<Core> core;
  bool up = true;
  std::uint64_t incarnation = 0;
  // What survives a crash: persisted statements, the sequence counter, the running-job
  // table and (unless wiped) the artifact store.
  std::vector<Statement> persisted;
  std::uint64_t persisted_seq = 0;
  std::map<Digest, promises::RunningJob> running_table;
  std::set<Digest> store;
  // Fake processes by job; `stopping` once killed, until they are gone.
  struct Proc {
    std::uint32_t epoch = 0;
    std::uint64_t token = 0;
    bool stopping = false;
  };
  std::map<Digest, Proc> procs;
  bool provides_sources = false;
};

class World {
 public:
  explicit World(const SimOptions& o) : opt_(o), rng_(o.seed * 0x9E3779B97F4A7C15ULL + 17) {}

  SimResult run();

 private:
  // ---- setup ----
  void make_pipeline();
  void make_agents();
  ArtifactRef src_ref() const;
  ArtifactRef cfg_ref() const;

  // ---- event machinery ----
  std::uint64_t rnd(std::uint64_t n) { return n == 0 ? 0 : rng_() % n; }
  bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
  void schedule(std::int64_t at, Ev ev) { queue_.emplace(std::make_pair(at, next_id_++), ev); }
  void step(const Ev& ev);
  void trace(const std::string& line);
  void apply(int i, Output out);
  void send(int from, int to, const std::shared_ptr<const Packet>& p);
  bool reachable(int a, int b) const { return side_[a] == side_[b]; }
  void connect_pair(int a, int b);
  void start_job(int i, const promises::StartJob& s);
  void job_exit(int i, const Ev& ev);
  void kill_job(int i, const promises::KillJob& k);
  void job_stopped(int i, const Ev& ev);
  void fetch_done(int i, const Ev& ev);
  void crash(int i);
  void restart(int i, bool wipe);
  void add_to_store(SimAgent& a, const Digest& d);
  void snapshot_sources(int i);
  void forge();
  void fail(const std::string& what);

  // ---- invariants ----
  bool quiet();
  void check_end();

  SimOptions opt_;
  std::mt19937_64 rng_;
  std::map<std::pair<std::int64_t, std::uint64_t>, Ev> queue_;
  std::uint64_t next_id_ = 0;
  std::int64_t now_ = 0;
  Hasher trace_;
  SimResult result_;

  Pipeline pipeline_;
  std::vector<SimAgent> agents_;
  std::vector<int> side_;
  std::map<Digest, ArtifactRef> refs_;  // every artifact made: for tree entries
  int src_version_ = 0;
  int src_entries_ = 1;
  bool net_faults_ = false;
  bool has_nondet_ = false;
  std::uint64_t next_token_ = 1;
  std::vector<std::pair<AgentKey, std::uint64_t>> forged_;
  std::map<Digest, std::pair<std::int64_t, int>> crashed_claims_;  // job -> (crash time, agent)
  std::int64_t heal_ms_ = 0;
  std::set<Digest> claim_recorded_;
};

// ---------------------------------------------------------------- setup

ArtifactRef World::src_ref() const {
  std::vector<TreeEntry> entries;
  for (int e = 0; e < src_entries_; ++e) {
    // Entry 0 changes with each source version; the others never do.
    std::string v = e == 0 ? std::to_string(src_version_) : "0";
    entries.push_back(TreeEntry{"part-" + std::to_string(e), EntryKind::kFile,
                                hash_of({"src", u64s(opt_.seed), std::to_string(e), v})});
  }
  ArtifactRef r;
  r.digest = *tree_digest(entries);
  r.is_tree = true;
  r.size_bytes = static_cast<std::uint64_t>(entries.size()) * 100;
  r.entries = entries;
  return r;
}

ArtifactRef World::cfg_ref() const {
  ArtifactRef r;
  r.digest = hash_of({"cfg", u64s(opt_.seed)});
  r.size_bytes = 10;
  return r;
}

void World::make_pipeline() {
  pipeline_.name = "p" + u64s(opt_.seed % 1000);
  pipeline_.sources = {promises::Source{"cfg", {}}, promises::Source{"src", {}}};
  src_entries_ = 1 + static_cast<int>(rnd(4));
  struct Avail {
    promises::InputRef ref;
    bool tree;
  };
  std::vector<Avail> avail = {{{"", "src"}, true}, {{"", "cfg"}, false}};
  for (int i = 0; i < opt_.stages; ++i) {
    promises::Stage s;
    s.name = "s" + std::to_string(i);
    s.argv = {"sim-job"};
    s.outputs = {"o" + std::to_string(i)};
    s.retries = 2;
    std::vector<std::size_t> trees;
    for (std::size_t k = 0; k < avail.size(); ++k) {
      if (avail[k].tree) trees.push_back(k);
    }
    bool foreach = !trees.empty() && rnd(10) < 4;
    std::set<std::size_t> picked;
    if (foreach) {
      std::size_t k = trees[rnd(trees.size())];
      picked.insert(k);
      s.foreach = avail[k].ref;
    } else {
      // Chains lean on the latest output; diamonds reach back.
      picked.insert(rnd(2) == 0 ? avail.size() - 1 : rnd(avail.size()));
    }
    if (rnd(3) == 0) picked.insert(rnd(avail.size()));
    for (auto k : picked) s.inputs.push_back(avail[k].ref);
    int tree_entries = !foreach && rnd(10) < 3 ? 1 + static_cast<int>(rnd(4)) : 0;
    s.env["SIM_MS"] = std::to_string(50 + rnd(450));
    s.env["SIM_TREE"] = std::to_string(tree_entries);
    s.env["SIM_FAIL"] = rnd(5) == 0 ? "25" : "0";
    s.env["SIM_ALWAYS_FAIL"] = rnd(30) == 0 ? "1" : "0";
    bool nondet = rnd(10) == 0;
    s.env["SIM_NONDET"] = nondet ? "1" : "0";
    has_nondet_ = has_nondet_ || nondet;
    s.digest = promises::stage_digest(s);
    avail.push_back({{s.name, s.outputs[0]}, foreach || tree_entries > 0});
    pipeline_.stages.push_back(std::move(s));
  }
  pipeline_.digest = promises::pipeline_digest(pipeline_);
}

void World::make_agents() {
  int n = std::max(1, opt_.agents);
  agents_.resize(static_cast<std::size_t>(n));
  side_.assign(static_cast<std::size_t>(n), 0);
  for (int i = 0; i < n; ++i) {
    SimAgent& a = agents_[i];
    a.index = i;
    Digest k = hash_of({"agent", u64s(opt_.seed), std::to_string(i)});
    std::copy(k.bytes.begin(), k.bytes.end(), a.key.bytes.begin());
    a.config.key = a.key;
    a.config.name = "a" + std::to_string(i);
    a.config.endpoints = {"sim://" + std::to_string(i)};
    a.config.replicas = 2;
    a.provides_sources = i < 2;
  }
  // Each stage is promised by 2-3 agents (or all, if fewer).
  for (const auto& s : pipeline_.stages) {
    int want = std::min(n, 2 + static_cast<int>(rnd(2)));
    std::set<int> who;
    while (static_cast<int>(who.size()) < want) who.insert(static_cast<int>(rnd(n)));
    for (int i : who) {
      agents_[i].config.promises.push_back(
          promises::CorePromise{pipeline_.name, s.name, 1 + static_cast<int>(rnd(2))});
    }
  }
  for (auto& a : agents_) {
    // Agents that run none of its stages only know the pipeline from the ledger.
    if (!a.config.promises.empty() || a.index == 0) a.config.pipelines = {pipeline_};
    if (a.provides_sources) {
      a.config.sources = {AdvertSource{pipeline_.name, "src"}, AdvertSource{pipeline_.name, "cfg"}};
    }
  }
}

// ---------------------------------------------------------------- machinery

void World::fail(const std::string& what) {
  if (result_.failures.size() < 20) {
    result_.failures.push_back("t=" + std::to_string(now_) + "ms: " + what);
  }
}

void World::trace(const std::string& line) {
  trace_.update_field(line);
  if (opt_.verbose) std::printf("%8lld %s\n", static_cast<long long>(now_), line.c_str());
}

void World::add_to_store(SimAgent& a, const Digest& d) {
  a.store.insert(d);
  auto it = refs_.find(d);
  if (it != refs_.end()) {
    for (const auto& e : it->second.entries) a.store.insert(e.digest);
  }
}

void World::send(int from, int to, const std::shared_ptr<const Packet>& p) {
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
    ev.packet = p;
    schedule(now_ + delay, ev);
  }
}

void World::connect_pair(int a, int b) {
  if (!agents_[a].up || !agents_[b].up || !reachable(a, b)) return;
  apply(a, agents_[a].core->peer_connected(agents_[b].key));
  apply(b, agents_[b].core->peer_connected(agents_[a].key));
}

void World::apply(int i, Output out) {
  SimAgent& a = agents_[i];
  std::string who = "a" + std::to_string(i);
  // 1. persist
  for (auto& st : out.persist) {
    if (st.author == a.key) {
      if (st.seq <= a.persisted_seq) fail(who + " reused own seq " + u64s(st.seq));
      a.persisted_seq = std::max(a.persisted_seq, st.seq);
      trace(who + " persist own " + u64s(st.seq) + " " + statement_kind_name(st.kind()));
      if (const auto* c = std::get_if<Claim>(&st.body)) {
        auto crashed = crashed_claims_.find(c->job.job);
        if (crashed != crashed_claims_.end() && crashed->second.second != i &&
            claim_recorded_.insert(c->job.job).second) {
          result_.failover_claim_ms.push_back(now_ - crashed->second.first);
        }
      }
    }
    a.persisted.push_back(st);
  }
  // 2. send
  for (auto& m : out.messages) {
    auto p = std::make_shared<Packet>();
    p->msg = std::move(m.message);
    if (const auto* b = std::get_if<promises::StatementBatch>(&p->msg.body)) {
      p->forged.assign(b->statements.size(), false);
    }
    if (m.to) {
      for (std::size_t j = 0; j < agents_.size(); ++j) {
        if (agents_[j].key == *m.to) send(i, static_cast<int>(j), p);
      }
    } else {
      for (std::size_t j = 0; j < agents_.size(); ++j) {
        if (static_cast<int>(j) != i) send(i, static_cast<int>(j), p);
      }
    }
  }
  // 3. actions
  for (auto& act : out.actions) {
    if (auto* s = std::get_if<promises::StartJob>(&act)) {
      start_job(i, *s);
    } else if (auto* k = std::get_if<promises::KillJob>(&act)) {
      kill_job(i, *k);
    } else if (auto* f = std::get_if<promises::FetchArtifact>(&act)) {
      Ev ev{EvType::kFetchDone};
      ev.agent = i;
      ev.id = f->digest;
      ev.incarnation = a.incarnation;
      ev.holders = f->holders;
      schedule(now_ + 3 + static_cast<std::int64_t>(rnd(20)), ev);
    } else if (auto* r = std::get_if<promises::ReplicateArtifact>(&act)) {
      Ev ev{EvType::kFetchDone};
      ev.agent = i;
      ev.id = r->digest;
      ev.incarnation = a.incarnation;
      ev.holders = r->holders;
      schedule(now_ + 3 + static_cast<std::int64_t>(rnd(20)), ev);
    }
  }
  // 4. events
  for (auto& e : out.events) trace(who + " " + promises::event_kind_name(e.kind) + " " + e.text);
}

int env_int(const promises::Stage& s, const std::string& k) {
  auto it = s.env.find(k);
  return it == s.env.end() ? 0 : std::atoi(it->second.c_str());
}

void World::start_job(int i, const promises::StartJob& s) {
  SimAgent& a = agents_[i];
  std::string who = "a" + std::to_string(i);
  // Invariant 2: no job with a canonical result here is started (except to regenerate).
  if (!s.regenerate && a.core->canonical(s.job.job) != nullptr) {
    fail(who + " started job " + s.job.job.short_hex() + " that already had a canonical result");
  }
  for (const auto& in : s.inputs) {
    bool here = a.store.count(in.artifact.digest) != 0;
    if (!here && in.artifact.is_tree) {
      here = std::all_of(in.artifact.entries.begin(), in.artifact.entries.end(),
                         [&](const TreeEntry& e) { return a.store.count(e.digest) != 0; });
    }
    if (!here) fail(who + " started " + s.job.job.short_hex() + " without input " + in.name);
  }
  if (auto old = a.procs.find(s.job.job); old != a.procs.end()) {
    fail(who + " started " + s.job.job.short_hex() + " epoch " + std::to_string(s.epoch) +
         " while its process of epoch " + std::to_string(old->second.epoch) + " still runs");
  }
  a.running_table[s.job.job] = promises::RunningJob{s.job, s.epoch};
  std::uint64_t token = next_token_++;
  a.procs[s.job.job] = {s.epoch, token, false};
  auto crashed = crashed_claims_.find(s.job.job);
  if (crashed != crashed_claims_.end()) {
    // A takeover by another agent; the crashed agent resuming its own claim is not one.
    if (crashed->second.second != i) result_.failover_ms.push_back(now_ - crashed->second.first);
    crashed_claims_.erase(crashed);
    claim_recorded_.erase(s.job.job);
  }
  trace(who + " start " + s.job.job.short_hex() + " e" + std::to_string(s.epoch) +
        (s.regenerate ? " regen" : ""));
  Ev ev{EvType::kJobExit};
  ev.agent = i;
  ev.id = s.job.job;
  ev.epoch = s.epoch;
  ev.incarnation = a.incarnation;
  ev.token = token;
  std::int64_t ms = env_int(s.stage, "SIM_MS");
  schedule(now_ + ms + static_cast<std::int64_t>(rnd(static_cast<std::uint64_t>(ms / 4 + 1))), ev);
}

void World::job_exit(int i, const Ev& ev) {
  SimAgent& a = agents_[i];
  auto it = a.procs.find(ev.id);
  if (it == a.procs.end() || it->second.token != ev.token) return;
  bool killed = it->second.stopping;
  a.procs.erase(it);
  a.running_table.erase(ev.id);
  if (killed) {
    // Ended on its own before the kill took effect: its exit is its job_stopped.
    trace("a" + std::to_string(i) + " exit " + ev.id.short_hex() + " e" + std::to_string(ev.epoch) +
          " killed");
    promises::JobOutcome out;
    out.exit_status = 137;
    out.error = "killed";
    apply(i, a.core->job_exited(ev.id, ev.epoch, std::move(out)));
    return;
  }
  crashed_claims_.erase(ev.id);
  // Rebuild what the job was from the plan.
  const promises::PlannedJob* pj = a.core->plan().find(ev.id);
  promises::JobOutcome out;
  out.started_unix_ms = kWallBaseMs + now_ - 10;
  out.ended_unix_ms = kWallBaseMs + now_;
  if (pj == nullptr) {
    out.ok = false;
    out.exit_status = 1;
    out.error = "job vanished from the plan";
  } else {
    const promises::Stage& s = *pj->stage;
    std::string salt =
        env_int(s, "SIM_NONDET") ? a.config.name + "/" + std::to_string(ev.epoch) : "";
    std::uint64_t roll =
        hash_of({"fail", dstr(ev.id), std::to_string(ev.epoch), a.config.name}).bytes[0] % 100;
    bool failed =
        env_int(s, "SIM_ALWAYS_FAIL") != 0 || static_cast<int>(roll) < env_int(s, "SIM_FAIL");
    if (failed) {
      out.ok = false;
      out.exit_status = 1;
      out.error = "exit status 1";
    } else {
      out.ok = true;
      for (const auto& name : s.outputs) {
        ArtifactRef ref;
        int n = s.foreach ? 0 : env_int(s, "SIM_TREE");
        if (n > 0) {
          std::vector<TreeEntry> entries;
          for (int e = 0; e < n; ++e) {
            Digest d = hash_of({"entry", dstr(ev.id), name, std::to_string(e), salt});
            entries.push_back(TreeEntry{"e" + std::to_string(e), EntryKind::kFile, d});
            refs_[d] = ArtifactRef{d, false, 5, {}};
          }
          ref.digest = *tree_digest(entries);
          ref.is_tree = true;
          ref.size_bytes = static_cast<std::uint64_t>(n) * 5;
          ref.entries = entries;
        } else {
          ref.digest = hash_of({"file", dstr(ev.id), name, salt});
          ref.size_bytes = 5;
        }
        refs_[ref.digest] = ref;
        add_to_store(a, ref.digest);
        out.outputs.push_back(NamedArtifact{name, ref});
      }
    }
  }
  trace("a" + std::to_string(i) + " exit " + ev.id.short_hex() + " e" + std::to_string(ev.epoch) +
        (out.ok ? " ok" : " failed"));
  ++result_.jobs_done;
  apply(i, a.core->job_exited(ev.id, ev.epoch, std::move(out)));
}

void World::kill_job(int i, const promises::KillJob& k) {
  SimAgent& a = agents_[i];
  trace("a" + std::to_string(i) + " kill " + k.job.short_hex() + " " + k.reason);
  Ev ev{EvType::kJobStopped};
  ev.agent = i;
  ev.id = k.job;
  ev.epoch = k.epoch;
  ev.incarnation = a.incarnation;
  auto it = a.procs.find(k.job);
  if (it != a.procs.end() && it->second.epoch == k.epoch) {
    it->second.stopping = true;
    ev.token = it->second.token;
  }
  std::uint64_t ms = rnd(kSlowStopOneIn) == 0 ? rnd(kSlowStopMaxMs + 1) : rnd(kQuickStopMaxMs + 1);
  schedule(now_ + static_cast<std::int64_t>(ms), ev);
}

// A killed process is gone (token 0: there was none): the shell reports it.
void World::job_stopped(int i, const Ev& ev) {
  SimAgent& a = agents_[i];
  if (ev.token != 0) {
    auto it = a.procs.find(ev.id);
    if (it == a.procs.end() || it->second.token != ev.token) return;  // it exited first
    a.procs.erase(it);
  }
  auto row = a.running_table.find(ev.id);
  if (row != a.running_table.end() && row->second.epoch == ev.epoch) a.running_table.erase(row);
  trace("a" + std::to_string(i) + " stopped " + ev.id.short_hex() + " e" +
        std::to_string(ev.epoch));
  apply(i, a.core->job_stopped(ev.id, ev.epoch));
}

void World::fetch_done(int i, const Ev& ev) {
  SimAgent& a = agents_[i];
  bool ok = false;
  for (const auto& h : ev.holders) {
    for (std::size_t j = 0; j < agents_.size(); ++j) {
      const SimAgent& b = agents_[j];
      if (b.key == h && b.up && reachable(i, static_cast<int>(j)) && b.store.count(ev.id))
        ok = true;
    }
  }
  trace("a" + std::to_string(i) + " fetch " + ev.id.short_hex() + (ok ? " ok" : " failed"));
  if (ok) {
    add_to_store(a, ev.id);
    apply(i, a.core->artifact_fetched(ev.id));
  } else {
    apply(i, a.core->artifact_fetch_failed(ev.id));
  }
}

void World::snapshot_sources(int i) {
  SimAgent& a = agents_[i];
  if (!a.provides_sources || !a.up) return;
  ArtifactRef src = src_ref(), cfg = cfg_ref();
  refs_[src.digest] = src;
  refs_[cfg.digest] = cfg;
  add_to_store(a, src.digest);
  add_to_store(a, cfg.digest);
  apply(i, a.core->source_snapshot(pipeline_.name, "cfg", cfg));
  apply(i, a.core->source_snapshot(pipeline_.name, "src", src));
}

void World::crash(int i) {
  SimAgent& a = agents_[i];
  if (!a.up) return;
  for (const auto& r : a.core->running()) {
    if (!r.stopping) crashed_claims_.emplace(r.job.job, std::make_pair(now_, i));
  }
  a.up = false;
  a.core.reset();
  a.procs.clear();  // the agent's processes die with it
  ++a.incarnation;
  trace("a" + std::to_string(i) + " crash");
}

void World::restart(int i, bool wipe) {
  SimAgent& a = agents_[i];
  if (a.up) return;
  if (wipe) a.store.clear();
  promises::RestoredState rs;
  rs.statements = a.persisted;
  rs.last_seq = a.persisted_seq;
  for (const auto& [job, r] : a.running_table) rs.running.push_back(r);
  rs.held.assign(a.store.begin(), a.store.end());
  a.core = std::make_unique<Core>(a.config, std::move(rs), now_);
  a.up = true;
  trace("a" + std::to_string(i) + " restart" + (wipe ? " wiped" : ""));
  apply(i, a.core->tick(now_, kWallBaseMs + now_));
  apply(i, a.core->start());
  snapshot_sources(i);
  for (std::size_t j = 0; j < agents_.size(); ++j) {
    if (static_cast<int>(j) != i) connect_pair(i, static_cast<int>(j));
  }
}

void World::forge() {
  // Statements with signatures that fail verification, relayed by a real agent: a
  // source version hijacking the dataset, a result for a real job, a claim by a
  // stranger. The shell must drop them; no ledger may ever hold them.
  int i = static_cast<int>(rnd(agents_.size()));
  int from = static_cast<int>(rnd(agents_.size()));
  if (!agents_[i].up) return;
  auto p = std::make_shared<Packet>();
  promises::StatementBatch batch;
  Statement st;
  st.author = agents_[from].key;
  st.seq = kForgedSeqBase + next_id_;
  ArtifactRef bogus;
  bogus.digest = hash_of({"forged", u64s(next_id_)});
  switch (rnd(3)) {
    case 0:
      st.body = SourceVersion{pipeline_.name, "src", 1'000'000, bogus};
      break;
    case 1: {
      JobResult r;
      const auto& jobs = agents_[i].core->plan().jobs;
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
  forged_.emplace_back(st.author, st.seq);
  batch.statements.push_back(st);
  p->msg.body = std::move(batch);
  p->forged = {true};
  send(from, i, p);
}

void World::step(const Ev& ev) {
  switch (ev.type) {
    case EvType::kDeliver: {
      SimAgent& a = agents_[ev.agent];
      if (!a.up || !reachable(ev.from, ev.agent)) return;
      ++result_.deliveries;
      const promises::Message* msg = &ev.packet->msg;
      promises::Message filtered;
      if (const auto* b = std::get_if<promises::StatementBatch>(&msg->body)) {
        // The shell's verification: statements whose signature fails are dropped.
        promises::StatementBatch keep;
        for (std::size_t k = 0; k < b->statements.size(); ++k) {
          if (k < ev.packet->forged.size() && ev.packet->forged[k]) {
            trace("a" + std::to_string(ev.agent) + " drop forged statement");
            continue;
          }
          keep.statements.push_back(b->statements[k]);
        }
        filtered.body = std::move(keep);
        msg = &filtered;
      }
      apply(ev.agent, a.core->on_message(agents_[ev.from].key, *msg));
      return;
    }
    case EvType::kTick: {
      SimAgent& a = agents_[ev.agent];
      if (a.up) apply(ev.agent, a.core->tick(now_, kWallBaseMs + now_));
      Ev next = ev;
      schedule(now_ + kTickMs, next);
      return;
    }
    case EvType::kJobExit:
      if (agents_[ev.agent].up && agents_[ev.agent].incarnation == ev.incarnation) {
        job_exit(ev.agent, ev);
      }
      return;
    case EvType::kJobStopped:
      if (agents_[ev.agent].up && agents_[ev.agent].incarnation == ev.incarnation) {
        job_stopped(ev.agent, ev);
      }
      return;
    case EvType::kFetchDone:
      if (agents_[ev.agent].up && agents_[ev.agent].incarnation == ev.incarnation) {
        fetch_done(ev.agent, ev);
      }
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
      for (std::size_t a = 0; a < agents_.size(); ++a) {
        for (std::size_t b = a + 1; b < agents_.size(); ++b) {
          if (before[a] != before[b]) connect_pair(static_cast<int>(a), static_cast<int>(b));
        }
      }
      return;
    }
    case EvType::kSourceUpdate:
      ++src_version_;
      trace("source update " + std::to_string(src_version_));
      for (std::size_t i = 0; i < agents_.size(); ++i) snapshot_sources(static_cast<int>(i));
      return;
    case EvType::kLose: {
      SimAgent& a = agents_[ev.agent];
      if (!a.up || a.store.empty()) return;
      auto it = a.store.begin();
      std::advance(it, static_cast<long>(rnd(a.store.size())));
      Digest d = *it;
      a.store.erase(it);
      trace("a" + std::to_string(ev.agent) + " lost " + d.short_hex());
      apply(ev.agent, a.core->artifact_lost(d));
      return;
    }
    case EvType::kForge:
      forge();
      return;
  }
}

// ---------------------------------------------------------------- invariants

bool World::quiet() {
  std::optional<VersionVector> vv;
  std::size_t size = 0;
  for (auto& a : agents_) {
    if (!a.up || !a.procs.empty() || !a.core->running().empty()) return false;
    VersionVector mine = a.core->ledger().version_vector();
    if (vv && (mine != *vv || a.core->ledger().size() != size)) return false;
    vv = mine;
    size = a.core->ledger().size();
    for (const auto& sp : a.core->plan().stages) {
      if (sp.state == promises::StageState::kPending ||
          sp.state == promises::StageState::kPlanned) {
        return false;
      }
    }
  }
  // Every canonical output is held by a live agent (or cannot be made again).
  Core& c = *agents_[0].core;
  for (const auto& [id, job] : c.plan().jobs) {
    const Statement* canon = c.canonical(id);
    if (canon == nullptr || c.nondeterministic(id)) continue;
    for (const auto& o : std::get<JobResult>(canon->body).outputs) {
      bool held = std::any_of(agents_.begin(), agents_.end(),
                              [&](const SimAgent& a) { return a.store.count(o.artifact.digest); });
      if (!held) return false;
    }
  }
  return true;
}

void World::check_end() {
  // (1) one ledger and one canonical result per job everywhere.
  Core& ref = *agents_[0].core;
  for (std::size_t i = 1; i < agents_.size(); ++i) {
    Core& c = *agents_[i].core;
    if (c.ledger().version_vector() != ref.ledger().version_vector()) {
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
    for (const auto& sp : ref.plan().stages) sa[sp.stage] = stage_state_name(sp.state);
    for (const auto& sp : c.plan().stages) sb[sp.stage] = stage_state_name(sp.state);
    if (sa != sb) fail("a" + std::to_string(i) + " plans the pipeline differently from a0");
  }
  // (5) forged statements never accepted.
  for (auto& a : agents_) {
    for (const auto& [author, seq] : forged_) {
      if (a.core->ledger().contains(author, seq)) {
        fail(a.config.name + " accepted a statement with a bad signature");
      }
    }
  }
  // (6) at most one claim per job and epoch kept (not released by its author).
  for (const auto& [id, js] : ref.ledger().jobs()) {
    std::map<std::uint32_t, int> kept;
    for (const Statement* st : js.claims) {
      std::uint32_t e = std::get<Claim>(st->body).epoch;
      bool rel = std::any_of(js.releases.begin(), js.releases.end(), [&](const Statement* r) {
        return r->author == st->author && std::get<Release>(r->body).epoch == e;
      });
      if (!rel && ++kept[e] > 1) {
        fail("job " + id.short_hex() + " has two kept claims at epoch " + std::to_string(e));
      }
    }
  }
  // Every planned stage is done, or blocked by a job that failed past its retries.
  for (const auto& sp : ref.plan().stages) {
    if (sp.state == promises::StageState::kPending || sp.state == promises::StageState::kPlanned) {
      fail("stage " + sp.stage + " did not finish: " + stage_state_name(sp.state) + " " +
           sp.reason);
    }
  }
}

SimResult World::run() {
  trace_.update_field("vow-sim-trace-v1");
  make_pipeline();
  make_agents();
  bool crashes = opt_.faults == Faults::kCrash || opt_.faults == Faults::kAll;
  bool net = opt_.faults == Faults::kNet || opt_.faults == Faults::kAll;
  net_faults_ = net;
  int n = static_cast<int>(agents_.size());
  for (int i = 0; i < n; ++i) {
    agents_[i].core = std::make_unique<Core>(agents_[i].config, promises::RestoredState{}, 0);
  }
  for (int i = 0; i < n; ++i) {
    apply(i, agents_[i].core->start());
    Ev t{EvType::kTick};
    t.agent = i;
    schedule(static_cast<std::int64_t>(rnd(kTickMs)), t);
  }
  // Seed peers: everyone dials agents 0 and 1; the rest is learned from adverts (the
  // fake fabric connects every pair, as a daemon dialing every advertised peer would).
  for (int i = 0; i < n; ++i) {
    for (int j = i + 1; j < n; ++j) connect_pair(i, j);
  }
  for (int i = 0; i < n; ++i) snapshot_sources(i);
  if (rnd(3) == 0) schedule(300 + static_cast<std::int64_t>(rnd(2000)), Ev{EvType::kSourceUpdate});
  if (net) {
    int parts = static_cast<int>(rnd(3));
    for (int k = 0; k < parts; ++k) {
      std::int64_t at = static_cast<std::int64_t>(rnd(kFaultWindowMs - 1500));
      schedule(at, Ev{EvType::kPartition});
      schedule(at + 200 + static_cast<std::int64_t>(rnd(1300)), Ev{EvType::kHeal});
    }
  }
  if (crashes) {
    int count = 1 + static_cast<int>(rnd(static_cast<std::uint64_t>(std::max(1, n / 2))));
    bool wiped = false;
    for (int k = 0; k < count; ++k) {
      Ev c{EvType::kCrash};
      c.agent = static_cast<int>(rnd(n));
      std::int64_t at = 100 + static_cast<std::int64_t>(rnd(kFaultWindowMs - 600));
      schedule(at, c);
      Ev r{EvType::kRestart};
      r.agent = c.agent;
      // Losing the disk as well is rare, and kept out of runs with non-deterministic
      // stages (their lost outputs cannot be made again, by design).
      r.wipe = !wiped && !has_nondet_ && rnd(4) == 0;
      wiped = wiped || r.wipe;
      schedule(at + 100 + static_cast<std::int64_t>(rnd(1900)), r);
    }
    if (!has_nondet_ && rnd(2) == 0) {
      Ev l{EvType::kLose};
      l.agent = static_cast<int>(rnd(n));
      schedule(500 + static_cast<std::int64_t>(rnd(kFaultWindowMs - 1000)), l);
    }
  }
  for (int k = 0; k < 3; ++k) {
    schedule(static_cast<std::int64_t>(rnd(kFaultWindowMs)), Ev{EvType::kForge});
  }
  // Run the fault window, then heal everything and run until quiet or the bound.
  heal_ms_ = kFaultWindowMs;
  const promises::Timing timing;
  std::int64_t bound_ms =
      heal_ms_ + 20 * timing.dead_after_ms + static_cast<std::int64_t>(opt_.stages) * 1'500;
  bool healed = false;
  std::int64_t next_quiet_check = heal_ms_;
  while (!queue_.empty()) {
    auto it = queue_.begin();
    if (!healed && it->first.first >= heal_ms_) {
      healed = true;
      now_ = heal_ms_;
      net_faults_ = false;
      Ev h{EvType::kHeal};
      step(h);
      for (int i = 0; i < n; ++i) restart(i, false);
      continue;
    }
    if (healed && it->first.first >= next_quiet_check) {
      now_ = next_quiet_check;
      next_quiet_check += kQuietCheckMs;
      if (quiet()) break;
      if (now_ > bound_ms) {
        fail("not quiet " + std::to_string(now_ - heal_ms_) +
             " ms after the last fault healed (invariant 3)");
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
  result_.trace_hash = trace_.finish();
  return result_;
}

}  // namespace

SimResult run_seed(const SimOptions& options) {
  World w(options);
  return w.run();
}

}  // namespace vow::sim
