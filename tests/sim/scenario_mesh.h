// The test harness of the core's scenario tests (scenario_test.cc,
// scenario_binding_test.cc): a few cores driven by hand over an instant, in-memory
// network that the test cuts and heals, with fake job processes the test finishes
// explicitly. No sockets, no sleeps: time is the `now` the test advances.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "promises/core.h"

namespace vow::promises::scenario {

// Statements per sync answer in these meshes (CoreConfig::sync_answer_statements): their
// ledgers of a few thousand statements take several answers to pull, as a mesh of
// 100,000 jobs does with the agent's default.
inline constexpr std::size_t kScenarioSyncAnswer = 512;

inline Digest hd(std::string_view a, std::string_view b = "", std::string_view c = "") {
  Hasher h;
  h.update_field(a);
  h.update_field(b);
  h.update_field(c);
  return h.finish();
}

inline Stage make_stage(std::string name, std::vector<InputRef> inputs,
                        std::vector<std::string> outputs,
                        std::optional<InputRef> foreach = std::nullopt, int retries = 0) {
  Stage s;
  s.name = std::move(name);
  s.inputs = std::move(inputs);
  s.outputs = std::move(outputs);
  s.argv = {"true"};
  s.foreach = foreach;
  s.retries = retries;
  s.digest = stage_digest(s);
  return s;
}

inline Pipeline make_pipeline(std::string name, std::vector<std::string> sources,
                              std::vector<Stage> stages) {
  Pipeline p;
  p.name = std::move(name);
  for (auto& s : sources) p.sources.push_back(Source{s, {}});
  p.stages = std::move(stages);
  p.digest = pipeline_digest(p);
  return p;
}

inline ArtifactRef file_ref(const Digest& d) { return ArtifactRef{d, false, 1, {}}; }

inline ArtifactRef dir_ref(const std::map<std::string, std::string>& files) {
  std::vector<TreeEntry> entries;
  for (const auto& [n, content] : files) {
    entries.push_back(TreeEntry{n, EntryKind::kFile, hd("file", content)});
  }
  ArtifactRef r;
  r.digest = *tree_digest(entries);
  r.is_tree = true;
  r.entries = entries;
  return r;
}

struct Node {
  CoreConfig config;
  std::unique_ptr<Core> core;
  bool up = true;
  std::vector<Statement> persisted;
  std::vector<Statement> proofs;  // equivocation proofs persisted (Output::proofs)
  std::vector<VoidRange> voids;   // void slots persisted (Output::voided), one each
  std::uint64_t persisted_seq = 0;
  std::set<Digest> store;
  std::map<Digest, StartJob> procs;
  std::vector<StartJob> started;  // every start, in order
  std::vector<KillJob> killed;
  bool nondeterministic = false;  // outputs depend on who runs the job
  // The running-job table (survives a crash) and killed processes not yet gone: with
  // `hold_stops` they stay until the test calls Mesh::stopped, else they go at once.
  std::map<Digest, OwnRun> table;
  bool hold_stops = false;
  std::vector<KillJob> stopping;
  std::vector<AgentKey> declared_dead;  // PeerDeclaredDead actions, in order
  std::vector<Event> events;            // every event the core reported
  // Processes that may be alive: running, or killed and not yet gone.
  int alive() const { return static_cast<int>(procs.size() + stopping.size()); }
};

// A trusted key that is not an honest agent: its statements are valid (the core only
// ever sees verified ones) but say whatever it likes.
struct Hostile {
  AgentKey key;
  std::uint64_t seq = 0;
  explicit Hostile(std::string_view name) {
    Digest k = hd("hostile", name);
    std::copy(k.bytes.begin(), k.bytes.end(), key.bytes.begin());
  }
  Statement make(StatementBody body, std::int64_t wall = 0) {
    Statement st;
    st.author = key;
    st.seq = ++seq;
    st.wall_unix_ms = wall;
    st.body = std::move(body);
    return st;
  }
};

class Mesh {
 public:
  Mesh(int n, const Pipeline& p, std::vector<std::vector<std::string>> promises_by_node,
       int replicas = 2, int capacity = 2, IdleBudgetLimits idle_budget = {},
       // The scenarios time deaths by the heartbeat detector's silence windows; SWIM's own
       // scenarios ask for it.
       MembershipProfile membership = MembershipProfile::kAllToAll,
       // Applied to every agent's configuration before it starts.
       const std::function<void(CoreConfig&)>& tune = {},
       // Agents that start only when the test calls join(): none knows of them before.
       const std::set<int>& late = {}) {
    nodes_.resize(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
      Node& nd = nodes_[i];
      Digest k = hd("key", std::to_string(i));
      std::copy(k.bytes.begin(), k.bytes.end(), nd.config.key.bytes.begin());
      nd.config.name = "n" + std::to_string(i);
      nd.config.pipelines = {p};
      nd.config.replicas = replicas;
      nd.config.check_plans = true;  // every plan also made without the cached definitions
      nd.config.sync_answer_statements = kScenarioSyncAnswer;
      nd.config.idle_budget = idle_budget;
      nd.config.timing.membership = membership;
      nd.config.timing.swim = swim_profile(membership);
      for (const auto& st : promises_by_node[i]) {
        nd.config.promises.push_back(CorePromise{p.name, st, capacity});
      }
      if (i == 0) {
        for (const auto& s : p.sources) nd.config.sources.push_back(AdvertSource{p.name, s.name});
      }
      if (tune) tune(nd.config);
      if (late.count(i)) {
        nd.up = false;
        continue;
      }
      nd.core = std::make_unique<Core>(nd.config, RestoredState{}, now_);
    }
    for (int i = 0; i < n; ++i) {
      if (nodes_[i].up) apply(i, nodes_[i].core->start());
    }
    for (int i = 0; i < n; ++i) {
      for (int j = i + 1; j < n; ++j) {
        if (nodes_[i].up && nodes_[j].up) connect(i, j);
      }
    }
    deliver();
  }

  // Starts a late agent (fresh state) and connects it to every agent that is up.
  void join(int i) {
    Node& nd = nodes_[i];
    nd.core = std::make_unique<Core>(nd.config, RestoredState{}, now_);
    nd.up = true;
    apply(i, nd.core->start());
    for (int j = 0; j < size(); ++j) {
      if (j != i && nodes_[j].up) connect(i, j);
    }
    deliver();
  }

  Node& node(int i) { return nodes_[i]; }
  Core& core(int i) { return *nodes_[i].core; }
  std::int64_t now() const { return now_; }
  int size() const { return static_cast<int>(nodes_.size()); }

  void connect(int a, int b) {
    apply(a, nodes_[a].core->peer_connected(nodes_[b].config.key));
    apply(b, nodes_[b].core->peer_connected(nodes_[a].config.key));
  }
  // Node a dials a key no node holds (a departed agent): the link, and nothing on it.
  void dial(int a, const AgentKey& key) { apply(a, nodes_[a].core->peer_connected(key)); }
  void cut(int a, int b) {
    cut_.insert({a, b});
    cut_.insert({b, a});
  }
  void heal() {
    auto was = cut_;
    cut_.clear();
    for (const auto& [a, b] : was) {
      if (a < b && nodes_[a].up && nodes_[b].up) connect(a, b);
    }
    deliver();
  }
  void crash(int i) {
    nodes_[i].up = false;
    nodes_[i].core.reset();
    nodes_[i].procs.clear();  // the processes die with the agent; the table stays
    nodes_[i].stopping.clear();
  }
  void restart(int i) {
    Node& nd = nodes_[i];
    RestoredState rs;
    rs.statements = nd.persisted;
    rs.proofs = nd.proofs;
    rs.voids = nd.voids;
    rs.last_seq = nd.persisted_seq;
    rs.held.assign(nd.store.begin(), nd.store.end());
    for (const auto& [job, row] : nd.table) rs.running.push_back(row);
    nd.core = std::make_unique<Core>(nd.config, std::move(rs), now_);
    nd.up = true;
    apply(i, nd.core->tick(now_));
    apply(i, nd.core->start());
    for (int j = 0; j < size(); ++j) {
      if (j != i && nodes_[j].up) connect(i, j);
    }
    deliver();
  }

  // Agent `by` (0 unless named) snapshots a source version.
  void source(const std::string& pipeline, const std::string& name, const ArtifactRef& ref,
              int by = 0) {
    Node& nd = nodes_[by];
    nd.store.insert(ref.digest);
    for (const auto& e : ref.entries) {
      nd.store.insert(e.digest);
      trees_[ref.digest].push_back(e.digest);
    }
    apply(by, nd.core->source_snapshot(pipeline, name, ref));
    deliver();
  }

  // Advances time in 10 ms ticks, delivering everything in between.
  void advance(std::int64_t ms) {
    for (std::int64_t t = 0; t < ms; t += 10) {
      now_ += 10;
      for (int i = 0; i < size(); ++i) {
        if (nodes_[i].up) apply(i, nodes_[i].core->tick(now_));
      }
      deliver();
    }
  }

  // Finishes every process of node i (ok with outputs derived from the job id, or failed).
  void finish_all(int i, bool ok = true) {
    Node& nd = nodes_[i];
    auto procs = nd.procs;
    for (const auto& [job, s] : procs) finish(i, job, ok);
  }
  void finish(int i, const Digest& job, bool ok = true) {
    Node& nd = nodes_[i];
    auto it = nd.procs.find(job);
    REQUIRE(it != nd.procs.end());
    StartJob s = it->second;
    nd.procs.erase(it);
    nd.table.erase(job);
    JobOutcome out;
    out.ok = ok;
    if (!ok) {
      out.exit_status = 1;
      out.error = "exit status 1";
    }
    for (const auto& name : s.stage.outputs) {
      Digest d = hd("out", std::string(reinterpret_cast<const char*>(job.bytes.data()), 32),
                    nd.nondeterministic ? nd.config.name + name : name);
      if (ok) {
        nd.store.insert(d);
        out.outputs.push_back(NamedArtifact{name, file_ref(d)});
      }
    }
    apply(i, nd.core->job_exited(job, s.epoch, std::move(out)));
    deliver();
  }
  // Runs until nothing is running: every started process finishes ok at once.
  void run_to_completion(std::int64_t max_ms = 10'000) {
    for (std::int64_t t = 0; t < max_ms; t += 10) {
      bool any = false;
      for (int i = 0; i < size(); ++i) {
        if (nodes_[i].up && !nodes_[i].procs.empty()) {
          finish_all(i);
          any = true;
        }
      }
      advance(10);
      if (!any && t > 1000) {
        bool idle = true;
        for (auto& nd : nodes_) idle = idle && (!nd.up || nd.core->running().empty());
        if (idle) return;
      }
    }
  }

  // A killed process of node i held by `hold_stops` is gone: the shell reports it.
  void stopped(int i, const Digest& job) {
    Node& nd = nodes_[i];
    auto it = std::find_if(nd.stopping.begin(), nd.stopping.end(),
                           [&](const KillJob& k) { return k.job == job; });
    REQUIRE(it != nd.stopping.end());
    KillJob k = *it;
    nd.stopping.erase(it);
    report_stopped(i, k);
    deliver();
  }

  // Hands a statement to node i directly (as if it came from `from`).
  void inject(int i, int from, const Statement& st) {
    apply(i, nodes_[i].core->on_statement(nodes_[from].config.key, st));
    deliver();
  }

  // Every fetch of `d` ends refused (as a tree past the expansion limits would be).
  void refuse_fetches(const Digest& d) { refused_.insert(d); }
  int fetches_of(const Digest& d) const { return fetch_count_.count(d) ? fetch_count_.at(d) : 0; }

  // Sync requests delivered so far: summary-only and full; full ones by sender.
  int sync_summaries = 0;
  int sync_full = 0;
  std::map<int, int> sync_full_from;
  // Statements delivered to each node in batches (duplicates included).
  std::map<int, std::size_t> statements_to;

  // Node i refuses AUTHOR's statements on arrival, as the transport does those of a key
  // its trust list lacks: they never reach its core; a batch left empty is dropped,
  // unless it ends an answer to a sync request (transport/validator.cc).
  void distrust(int i, const AgentKey& author) { distrusted_.insert({i, author}); }

  // While held, network messages wait in flight (local fetch completions still happen).
  void hold(bool on) { hold_ = on; }

  // Delivers the network messages in flight now, even while held, but not the ones they
  // cause (one hop: with hold(true) and advance(10), a 10 ms latency).
  void deliver_hop() {
    bool was = hold_;
    hold_ = true;
    std::size_t n = inflight_.size();
    for (std::size_t k = 0; k < n && !inflight_.empty(); ++k) {
      deliver_next();
      deliver();  // local completions only
    }
    hold_ = was;
  }

  // The oldest network message in flight reaches its receiver (unless cut off or down).
  void deliver_next() {
    auto [from, to, msg] = std::move(inflight_.front());
    inflight_.pop_front();
    if (!nodes_[to].up || cut_.count({from, to})) return;
    if (const auto* r = std::get_if<SyncRequest>(&msg.body)) {
      ++(r->summary ? sync_summaries : sync_full);
      if (!r->summary) ++sync_full_from[from];
    }
    if (auto* b = std::get_if<StatementBatch>(&msg.body)) {
      statements_to[to] += b->statements.size();
      const std::size_t n = b->statements.size();
      std::erase_if(b->statements, [&](const Statement& st) {
        return distrusted_.count({to, st.author}) != 0;
      });
      if (n > 0 && b->statements.empty() && !b->answer) return;
    }
    apply(to, nodes_[to].core->on_message(nodes_[from].config.key, msg));
  }

  void deliver() {
    while ((!inflight_.empty() && !hold_) || !local_.empty() || !stops_.empty()) {
      if (!stops_.empty()) {
        auto [i, k] = stops_.front();
        stops_.pop_front();
        if (nodes_[i].up) report_stopped(i, k);
        continue;
      }
      if (!local_.empty()) {
        auto [i, d, ok] = local_.front();
        local_.pop_front();
        if (!nodes_[i].up) continue;
        if (refused_.count(d)) {
          apply(i, nodes_[i].core->artifact_refused(d, "expands past the limits"));
          continue;
        }
        if (ok) {
          // A tree arrives with its entries, as the agent's fetch brings them.
          nodes_[i].store.insert(d);
          if (auto t = trees_.find(d); t != trees_.end()) {
            nodes_[i].store.insert(t->second.begin(), t->second.end());
          }
          apply(i, nodes_[i].core->artifact_fetched(d));
        } else {
          apply(i, nodes_[i].core->artifact_fetch_failed(d));
        }
        continue;
      }
      deliver_next();
    }
  }

  // Jobs of a stage in node i's plan.
  std::vector<Digest> jobs_of(int i, const std::string& stage) {
    std::vector<Digest> out;
    for (const auto& [id, j] : core(i).plan().jobs) {
      if (j.ref.stage == stage) out.push_back(id);
    }
    return out;
  }
  int starts_of(const std::string& stage) const {
    int n = 0;
    for (const auto& nd : nodes_) {
      for (const auto& s : nd.started) n += s.job.stage == stage ? 1 : 0;
    }
    return n;
  }

  // A config reload on node i: new promises, same pipelines and sources.
  void reconfigure(int i, std::vector<CorePromise> promises) {
    Node& nd = nodes_[i];
    nd.config.promises = promises;
    apply(i, nd.core->reconfigure(std::move(promises), nd.config.pipelines, nd.config.sources));
    deliver();
  }
  // A config reload on node i with edited pipeline files (same promises and sources).
  void reload_pipelines(int i, std::vector<Pipeline> pipelines) {
    Node& nd = nodes_[i];
    nd.config.pipelines = pipelines;
    apply(i, nd.core->reconfigure(nd.config.promises, std::move(pipelines), nd.config.sources));
    deliver();
  }
  // A user asked node i to run these jobs again (vow retry).
  void retry(int i, const std::vector<Digest>& jobs) {
    apply(i, nodes_[i].core->retry(jobs, "vow retry"));
    deliver();
  }
  // The stage plans of (pipeline, stage) in node i's plan.
  std::vector<StagePlan> stage_plans(int i, const std::string& stage) {
    std::vector<StagePlan> out;
    for (const auto& sp : core(i).plan().stages) {
      if (sp.stage == stage) out.push_back(sp);
    }
    return out;
  }

 private:
  void apply(int i, Output out) {
    Node& nd = nodes_[i];
    for (const auto& e : out.events) nd.events.push_back(e);
    for (const auto& st : out.persist) {
      nd.persisted.push_back(st);
      if (st.author == nd.config.key) nd.persisted_seq = std::max(nd.persisted_seq, st.seq);
    }
    for (const auto& st : out.proofs) nd.proofs.push_back(st);
    if (!out.retired.empty()) {  // dropped on disk, as the shell does
      std::set<std::pair<AgentKey, std::uint64_t>> gone;
      for (const auto& r : out.retired) gone.insert({r.author, r.seq});
      std::erase_if(nd.persisted, [&](const Statement& st) {
        return gone.count({st.author, st.seq}) != 0;
      });
    }
    for (const auto& r : out.voided) {
      std::erase_if(nd.persisted, [&](const Statement& st) {
        return st.author == r.author && st.seq == r.seq && st.kind() == StatementKind::kAdvert;
      });
      nd.voids.push_back({r.author, r.seq, r.seq});
    }
    for (auto& m : out.messages) {
      for (int j = 0; j < size(); ++j) {
        if (j == i) continue;
        if (m.to && *m.to != nodes_[j].config.key) continue;
        inflight_.emplace_back(i, j, m.message);
      }
    }
    for (auto& a : out.actions) {
      if (auto* s = std::get_if<StartJob>(&a)) {
        for (const auto& in : s->inputs) {
          bool here = nd.store.count(in.artifact.digest) != 0;
          if (!here && in.artifact.is_tree) {
            here = true;
            for (const auto& e : in.artifact.entries) here = here && nd.store.count(e.digest);
          }
          CHECK_MESSAGE(here, "started without input ", in.name);
        }
        CHECK_MESSAGE(nd.procs.count(s->job.job) == 0, "started twice");
        for (const auto& k : nd.stopping) {
          CHECK_MESSAGE(k.job != s->job.job, "started while an earlier epoch is stopping");
        }
        nd.procs[s->job.job] = *s;
        nd.started.push_back(*s);
        nd.table[s->job.job] = OwnRun{s->job, s->epoch};
      } else if (auto* k = std::get_if<KillJob>(&a)) {
        auto p = nd.procs.find(k->job);
        if (p != nd.procs.end() && p->second.epoch == k->epoch) nd.procs.erase(p);
        nd.killed.push_back(*k);
        if (nd.hold_stops) {
          nd.stopping.push_back(*k);
        } else {
          stops_.emplace_back(i, *k);
        }
      } else if (auto* d = std::get_if<PeerDeclaredDead>(&a)) {
        nd.declared_dead.push_back(d->peer);
      } else if (auto* f = std::get_if<FetchArtifact>(&a)) {
        fetch(i, f->digest, f->holders);
      } else if (auto* r = std::get_if<ReplicateArtifact>(&a)) {
        fetch(i, r->digest, r->holders);
      }
    }
  }
  void report_stopped(int i, const KillJob& k) {
    Node& nd = nodes_[i];
    auto row = nd.table.find(k.job);
    if (row != nd.table.end() && row->second.epoch == k.epoch) nd.table.erase(row);
    apply(i, nd.core->job_stopped(k.job, k.epoch));
  }
  void fetch(int i, const Digest& d, const std::vector<AgentKey>& holders) {
    ++fetch_count_[d];
    bool ok = false;
    for (int j = 0; j < size(); ++j) {
      bool named = std::find(holders.begin(), holders.end(), nodes_[j].config.key) != holders.end();
      if (named && nodes_[j].up && !cut_.count({i, j}) && nodes_[j].store.count(d)) ok = true;
    }
    local_.emplace_back(i, d, ok);
  }

  std::vector<Node> nodes_;
  std::int64_t now_ = 0;
  std::set<std::pair<int, int>> cut_;
  bool hold_ = false;
  std::deque<std::tuple<int, int, Message>> inflight_;
  std::deque<std::tuple<int, Digest, bool>> local_;
  std::set<Digest> refused_;
  std::map<Digest, int> fetch_count_;
  std::set<std::pair<int, AgentKey>> distrusted_;
  std::map<Digest, std::vector<Digest>> trees_;  // source trees -> their entries
  std::deque<std::pair<int, KillJob>> stops_;  // killed processes gone, to report
};

// One-stage pipeline over one source file.
inline Pipeline one_stage(int retries = 0) {
  return make_pipeline("one", {"in"}, {make_stage("work", {{"", "in"}}, {"out"}, {}, retries)});
}

// The node among `nodes` running job `job`, or -1.
inline int runner(Mesh& m, const Digest& job) {
  for (int i = 0; i < m.size(); ++i) {
    if (m.node(i).up && m.node(i).procs.count(job)) return i;
  }
  return -1;
}

}  // namespace vow::promises::scenario
