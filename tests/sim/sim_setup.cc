// The simulated world's setup: a pipeline and hosts generated from the seed, and the
// faults the seed injects (sim.h, docs/coordination.md section 11).
#include <algorithm>

#include "tests/sim/world.h"

namespace vow::sim {

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
  if (opt_.shards > 0) src_entries_ = opt_.shards;
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
    bool wide = opt_.shards > 0 && i == 0;  // the first stage fans out over the source
    bool foreach = wide || (!trees.empty() && rnd(10) < 4);
    std::set<std::size_t> picked;
    if (foreach) {
      std::size_t k = wide ? 0 : trees[rnd(trees.size())];
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

void World::make_hosts() {
  int n = std::max(1, opt_.agents);
  opt_.agents = n;
  hosts_.resize(static_cast<std::size_t>(n));
  side_.assign(static_cast<std::size_t>(n), 0);
  for (int i = 0; i < n; ++i) {
    Host& h = hosts_[static_cast<std::size_t>(i)];
    h.index = i;
    Digest k = hash_of({"agent", u64s(opt_.seed), std::to_string(i)});
    std::copy(k.bytes.begin(), k.bytes.end(), h.key.bytes.begin());
    index_[h.key] = i;
    h.config.key = h.key;
    h.config.name = "a" + std::to_string(i);
    h.config.endpoints = {"sim://" + std::to_string(i)};
    h.config.replicas = 2;
    h.config.job_index_scrub = 0;  // the job index is checked against a recount: no repairs
    h.config.check_backlogs = n <= kCheckIndexesUpTo;
    h.config.check_plans = n <= kCheckIndexesUpTo;
    // Horizons often, so that a run sees several applied, laggards and restarts among them.
    h.config.horizon_every = opt_.horizon_every;
    h.config.check_horizons = true;
    h.config.retire_superseded = opt_.retire_superseded;
    // Not drawn from the seed's random stream: runs of a seed made before stay the same.
    static constexpr std::uint32_t kPercents[] = {10, 30, 100};
    h.config.checkpoint_percent = opt_.checkpoint_percent >= 0
                                      ? static_cast<std::uint32_t>(opt_.checkpoint_percent)
                                      : kPercents[opt_.seed % 3];
    h.config.sign = sim_sign;
    // Statements a step publishes are signed together, as a real agent's are.
    h.config.encode = sim_encode;
    h.config.sign_together = [key = h.config.key](const std::vector<SignedForm*>& forms) {
      sim_sign_together(key, forms);
    };
    h.config.idle_budget = kSimIdleBudget;
    h.config.timing.membership = opt_.profile;
    h.config.timing.swim = promises::swim_profile(opt_.profile);
    h.provides_sources = i < 2;
    h.net = std::make_unique<SimNetwork>(this, i);
    h.disk = std::make_unique<SimDisk>(this, i);
    h.worker = std::make_unique<SimWorker>(this, i);
    h.exec = std::make_unique<SimExecutor>(this, i);
    h.sink = std::make_unique<SimSink>(this, i);
  }
  // Every agent is configured with every other's key (as a mesh's files name its peers).
  for (auto& h : hosts_) {
    for (const auto& o : hosts_) {
      if (o.key != h.key) h.config.configured_peers.push_back(o.key);
    }
  }
  // Each stage is promised by 2-3 agents (or all, if fewer).
  for (const auto& s : pipeline_.stages) {
    int want = std::min(n, 2 + static_cast<int>(rnd(2)));
    std::set<int> who;
    while (static_cast<int>(who.size()) < want) who.insert(static_cast<int>(rnd(n)));
    for (int i : who) {
      hosts_[i].config.promises.push_back(
          promises::CorePromise{pipeline_.name, s.name, 1 + static_cast<int>(rnd(2))});
    }
  }
  for (auto& h : hosts_) {
    // Agents that run none of its stages only know the pipeline from the ledger.
    if (!h.config.promises.empty() || h.index == 0) h.config.pipelines = {pipeline_};
    if (h.provides_sources) {
      h.config.sources = {AdvertSource{pipeline_.name, "src"}, AdvertSource{pipeline_.name, "cfg"}};
    }
  }
}

void World::schedule_faults() {
  bool all = opt_.faults == Faults::kAll;
  bool crashes = opt_.faults == Faults::kCrash || all;
  bool net = opt_.faults == Faults::kNet || all;
  int n = opt_.agents;
  net_faults_ = net;
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
  if (all) {
    // Host faults, each in some seeds: a disk that fills up for a while (the agent
    // stops and is restarted), a worker that is slow or whose queue is full, spawns
    // that fail.
    if (rnd(4) == 0) {
      Ev f{EvType::kDiskFull};
      f.agent = static_cast<int>(rnd(n));
      std::int64_t at = 200 + static_cast<std::int64_t>(rnd(kFaultWindowMs - 1200));
      schedule(at, f);
      Ev ok{EvType::kDiskOk};
      ok.agent = f.agent;
      schedule(at + 100 + static_cast<std::int64_t>(rnd(800)), ok);
    }
    slow_disk_ = rnd(5) == 0;
    squeeze_worker_ = rnd(4) == 0;
    spawn_faults_ = rnd(4) == 0;
  }
  if (opt_.squeeze_worker) squeeze_worker_ = true;
  // The hostile host, drawn from its own random source so that seeds without it run as
  // they did before it existed.
  hostile_ = opt_.hostile || (all && hostile_rng_() % 4 == 0);
  // Deferred durability in half the seeds, from a source of its own (the other draws
  // stay as they were).
  deferred_sync_ = opt_.deferred_sync && (((opt_.seed * 0x9E3779B97F4A7C15ULL) >> 61) & 1);
  if (hostile_) make_hostile();
  for (int k = 0; k < 3; ++k) {
    schedule(static_cast<std::int64_t>(rnd(kFaultWindowMs)), Ev{EvType::kForge});
  }
}

}  // namespace vow::sim
