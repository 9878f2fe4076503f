// Scenario tests of the coordination core: a few cores driven by hand over an instant,
// in-memory network that the test cuts and heals, with fake job processes the test
// finishes explicitly. No sockets, no sleeps: time is the `now` the test advances.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <set>

#include "promises/core.h"

namespace vow::promises {
namespace {

Digest hd(std::string_view a, std::string_view b = "", std::string_view c = "") {
  Hasher h;
  h.update_field(a);
  h.update_field(b);
  h.update_field(c);
  return h.finish();
}

Stage make_stage(std::string name, std::vector<InputRef> inputs, std::vector<std::string> outputs,
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

Pipeline make_pipeline(std::string name, std::vector<std::string> sources,
                       std::vector<Stage> stages) {
  Pipeline p;
  p.name = std::move(name);
  for (auto& s : sources) p.sources.push_back(Source{s, {}});
  p.stages = std::move(stages);
  p.digest = pipeline_digest(p);
  return p;
}

ArtifactRef file_ref(const Digest& d) { return ArtifactRef{d, false, 1, {}}; }

ArtifactRef dir_ref(const std::map<std::string, std::string>& files) {
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

class Mesh {
 public:
  Mesh(int n, const Pipeline& p, std::vector<std::vector<std::string>> promises_by_node,
       int replicas = 2, int capacity = 2) {
    nodes_.resize(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
      Node& nd = nodes_[i];
      Digest k = hd("key", std::to_string(i));
      std::copy(k.bytes.begin(), k.bytes.end(), nd.config.key.bytes.begin());
      nd.config.name = "n" + std::to_string(i);
      nd.config.pipelines = {p};
      nd.config.replicas = replicas;
      for (const auto& st : promises_by_node[i]) {
        nd.config.promises.push_back(CorePromise{p.name, st, capacity});
      }
      if (i == 0) {
        for (const auto& s : p.sources) nd.config.sources.push_back(AdvertSource{p.name, s.name});
      }
      nd.core = std::make_unique<Core>(nd.config, RestoredState{}, now_);
    }
    for (int i = 0; i < n; ++i) apply(i, nodes_[i].core->start());
    for (int i = 0; i < n; ++i) {
      for (int j = i + 1; j < n; ++j) connect(i, j);
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

  void source(const std::string& pipeline, const std::string& name, const ArtifactRef& ref) {
    Node& nd = nodes_[0];
    nd.store.insert(ref.digest);
    for (const auto& e : ref.entries) nd.store.insert(e.digest);
    apply(0, nd.core->source_snapshot(pipeline, name, ref));
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

  // While held, network messages wait in flight (local fetch completions still happen).
  void hold(bool on) { hold_ = on; }

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
        if (ok) {
          nodes_[i].store.insert(d);
          apply(i, nodes_[i].core->artifact_fetched(d));
        } else {
          apply(i, nodes_[i].core->artifact_fetch_failed(d));
        }
        continue;
      }
      auto [from, to, msg] = std::move(inflight_.front());
      inflight_.pop_front();
      if (!nodes_[to].up || cut_.count({from, to})) continue;
      apply(to, nodes_[to].core->on_message(nodes_[from].config.key, msg));
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
  std::deque<std::pair<int, KillJob>> stops_;  // killed processes gone, to report
};

// One-stage pipeline over one source file.
Pipeline one_stage(int retries = 0) {
  return make_pipeline("one", {"in"}, {make_stage("work", {{"", "in"}}, {"out"}, {}, retries)});
}

// The node among `nodes` running job `job`, or -1.
int runner(Mesh& m, const Digest& job) {
  for (int i = 0; i < m.size(); ++i) {
    if (m.node(i).up && m.node(i).procs.count(job)) return i;
  }
  return -1;
}

TEST_CASE("claim race at the same epoch: the better-ranked keeps it, the other releases") {
  Mesh m(3, one_stage(), {{}, {"work"}, {"work"}});
  m.hold(true);  // nobody hears anybody's claim for a while
  m.source("one", "in", file_ref(hd("input")));
  const Statement version = m.node(0).persisted.back();
  REQUIRE(version.kind() == StatementKind::kSourceVersion);
  m.inject(1, 0, version);
  m.inject(2, 0, version);
  m.advance(100);  // so both claim epoch 1 (the worse-ranked after one claim step)
  Digest job = m.jobs_of(0, "work").at(0);
  REQUIRE(m.node(1).procs.count(job) == 1);
  REQUIRE(m.node(2).procs.count(job) == 1);
  m.hold(false);
  m.deliver();
  m.advance(20);
  int keeper = runner(m, job);
  REQUIRE(keeper != -1);
  int loser = keeper == 1 ? 2 : 1;
  CHECK(m.node(loser).procs.count(job) == 0);
  CHECK(m.node(loser).killed.size() == 1);
  auto view = m.core(0).job(job);
  REQUIRE(view);
  int kept = 0;
  for (const auto& c : view->claims) kept += c.epoch == 1 && !c.released ? 1 : 0;
  CHECK(kept == 1);
  CHECK(rendezvous_score(job, m.node(keeper).config.key) >
        rendezvous_score(job, m.node(loser).config.key));
}

TEST_CASE("claimant death: takeover with epoch + 1 within the detection window") {
  Mesh m(3, one_stage(), {{}, {"work"}, {"work"}});
  m.source("one", "in", file_ref(hd("input")));
  m.advance(200);
  Digest job = m.jobs_of(0, "work").at(0);
  int first = runner(m, job);
  REQUIRE(first != -1);
  int other = first == 1 ? 2 : 1;
  std::int64_t crashed_at = m.now();
  m.crash(first);
  std::int64_t took_over = -1;
  for (int t = 0; t < 200 && took_over < 0; ++t) {
    m.advance(10);
    if (m.node(other).procs.count(job)) took_over = m.now();
  }
  REQUIRE(took_over > 0);
  Timing timing;
  // Dead after dead_after_ms of silence, counted from the last heartbeat heard.
  CHECK(took_over - crashed_at >= timing.dead_after_ms - timing.heartbeat_ms);
  CHECK(took_over - crashed_at <= timing.dead_after_ms + 20);
  CHECK(m.node(other).procs.at(job).epoch == 2);
}

TEST_CASE("false suspicion: duplicate execution, one canonical result everywhere") {
  Mesh m(3, one_stage(), {{}, {"work"}, {"work"}});
  m.source("one", "in", file_ref(hd("input")));
  m.advance(100);
  Digest job = m.jobs_of(0, "work").at(0);
  int first = runner(m, job);
  REQUIRE(first != -1);
  int other = first == 1 ? 2 : 1;
  // `first` is alive but cut off from everyone: the others declare it dead.
  m.cut(first, 0);
  m.cut(first, other);
  m.advance(800);
  REQUIRE(m.node(other).procs.count(job));
  CHECK(m.node(other).procs.at(job).epoch == 2);
  m.finish_all(first);
  m.finish_all(other);
  m.heal();
  m.advance(100);
  const Statement* c0 = m.core(0).canonical(job);
  REQUIRE(c0 != nullptr);
  CHECK(std::get<JobResult>(c0->body).epoch == 1);  // the min-register keeps epoch 1
  for (int i = 1; i < 3; ++i) {
    const Statement* ci = m.core(i).canonical(job);
    REQUIRE(ci != nullptr);
    CHECK(ci->author == c0->author);
    CHECK(ci->seq == c0->seq);
  }
  CHECK(m.core(0).job(job)->results.size() == 2);  // both kept
  CHECK_FALSE(m.core(0).nondeterministic(job));
}

TEST_CASE("partition: both sides work, then heal and agree") {
  Pipeline p = make_pipeline(
      "two", {"a", "b"},
      {make_stage("left", {{"", "a"}}, {"l"}), make_stage("right", {{"", "b"}}, {"r"}),
       make_stage("join", {{"left", "l"}, {"right", "r"}}, {"j"})});
  Mesh m(4, p, {{}, {"left", "join"}, {"right", "join"}, {"left", "right", "join"}});
  m.source("two", "a", file_ref(hd("a")));
  m.source("two", "b", file_ref(hd("b")));
  m.advance(50);
  // {0, 1} and {2, 3}.
  for (int a : {0, 1}) {
    for (int b : {2, 3}) m.cut(a, b);
  }
  m.run_to_completion(3000);
  m.heal();
  m.run_to_completion(3000);
  auto vv = m.core(0).ledger().version_vector();
  for (int i = 1; i < 4; ++i) CHECK(m.core(i).ledger().version_vector() == vv);
  for (const auto& st : m.core(0).plan().stages) CHECK(st.state == StageState::kDone);
  for (const auto& [id, j] : m.core(0).plan().jobs) {
    const Statement* c0 = m.core(0).canonical(id);
    REQUIRE(c0 != nullptr);
    for (int i = 1; i < 4; ++i) CHECK(m.core(i).canonical(id)->seq == c0->seq);
  }
}

TEST_CASE("non-deterministic stage flagged; downstream built on the other output superseded") {
  Pipeline p = make_pipeline(
      "nd", {"in"},
      {make_stage("gen", {{"", "in"}}, {"g"}), make_stage("use", {{"gen", "g"}}, {"u"})});
  Mesh m(3, p, {{}, {"gen", "use"}, {"gen", "use"}});
  m.node(1).nondeterministic = true;
  m.node(2).nondeterministic = true;
  m.source("nd", "in", file_ref(hd("in")));
  m.advance(100);
  Digest gen = m.jobs_of(0, "gen").at(0);
  int first = runner(m, gen);
  REQUIRE(first != -1);
  int other = first == 1 ? 2 : 1;
  m.cut(first, 0);
  m.cut(first, other);
  m.advance(800);  // `other` takes over at epoch 2
  m.finish_all(other);
  m.advance(100);  // ... and runs `use` on its own output
  auto use_on_other = m.jobs_of(other, "use");
  REQUIRE(use_on_other.size() == 1);
  m.finish_all(first);  // epoch 1 finishes too, with different output
  m.heal();
  m.advance(100);
  CHECK(m.core(0).nondeterministic(gen));
  CHECK(std::get<JobResult>(m.core(0).canonical(gen)->body).epoch == 1);
  auto v = m.core(0).job(use_on_other[0]);
  REQUIRE(v);
  CHECK(v->state == JobState::kSuperseded);
  m.run_to_completion(3000);
  auto now_use = m.jobs_of(0, "use");
  REQUIRE(now_use.size() == 1);
  CHECK(now_use[0] != use_on_other[0]);
  CHECK(m.core(0).canonical(now_use[0]) != nullptr);
}

TEST_CASE("memoized: a restarted agent and a repeated snapshot start nothing") {
  Mesh m(2, one_stage(), {{}, {"work"}});
  m.source("one", "in", file_ref(hd("input")));
  m.run_to_completion(2000);
  Digest job = m.jobs_of(0, "work").at(0);
  REQUIRE(m.core(1).canonical(job) != nullptr);
  std::size_t starts = m.node(1).started.size();
  std::size_t ledger = m.core(0).ledger().size();
  m.source("one", "in", file_ref(hd("input")));  // unchanged content: no new version
  m.crash(1);
  m.restart(1);
  m.advance(2000);
  CHECK(m.node(1).started.size() == starts);
  CHECK(m.core(0).ledger().size() == ledger + 1);  // only the restarted agent's new advert
}

TEST_CASE("fan-out: one changed shard re-runs that shard and the fan-in only") {
  Pipeline p = make_pipeline("fan", {"dir"},
                             {make_stage("count", {{"", "dir"}}, {"c"}, InputRef{"", "dir"}),
                              make_stage("sum", {{"count", "c"}}, {"s"})});
  Mesh m(3, p, {{}, {"count", "sum"}, {"count", "sum"}});
  m.source("fan", "dir", dir_ref({{"a", "1"}, {"b", "2"}, {"c", "3"}}));
  m.run_to_completion(3000);
  CHECK(m.starts_of("count") == 3);
  CHECK(m.starts_of("sum") == 1);
  for (const auto& st : m.core(0).plan().stages) CHECK(st.state == StageState::kDone);
  // The fan-in output is the directory of shard outputs.
  for (const auto& st : m.core(0).plan().stages) {
    if (st.stage == "count") {
      REQUIRE(st.outputs.count("c"));
      CHECK(st.outputs.at("c").entries.size() == 3);
      CHECK(st.outputs.at("c").entries[0].name == "a");
    }
  }
  m.source("fan", "dir", dir_ref({{"a", "1"}, {"b", "changed"}, {"c", "3"}}));
  m.run_to_completion(3000);
  CHECK(m.starts_of("count") == 4);
  CHECK(m.starts_of("sum") == 2);
  for (const auto& st : m.core(2).plan().stages) CHECK(st.state == StageState::kDone);
}

TEST_CASE("lost artifact: the job is run again from its lineage") {
  Mesh m(2, one_stage(), {{}, {"work"}}, /*replicas=*/1);
  m.source("one", "in", file_ref(hd("input")));
  m.run_to_completion(2000);
  Digest job = m.jobs_of(0, "work").at(0);
  const auto& r = std::get<JobResult>(m.core(0).canonical(job)->body);
  Digest out = r.outputs.at(0).artifact.digest;
  REQUIRE(m.node(1).store.count(out));
  REQUIRE(m.node(1).started.size() == 1);
  m.node(1).store.erase(out);
  (void)m.core(1).artifact_lost(out);
  // Loss is noticed at the next replication check and acted on after dead_after_ms.
  m.advance(kReplicationCheckMs * 2 + Timing{}.dead_after_ms);
  m.run_to_completion(3000);
  REQUIRE(m.node(1).started.size() == 2);
  CHECK(m.node(1).started[1].regenerate);
  CHECK(m.node(1).store.count(out));
  CHECK(std::get<JobResult>(m.core(0).canonical(job)->body).epoch == 1);
}

TEST_CASE("a lost output whose job no longer succeeds is re-run with a backoff, not in a loop") {
  // The job succeeded once; its only copy is lost; every run to make it again fails (a
  // tool removed since). Without a limit the agents would run it again for ever.
  Pipeline p = make_pipeline("one", {"in"}, {make_stage("work", {{"", "in"}}, {"w"}, {}, 1)});
  Mesh m(2, p, {{}, {"work"}}, /*replicas=*/1);
  m.source("one", "in", file_ref(hd("input")));
  m.run_to_completion(2000);
  Digest job = m.jobs_of(0, "work").at(0);
  Digest out = std::get<JobResult>(m.core(0).canonical(job)->body).outputs.at(0).artifact.digest;
  m.node(1).store.erase(out);
  (void)m.core(1).artifact_lost(out);
  for (int t = 0; t < 2000; ++t) {
    m.advance(10);
    if (!m.node(1).procs.empty()) m.finish_all(1, /*ok=*/false);
  }
  // In 20 s: re-runs after 0.2, 0.4, 0.8, 1.6, 3.2, 6.4 and 10 s at the most (plus the
  // time each takes to be claimed), not one every few ms.
  CHECK(m.node(1).started.size() >= 4);
  CHECK(m.node(1).started.size() <= 10);
  CHECK(m.core(0).canonical(job) != nullptr);  // the result stands, as lineage
}

TEST_CASE("a job failing past its retries is failed and its dependents blocked") {
  Pipeline p = make_pipeline("f", {"in"},
                             {make_stage("bad", {{"", "in"}}, {"b"}, {}, /*retries=*/1),
                              make_stage("after", {{"bad", "b"}}, {"a"})});
  Mesh m(3, p, {{}, {"bad", "after"}, {"bad", "after"}});
  m.source("f", "in", file_ref(hd("in")));
  std::set<int> runners;
  for (int t = 0; t < 500; ++t) {
    m.advance(10);
    for (int i = 1; i < 3; ++i) {
      if (!m.node(i).procs.empty()) {
        runners.insert(i);
        m.finish_all(i, /*ok=*/false);
      }
    }
  }
  Digest job = m.jobs_of(0, "bad").at(0);
  auto v = m.core(1).job(job);
  REQUIRE(v);
  CHECK(v->state == JobState::kFailed);
  CHECK(v->failed_attempts == 2);
  CHECK(m.starts_of("bad") == 2);
  CHECK(runners.size() == 2);  // the retry preferred the other candidate
  for (const auto& st : m.core(1).plan().stages) {
    if (st.stage == "after") CHECK(st.state == StageState::kBlocked);
    if (st.stage == "bad") CHECK(st.state == StageState::kBlocked);
  }
}

}  // namespace
}  // namespace vow::promises

namespace vow::promises {
namespace {

TEST_CASE("restart: a standing claim is resumed, a fenced one is released") {
  Mesh m(3, one_stage(), {{}, {"work"}, {"work"}});
  m.source("one", "in", file_ref(hd("input")));
  m.advance(100);
  Digest job = m.jobs_of(0, "work").at(0);
  int first = runner(m, job);
  REQUIRE(first != -1);
  int other = first == 1 ? 2 : 1;

  SUBCASE("back before being declared dead: the same epoch runs again") {
    m.crash(first);
    m.advance(200);
    m.restart(first);
    m.advance(100);
    REQUIRE(m.node(first).procs.count(job) == 1);
    CHECK(m.node(first).procs.at(job).epoch == 1);
    CHECK(m.node(other).procs.count(job) == 0);
  }
  SUBCASE("back after a takeover: nothing runs, the old claim is released") {
    m.crash(first);
    m.advance(800);
    REQUIRE(m.node(other).procs.count(job) == 1);
    std::size_t starts = m.node(first).started.size();
    m.restart(first);
    m.advance(800);
    CHECK(m.node(first).started.size() == starts);
    auto v = m.core(0).job(job);
    REQUIRE(v);
    for (const auto& c : v->claims) {
      if (c.author == m.node(first).config.key) CHECK(c.released);
    }
  }
}

}  // namespace
}  // namespace vow::promises

namespace vow::promises {
namespace {

TEST_CASE("reconfigure: a withdrawn promise hands its job over at once; an added one claims") {
  Mesh m(3, one_stage(), {{}, {"work"}, {"work"}});
  m.source("one", "in", file_ref(hd("input")));
  m.advance(200);
  Digest job = m.jobs_of(0, "work").at(0);
  int first = runner(m, job);
  REQUIRE(first != -1);
  int other = first == 1 ? 2 : 1;
  // The runner's config drops the promise: its job is killed and released, and the
  // other agent takes it over well inside the detection window (nobody died).
  Node& nd = m.node(first);
  m.reconfigure(first, {});
  CHECK(m.node(first).procs.count(job) == 0);
  std::int64_t withdrawn_at = m.now();
  std::int64_t took_over = -1;
  for (int t = 0; t < 100 && took_over < 0; ++t) {
    m.advance(10);
    if (m.node(other).procs.count(job)) took_over = m.now();
  }
  REQUIRE(took_over > 0);
  Timing timing;
  CHECK(took_over - withdrawn_at < timing.dead_after_ms / 2);
  // Every agent now sees the new advert without the promise.
  const auto& adverts = m.core(0).ledger().adverts();
  const auto* adv = std::get_if<Advert>(&adverts.at(nd.config.key)->body);
  REQUIRE(adv != nullptr);
  CHECK(adv->promises.empty());
  // Agent 0 promised nothing; after adding the promise it runs a new job of the stage.
  m.finish_all(other);
  m.advance(100);
  m.reconfigure(0, {CorePromise{"one", "work", 2}});
  m.source("one", "in", file_ref(hd("input", "2")));
  m.crash(first);
  m.crash(other);
  m.advance(200);
  Digest second = m.jobs_of(0, "work").at(0);
  CHECK(second != job);
  CHECK(m.node(0).procs.count(second) == 1);
}

}  // namespace
}  // namespace vow::promises

namespace vow::promises {
namespace {

// A bound takeover of `ref` at `epoch` by an agent nobody here ever heard from: its
// advert promises the stage and its claim supersedes one at epoch - 1 that node
// `observer` holds. A higher epoch fences the runs below it, and the claim itself does
// not stand (its author is not live).
std::vector<Statement> stranger_claim(Mesh& m, int observer, const JobRef& ref,
                                      std::uint32_t epoch) {
  Statement adv;
  Digest k = hd("stranger");
  std::copy(k.bytes.begin(), k.bytes.end(), adv.author.bytes.begin());
  adv.seq = 1;
  adv.body =
      Advert{"stranger", {}, {AdvertPromise{ref.pipeline, ref.stage, ref.stage_digest, 1}}, {}};
  Statement st;
  st.author = adv.author;
  st.seq = 2;
  Claim c{ref, epoch, 0, std::nullopt};
  for (const Statement* prev : m.core(observer).ledger().job(ref.job)->claims) {
    if (std::get<Claim>(prev->body).epoch + 1 == epoch) {
      c.supersedes = StatementRef{prev->author, prev->seq};
    }
  }
  st.body = c;
  return {adv, st};
}

int starts_of_epoch(const Node& nd, const Digest& job, std::uint32_t epoch) {
  int n = 0;
  for (const auto& s : nd.started) n += s.job.job == job && s.epoch == epoch ? 1 : 0;
  return n;
}

int kills_of_epoch(const Node& nd, const Digest& job, std::uint32_t epoch) {
  int n = 0;
  for (const auto& k : nd.killed) n += k.job == job && k.epoch == epoch ? 1 : 0;
  return n;
}

TEST_CASE("a killed run holds its place until job_stopped; a later epoch starts only then") {
  int capacity = 1;
  SUBCASE("capacity 1: the stopping run keeps the only place") { capacity = 1; }
  SUBCASE("capacity 2: reclaimed at once, started once the old process is gone") { capacity = 2; }
  Mesh m(2, one_stage(), {{}, {"work"}}, /*replicas=*/2, capacity);
  m.source("one", "in", file_ref(hd("input")));
  m.advance(100);
  Digest job = m.jobs_of(0, "work").at(0);
  REQUIRE(m.node(1).procs.count(job) == 1);
  JobRef ref = m.node(1).procs.at(job).job;
  REQUIRE(m.node(1).procs.at(job).epoch == 1);

  auto stranger = stranger_claim(m, 1, ref, 2);
  m.inject(1, 0, stranger[0]);             // its advert: learned, never heard from,
  m.advance(Timing{}.dead_after_ms + 50);  // so declared dead: its claims never stand
  m.node(1).hold_stops = true;             // the process ignores the kill for a while
  m.inject(1, 0, stranger[1]);
  m.advance(10);  // decided on the next tick
  REQUIRE(kills_of_epoch(m.node(1), job, 1) == 1);
  REQUIRE(m.node(1).stopping.size() == 1);
  for (int t = 0; t < 50; ++t) {
    m.advance(10);
    CHECK(m.node(1).alive() <= capacity);
  }
  // Nothing starts while epoch 1 may still be alive; the core counts it as running.
  CHECK(m.node(1).started.size() == 1);
  bool stopping_seen = false;
  for (const auto& r : m.core(1).running()) {
    if (r.job.job == job && r.epoch == 1) stopping_seen = r.stopping;
  }
  CHECK(stopping_seen);
  auto own_claim_at = [&](std::uint32_t epoch) {
    auto v = m.core(1).job(job);
    REQUIRE(v);
    for (const auto& c : v->claims) {
      if (c.author == m.node(1).config.key && c.epoch == epoch) return true;
    }
    return false;
  };
  // With a free place the job is claimed again at once (epoch 3), but not started.
  CHECK(own_claim_at(3) == (capacity == 2));

  m.stopped(1, job);
  CHECK(m.node(1).started.size() == 2);
  CHECK(starts_of_epoch(m.node(1), job, 3) == 1);
  m.advance(500);
  CHECK(m.node(1).started.size() == 2);  // exactly one start after the stop
  CHECK(m.node(1).alive() <= capacity);
  m.finish_all(1);
  m.advance(100);
  REQUIRE(m.core(0).canonical(job) != nullptr);
  CHECK(std::get<JobResult>(m.core(0).canonical(job)->body).epoch == 3);
}

TEST_CASE("a job's exit after its kill counts as stopped, not as a result") {
  Mesh m(2, one_stage(), {{}, {"work"}}, /*replicas=*/2, /*capacity=*/1);
  m.source("one", "in", file_ref(hd("input")));
  m.advance(100);
  Digest job = m.jobs_of(0, "work").at(0);
  REQUIRE(m.node(1).procs.count(job) == 1);
  JobRef ref = m.node(1).procs.at(job).job;
  auto stranger = stranger_claim(m, 1, ref, 2);
  m.inject(1, 0, stranger[0]);
  m.advance(Timing{}.dead_after_ms + 50);
  m.node(1).hold_stops = true;
  m.inject(1, 0, stranger[1]);
  m.advance(10);
  REQUIRE(m.node(1).stopping.size() == 1);
  JobOutcome done;
  done.ok = true;
  Output out = m.core(1).job_exited(job, 1, std::move(done));
  CHECK(out.persist.empty() == false);  // its claim at epoch 3
  bool result = false, start = false;
  for (const auto& st : out.persist) result = result || st.kind() == StatementKind::kResult;
  for (const auto& a : out.actions) start = start || std::holds_alternative<StartJob>(a);
  CHECK_FALSE(result);
  CHECK(start);
}

TEST_CASE("restart: each restored running row is resumed or killed by the core") {
  Mesh m(3, one_stage(), {{}, {"work"}, {"work"}});
  m.source("one", "in", file_ref(hd("input")));
  m.advance(100);
  Digest job = m.jobs_of(0, "work").at(0);
  int first = runner(m, job);
  REQUIRE(first != -1);
  int other = first == 1 ? 2 : 1;
  Node& nd = m.node(first);
  REQUIRE(nd.table.count(job) == 1);

  SUBCASE("resumable: a StartJob for the same epoch, no kill") {
    m.crash(first);
    m.advance(200);
    std::size_t starts = nd.started.size();
    m.restart(first);
    m.advance(300);
    CHECK(nd.started.size() == starts + 1);
    CHECK(starts_of_epoch(nd, job, 1) == 2);
    CHECK(kills_of_epoch(nd, job, 1) == 0);
  }
  SUBCASE("a higher epoch exists: a KillJob, no start, the claim released") {
    m.crash(first);
    m.advance(800);
    REQUIRE(m.node(other).procs.count(job) == 1);
    std::size_t starts = nd.started.size();
    m.restart(first);
    m.advance(300);
    CHECK(nd.started.size() == starts);
    REQUIRE(kills_of_epoch(nd, job, 1) == 1);
    CHECK(nd.killed.back().reason.find("not resumable") != std::string::npos);
    CHECK(nd.table.count(job) == 0);  // reported stopped
    auto v = m.core(0).job(job);
    REQUIRE(v);
    for (const auto& c : v->claims) {
      if (c.author == nd.config.key) CHECK(c.released);
    }
  }
  SUBCASE("no sync: resumed when the window ends (a lone agent keeps its work)") {
    m.crash(first);
    for (int j = 0; j < m.size(); ++j) {
      if (j != first) m.cut(first, j);
    }
    m.restart(first);
    std::int64_t restarted_at = m.now();
    std::int64_t resumed_at = -1;
    for (int t = 0; t < 1000 && resumed_at < 0; ++t) {
      m.advance(10);
      if (starts_of_epoch(nd, job, 1) == 2) resumed_at = m.now();
    }
    REQUIRE(resumed_at > 0);
    CHECK(resumed_at - restarted_at >= kRestoreSyncWindowMs);
    CHECK(resumed_at - restarted_at <= kRestoreSyncWindowMs + 20);
    CHECK(kills_of_epoch(nd, job, 1) == 0);
  }
}

TEST_CASE("a peer declared dead yields one PeerDeclaredDead per death") {
  Mesh m(3, one_stage(), {{}, {"work"}, {"work"}});
  m.source("one", "in", file_ref(hd("input")));
  m.advance(200);
  const AgentKey dead = m.node(2).config.key;
  auto count = [&](int i, const AgentKey& k) {
    return std::count(m.node(i).declared_dead.begin(), m.node(i).declared_dead.end(), k);
  };
  CHECK(m.node(0).declared_dead.empty());
  m.crash(2);
  m.advance(2 * Timing{}.dead_after_ms);
  CHECK(count(0, dead) == 1);
  CHECK(count(1, dead) == 1);
  CHECK(m.node(0).declared_dead.size() == 1);  // nobody else
  m.advance(2'000);
  CHECK(count(0, dead) == 1);  // the transition, once
  m.restart(2);
  m.advance(200);
  m.crash(2);
  m.advance(2 * Timing{}.dead_after_ms);
  CHECK(count(0, dead) == 2);
  CHECK(count(1, dead) == 2);
}

// ---- Promises that bind (docs/coordination.md sections 4-6 and 8, rules 2-5) ----

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

// Hands a statement to every node (as relayed by another node).
void inject_all(Mesh& m, const Statement& st) {
  for (int i = 0; i < m.size(); ++i) m.inject(i, (i + 1) % m.size(), st);
}

Advert promising(const std::string& name, const Stage& stage, std::vector<AdvertSource> sources) {
  return Advert{name, {}, {AdvertPromise{"one", stage.name, stage.digest, 1}}, std::move(sources)};
}

std::pair<AgentKey, std::uint64_t> name_of(const Statement* st) {
  return st == nullptr ? std::make_pair(AgentKey{}, std::uint64_t{0})
                       : std::make_pair(st->author, st->seq);
}

TEST_CASE("rule 2: a source version counts only in its provider's own line") {
  Mesh m(2, one_stage(), {{}, {"work"}});
  const ArtifactRef input = file_ref(hd("input"));
  m.source("one", "in", input);
  m.advance(50);
  Digest job = m.jobs_of(1, "work").at(0);
  Hostile h("sources");
  // Not a provider: a version at the top of the range, of a dataset it does not provide.
  inject_all(m, h.make(SourceVersion{"one", "in", UINT64_MAX, file_ref(hd("hijack"))}));
  // A provider (its advert says so) whose line jumps: version 7 without 1..6.
  inject_all(m, h.make(Advert{"h", {}, {}, {AdvertSource{"one", "in"}}}));
  inject_all(m, h.make(SourceVersion{"one", "in", 7, file_ref(hd("jump"))}));
  m.advance(100);
  for (int i = 0; i < m.size(); ++i) {
    const Statement* sv = m.core(i).ledger().source_version("one", "in");
    REQUIRE(sv != nullptr);
    CHECK(sv->author == m.node(0).config.key);
    CHECK(std::get<SourceVersion>(sv->body).artifact.digest == input.digest);
    CHECK(m.jobs_of(i, "work") == std::vector<Digest>{job});  // nothing re-planned
    auto report = m.core(i).binding_report();
    CHECK(report.unbound["source version: not provided"] == 0);  // provided now (advert)
    CHECK(report.unbound["source version: out of line"] == 2);
  }
  // The provider's own next version still replaces the data.
  const ArtifactRef second = file_ref(hd("input", "2"));
  m.source("one", "in", second);
  m.advance(50);
  for (int i = 0; i < m.size(); ++i) {
    const Statement* sv = m.core(i).ledger().source_version("one", "in");
    REQUIRE(sv != nullptr);
    CHECK(std::get<SourceVersion>(sv->body).artifact.digest == second.digest);
    CHECK(std::get<SourceVersion>(sv->body).version == 2);
  }
}

TEST_CASE("rule 2: providers combine by agreement; one lying provider is outvoted") {
  Mesh m(3, one_stage(), {{}, {"work"}, {"work"}});
  const ArtifactRef input = file_ref(hd("input"));
  m.source("one", "in", input);
  // A second honest provider says the same.
  Hostile second("second provider");
  inject_all(m, second.make(Advert{"p2", {}, {}, {AdvertSource{"one", "in"}}}));
  inject_all(m, second.make(SourceVersion{"one", "in", 1, input}));
  // A liar, bound (it provides the dataset, version 1 in line), gives other bytes.
  Hostile liar("liar");
  inject_all(m, liar.make(Advert{"liar", {}, {}, {AdvertSource{"one", "in"}}}));
  inject_all(m, liar.make(SourceVersion{"one", "in", 1, file_ref(hd("lie"))}));
  m.advance(50);
  for (int i = 0; i < m.size(); ++i) {
    const Statement* sv = m.core(i).ledger().source_version("one", "in");
    REQUIRE(sv != nullptr);
    CHECK(std::get<SourceVersion>(sv->body).artifact.digest == input.digest);
    CHECK(sv->author != liar.key);
  }
}

TEST_CASE("rule 3: a result without its author's claim is never canonical") {
  Mesh m(3, one_stage(), {{}, {"work"}, {"work"}});
  m.source("one", "in", file_ref(hd("input")));
  m.run_to_completion(2'000);
  Digest job = m.jobs_of(0, "work").at(0);
  const Statement* canon = m.core(0).canonical(job);
  REQUIRE(canon != nullptr);
  auto before = name_of(canon);
  JobRef ref = std::get<JobResult>(canon->body).job;
  Hostile h("results");
  JobResult bogus;
  bogus.job = ref;
  bogus.ok = true;
  bogus.outputs = {NamedArtifact{"out", file_ref(hd("bogus"))}};
  bogus.epoch = 0;  // sorts before every honest result in the min-register
  inject_all(m, h.make(bogus));
  // Even from an agent that promises the stage, at the canonical epoch: no claim.
  inject_all(m, h.make(promising("h", one_stage().stages[0], {})));
  bogus.epoch = 1;
  inject_all(m, h.make(bogus));
  m.advance(200);
  for (int i = 0; i < m.size(); ++i) {
    CHECK(name_of(m.core(i).canonical(job)) == before);
    auto v = m.core(i).job(job);
    REQUIRE(v);
    CHECK(v->state == JobState::kDone);
    int unbound = 0;
    for (const auto& r : v->results) unbound += r.bound ? 0 : 1;
    CHECK(unbound == 2);
    CHECK(m.core(i).binding_report().unbound["result: no claim"] == 2);
  }
  CHECK(m.starts_of("work") == 1);  // nothing ran again
}

TEST_CASE("rule 4: a claim at the top epoch fences nothing; epochs are earned") {
  Mesh m(3, one_stage(), {{}, {"work"}, {"work"}});
  m.source("one", "in", file_ref(hd("input")));
  m.advance(100);
  Digest job = m.jobs_of(0, "work").at(0);
  int first = runner(m, job);
  REQUIRE(first != -1);
  JobRef ref = m.node(first).procs.at(job).job;
  Hostile h("epochs");
  inject_all(m, h.make(promising("h", one_stage().stages[0], {})));
  inject_all(m, h.make(Claim{ref, UINT32_MAX, 0, std::nullopt}));  // chosen, not earned
  inject_all(m, h.make(Claim{ref, 0, 0, std::nullopt}));
  m.advance(500);
  // Nothing was fenced, claimed again or restarted: the run goes on and finishes.
  CHECK(m.node(first).killed.empty());
  CHECK(m.starts_of("work") == 1);
  m.finish_all(first);
  m.advance(100);
  for (int i = 0; i < m.size(); ++i) {
    REQUIRE(m.core(i).canonical(job) != nullptr);
    CHECK(std::get<JobResult>(m.core(i).canonical(job)->body).epoch == 1);
    CHECK(m.core(i).binding_report().unbound["claim: epoch not earned"] == 2);
    std::uint32_t top = 0;
    auto view = m.core(i).job(job);
    REQUIRE(view);
    for (const auto& c : view->claims) {
      if (c.bound) top = std::max(top, c.epoch);
    }
    CHECK(top == 1);
  }
}

TEST_CASE("rule 4: a job fenced again and again by claims that do not stand backs off") {
  Mesh m(2, one_stage(), {{}, {"work"}});
  m.source("one", "in", file_ref(hd("input")));
  m.advance(100);
  Digest job = m.jobs_of(0, "work").at(0);
  REQUIRE(m.node(1).procs.count(job) == 1);
  JobRef ref = m.node(1).procs.at(job).job;
  Hostile h("fencer");  // never heard from: its claims fence but never stand
  inject_all(m, h.make(promising("h", one_stage().stages[0], {})));
  m.advance(Timing{}.dead_after_ms + 50);  // learned from its advert, now dead
  auto own_claims = [&] {
    int n = 0;
    for (const Statement* st : m.core(1).ledger().job(job)->claims) {
      n += st->author == m.node(1).config.key ? 1 : 0;
    }
    return n;
  };
  auto top_claim = [&] {
    const Statement* top = nullptr;
    for (const Statement* st : m.core(1).ledger().job(job)->claims) {
      if (top == nullptr || std::get<Claim>(st->body).epoch > std::get<Claim>(top->body).epoch) {
        top = st;
      }
    }
    return top;
  };
  // Each time node 1 claims, a takeover earned from its claim fences it at once.
  std::vector<std::int64_t> reclaimed_after_ms;
  for (int round = 0; round < 4; ++round) {
    const Statement* mine = top_claim();
    REQUIRE(mine->author == m.node(1).config.key);
    std::uint32_t e = std::get<Claim>(mine->body).epoch;
    inject_all(m, h.make(Claim{ref, e + 1, 0, StatementRef{mine->author, mine->seq}}));
    int claims = own_claims();
    std::int64_t fenced_at = m.now();
    std::int64_t again = -1;
    for (int t = 0; t < 300 && again < 0; ++t) {
      m.advance(10);
      if (own_claims() > claims) again = m.now() - fenced_at;
    }
    REQUIRE(again >= 0);
    reclaimed_after_ms.push_back(again);
  }
  // The first takeover is taken back at once; then the waits grow.
  CHECK(reclaimed_after_ms[0] < kFenceBackoffBaseMs);
  CHECK(reclaimed_after_ms[1] >= kFenceBackoffBaseMs);
  CHECK(reclaimed_after_ms[2] >= 2 * kFenceBackoffBaseMs);
  CHECK(reclaimed_after_ms[3] >= 4 * kFenceBackoffBaseMs);
}

TEST_CASE("rule 5: equivocation is found, proven everywhere, and its author stops counting") {
  Mesh m(3, one_stage(), {{}, {"work"}, {"work"}});
  m.source("one", "in", file_ref(hd("input")));
  Digest job = m.jobs_of(0, "work").at(0);
  JobRef ref = m.core(0).plan().jobs.at(job).ref;
  // Before anyone claims: a bound claim and result of a trusted key; its result is
  // canonical everywhere.
  Hostile h("equivocator");
  inject_all(m, h.make(promising("h", one_stage().stages[0], {})));
  inject_all(m, h.make(Claim{ref, 1, 0, std::nullopt}));
  JobResult r;
  r.job = ref;
  r.epoch = 1;
  r.ok = true;
  r.outputs = {NamedArtifact{"out", file_ref(hd("equivocator's"))}};
  inject_all(m, h.make(r));
  for (int i = 0; i < m.size(); ++i) {
    REQUIRE(m.core(i).canonical(job) != nullptr);
    REQUIRE(m.core(i).canonical(job)->author == h.key);
  }
  // Two different statements with one seq, one to node 1, the other to node 2: equal
  // version vectors, different ledgers. Nobody is told of the other.
  Statement a = h.make(Release{ref, 1, "a"}, 1);
  Statement b = a;
  b.wall_unix_ms = 2;
  std::get<Release>(b.body).reason = "b";
  m.inject(1, 0, a);
  m.inject(2, 0, b);
  m.advance(3'000);  // periodic anti-entropy compares what each holds
  m.run_to_completion(3'000);
  for (int i = 0; i < m.size(); ++i) {
    INFO("node " << i);
    CHECK(m.core(i).equivocating(h.key));
    CHECK(m.core(i).binding_report().equivocators == std::vector<AgentKey>{h.key});
    const Statement* canon = m.core(i).canonical(job);
    REQUIRE(canon != nullptr);
    CHECK(canon->author != h.key);
    CHECK(name_of(canon) == name_of(m.core(0).canonical(job)));
    CHECK(m.core(i).ledger().fingerprint() == m.core(0).ledger().fingerprint());
  }
  CHECK(m.starts_of("work") == 1);  // re-run once, by an honest agent
}

}  // namespace
}  // namespace vow::promises

namespace vow::promises {
namespace {

// one_stage() with the stage's command edited: a new stage digest.
Pipeline one_stage_edited() {
  Pipeline p = one_stage();
  p.stages[0].argv = {"true", "--edited"};
  p.stages[0].digest = stage_digest(p.stages[0]);
  p.digest = pipeline_digest(p);
  return p;
}

int events_of(const Node& nd, EventKind kind) {
  return static_cast<int>(std::count_if(nd.events.begin(), nd.events.end(),
                                        [&](const Event& e) { return e.kind == kind; }));
}

TEST_CASE("an edited stage: only the definition current adverts promise is planned") {
  Mesh m(3, one_stage(), {{}, {"work"}, {"work"}});
  m.source("one", "in", file_ref(hd("input")));
  m.run_to_completion();
  Digest old_job = m.jobs_of(0, "work").at(0);
  REQUIRE(m.core(0).canonical(old_job) != nullptr);
  // Every agent reloads the edited file: the old definition stays in the ledger, but no
  // current advert promises it any more.
  Pipeline edited = one_stage_edited();
  for (int i = 0; i < 3; ++i) m.reload_pipelines(i, {edited});
  m.run_to_completion();
  for (int i = 0; i < 3; ++i) {
    auto jobs = m.jobs_of(i, "work");
    REQUIRE(jobs.size() == 1);  // not the old job, ready for ever
    CHECK(jobs[0] != old_job);
    auto plans = m.stage_plans(i, "work");
    REQUIRE(plans.size() == 1);
    CHECK(plans[0].stage_digest == edited.stages[0].digest);
    CHECK(plans[0].state == StageState::kDone);
    CHECK(m.core(i).job(jobs[0])->state == JobState::kDone);
    // The old result stays in the ledger, as capital and for lineage.
    CHECK(m.core(i).job(old_job)->state == JobState::kSuperseded);
    CHECK(m.core(i).canonical(old_job) != nullptr);
  }
  // And after a restart, from what the ledger holds.
  m.crash(0);
  m.restart(0);
  m.advance(100);
  CHECK(m.jobs_of(0, "work").size() == 1);
  CHECK(m.stage_plans(0, "work").at(0).state == StageState::kDone);
}

TEST_CASE("two current definitions of one stage: a conflict, logged once, one planned") {
  Mesh m(3, one_stage(), {{}, {"work"}, {"work"}});
  Pipeline edited = one_stage_edited();
  m.reload_pipelines(2, {edited});
  m.source("one", "in", file_ref(hd("input")));
  m.advance(500);
  const Digest old_digest = one_stage().stages[0].digest;
  const Digest new_digest = edited.stages[0].digest;
  for (int i = 0; i < 3; ++i) {
    const Plan& plan = m.core(i).plan();
    REQUIRE(plan.conflicts.size() == 1);
    const StageConflict& c = plan.conflicts[0];
    CHECK(c.stage == "work");
    REQUIRE(c.promised_by.size() == 2);
    CHECK(c.promised_by.at(old_digest) == std::vector<AgentKey>{m.node(1).config.key});
    CHECK(c.promised_by.at(new_digest) == std::vector<AgentKey>{m.node(2).config.key});
    // One promiser each: the least digest is planned, on every agent.
    CHECK(c.planned == std::min(old_digest, new_digest));
    auto plans = m.stage_plans(i, "work");
    REQUIRE(plans.size() == 1);
    CHECK(plans[0].stage_digest == c.planned);
    CHECK(events_of(m.node(i), EventKind::kDefinitionConflict) == 1);
  }
  m.run_to_completion();
  m.advance(500);
  for (int i = 0; i < 3; ++i) {
    CHECK(m.stage_plans(i, "work").at(0).state == StageState::kDone);
    CHECK(events_of(m.node(i), EventKind::kDefinitionConflict) == 1);  // once, not per plan
  }
  // The agent of the other definition ran nothing.
  int other = old_digest < new_digest ? 2 : 1;
  CHECK(m.node(other).started.empty());
  // Agreement ends the conflict.
  m.reload_pipelines(other, {old_digest < new_digest ? one_stage() : edited});
  CHECK(m.core(0).plan().conflicts.empty());
}

TEST_CASE("a stage nobody promises plans no job; promising it plans it") {
  Pipeline p = make_pipeline(
      "two", {"in"}, {make_stage("a", {{"", "in"}}, {"o"}), make_stage("b", {{"a", "o"}}, {"o2"})});
  Mesh m(2, p, {{}, {"a"}});
  m.source("two", "in", file_ref(hd("input")));
  m.run_to_completion();
  auto b = m.stage_plans(0, "b").at(0);
  CHECK(b.state == StageState::kPending);
  CHECK(b.reason == "no agent promises it");
  CHECK(b.jobs.empty());
  CHECK(m.jobs_of(0, "b").empty());
  CHECK(m.stage_plans(0, "a").at(0).state == StageState::kDone);
  m.reconfigure(1, {CorePromise{"two", "a", 2}, CorePromise{"two", "b", 2}});
  m.run_to_completion();
  CHECK(m.stage_plans(0, "b").at(0).state == StageState::kDone);
}

TEST_CASE("retry: a job failed past its retries runs again, another candidate first") {
  Pipeline p = make_pipeline(
      "f", {"in"},
      {make_stage("bad", {{"", "in"}}, {"b"}), make_stage("after", {{"bad", "b"}}, {"a"})});
  Mesh m(3, p, {{}, {"bad", "after"}, {"bad", "after"}});
  m.source("f", "in", file_ref(hd("in")));
  int first = -1;
  for (int t = 0; t < 100 && first < 0; ++t) {
    m.advance(10);
    for (int i = 1; i < 3; ++i) {
      if (!m.node(i).procs.empty()) first = i;
    }
  }
  REQUIRE(first > 0);
  m.finish_all(first, /*ok=*/false);
  m.advance(1000);
  Digest job = m.jobs_of(0, "bad").at(0);
  REQUIRE(m.core(0).job(job)->state == JobState::kFailed);
  CHECK(m.stage_plans(0, "after").at(0).state == StageState::kBlocked);
  CHECK(m.starts_of("bad") == 1);  // no retries: nobody runs it again by itself
  // Asked on an agent that runs nothing: it signs the request, the candidates act on it.
  std::size_t before = m.node(0).persisted.size();
  m.retry(0, {job});
  CHECK(std::any_of(m.node(0).persisted.begin() + static_cast<std::ptrdiff_t>(before),
                    m.node(0).persisted.end(),
                    [](const Statement& st) { return st.kind() == StatementKind::kRetry; }));
  int second = -1;
  for (int t = 0; t < 100 && second < 0; ++t) {
    m.advance(10);
    second = runner(m, job);
  }
  CHECK(second == 3 - first);  // the candidate that has not failed it
  m.run_to_completion();
  for (int i = 0; i < 3; ++i) {
    CHECK(m.core(i).job(job)->state == JobState::kDone);
    CHECK(m.stage_plans(i, "after").at(0).state == StageState::kDone);
  }
  // A job that is not failed is not retried.
  std::size_t persisted = m.node(0).persisted.size();
  m.retry(0, {job});
  CHECK(m.node(0).persisted.size() == persisted);
}

}  // namespace
}  // namespace vow::promises
