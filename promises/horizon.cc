#include "promises/horizon.h"

#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <tuple>
#include <vector>

#include "promises/limits.h"
#include "promises/planner.h"

namespace vow::promises {
namespace {

struct Cut {
  const Ledger& ledger;
  const VersionVector& cut;
  bool behind(const Statement& st) const {
    auto it = cut.find(st.author);
    return it != cut.end() && st.seq <= it->second;
  }
};

// Bound claims of a job among those behind the cut (ClaimBook::bind_claims' rules).
std::set<const Statement*> bound_claims(const Cut& c, const Digest& job,
                                        const std::vector<const Statement*>& claims) {
  std::vector<const Statement*> order = claims;
  std::stable_sort(order.begin(), order.end(), [](const Statement* a, const Statement* b) {
    return std::get<Claim>(a->body).epoch < std::get<Claim>(b->body).epoch;
  });
  std::set<const Statement*> bound;
  for (const Statement* st : order) {
    const auto& cl = std::get<Claim>(st->body);
    if (c.ledger.equivocating(st->author)) continue;
    const Statement* adv = c.ledger.advert_at(st->author, st->seq);
    bool promised = false;
    if (adv != nullptr) {
      for (const auto& p : std::get<Advert>(adv->body).promises) {
        promised = promised || (p.stage_digest == cl.job.stage_digest && p.capacity > 0);
      }
    }
    if (!promised || cl.epoch == 0 || (cl.epoch == 1) == cl.supersedes.has_value()) continue;
    if (cl.epoch > 1 && !c.ledger.is_retired(cl.supersedes->author, cl.supersedes->seq)) {
      const Statement* prev = c.ledger.get(cl.supersedes->author, cl.supersedes->seq);
      const Claim* pc = prev != nullptr ? std::get_if<Claim>(&prev->body) : nullptr;
      if (pc == nullptr || !c.behind(*prev) || pc->job.job != job || pc->epoch + 1 != cl.epoch ||
          bound.count(prev) == 0) {
        continue;
      }
    }
    bound.insert(st);
  }
  return bound;
}

// The jobs planned from the statements at the cut (pipeline definitions, adverts in
// force and source versions there; `canonical`: each settled job's canonical result as
// it stands once the horizon applies), and the stages whose jobs that plan fixes: those
// planned or done (a pending or blocked stage's current jobs are not known yet).
struct CutPlan {
  Plan plan;
  std::set<std::pair<std::string, std::string>> fixed;  // (pipeline, stage)
};

CutPlan plan_at_cut(const Ledger& ledger, const VersionVector& cut,
                    const std::map<Digest, const Statement*>& canonical) {
  auto behind = [&](const Statement& st) {
    auto it = cut.find(st.author);
    return it != cut.end() && st.seq <= it->second;
  };
  std::map<Digest, std::shared_ptr<const Pipeline>> defs;  // by digest: one order everywhere
  for (const Statement* st : ledger.pipeline_statements()) {
    const auto& def = std::get<PipelineDef>(st->body);
    if (!behind(*st) || defs.count(def.digest)) continue;
    auto p = parse_canonical_pipeline(def.canonical);
    if (p && p->digest == def.digest) defs.emplace(def.digest, std::make_shared<const Pipeline>(*p));
  }
  std::vector<std::shared_ptr<const Pipeline>> pipelines;
  for (const auto& [d, p] : defs) pipelines.push_back(p);
  std::map<AgentKey, const Statement*> adverts;
  for (const auto& [author, seq] : cut) {
    if (const Statement* a = ledger.advert_at(author, seq + 1)) adverts.emplace(author, a);
  }
  PlanInputs in;
  in.adverts = &adverts;
  in.source_version = [&](const std::string& pipeline, const std::string& source) {
    return ledger.source_version_at(pipeline, source, cut);
  };
  JobOutcomes outcomes;
  outcomes.canonical_statement = [&](const Digest& job) -> const Statement* {
    auto it = canonical.find(job);
    return it == canonical.end() ? nullptr : it->second;
  };
  outcomes.canonical = [&](const Digest& job) -> const JobResult* {
    auto it = canonical.find(job);
    return it == canonical.end() ? nullptr : &std::get<JobResult>(it->second->body);
  };
  outcomes.failed = [](const Digest&, int) { return false; };
  CutPlan out;
  out.plan = make_plan(pipelines, in, outcomes);
  for (const auto& sp : out.plan.stages) {
    if (sp.state == StageState::kPlanned || sp.state == StageState::kDone) {
      out.fixed.insert({sp.pipeline, sp.stage});
    }
  }
  return out;
}

// A job settled at the cut: its statements there.
struct Settled {
  const JobStatements* js = nullptr;
  std::vector<const Statement*> results;  // behind the cut
  std::vector<const Statement*> claims;   // behind the cut
  std::vector<const Statement*> ok;       // bound and successful
  bool settled_before = false;
};

// The runs of a job that ended behind the cut (the claimant's result or release of that
// epoch is there too); a claim still open may bind a result published after the cut.
std::set<std::pair<AgentKey, std::uint32_t>> ended_runs(const Cut& c, const JobStatements& js,
                                                        const std::vector<const Statement*>& results) {
  std::set<std::pair<AgentKey, std::uint32_t>> ended;
  for (const Statement* st : results) ended.insert({st->author, statement_epoch(*st)});
  for (const Statement* st : js.releases) {
    if (c.behind(*st)) ended.insert({st->author, statement_epoch(*st)});
  }
  return ended;
}

// Adds the digests a result read (an input, and each entry of a directory input).
void add_inputs(const JobResult& r, std::set<Digest>& out) {
  for (const auto& in : r.inputs) {
    out.insert(in.artifact.digest);
    for (const auto& e : in.artifact.entries) out.insert(e.digest);
  }
}

// The settled jobs that are superseded at the cut: the plan made from the statements
// there fixes their stage's jobs (planned or done) and does not have them, no run of
// theirs is still open there, no result behind the cut that stays read an output of
// theirs or an entry of one (so the lineage of what stays stays whole), and no run of a
// job the plan there does not have is open there without a result (what it read is not
// known).
std::set<Digest> superseded_jobs(const Ledger& ledger, const Cut& c,
                                 const std::map<Digest, Settled>& settled,
                                 const std::map<Digest, const Statement*>& canonical,
                                 std::set<Digest>& read, bool& stale_open, bool& waiting) {
  CutPlan at = plan_at_cut(ledger, c.cut, canonical);
  // The plan at the last horizon's cut (the floors), with the results settled there:
  // every member of this horizon endorsed that one holding every statement behind it,
  // and this cut holds each member's endorsement. A job settled there already and
  // superseded there too was no longer planned by any member after its endorsement
  // (short of a source changed back to what it was), so every run over its outputs
  // began before, and its claim or result is behind this cut, where the rules below see
  // it. A job superseded only since (the change behind this cut alone), or settled only
  // since, may have been read by a run an agent cut off since began before the change
  // reached it, published after this cut where nothing here shows it: it waits for the
  // next horizon (docs/storage.md, "Superseded jobs").
  // Made only for a job superseded at the cut (a second pass over every job).
  std::optional<CutPlan> before;
  auto plan_before = [&]() -> const CutPlan& {
    if (!before) {
      VersionVector floor_cut;
      for (const auto& [author, fl] : ledger.floors()) {
        if (fl != 0) floor_cut.emplace(author, fl);
      }
      std::map<Digest, const Statement*> canonical_at_floor;
      for (const auto& [job, st] : canonical) {
        if (ledger.settled(st->author, st->seq)) canonical_at_floor.emplace(job, st);
      }
      before = plan_at_cut(ledger, floor_cut, canonical_at_floor);
    }
    return *before;
  };
  waiting = false;
  // A run still open at the cut of a job the plan there does not have, with no result
  // behind the cut: what it read is not known from the statements there (a claim does
  // not name its inputs), so no source version may go while it is open.
  stale_open = false;
  for (const auto& [job, js] : ledger.jobs()) {
    if (stale_open) break;
    if (at.plan.find(job) != nullptr) continue;
    if (std::any_of(js.results.begin(), js.results.end(),
                    [&](const Statement* st) { return c.behind(*st); })) {
      continue;
    }
    auto ended = ended_runs(c, js, {});
    stale_open = std::any_of(js.claims.begin(), js.claims.end(), [&](const Statement* st) {
      return c.behind(*st) && !ended.count({st->author, statement_epoch(*st)});
    });
  }
  // Nor may a superseded job go then: the open run may have read its outputs (a run of
  // a downstream job over an upstream output, both superseded by a source change, begun
  // before the change, its result published after this cut by an agent cut off then).
  if (stale_open) return {};
  std::set<Digest> gone;
  for (const auto& [job, s] : settled) {
    // Its stage as its canonical result names it (the same statement on every agent:
    // results arrive in different orders).
    const JobRef& ref = std::get<JobResult>(canonical.at(job)->body).job;
    if (!at.fixed.count({ref.pipeline, ref.stage}) || at.plan.find(job) != nullptr) continue;
    if (!s.settled_before || !plan_before().fixed.count({ref.pipeline, ref.stage}) ||
        plan_before().plan.find(job) != nullptr) {
      waiting = true;
      continue;
    }
    auto ended = ended_runs(c, *s.js, s.results);
    bool open = std::any_of(s.claims.begin(), s.claims.end(), [&](const Statement* st) {
      return !ended.count({st->author, statement_epoch(*st)});
    });
    if (!open) gone.insert(job);
  }
  // What the results that stay read, then the superseded jobs whose outputs are among it
  // stay too (and what they read), until nothing changes.
  for (const auto& [job, js] : ledger.jobs()) {
    if (gone.count(job)) continue;
    for (const Statement* st : js.results) {
      if (c.behind(*st)) add_inputs(std::get<JobResult>(st->body), read);
    }
  }
  for (bool again = true; again && !gone.empty();) {
    again = false;
    for (auto it = gone.begin(); it != gone.end();) {
      const Settled& s = settled.at(*it);
      // Read whole, or an entry of it (a `foreach` over a tree output reads each entry
      // as its own input: lineage names the tree that holds it).
      bool needed = std::any_of(s.ok.begin(), s.ok.end(), [&](const Statement* st) {
        const auto& outs = std::get<JobResult>(st->body).outputs;
        return std::any_of(outs.begin(), outs.end(), [&](const NamedArtifact& o) {
          const auto& es = o.artifact.entries;
          return read.count(o.artifact.digest) != 0 ||
                 std::any_of(es.begin(), es.end(),
                             [&](const TreeEntry& e) { return read.count(e.digest) != 0; });
        });
      });
      if (!needed) {
        ++it;
        continue;
      }
      for (const Statement* st : s.results) add_inputs(std::get<JobResult>(st->body), read);
      it = gone.erase(it);
      again = true;
    }
  }
  return gone;
}

// The digests of a source version: its artifact and each of its entries.
template <typename F>
void each_digest(const SourceVersion& v, F&& f) {
  f(v.artifact.digest);
  for (const auto& e : v.artifact.entries) f(e.digest);
}

// Old source versions (docs/storage.md, "Old source versions"): per provider's line of
// a dataset at the cut, the counted versions before the first one that must stay go,
// with every other statement of that line published before it. A version stays if it
// is the line's last at the cut, if the version after it came after the last horizon's
// cut, or if a result that stays read a digest of it that the last one does not have
// (lineage names the newest version holding a digest, so one the last version also
// holds loses nothing). Returns the line bases and adds the retired seqs.
std::vector<HorizonLineBase> retire_source_versions(
    const Ledger& ledger, const Cut& c, const std::set<Digest>& read,
    const std::map<AgentKey, std::uint32_t>& index,
    std::map<std::uint32_t, std::vector<std::uint64_t>>& retired) {
  std::vector<HorizonLineBase> bases;
  std::set<std::pair<Ledger::Dataset, AgentKey>> lines;
  ledger.for_each_source_line([&](const Ledger::Dataset& d, const AgentKey& a) {
    lines.insert({d, a});
  });
  for (const auto& [dataset, author] : lines) {
    auto at = index.find(author);
    if (at == index.end()) continue;
    std::vector<const Statement*> chain = ledger.line(dataset, author, &c.cut);
    if (chain.size() < 2) continue;
    std::set<Digest> last;
    each_digest(std::get<SourceVersion>(chain.back()->body),
                [&](const Digest& d) { last.insert(d); });
    std::size_t b = 0;
    for (; b + 1 < chain.size(); ++b) {
      // Only once the version after it was behind the last horizon's cut: every member
      // endorsed that horizon holding it, so a run of a job over this one began before
      // its endorsement, which this cut holds (a claim or result here, seen above).
      if (chain[b + 1]->seq > ledger.floor(author)) break;
      bool needed = false;
      each_digest(std::get<SourceVersion>(chain[b]->body), [&](const Digest& d) {
        needed = needed || (read.count(d) != 0 && last.count(d) == 0);
      });
      if (needed) break;
    }
    if (b == 0) continue;
    const std::uint64_t base_seq = chain[b]->seq;
    for (const Statement* st : *ledger.line_statements(dataset, author)) {
      if (st->seq < base_seq) retired[at->second].push_back(st->seq);
    }
    bases.push_back(HorizonLineBase{at->second, dataset.first, dataset.second,
                                    std::get<SourceVersion>(chain[b]->body).version, base_seq});
  }
  return bases;
}

}  // namespace

std::optional<Horizon> compute_horizon(const Ledger& ledger, const VersionVector& cut,
                                       std::uint64_t number, const Digest& previous,
                                       bool superseded, bool* superseded_waiting) {
  Horizon h;
  h.number = number;
  h.previous = previous;
  h.superseded = superseded;
  const VersionVector mine = ledger.version_vector();
  std::map<AgentKey, std::uint32_t> index;
  for (const auto& [author, seq] : cut) {
    if (seq == 0) continue;
    auto m = mine.find(author);
    if (m == mine.end() || seq > m->second || seq < ledger.floor(author)) return std::nullopt;
    auto prefix = ledger.prefix_digest(author, seq);
    if (!prefix) return std::nullopt;
    index[author] = static_cast<std::uint32_t>(h.cuts.size());
    // An author cut at its floor (a checkpoint names every author with one) said nothing
    // since the last horizon: no member, as when it is not cut at all.
    bool member = ledger.advert_at(author, seq + 1) != nullptr && !ledger.equivocating(author) &&
                  seq != ledger.floor(author);
    h.cuts.push_back(HorizonCut{author, seq, *prefix, member});
  }
  const Cut c{ledger, cut};
  std::map<std::uint32_t, std::vector<std::uint64_t>> retired;  // by cut index
  // Settled jobs, and their canonical result once this horizon applies (ClaimBook's
  // min-register among the settled results), for the plan at the cut.
  std::map<Digest, Settled> settled_jobs;
  std::map<Digest, const Statement*> canonical;
  // Without superseded jobs a job whose statements are all settled results adds nothing
  // to a horizon: only the active ones are read (Ledger::active_jobs), so a horizon's
  // cost follows what changed since the last one. The plan at the cut needs them all.
  auto each_job = [&](auto&& f) {
    if (superseded) {
      for (const auto& [job, js] : ledger.jobs()) f(job, js);
      return;
    }
    for (const Digest& job : ledger.active_jobs()) {
      if (const JobStatements* js = ledger.job(job)) f(job, *js);
    }
  };
  each_job([&](const Digest& job, const JobStatements& js) {
    auto behind = [&](const std::vector<const Statement*>& v) {
      std::vector<const Statement*> out;
      for (const Statement* st : v) {
        if (c.behind(*st)) out.push_back(st);
      }
      return out;
    };
    std::vector<const Statement*> results = behind(js.results);
    if (results.empty()) return;
    std::vector<const Statement*> claims = behind(js.claims);
    std::set<const Statement*> bound = bound_claims(c, job, claims);
    // Bound successful results behind the cut.
    std::vector<const Statement*> ok;
    for (const Statement* st : results) {
      const auto& r = std::get<JobResult>(st->body);
      if (!r.ok || ledger.equivocating(st->author)) continue;
      bool is_bound = ledger.settled(st->author, st->seq);
      for (const Statement* cl : bound) {
        is_bound = is_bound || (cl->author == st->author && cl->seq < st->seq &&
                                std::get<Claim>(cl->body).epoch == r.epoch);
      }
      if (is_bound) ok.push_back(st);
    }
    if (ok.empty()) return;
    // A job settled by an earlier horizon keeps its settled results as its candidates:
    // later successful ones stay as evidence, unsettled (they would compete with them).
    const bool settled_before = std::any_of(ok.begin(), ok.end(), [&](const Statement* st) {
      return ledger.settled(st->author, st->seq);
    });
    const Statement* best = nullptr;
    std::tuple<std::uint32_t, Digest, AgentKey, std::uint64_t> best_key;
    for (const Statement* st : ok) {
      if (settled_before && !ledger.settled(st->author, st->seq)) continue;
      const auto& r = std::get<JobResult>(st->body);
      auto k = std::make_tuple(r.epoch, outputs_digest(r), st->author, st->seq);
      if (best == nullptr || k < best_key) {
        best = st;
        best_key = k;
      }
    }
    canonical[job] = best;
    settled_jobs[job] =
        Settled{&js, std::move(results), std::move(claims), std::move(ok), settled_before};
  });
  std::set<Digest> read;  // what the results that stay read (with superseded)
  bool stale_open = false;
  bool waiting = false;
  std::set<Digest> gone =
      superseded ? superseded_jobs(ledger, c, settled_jobs, canonical, read, stale_open, waiting)
                 : std::set<Digest>{};
  if (superseded_waiting != nullptr) *superseded_waiting = waiting;
  // Old source versions go with superseded jobs: with those kept, every version stays
  // (the results of old jobs name them in their lineage).
  if (superseded && !stale_open) h.bases = retire_source_versions(ledger, c, read, index, retired);
  for (auto& [job, s] : settled_jobs) {
    const JobStatements& js = *s.js;
    const std::vector<const Statement*>& ok = s.ok;
    const std::vector<const Statement*>& results = s.results;
    const std::vector<const Statement*>& claims = s.claims;
    const bool settled_before = s.settled_before;
    // A superseded job: every statement of it behind the cut goes, its settled results
    // too (docs/storage.md, "Superseded jobs").
    if (gone.count(job)) {
      for (const auto* v : {&js.claims, &js.releases, &js.results, &js.accepts}) {
        for (const Statement* st : *v) {
          if (c.behind(*st)) retired[index.at(st->author)].push_back(st->seq);
        }
      }
      continue;
    }
    std::set<std::pair<AgentKey, std::uint32_t>> ended = ended_runs(c, js, results);
    std::set<const Statement*> keep(ok.begin(), ok.end());
    std::uint32_t settled_epoch = 0;
    for (const Statement* st : ok) settled_epoch = std::max(settled_epoch, statement_epoch(*st));
    for (const Statement* st : ok) {
      if (!settled_before) {
        h.settled.push_back(
            HorizonRef{index.at(st->author), st->seq, signed_digest(st->signed_form)});
      }
    }
    // A result kept without being settled (a job settled by an earlier horizon: a later
    // bound one stays as evidence) keeps the claim that binds it, and the release of that
    // claim if its author gave it up (a lost tie-break): without the claim the result
    // would count for nothing, and a run that read its output (a downstream job planned
    // from it before the settled one arrived) would lose its lineage.
    std::set<std::pair<AgentKey, std::uint32_t>> binds_kept;
    for (const Statement* st : ok) {
      if (settled_before && !ledger.settled(st->author, st->seq)) {
        binds_kept.insert({st->author, statement_epoch(*st)});
      }
    }
    for (const Statement* st : claims) {
      const std::uint32_t e = statement_epoch(*st);
      if (e <= settled_epoch && ended.count({st->author, e}) &&
          !binds_kept.count({st->author, e})) {
        retired[index.at(st->author)].push_back(st->seq);
      }
    }
    for (const Statement* st : results) {
      if (!keep.count(st) && statement_epoch(*st) <= settled_epoch) {
        retired[index.at(st->author)].push_back(st->seq);
      }
    }
    for (const auto* v : {&js.releases, &js.accepts}) {
      for (const Statement* st : *v) {
        // (A run kept with its claim keeps its release: the claim was given up.)
        if (v == &js.releases && binds_kept.count({st->author, statement_epoch(*st)})) continue;
        if (c.behind(*st) && statement_epoch(*st) <= settled_epoch) {
          retired[index.at(st->author)].push_back(st->seq);
        }
      }
    }
  }
  for (auto& [cut_index, seqs] : retired) {
    std::sort(seqs.begin(), seqs.end());
    for (std::size_t i = 0; i < seqs.size();) {
      std::size_t j = i;
      while (j + 1 < seqs.size() && seqs[j + 1] == seqs[j] + 1) ++j;
      h.retired.push_back(HorizonRange{cut_index, seqs[i], seqs[j]});
      i = j + 1;
    }
  }
  std::sort(h.settled.begin(), h.settled.end(), [](const HorizonRef& a, const HorizonRef& b) {
    return std::tie(a.cut, a.seq) < std::tie(b.cut, b.seq);
  });
  h.content = horizon_content(h);
  return h;
}

std::optional<Horizon> checkpoint_of(const Ledger& ledger, const Horizon& delta) {
  Horizon h;
  h.number = delta.number;
  h.previous = delta.previous;
  h.cuts = delta.cuts;
  h.superseded = delta.superseded;
  h.checkpoint = true;
  std::map<AgentKey, std::uint32_t> index;
  for (std::uint32_t i = 0; i < h.cuts.size(); ++i) index[h.cuts[i].author] = i;
  for (const auto& [author, fl] : ledger.floors()) {
    if (fl != 0 && !index.count(author)) return std::nullopt;
  }
  // What `delta` retires and settles, per cut.
  std::map<std::uint32_t, std::map<std::uint64_t, std::uint64_t>> gone;  // first -> last
  for (const auto& r : delta.retired) gone[r.cut][r.first] = r.last;
  std::set<std::pair<std::uint32_t, std::uint64_t>> settles;
  for (const auto& r : delta.settled) settles.insert({r.cut, r.seq});
  auto retired_by_delta = [&](std::uint32_t cut, std::uint64_t seq) {
    auto g = gone.find(cut);
    if (g == gone.end()) return false;
    auto it = g->second.upper_bound(seq);
    if (it == g->second.begin()) return false;
    --it;
    return seq <= it->second;
  };
  for (std::uint32_t i = 0; i < h.cuts.size(); ++i) {
    const HorizonCut& c = h.cuts[i];
    // What stays behind the cut: the statements kept, and the void slots (they stay void,
    // as on every agent whose prefix digest at the cut is the same; a joiner learns of
    // them as before).
    std::map<std::uint64_t, std::uint64_t> stays;  // first -> last
    ledger.for_each_void(c.author, [&](std::uint64_t first, std::uint64_t last) {
      if (first <= c.seq) stays[first] = std::min(last, c.seq);
    });
    ledger.for_each_of(c.author, [&](const Statement& st) {
      if (st.seq > c.seq || st.kind() == StatementKind::kHorizon || retired_by_delta(i, st.seq)) {
        return;
      }
      stays[st.seq] = st.seq;
      if (st.kind() == StatementKind::kResult &&
          (ledger.settled(st.author, st.seq) || settles.count({i, st.seq}))) {
        h.settled.push_back(HorizonRef{i, st.seq, signed_digest(st.signed_form)});
      }
    });
    std::uint64_t next = 1;  // the first slot not yet kept or retired
    for (const auto& [first, last] : stays) {
      if (first > next) h.retired.push_back(HorizonRange{i, next, first - 1});
      next = std::max(next, last + 1);
    }
    if (next <= c.seq) h.retired.push_back(HorizonRange{i, next, c.seq});
  }
  // Every line base: those before, moved on by `delta`'s.
  std::map<std::tuple<std::string, std::string, std::uint32_t>,
           std::pair<std::uint64_t, std::uint64_t>>
      bases;
  bool unknown = false;
  ledger.for_each_line_base([&](const Ledger::Dataset& d, const AgentKey& author,
                                std::uint64_t version, std::uint64_t seq) {
    auto at = index.find(author);
    if (at == index.end()) {
      unknown = true;
      return;
    }
    bases[{d.first, d.second, at->second}] = {version, seq};
  });
  if (unknown) return std::nullopt;
  for (const auto& b : delta.bases) {
    auto& base = bases[{b.pipeline, b.source, b.cut}];
    if (b.version > base.first) base = {b.version, b.seq};
  }
  for (const auto& [key, base] : bases) {
    const auto& [pipeline, source, cut] = key;
    h.bases.push_back(HorizonLineBase{cut, pipeline, source, base.first, base.second});
  }
  if (h.retired.size() > kMaxCheckpointEntries || h.settled.size() > kMaxCheckpointEntries) {
    return std::nullopt;
  }
  h.content = horizon_content(h);
  return h;
}

std::uint64_t horizon_retired_statements(const Horizon& h) {
  std::uint64_t n = 0;
  for (const auto& r : h.retired) n += r.last >= r.first ? r.last - r.first + 1 : 0;
  return n;
}

}  // namespace vow::promises
