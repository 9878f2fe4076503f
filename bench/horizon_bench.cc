// What a ledger horizon costs the agent that computes it (BENCHMARKS.md, docs/storage.md
// "The ledger horizon"): one agent's ledger holding a `foreach` stage of N shards run
// twice (source version 1, then version 2 with every entry changed: N jobs current, N
// superseded), each job a claim and a successful result. Timed on the same ledger:
// compute_horizon without and with retiring superseded jobs (the latter also makes the
// plan at the cut over every job), and applying the latter. This work runs on the
// agent's loop once per `horizon_every` statements, on the proposer and on every
// member that checks it. Then 1% more jobs are run and the next horizon (without
// retiring superseded jobs) is computed: what a horizon costs once the ledger is large,
// when it reads only the jobs active since the last one. Last, that horizon's
// checkpoint form (docs/storage.md, "Checkpoints": it lists every result kept) is made,
// applied to the same ledger, and applied alone to an empty one (a joiner's first step).
// Usage: horizon_bench [--sizes 1000,10000,100000] [--runs N]
// Prints one line per size: the median of each figure over the runs.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "promises/config.h"
#include "promises/horizon.h"

using namespace vow;
using namespace vow::promises;

namespace {

double now_ms() {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct World {
  Pipeline p;
  std::vector<Statement> statements;
  std::uint64_t seq = 0;
  AgentKey author;

  World() {
    author.bytes.fill(7);
    auto out = parse_pipeline(R"([pipeline]
name = "bench"
[[source]]
name = "items"
[[stage]]
name = "noop"
inputs = ["items"]
foreach = "items"
outputs = ["o"]
run = "true"
)", "bench.toml");
    if (!out.value) std::abort();
    p = *out.value;
    Advert a;
    a.name = "a";
    a.promises.push_back({"bench", "noop", p.stages[0].digest, 2});
    a.sources.push_back({"bench", "items"});
    add(a);
    add(PipelineDef{p.name, p.digest, canonical_pipeline(p)});
  }
  void add(StatementBody body) {
    Statement st;
    st.author = author;
    st.seq = ++seq;
    st.body = std::move(body);
    statements.push_back(std::move(st));
  }
  // Version v of the source (N entries), and a run of every shard over it.
  void generation(std::uint64_t v, std::size_t n) {
    std::vector<TreeEntry> entries;
    for (std::size_t i = 0; i < n; ++i) {
      char name[32];
      std::snprintf(name, sizeof name, "item-%06zu", i);
      entries.push_back(TreeEntry{name, EntryKind::kFile,
                                  blake2b(std::string(name) + "@" + std::to_string(v))});
    }
    ArtifactRef tree;
    tree.digest = *tree_digest(entries);
    tree.is_tree = true;
    tree.entries = entries;
    add(SourceVersion{"bench", "items", v, tree});
    const Stage& s = p.stages[0];
    for (const auto& e : entries) {
      JobRef r;
      r.job = job_id(s.digest, {JobInput{"items", e.digest}}, e.name);
      r.pipeline = "bench";
      r.stage = "noop";
      r.stage_digest = s.digest;
      r.shard = e.name;
      add(Claim{r, 1, 0, std::nullopt});
      JobResult res;
      res.job = r;
      res.epoch = 1;
      res.ok = true;
      res.inputs.push_back({"items", ArtifactRef{e.digest, false, 1, {}}});
      res.outputs.push_back({"o", ArtifactRef{blake2b(e.name + "-out@" + std::to_string(v)),
                                              false, 1, {}}});
      add(res);
    }
  }
  // K more jobs of the stage (shards beyond the source's entries), each run once.
  void more(std::size_t k) {
    const Stage& s = p.stages[0];
    for (std::size_t i = 0; i < k; ++i) {
      std::string name = "extra-" + std::to_string(i);
      Digest in = blake2b(name);
      JobRef r;
      r.job = job_id(s.digest, {JobInput{"items", in}}, name);
      r.pipeline = "bench";
      r.stage = "noop";
      r.stage_digest = s.digest;
      r.shard = name;
      add(Claim{r, 1, 0, std::nullopt});
      JobResult res;
      res.job = r;
      res.epoch = 1;
      res.ok = true;
      res.inputs.push_back({"items", ArtifactRef{in, false, 1, {}}});
      res.outputs.push_back({"o", ArtifactRef{blake2b(name + "-out"), false, 1, {}}});
      add(res);
    }
  }
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::size_t> sizes = {1000, 10000, 100000};
  int runs = 3;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--sizes") == 0 && i + 1 < argc) {
      sizes.clear();
      for (char* tok = std::strtok(argv[++i], ","); tok; tok = std::strtok(nullptr, ",")) {
        sizes.push_back(std::strtoull(tok, nullptr, 10));
      }
    } else if (std::strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
      runs = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: horizon_bench [--sizes 1000,10000,100000] [--runs N]\n");
      return 2;
    }
  }
  std::printf("%10s %12s %14s %14s %12s %10s %10s %14s %10s %12s %12s %14s\n", "shards",
              "statements", "compute ms", "+superseded ms", "apply ms", "retired", "kept",
              "next (1%) ms", "cp ms", "cp apply ms", "cp alone ms", "cp entries");
  for (std::size_t n : sizes) {
    World w;
    w.generation(1, n);
    w.generation(2, n);
    const std::size_t first_part = w.statements.size();
    w.more(std::max<std::size_t>(1, n / 100));
    std::vector<double> plain, superseded, apply, next, cp_make, cp_apply, cp_alone;
    std::size_t cp_entries = 0;
    std::uint64_t retired = 0;
    std::size_t kept = 0;
    for (int r = 0; r < runs; ++r) {
      Ledger l;
      for (std::size_t i = 0; i < first_part; ++i) l.add(w.statements[i]);
      double t0 = now_ms();
      auto h0 = compute_horizon(l, l.version_vector(), 1, Digest{}, false);
      double t1 = now_ms();
      auto h1 = compute_horizon(l, l.version_vector(), 1, Digest{}, true);
      double t2 = now_ms();
      if (!h0 || !h1) return 1;
      l.apply_horizon(*h1);
      double t3 = now_ms();
      plain.push_back(t1 - t0);
      superseded.push_back(t2 - t1);
      apply.push_back(t3 - t2);
      retired = horizon_retired_statements(*h1);
      kept = l.size();
      for (std::size_t i = first_part; i < w.statements.size(); ++i) l.add(w.statements[i]);
      double t4 = now_ms();
      auto h2 = compute_horizon(l, l.version_vector(), 2, h1->content, false);
      double t5 = now_ms();
      if (!h2 || h2->settled.size() != std::max<std::size_t>(1, n / 100)) return 1;
      next.push_back(t5 - t4);
      auto cp = checkpoint_of(l, *h2);
      double t6 = now_ms();
      if (!cp) return 1;
      cp_entries = cp->retired.size() + cp->settled.size();
      Ledger joiner;
      double t7 = now_ms();
      joiner.apply_horizon(*cp);
      double t8 = now_ms();
      l.apply_horizon(*cp);
      double t9 = now_ms();
      cp_make.push_back(t6 - t5);
      cp_alone.push_back(t8 - t7);
      cp_apply.push_back(t9 - t8);
    }
    std::printf("%10zu %12zu %14.1f %14.1f %12.1f %10llu %10zu %14.1f %10.1f %12.1f %12.1f %14zu\n",
                n, first_part, median(plain), median(superseded), median(apply),
                static_cast<unsigned long long>(retired), kept, median(next), median(cp_make),
                median(cp_apply), median(cp_alone), cp_entries);
    std::fflush(stdout);
  }
  return 0;
}
