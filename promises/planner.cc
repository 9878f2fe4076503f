#include "promises/planner.h"

#include <algorithm>
#include <set>

namespace vow::promises {
namespace {

// The output of a finished stage as its consumers see it.
struct StageOutput {
  ArtifactRef artifact;
  std::vector<Accept::Binding> bindings;  // `input` holds a suffix ("" or "/shard")
};

struct StageResult {
  StageState state = StageState::kPending;
  std::map<std::string, StageOutput> outputs;
};

// Stages in dependency order (Kahn, ties by name); stages in a cycle or depending on an
// unknown stage are left out and reported blocked by the caller.
std::vector<const Stage*> topo_order(const Pipeline& p) {
  std::map<std::string, const Stage*> by_name;
  for (const auto& s : p.stages) by_name[s.name] = &s;
  std::set<std::string> placed;
  std::vector<const Stage*> out;
  bool progress = true;
  while (progress) {
    progress = false;
    for (const auto& [name, s] : by_name) {
      if (placed.count(name)) continue;
      bool ok = std::all_of(s->inputs.begin(), s->inputs.end(), [&](const InputRef& in) {
        return in.is_source() || placed.count(in.stage);
      });
      if (ok) {
        placed.insert(name);
        out.push_back(s);
        progress = true;
      }
    }
  }
  return out;
}

// Stage digests promised by the latest advert of each agent, by (pipeline, stage).
Promised current_promises(const PlanInputs& in) {
  Promised out;
  for (const auto& [author, st] : *in.adverts) {
    for (const auto& pr : std::get<Advert>(st->body).promises) {
      if (pr.capacity <= 0) continue;
      auto& agents = out[{pr.pipeline, pr.stage}][pr.stage_digest];
      if (agents.empty() || agents.back() != author) agents.push_back(author);
    }
  }
  return out;
}

// One pipeline name: its known definitions (own files first) and what adverts promise.
std::shared_ptr<const Pipeline> current_definition(const std::string& name,
                                                   const std::vector<const Pipeline*>& defs,
                                                   const Promised& promised,
                                                   CurrentDefinitions& out) {
  // A stage definition by digest, from the first definition holding it (own files come
  // first: they carry timeout and retries).
  auto find_stage = [&](const std::string& stage, const Digest& digest) -> const Stage* {
    for (const Pipeline* p : defs) {
      const Stage* s = p->find_stage(stage);
      if (s != nullptr && s->digest == digest) return s;
    }
    return nullptr;
  };
  std::map<std::string, const Stage*> chosen;
  for (auto it = promised.lower_bound({name, ""}); it != promised.end() && it->first.first == name;
       ++it) {
    const std::string& stage = it->first.second;
    const Stage* best = nullptr;
    std::size_t best_count = 0;
    for (const auto& [digest, agents] : it->second) {  // ascending digests: ties to the least
      const Stage* s = find_stage(stage, digest);
      if (s != nullptr && agents.size() > best_count) {
        best = s;
        best_count = agents.size();
      }
    }
    if (it->second.size() > 1) {
      out.conflicts.push_back(
          StageConflict{name, stage, best != nullptr ? best->digest : Digest{}, it->second});
    }
    if (best != nullptr) chosen[stage] = best;
  }
  // The definition most like the current one gives the stages nobody promises (shown
  // pending) and the sources; ties to the least pipeline digest.
  const Pipeline* base = nullptr;
  std::size_t base_matches = 0;
  for (const Pipeline* p : defs) {
    std::size_t matches = 0;
    for (const auto& s : p->stages) {
      auto c = chosen.find(s.name);
      if (c != chosen.end() && c->second->digest == s.digest) ++matches;
    }
    if (base == nullptr || matches > base_matches ||
        (matches == base_matches && p->digest < base->digest)) {
      base = p;
      base_matches = matches;
    }
  }
  auto current = std::make_shared<Pipeline>();
  current->name = name;
  current->sources = base->sources;
  current->file = base->file;
  std::set<std::string> placed;
  for (const auto& s : base->stages) {
    auto c = chosen.find(s.name);
    if (c != chosen.end()) {
      current->stages.push_back(*c->second);
    } else {
      current->stages.push_back(s);
      out.unpromised.insert({name, s.name});
    }
    placed.insert(s.name);
  }
  for (const auto& [stage, s] : chosen) {
    if (!placed.count(stage)) current->stages.push_back(*s);
  }
  current->digest = pipeline_digest(*current);
  return current;
}

CurrentDefinitions current_definitions(const std::vector<std::shared_ptr<const Pipeline>>& known,
                                       const Promised& promised) {
  CurrentDefinitions out;
  std::vector<std::string> names;  // in the order first met
  std::map<std::string, std::vector<const Pipeline*>> by_name;
  for (const auto& p : known) {
    auto& defs = by_name[p->name];
    if (defs.empty()) names.push_back(p->name);
    defs.push_back(p.get());
  }
  for (const auto& name : names) {
    out.pipelines.push_back(current_definition(name, by_name[name], promised, out));
  }
  return out;
}

class PipelinePlanner {
 public:
  PipelinePlanner(const Pipeline& p, const PlanInputs& in, const JobOutcomes& outcomes,
                  const std::set<StageName>& unpromised, Plan& plan)
      : p_(p), in_(in), outcomes_(outcomes), unpromised_(unpromised), plan_(plan) {}

  void run() {
    auto order = topo_order(p_);
    std::set<std::string> ordered;
    for (const Stage* s : order) {
      ordered.insert(s->name);
      plan_stage(*s);
    }
    for (const auto& s : p_.stages) {
      if (ordered.count(s.name)) continue;
      StagePlan sp = base(s);
      sp.state = StageState::kBlocked;
      sp.reason = "input from an unknown stage or a cycle";
      plan_.stages.push_back(std::move(sp));
    }
  }

 private:
  StagePlan base(const Stage& s) const {
    StagePlan sp;
    sp.pipeline = p_.name;
    sp.pipeline_digest = p_.digest;
    sp.stage = s.name;
    sp.stage_digest = s.digest;
    return sp;
  }

  // Resolves one input to its artifact; sets state/reason when it cannot.
  std::optional<StageOutput> resolve(const InputRef& in, StagePlan& sp) {
    if (in.is_source()) {
      const Statement* st = in_.source_version(p_.name, in.name);
      if (st == nullptr) {
        if (sp.state != StageState::kBlocked) {
          sp.state = StageState::kPending;
          sp.reason = "source '" + in.name + "' has no version yet";
        }
        return std::nullopt;
      }
      const auto& sv = std::get<SourceVersion>(st->body);
      return StageOutput{sv.artifact,
                         {Accept::Binding{"", sv.artifact.digest, st->author, st->seq}}};
    }
    auto up = results_.find(in.stage);
    if (up == results_.end() || up->second.state == StageState::kBlocked) {
      sp.state = StageState::kBlocked;
      sp.reason = "upstream stage '" + in.stage + "' is blocked";
      return std::nullopt;
    }
    if (up->second.state != StageState::kDone) {
      if (sp.state != StageState::kBlocked) {
        sp.state = StageState::kPending;
        sp.reason = "waiting for '" + in.to_string() + "'";
      }
      return std::nullopt;
    }
    auto out = up->second.outputs.find(in.name);
    if (out == up->second.outputs.end()) {
      sp.state = StageState::kBlocked;
      sp.reason = "upstream result lacks output '" + in.to_string() + "'";
      return std::nullopt;
    }
    return out->second;
  }

  void plan_stage(const Stage& s) {
    StagePlan sp = base(s);
    StageResult& res = results_[s.name];
    if (unpromised_.count({p_.name, s.name})) {
      sp.state = StageState::kPending;
      sp.reason = "no agent promises it";
      res.state = sp.state;
      plan_.stages.push_back(std::move(sp));
      return;
    }
    sp.state = StageState::kPlanned;
    std::map<std::string, StageOutput> inputs;
    for (const auto& in : s.inputs) {
      auto r = resolve(in, sp);
      if (r) inputs[in.local_name()] = std::move(*r);
    }
    if (sp.state != StageState::kPlanned) {
      res.state = sp.state;
      plan_.stages.push_back(std::move(sp));
      return;
    }
    // One job per shard (or a single job with an empty shard key).
    std::vector<std::pair<std::string, std::map<std::string, StageOutput>>> shards;
    if (s.foreach) {
      // Taken out of `inputs` so that each shard copies only the other inputs.
      const StageOutput dir = std::move(inputs[s.foreach->local_name()]);
      inputs.erase(s.foreach->local_name());
      if (!dir.artifact.is_tree) {
        sp.state = StageState::kBlocked;
        sp.reason = "foreach input '" + s.foreach->to_string() + "' is not a directory";
        res.state = sp.state;
        plan_.stages.push_back(std::move(sp));
        return;
      }
      std::map<std::string_view, const Accept::Binding*> by_suffix;
      for (const auto& b : dir.bindings) by_suffix[b.input] = &b;
      for (const auto& e : dir.artifact.entries) {
        if (shards.size() >= kMaxShardsPerStage) break;
        auto shard_inputs = inputs;
        StageOutput one;
        one.artifact.digest = e.digest;
        one.artifact.is_tree = e.kind == EntryKind::kTree;
        one.bindings.push_back(Accept::Binding{"", e.digest, {}, 0});
        // The producer of the entry is the producer of the directory (or its shard).
        auto b = by_suffix.find("");
        std::string suffix = "/" + e.name;
        if (b == by_suffix.end()) b = by_suffix.find(suffix);
        if (b != by_suffix.end()) {
          one.bindings[0].producer = b->second->producer;
          one.bindings[0].producer_seq = b->second->producer_seq;
        }
        shard_inputs[s.foreach->local_name()] = std::move(one);
        shards.emplace_back(e.name, std::move(shard_inputs));
      }
    } else {
      shards.emplace_back("", std::move(inputs));
    }
    bool all_done = true;
    bool any_failed = false;
    std::vector<std::pair<std::string, const JobResult*>> done_results;
    std::vector<const Statement*> done_statements;
    for (auto& [shard, ins] : shards) {
      PlannedJob job;
      std::vector<JobInput> ids;
      for (auto& [name, so] : ins) {
        ids.push_back(JobInput{name, so.artifact.digest});
        job.inputs.push_back(NamedArtifact{name, so.artifact});
        for (auto b : so.bindings) {
          b.input = name + b.input;
          job.bindings.push_back(std::move(b));
        }
      }
      job.ref.job = job_id(s.digest, std::move(ids), shard);
      job.ref.pipeline = p_.name;
      job.ref.stage = s.name;
      job.ref.stage_digest = s.digest;
      job.ref.shard = shard;
      job.stage = &s;
      job.retries = s.retries;
      job.timeout_ms = s.timeout_ms;
      sp.jobs.push_back(job.ref.job);
      const JobResult* canon = outcomes_.canonical(job.ref.job);
      if (canon != nullptr) {
        done_results.emplace_back(shard, canon);
        done_statements.push_back(outcomes_.canonical_statement(job.ref.job));
      } else {
        all_done = false;
        if (outcomes_.failed(job.ref.job, s.retries)) any_failed = true;
      }
      plan_.jobs.emplace(job.ref.job, std::move(job));
    }
    if (any_failed) {
      sp.state = StageState::kBlocked;
      sp.reason = "a job failed past its retries";
    } else if (all_done) {
      finish_stage(s, sp, res, done_results, done_statements);
    }
    res.state = sp.state;
    plan_.stages.push_back(std::move(sp));
  }

  void finish_stage(const Stage& s, StagePlan& sp, StageResult& res,
                    const std::vector<std::pair<std::string, const JobResult*>>& done,
                    const std::vector<const Statement*>& statements) {
    sp.state = StageState::kDone;
    for (const auto& out_name : s.outputs) {
      StageOutput so;
      if (!s.foreach) {
        const JobResult* r = done.at(0).second;
        auto it = std::find_if(r->outputs.begin(), r->outputs.end(),
                               [&](const NamedArtifact& a) { return a.name == out_name; });
        if (it == r->outputs.end()) continue;  // consumers report it blocked
        so.artifact = it->artifact;
        so.bindings.push_back(
            Accept::Binding{"", it->artifact.digest, statements[0]->author, statements[0]->seq});
      } else {
        std::vector<TreeEntry> entries;
        std::uint64_t size = 0;
        bool complete = true;
        for (std::size_t i = 0; i < done.size(); ++i) {
          const JobResult* r = done[i].second;
          auto it = std::find_if(r->outputs.begin(), r->outputs.end(),
                                 [&](const NamedArtifact& a) { return a.name == out_name; });
          if (it == r->outputs.end()) {
            complete = false;
            break;
          }
          entries.push_back(TreeEntry{done[i].first,
                                      it->artifact.is_tree ? EntryKind::kTree : EntryKind::kFile,
                                      it->artifact.digest});
          size += it->artifact.size_bytes;
          so.bindings.push_back(Accept::Binding{"/" + done[i].first, it->artifact.digest,
                                                statements[i]->author, statements[i]->seq});
        }
        if (!complete) continue;
        auto d = tree_digest(entries);
        if (!d) continue;
        std::sort(entries.begin(), entries.end(),
                  [](const TreeEntry& a, const TreeEntry& b) { return a.name < b.name; });
        so.artifact.digest = *d;
        so.artifact.is_tree = true;
        so.artifact.size_bytes = size;
        so.artifact.entries = std::move(entries);
      }
      sp.outputs[out_name] = so.artifact;
      res.outputs[out_name] = std::move(so);
    }
  }

  const Pipeline& p_;
  const PlanInputs& in_;
  const JobOutcomes& outcomes_;
  const std::set<StageName>& unpromised_;
  Plan& plan_;
  std::map<std::string, StageResult> results_;
};

}  // namespace

const char* stage_state_name(StageState state) {
  switch (state) {
    case StageState::kPending:
      return "pending";
    case StageState::kPlanned:
      return "planned";
    case StageState::kDone:
      return "done";
    case StageState::kBlocked:
      return "blocked";
  }
  return "unknown";
}

std::vector<std::shared_ptr<const Pipeline>> known_pipelines(
    const std::vector<std::shared_ptr<const Pipeline>>& own, const Ledger& ledger,
    std::map<Digest, std::shared_ptr<const Pipeline>>& decoded) {
  std::vector<std::shared_ptr<const Pipeline>> out;
  std::set<Digest> seen;
  for (const auto& p : own) {
    if (seen.insert(p->digest).second) out.push_back(p);
  }
  for (const auto& [digest, st] : ledger.pipelines()) {
    if (seen.count(digest)) continue;
    auto it = decoded.find(digest);
    if (it == decoded.end()) {
      const auto& def = std::get<PipelineDef>(st->body);
      auto p = parse_canonical_pipeline(def.canonical);
      std::shared_ptr<const Pipeline> ptr;
      if (p && p->digest == digest) ptr = std::make_shared<const Pipeline>(std::move(*p));
      it = decoded.emplace(digest, ptr).first;  // a bad definition plans nothing
    }
    if (it->second == nullptr) continue;
    seen.insert(digest);
    out.push_back(it->second);
  }
  return out;
}

PlanBasis plan_basis(const std::vector<std::shared_ptr<const Pipeline>>& pipelines,
                     const Ledger& ledger) {
  PlanInputs in;
  in.adverts = &ledger.adverts();
  PlanBasis b;
  b.promised = current_promises(in);
  for (auto& [stage, digests] : b.promised) {
    if (digests.size() == 1) digests.begin()->second.clear();
  }
  for (const auto& p : pipelines) {
    for (const auto& src : p->sources) {
      const Statement* st = ledger.source_version(p->name, src.name);
      b.sources.emplace_back(st != nullptr ? st->author : AgentKey{}, st != nullptr ? st->seq : 0);
    }
  }
  for (const auto& [digest, st] : ledger.pipelines()) b.defined.push_back(digest);
  return b;
}

Plan make_plan(const std::vector<std::shared_ptr<const Pipeline>>& pipelines, const Ledger& ledger,
               const JobOutcomes& outcomes, DefinitionsCache* cache) {
  PlanInputs in;
  in.adverts = &ledger.adverts();
  in.source_version = [&ledger](const std::string& pipeline, const std::string& source) {
    return ledger.source_version(pipeline, source);
  };
  return make_plan(pipelines, in, outcomes, cache);
}

Plan make_plan(const std::vector<std::shared_ptr<const Pipeline>>& pipelines, const PlanInputs& in,
               const JobOutcomes& outcomes, DefinitionsCache* cache) {
  Plan plan;
  plan.known = pipelines;
  Promised promised = current_promises(in);
  // The same pipelines (the same objects: a reloaded file is a new one, whose timeout and
  // retries may differ under the same digest) and the same promises: the same current
  // definitions, made once rather than copied and hashed again for every plan.
  const bool reuse = cache != nullptr && cache->current.has_value() && cache->known == pipelines &&
                     cache->promised == promised;
  if (cache != nullptr) ++(reuse ? cache->reused : cache->made);
  CurrentDefinitions made;
  if (!reuse) made = current_definitions(pipelines, promised);
  const CurrentDefinitions& current = reuse ? *cache->current : made;
  plan.pipelines = current.pipelines;
  plan.conflicts = current.conflicts;
  for (const auto& p : plan.pipelines) {
    PipelinePlanner(*p, in, outcomes, current.unpromised, plan).run();
  }
  if (cache != nullptr && !reuse) {
    cache->known = pipelines;
    cache->promised = std::move(promised);
    cache->current = std::move(made);
  }
  return plan;
}

}  // namespace vow::promises
