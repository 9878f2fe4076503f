// The control methods the web view reads (agent/web.h; JSON in docs/cli.md, "The web
// view"): web_pipelines (each current pipeline as a graph, its stages' states and job
// counts), web_stage (a stage's jobs, failed first, a page at a time), web_verify (the
// checks of `vow verify` on the chain behind one result) and web_mesh (agents, liveness,
// load, promises, rejected messages). Read-only, on the loop thread like every query.
#include <algorithm>
#include <map>
#include <set>

#include "agent/attest.h"
#include "agent/daemon_internal.h"
#include "transport/codec.h"

namespace vow::agent {
namespace {

using nlohmann::json;

constexpr const char* kJobStates[] = {"ready", "running", "done", "failed", "superseded"};

// Failed jobs first, then what runs, what waits, what is done, what no longer counts.
int state_rank(promises::JobState s) {
  switch (s) {
    case promises::JobState::kFailed:
      return 0;
    case promises::JobState::kRunning:
      return 1;
    case promises::JobState::kReady:
      return 2;
    case promises::JobState::kDone:
      return 3;
    case promises::JobState::kSuperseded:
      return 4;
  }
  return 5;
}

// The job's reference as its statements name it (for a job no longer planned).
std::optional<JobRef> ref_of(const promises::JobStatements& js) {
  if (!js.claims.empty()) return std::get<Claim>(js.claims.front()->body).job;
  if (!js.results.empty()) return std::get<JobResult>(js.results.front()->body).job;
  return std::nullopt;
}

}  // namespace

json Daemon::Impl::web_json(const std::string& method, const json& args) {
  if (method == "web_pipelines") return web_pipelines_json();
  if (method == "web_stage") return web_stage_json(args);
  if (method == "web_verify") return web_verify_json(args);
  if (method == "web_mesh") return web_mesh_json();
  return {{"error", "unknown method '" + method + "'"}};
}

json Daemon::Impl::web_pipelines_json() {
  const promises::Plan& plan = core().plan();
  // Who promises which stage, who provides which source (current adverts).
  std::map<std::pair<std::string, std::string>, json> promised, provided;
  for (const auto& [key, st] : core().ledger().adverts()) {
    const auto* a = std::get_if<Advert>(&st->body);
    if (!a) continue;
    for (const auto& p : a->promises) {
      auto& list = promised[{p.pipeline, p.stage}];
      if (list.is_null()) list = json::array();
      list.push_back({{"name", a->name}, {"capacity", p.capacity}});
    }
    for (const auto& s : a->sources) {
      auto& list = provided[{s.pipeline, s.source}];
      if (list.is_null()) list = json::array();
      list.push_back(a->name);
    }
  }
  auto by_name = [](const json& a, const json& b) {
    return (a.is_string() ? a : a["name"]).get<std::string>() <
           (b.is_string() ? b : b["name"]).get<std::string>();
  };
  for (auto* m : {&promised, &provided}) {
    for (auto& [_, list] : *m) std::sort(list.begin(), list.end(), by_name);
  }
  // Jobs by state per stage: the planned ones, then the ledger's no longer planned.
  std::map<std::pair<std::string, std::string>, std::map<std::string, int>> counts;
  for (const auto& sp : plan.stages) {
    auto& c = counts[{sp.pipeline, sp.stage}];
    for (const char* k : kJobStates) c[k] = 0;
    for (const auto& id : sp.jobs) {
      if (core().canonical(id)) {
        c["done"]++;  // planned with a canonical result: done, without building its view
      } else if (auto v = core().job(id)) {
        c[promises::job_state_name(v->state)]++;
      }
    }
  }
  for (const auto& [id, js] : core().ledger().jobs()) {
    if (plan.find(id)) continue;
    if (auto ref = ref_of(js)) counts[{ref->pipeline, ref->stage}]["superseded"]++;
  }
  std::set<std::pair<std::string, std::string>> conflicted;
  for (const auto& c : plan.conflicts) conflicted.insert({c.pipeline, c.stage});

  json pipelines = json::array();
  for (const auto& pl : plan.pipelines) {
    json sources = json::array();
    for (const auto& s : pl->sources) {
      auto it = provided.find({pl->name, s.name});
      sources.push_back(
          {{"name", s.name}, {"providers", it == provided.end() ? json::array() : it->second}});
    }
    json stages = json::array();
    for (const auto& s : pl->stages) {
      const promises::StagePlan* sp = nullptr;
      for (const auto& x : plan.stages) {
        if (x.pipeline == pl->name && x.stage == s.name) sp = &x;
      }
      auto& c = counts[{pl->name, s.name}];
      for (const char* k : kJobStates) c.emplace(k, 0);
      json inputs = json::array();
      for (const auto& in : s.inputs) {
        inputs.push_back({{"from", in.is_source() ? in.name : in.stage},
                          {"source", in.is_source()},
                          {"name", in.name},
                          {"foreach", s.foreach && *s.foreach == in}});
      }
      std::string planned = sp ? promises::stage_state_name(sp->state) : "pending";
      // What the graph colours: a conflict or a failure first, then work under way.
      std::string view = planned;
      if (conflicted.count({pl->name, s.name})) {
        view = "conflict";
      } else if (c["failed"] > 0) {
        view = "failed";
      } else if (c["running"] > 0) {
        view = "running";
      } else if (planned == "planned") {
        view = "pending";
      } else if (planned == "pending" && c["superseded"] > 0 && c["ready"] == 0 && c["done"] == 0) {
        view = "superseded";
      }
      int total = 0;
      for (const auto& [k, n] : c) total += k == "superseded" ? 0 : n;
      auto pr = promised.find({pl->name, s.name});
      json st = {{"name", s.name},
                 {"digest", s.digest.hex()},
                 {"state", view},
                 {"plan_state", planned},
                 {"inputs", inputs},
                 {"outputs", s.outputs},
                 {"jobs", c},
                 {"total", total},
                 {"promised_by", pr == promised.end() ? json::array() : pr->second}};
      if (sp && !sp->reason.empty()) st["reason"] = sp->reason;
      if (sp && !sp->reason.empty() && view == "pending") st["waiting"] = sp->reason;
      stages.push_back(st);
    }
    pipelines.push_back({{"name", pl->name},
                         {"digest", pl->digest.hex()},
                         {"sources", sources},
                         {"stages", stages}});
  }
  return {{"agent", agent_ref(identity->key())}, {"pipelines", pipelines}};
}

json Daemon::Impl::web_stage_json(const json& args) {
  std::string pipeline = args.value("pipeline", "");
  std::string stage = args.value("stage", "");
  std::string state = args.value("state", "");
  int offset = args.value("offset", 0);
  int limit = args.value("limit", 100);
  if (!state.empty() && state != "ready" && state != "running" && state != "done" &&
      state != "failed" && state != "superseded") {
    return error_answer(Status::invalid("unknown state '" + state +
                                        "' (ready, running, done, failed, superseded)"));
  }
  if (offset < 0 || limit < 1) return error_answer(Status::invalid("bad offset or limit"));
  const promises::Plan& plan = core().plan();
  const promises::StagePlan* sp = nullptr;
  for (const auto& x : plan.stages) {
    if (x.pipeline == pipeline && x.stage == stage) sp = &x;
  }
  // Every job's state, cheaply (a planned job with a canonical result is done without
  // building its view); full views only for the page shown.
  struct Entry {
    promises::JobState state;
    std::string shard;
    Digest id;
  };
  std::vector<Entry> entries;
  if (sp) {
    entries.reserve(sp->jobs.size());
    for (const auto& id : sp->jobs) {
      const promises::PlannedJob* pj = plan.find(id);
      std::string shard = pj ? pj->ref.shard : "";
      if (core().canonical(id)) {
        entries.push_back({promises::JobState::kDone, std::move(shard), id});
      } else if (auto v = core().job(id)) {
        entries.push_back({v->state, std::move(shard), id});
      }
    }
  }
  for (const auto& [id, js] : core().ledger().jobs()) {
    if (plan.find(id)) continue;
    auto ref = ref_of(js);
    if (!ref || ref->pipeline != pipeline || ref->stage != stage) continue;
    entries.push_back({promises::JobState::kSuperseded, ref->shard, id});
  }
  if (!sp && entries.empty()) {
    return error_answer(Status::not_found("no stage " + pipeline + "/" + stage + " is known"));
  }
  std::map<std::string, int> counts;
  for (const char* k : kJobStates) counts[k] = 0;
  for (const auto& e : entries) counts[promises::job_state_name(e.state)]++;
  if (!state.empty()) {
    std::erase_if(entries,
                  [&](const Entry& e) { return state != promises::job_state_name(e.state); });
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    int ra = state_rank(a.state), rb = state_rank(b.state);
    if (ra != rb) return ra < rb;
    if (a.shard != b.shard) return a.shard < b.shard;
    return a.id < b.id;
  });
  std::int64_t wall = wall_ms();
  json jobs = json::array();
  for (std::size_t i = static_cast<std::size_t>(offset);
       i < entries.size() && i < static_cast<std::size_t>(offset) + static_cast<std::size_t>(limit);
       ++i) {
    auto view = core().job(entries[i].id);
    if (!view) continue;
    const auto& v = *view;
    json j = {{"id", v.job.job.hex()},
              {"shard", v.job.shard},
              {"state", promises::job_state_name(v.state)},
              {"attempts", v.claims.size()},
              {"failed_attempts", v.failed_attempts}};
    // The agent: the canonical result's executor, else the latest claim's.
    const Statement* canonical = core().canonical(v.job.job);
    const promises::ClaimView* last = nullptr;
    for (const auto& c : v.claims) {
      if (!last || c.epoch >= last->epoch) last = &c;
    }
    if (canonical) {
      j["agent"] = agent_name(canonical->author);
      if (const auto* r = std::get_if<JobResult>(&canonical->body)) {
        j["epoch"] = r->epoch;
        j["duration_ms"] = r->ended_unix_ms - r->started_unix_ms;
      }
    } else if (last) {
      j["agent"] = agent_name(last->author);
      j["epoch"] = last->epoch;
    }
    if (!canonical) {
      // The latest result (a failure), or how long the live claim has run.
      const auto* js = core().ledger().job(v.job.job);
      const JobResult* latest = nullptr;
      if (js) {
        for (const Statement* st : js->results) {
          if (const auto* r = std::get_if<JobResult>(&st->body)) {
            if (!latest || r->epoch >= latest->epoch) latest = r;
          }
        }
      }
      if (latest) {
        j["duration_ms"] = latest->ended_unix_ms - latest->started_unix_ms;
        j["exit_status"] = latest->exit_status;
        if (!latest->error.empty()) j["error"] = latest->error;
      }
      if (v.state == promises::JobState::kRunning && js && last) {
        for (const Statement* st : js->claims) {
          const auto& c = std::get<Claim>(st->body);
          if (st->author == last->author && c.epoch == last->epoch) {
            j["running_ms"] = std::max<std::int64_t>(0, wall - st->wall_unix_ms);
          }
        }
      }
    }
    jobs.push_back(j);
  }
  json out = {{"pipeline", pipeline}, {"stage", stage}, {"total", entries.size()},
              {"offset", offset},     {"limit", limit}, {"counts", counts},
              {"jobs", jobs}};
  if (sp) {
    out["plan_state"] = promises::stage_state_name(sp->state);
    if (!sp->reason.empty()) out["reason"] = sp->reason;
    out["digest"] = sp->stage_digest.hex();
  }
  if (!state.empty()) out["state"] = state;
  // Who could run a waiting job: the agents whose current advert promises the stage,
  // how busy and how alive each is.
  std::map<AgentKey, promises::PeerView> peers;
  for (const auto& p : core().peers()) peers[p.key] = p;
  json promised = json::array();
  for (const auto& [key, st] : core().ledger().adverts()) {
    const auto* a = std::get_if<Advert>(&st->body);
    if (!a) continue;
    for (const auto& p : a->promises) {
      if (p.pipeline != pipeline || p.stage != stage) continue;
      json who = {{"name", a->name}, {"capacity", p.capacity}};
      if (key == identity->key()) {
        who["liveness"] = "self";
        who["running"] = agent->jobs_here();
      } else if (auto it = peers.find(key); it != peers.end()) {
        who["liveness"] = promises::liveness_name(it->second.liveness);
        who["running"] = it->second.running;
      } else {
        who["liveness"] = "unknown";
      }
      promised.push_back(who);
    }
  }
  out["promised_by"] = promised;
  return out;
}

// The checks of `vow verify` (agent/verify_ledger.h) on the statements behind one
// result: each step's signature over its stored bytes, its attestation, and each link
// (the producer's output is the consumer's input, by digest).
json Daemon::Impl::web_verify_json(const json& args) {
  json lineage = lineage_json(args);
  if (lineage.contains("error")) return lineage;
  agent->commit_held();  // the checks read the ledger file
  json problems = json::array();
  std::map<std::string, const Statement*> by_id;
  std::size_t signatures = 0, attestations = 0, links = 0;
  for (const auto& step : lineage["steps"]) {
    std::string id = step.value("id", "");
    auto slash = id.rfind('/');
    auto author = transport::parse_agent_id(id.substr(0, slash));
    std::uint64_t seq = std::stoull(id.substr(slash + 1));
    if (!author.is_ok()) {
      problems.push_back("step " + id + ": bad author");
      continue;
    }
    const Statement* held = core().ledger().get(*author, seq);
    by_id[id] = held;
    auto stored = ledger->get(*author, seq);
    if (!stored.is_ok() || !stored->has_value()) {
      problems.push_back("statement " + id + ": not in this agent's ledger file");
      continue;
    }
    auto st = transport::decode_and_verify((*stored)->bytes, (*stored)->signature,
                                                 (*stored)->path);
    if (!st.is_ok()) {
      problems.push_back("statement " + id + ": " + st.status().to_string());
      continue;
    }
    if (st->author != *author || st->seq != seq) {
      problems.push_back("statement " + id + ": stored under another author or sequence");
      continue;
    }
    ++signatures;
    const auto* field = attestation_field(*st);
    if (field != nullptr && field->has_value()) {
      ++attestations;
      auto a = attestation(*st);
      if (!a.is_ok()) problems.push_back("statement " + id + ": " + a.status().message());
    }  // a statement signed before attestations carries none (as vow verify)
  }
  auto outputs_of = [](const Statement* st) {
    std::vector<const ArtifactRef*> out;
    if (!st) return out;
    if (const auto* r = std::get_if<JobResult>(&st->body)) {
      for (const auto& o : r->outputs) out.push_back(&o.artifact);
    } else if (const auto* v = std::get_if<SourceVersion>(&st->body)) {
      out.push_back(&v->artifact);
    }
    return out;
  };
  for (const auto& e : lineage["edges"]) {
    ++links;
    std::string from = e.value("from", ""), to = e.value("to", ""), input = e.value("input", "");
    auto digest = Digest::from_hex(e.value("digest", ""));
    bool made = false;
    for (const ArtifactRef* a : outputs_of(by_id[from])) {
      made = made || (digest && a->digest == *digest);
      for (const auto& entry : a->entries) made = made || (digest && entry.digest == *digest);
    }
    bool used = false;
    if (const Statement* c = by_id[to]) {
      if (const auto* r = std::get_if<JobResult>(&c->body)) {
        for (const auto& n : r->inputs) {
          // A fan-in names the entry too: "counts/part-aa".
          if (n.name != input && input.rfind(n.name + "/", 0) != 0) continue;
          used = used || (digest && n.artifact.digest == *digest);
          for (const auto& entry : n.artifact.entries) {
            used = used || (digest && entry.digest == *digest);
          }
        }
      }
    }
    if (!made)
      problems.push_back("link " + from + " -> " + to + ": " + from + " made no " +
                         e.value("digest", ""));
    if (!used)
      problems.push_back("link " + from + " -> " + to + ": " + to + " took no " +
                         e.value("digest", "") + " as '" + input + "'");
  }
  return {{"ref", lineage["ref"]},    {"steps", lineage["steps"].size()},
          {"signatures", signatures}, {"attestations", attestations},
          {"links", links},           {"problems", problems},
          {"ok", problems.empty()}};
}

json Daemon::Impl::web_mesh_json() {
  // What `vow status` says of agents and rejected messages, without its per-job part
  // (which costs the loop time in proportion to the jobs).
  json out = peers_json();
  json agents = agents_json();
  json rejected = rejected_json();
  auto counters = transport->counters();
  out["agents"] = agents;
  out["agent"] = {{"name", config.name},
                  {"id", identity->id()},
                  {"listen", transport->endpoint()},
                  {"advertise", advertised_endpoint()}};
  out["rejected"] = rejected;
  out["statements"] = {{"received", agent->counters().statements_in},
                       {"persisted", agent->counters().statements_persisted},
                       {"duplicates", counters.duplicates},
                       {"vouched", counters.vouched},
                       {"equivocations", counters.equivocations}};
  out["promises"] = promises_json()["agents"];
  return out;
}

}  // namespace vow::agent
