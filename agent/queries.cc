// The read-only queries of the control API (docs/cli.md): jobs, one job, peers,
// promises, lineage, why, live verify, and resolve/fetch for `vow get`. Every answer
// comes from this agent's replicated ledger and core; nothing here changes state except
// `fetch`, which asks for a copy of an artifact the mesh already holds. JSON schemas:
// docs/cli.md.
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "agent/daemon_internal.h"
#include "agent/job_layout.h"
#include "agent/lineage.h"
#include "agent/verify_ledger.h"
#include "store/artifact_store.h"

namespace vow::agent {
namespace {

namespace fs = std::filesystem;

using nlohmann::json;

std::string statement_name(const Statement& st) {
  return transport::agent_id(st.author) + "/" + std::to_string(st.seq);
}

json outputs_json(const std::vector<NamedArtifact>& outs) {
  json o = json::object();
  for (const auto& n : outs) o[n.name] = n.artifact.digest.hex();
  return o;
}

json artifact_json(const ArtifactRef& a) {
  return {{"digest", a.digest.hex()},
          {"kind", a.is_tree ? "tree" : "file"},
          {"size_bytes", a.size_bytes}};
}

// The last `max` bytes of a file, or "" if it cannot be read.
std::string file_tail(const std::string& path, std::size_t max) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  in.seekg(0, std::ios::end);
  auto size = static_cast<std::size_t>(in.tellg());
  std::size_t from = size > max ? size - max : 0;
  in.seekg(static_cast<std::streamoff>(from));
  std::string out(size - from, '\0');
  in.read(out.data(), static_cast<std::streamsize>(out.size()));
  return out;
}

}  // namespace

std::string Daemon::Impl::agent_name(const AgentKey& key) const {
  if (key == identity->key()) return config.name;
  const auto& adverts = core().ledger().adverts();
  auto it = adverts.find(key);
  if (it != adverts.end()) {
    if (const auto* a = std::get_if<Advert>(&it->second->body)) return a->name;
  }
  return "";
}

json Daemon::Impl::agent_ref(const AgentKey& key) const {
  return {{"id", transport::agent_id(key)}, {"name", agent_name(key)}};
}

Result<Digest> Daemon::Impl::resolve_job(const std::string& text) {
  std::string hex = text;
  std::transform(hex.begin(), hex.end(), hex.begin(), ::tolower);
  if (hex.size() == 64) {
    if (auto d = Digest::from_hex(hex)) return *d;
    return Status::invalid("'" + text + "' is not a job id (64 hex digits or a prefix)");
  }
  if (hex.size() < 6 || hex.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return Status::invalid("'" + text + "' is not a job id (64 hex digits or a prefix of 6+)");
  }
  // Ids sort as their hex does: the jobs with this prefix follow the prefix padded
  // with zeros (two are enough to call it ambiguous).
  Digest low = *Digest::from_hex(hex + std::string(64 - hex.size(), '0'));
  std::set<Digest> found;
  auto collect = [&](const auto& jobs) {
    for (auto it = jobs.lower_bound(low); it != jobs.end() && found.size() < 2; ++it) {
      if (it->first.hex().rfind(hex, 0) != 0) break;
      found.insert(it->first);
    }
  };
  collect(core().ledger().jobs());
  collect(core().plan().jobs);
  if (found.empty()) return Status::not_found("no job " + text + " in the ledger or the plan");
  if (found.size() > 1) {
    return Status::invalid("job prefix " + text + " is ambiguous (more than one job)");
  }
  return *found.begin();
}

json Daemon::Impl::job_json(const promises::JobView& v, bool detail) {
  const auto* stmts = core().ledger().job(v.job.job);
  json claims = json::array();
  for (const auto& c : v.claims) {
    json j = agent_ref(c.author);
    j["epoch"] = c.epoch;
    j["live"] = c.live;
    j["released"] = c.released;
    claims.push_back(j);
  }
  json results = json::array();
  const JobResult* canonical_result = nullptr;
  const Statement* canonical_statement = core().canonical(v.job.job);
  if (canonical_statement) canonical_result = std::get_if<JobResult>(&canonical_statement->body);
  if (stmts) {
    for (const Statement* st : stmts->results) {
      const auto* r = std::get_if<JobResult>(&st->body);
      if (!r) continue;
      json j = agent_ref(st->author);
      j["statement"] = statement_name(*st);
      j["epoch"] = r->epoch;
      j["ok"] = r->ok;
      j["canonical"] = st == canonical_statement;
      j["exit_status"] = r->exit_status;
      if (!r->error.empty()) j["error"] = r->error;
      j["started_unix_ms"] = r->started_unix_ms;
      j["ended_unix_ms"] = r->ended_unix_ms;
      j["duration_ms"] = r->ended_unix_ms - r->started_unix_ms;
      j["outputs"] = outputs_json(r->outputs);
      if (detail) {
        if (auto a = attestation(*st); a.is_ok()) j["attestation"] = a->digest.hex();
        json ins = json::object();
        for (const auto& n : r->inputs) ins[n.name] = n.artifact.digest.hex();
        j["inputs"] = ins;
        if (r->stdout_digest) j["stdout"] = r->stdout_digest->hex();
        if (r->stderr_digest) j["stderr"] = r->stderr_digest->hex();
      }
      results.push_back(j);
    }
  }
  json j = {{"id", v.job.job.hex()},
            {"pipeline", v.job.pipeline},
            {"stage", v.job.stage},
            {"shard", v.job.shard},
            {"stage_digest", v.job.stage_digest.hex()},
            {"state", promises::job_state_name(v.state)},
            {"attempts", v.claims.size()},
            {"failed_attempts", v.failed_attempts},
            {"nondeterministic", v.nondeterministic},
            {"claims", claims},
            {"results", results}};
  if (canonical_result) {
    j["duration_ms"] = canonical_result->ended_unix_ms - canonical_result->started_unix_ms;
    j["executor"] = agent_ref(canonical_statement->author);
  }
  if (!detail) return j;
  // The tail of the logs: of the canonical result (or the latest attempt) when its log
  // is held here, else of a run in this agent's work directory.
  auto tail_of = [&](const std::optional<Digest>& d) -> std::optional<std::string> {
    if (!d) return std::nullopt;
    std::string path =
        store::object_path(store::artifacts_root(state_dir), *d, store::ArtifactKind::kFile);
    struct stat sb {};
    if (::stat(path.c_str(), &sb) != 0) return std::nullopt;
    return file_tail(path, kMaxLogTailBytes);
  };
  const JobResult* latest = canonical_result;
  if (!latest && stmts && !stmts->results.empty()) {
    latest = std::get_if<JobResult>(&stmts->results.back()->body);
  }
  json logs = json::object();
  if (latest) {
    if (auto t = tail_of(latest->stdout_digest)) logs["stdout"] = *t;
    if (auto t = tail_of(latest->stderr_digest)) logs["stderr"] = *t;
  }
  if (logs.empty()) {
    for (const auto& c : v.claims) {
      if (c.author != identity->key()) continue;
      JobLayout layout = job_layout(state_dir, v.job.job, c.epoch);
      struct stat sb {};
      if (::stat(layout.stdout_path.c_str(), &sb) == 0) {
        logs["stdout"] = file_tail(layout.stdout_path, kMaxLogTailBytes);
        logs["stderr"] = file_tail(layout.stderr_path, kMaxLogTailBytes);
      }
    }
  }
  j["logs"] = logs;
  if (const auto* planned = core().plan().find(v.job.job)) {
    json ins = json::object();
    for (const auto& n : planned->inputs) ins[n.name] = artifact_json(n.artifact);
    j["inputs"] = ins;
  }
  return j;
}

json Daemon::Impl::jobs_json(const json& args) {
  std::string pipeline = args.value("pipeline", "");
  std::string stage = args.value("stage", "");
  std::string state = args.value("state", "");
  static const std::set<std::string> kStates = {"pending", "ready",  "running",
                                                "done",    "failed", "superseded"};
  if (!state.empty() && !kStates.count(state)) {
    return {{"error",
             "unknown state '" + state + "' (pending, ready, running, done, failed, superseded)"}};
  }
  promises::JobFilter filter;
  filter.pipeline = pipeline;
  filter.stage = stage;
  for (auto st : {promises::JobState::kReady, promises::JobState::kRunning,
                  promises::JobState::kDone, promises::JobState::kFailed,
                  promises::JobState::kSuperseded}) {
    if (state == promises::job_state_name(st)) filter.state = st;
  }
  // "pending" names no job state (a stage waits for its inputs; its jobs are not planned).
  if (state == "pending") return {{"jobs", json::array()}};
  std::string after = args.value("after", "");
  if (!after.empty()) {
    auto d = Digest::from_hex(after);
    if (!d) return error_answer(Status::invalid("'after' is not a job id (64 hex digits)"));
    filter.after = *d;
  }
  // One page at a time (at most kMaxJobsPage jobs): a request costs its page, and the
  // loop goes on between pages.
  std::int64_t limit = args.value("limit", static_cast<std::int64_t>(kMaxJobsPage));
  if (limit <= 0) return error_answer(Status::invalid("'limit' must be at least 1"));
  filter.limit = static_cast<std::size_t>(std::min<std::int64_t>(limit, kMaxJobsPage));
  promises::JobPage page = core().jobs_page(filter);
  json out = json::array();
  for (const auto& v : page.jobs) out.push_back(job_json(v, false));
  json answer = {{"jobs", out}};
  answer["next"] = page.next ? json(page.next->hex()) : json(nullptr);
  return answer;
}

json Daemon::Impl::peers_json() {
  json out = json::array();
  std::int64_t now = now_ms();
  auto linked = transport->peers();
  for (const auto& p : core().peers()) {
    json j = agent_ref(p.key);
    if (j["name"].get<std::string>().empty()) j["name"] = p.name;
    j["liveness"] = promises::liveness_name(p.liveness);
    j["alive"] = p.liveness == promises::Liveness::kAlive;
    j["running"] = p.running;
    j["capacity"] = p.capacity;
    j["last_seen_ms"] = p.last_heard_ms ? now - *p.last_heard_ms : -1;
    auto ep = peer_endpoint.find(p.key);
    j["endpoint"] = ep == peer_endpoint.end() ? "" : ep->second;
    j["linked"] = std::find(linked.begin(), linked.end(), p.key) != linked.end();
    j["trusted"] = trust.trusts_agent(p.key);
    j["statements"] = core().ledger().max_seq(p.key);
    out.push_back(j);
  }
  return {{"self", agent_ref(identity->key())}, {"peers", out}};
}

json Daemon::Impl::promises_json() {
  json agents = json::array();
  for (const auto& [key, st] : core().ledger().adverts()) {
    const auto* a = std::get_if<Advert>(&st->body);
    if (!a) continue;
    json ps = json::array();
    for (const auto& p : a->promises) {
      ps.push_back({{"pipeline", p.pipeline},
                    {"stage", p.stage},
                    {"stage_digest", p.stage_digest.hex()},
                    {"capacity", p.capacity}});
    }
    json ss = json::array();
    for (const auto& s : a->sources) ss.push_back({{"pipeline", s.pipeline}, {"source", s.source}});
    json j = agent_ref(key);
    j["name"] = a->name;
    j["self"] = key == identity->key();
    j["endpoints"] = a->endpoints;
    j["promises"] = ps;
    j["sources"] = ss;
    j["advert"] = statement_name(*st);
    agents.push_back(j);
  }
  return {{"agents", agents}};
}

// An artifact reference from the command line: 64 hex digits, or PIPELINE/STAGE.OUTPUT
// (the canonical outputs of the stage's currently planned jobs, one per shard).
Result<std::vector<Digest>> Daemon::Impl::resolve_artifact(const std::string& text) {
  if (auto d = Digest::from_hex(text)) return std::vector<Digest>{*d};
  auto slash = text.find('/');
  auto dot = text.rfind('.');
  if (slash == std::string::npos || dot == std::string::npos || dot < slash) {
    return Status::invalid("'" + text +
                           "' is not an artifact (64 hex digits or PIPELINE/STAGE.OUTPUT)");
  }
  std::string pipeline = text.substr(0, slash);
  std::string stage = text.substr(slash + 1, dot - slash - 1);
  std::string output = text.substr(dot + 1);
  const auto& plan = core().plan();
  const promises::StagePlan* sp = nullptr;
  for (const auto& s : plan.stages) {
    if (s.pipeline == pipeline && s.stage == stage) sp = &s;
  }
  if (!sp) return Status::not_found("no stage " + pipeline + "/" + stage + " is known");
  std::vector<Digest> out;
  for (const auto& job : sp->jobs) {
    const Statement* st = core().canonical(job);
    const auto* r = st ? std::get_if<JobResult>(&st->body) : nullptr;
    if (!r) continue;
    bool found = false;
    for (const auto& n : r->outputs) {
      if (n.name == output) {
        out.push_back(n.artifact.digest);
        found = true;
      }
    }
    if (!found) {
      return Status::not_found("stage " + pipeline + "/" + stage + " has no output '" + output +
                               "'");
    }
  }
  if (out.empty()) {
    return Status::not_found(
        pipeline + "/" + stage + "." + output + " has no result yet (" +
        (sp->reason.empty() ? promises::stage_state_name(sp->state) : sp->reason) + ")");
  }
  return out;
}

// The statements that made an artifact: a canonical result that output it (or a tree
// it is an entry of), else a source version of it.
const Statement* Daemon::Impl::producer_of(const Digest& digest) {
  Upstream upstream(core().ledger(), [this](const Digest& job) { return core().canonical(job); });
  return upstream.made_by(digest);
}

json Daemon::Impl::lineage_json(const json& args) {
  std::string ref = args.value("ref", "");
  std::vector<std::string> root_digests;
  std::vector<const Statement*> todo;
  // Producers by digest, its index made once for the whole query (roots and steps).
  Upstream upstream(core().ledger(), [this](const Digest& job) { return core().canonical(job); });
  Status unresolved = Status::ok();
  if (auto roots = resolve_artifact(ref); roots.is_ok()) {
    // PIPELINE/STAGE.OUTPUT names its producers: the stage's canonical results (the same
    // bytes may also be another step's output).
    std::string stage_of_ref = ref.substr(0, ref.rfind('.'));
    for (const auto& d : *roots) {
      const Statement* st = nullptr;
      if (!Digest::from_hex(ref)) {
        for (const auto& [job, _] : core().ledger().jobs()) {
          const Statement* c = core().canonical(job);
          const auto* r = c ? std::get_if<JobResult>(&c->body) : nullptr;
          if (!r || r->job.pipeline + "/" + r->job.stage != stage_of_ref) continue;
          for (const auto& o : r->outputs) {
            if (o.artifact.digest == d) st = c;
          }
        }
      }
      if (!st) st = upstream.made_by(d);
      if (!st) {
        unresolved = Status::not_found("no result or source version in the ledger made " + d.hex());
        break;
      }
      root_digests.push_back(d.hex());
      todo.push_back(st);
    }
  } else {
    unresolved = roots.status();
  }
  if (!unresolved.is_ok()) {
    // Not an artifact: a job (id or prefix), whose canonical result is the root.
    auto job = resolve_job(ref);
    const Statement* st = job.is_ok() ? core().canonical(*job) : nullptr;
    const auto* r = st ? std::get_if<JobResult>(&st->body) : nullptr;
    if (r == nullptr) {
      if (job.is_ok()) {
        return error_answer(Status::not_found("job " + job->hex() + " has no successful result yet"));
      }
      return error_answer(unresolved);
    }
    root_digests.clear();
    for (const auto& o : r->outputs) root_digests.push_back(o.artifact.digest.hex());
    todo = {st};
  }
  json steps = json::array();
  json edges = json::array();
  std::set<std::string> seen;
  json root_steps = json::array();
  for (const Statement* st : todo) root_steps.push_back(statement_name(*st));
  while (!todo.empty()) {
    const Statement* st = todo.back();
    todo.pop_back();
    std::string id = statement_name(*st);
    if (!seen.insert(id).second) continue;
    json step = {{"id", id}, {"signer", agent_ref(st->author)}, {"seq", st->seq}};
    step["signer"]["public_key"] = st->author.hex();
    step["signed_unix_ms"] = st->wall_unix_ms;
    if (auto a = attestation(*st); a.is_ok()) step["attestation"] = a->digest.hex();
    if (const auto* v = std::get_if<SourceVersion>(&st->body)) {
      step["kind"] = "source";
      step["pipeline"] = v->pipeline;
      step["source"] = v->source;
      step["version"] = v->version;
      step["output"] = artifact_json(v->artifact);
      steps.push_back(step);
      continue;
    }
    const auto* r = std::get_if<JobResult>(&st->body);
    if (!r) continue;
    step["kind"] = "job";
    step["job"] = r->job.job.hex();
    step["pipeline"] = r->job.pipeline;
    step["stage"] = r->job.stage;
    step["shard"] = r->job.shard;
    step["stage_digest"] = r->job.stage_digest.hex();
    step["epoch"] = r->epoch;
    step["executor"] = agent_ref(st->author);
    if (const promises::Stage* def = stage_definition(r->job.stage_digest)) {
      step["definition"] = stage_definition_json(*def);
    }
    auto view = core().job(r->job.job);
    step["nondeterministic"] = view && view->nondeterministic;
    step["started_unix_ms"] = r->started_unix_ms;
    step["ended_unix_ms"] = r->ended_unix_ms;
    json ins = json::object();
    for (const auto& n : r->inputs) ins[n.name] = n.artifact.digest.hex();
    step["inputs"] = ins;
    step["outputs"] = outputs_json(r->outputs);
    steps.push_back(step);
    for (const auto& e : upstream.of(*st)) {
      edges.push_back({{"from", statement_name(*e.from)},
                       {"to", id},
                       {"input", e.input},
                       {"digest", e.digest.hex()}});
      todo.push_back(e.from);
    }
  }
  return {{"ref", ref},
          {"artifacts", root_digests},
          {"roots", root_steps},
          {"steps", steps},
          {"edges", edges}};
}

json Daemon::Impl::why_json(const json& args) {
  auto id = resolve_job(args.value("job", ""));
  if (!id.is_ok()) return error_answer(id.status());
  auto view = core().job(*id);
  if (!view) return error_answer(Status::not_found("no job " + id->hex()));
  json j = job_json(*view, true);
  // What the job id is made of: job = H(stage digest, inputs by name, shard).
  const promises::Pipeline* pipeline = nullptr;
  const promises::Stage* stage = nullptr;
  // Every definition known, current or not: an old job is explained by its own.
  for (const auto& p : core().plan().known) {
    for (const auto& s : p->stages) {
      if (s.digest == view->job.stage_digest && stage == nullptr) {
        pipeline = p.get();
        stage = &s;
      }
    }
  }
  json parts = {{"stage_digest", view->job.stage_digest.hex()}, {"shard", view->job.shard}};
  if (stage) {
    // What the stage digest covers (docs/identity.md): not timeout or retries.
    json ins = json::array();
    for (const auto& i : stage->inputs) ins.push_back(i.to_string());
    parts["stage_covers"] = {{"pipeline", pipeline ? pipeline->name : ""},
                             {"name", stage->name},
                             {"form", stage->run_is_shell ? "shell" : "argv"},
                             {"argv", stage->argv},
                             {"inputs", ins},
                             {"outputs", stage->outputs},
                             {"env", stage->env},
                             {"foreach", stage->foreach ? stage->foreach->to_string() : ""}};
    if (!stage->image.empty()) parts["stage_covers"]["image"] = stage->image;
    if (stage->root) parts["stage_covers"]["root"] = stage->root->to_string();
  }
  std::vector<promises::JobInput> inputs;
  json in = json::object();
  const JobResult* some_result = nullptr;
  if (const auto* js = core().ledger().job(*id)) {
    for (const Statement* st : js->results) {
      if (const auto* r = std::get_if<JobResult>(&st->body)) some_result = r;
    }
  }
  if (const auto* planned = core().plan().find(*id)) {
    for (const auto& n : planned->inputs) {
      in[n.name] = n.artifact.digest.hex();
      inputs.push_back({n.name, n.artifact.digest});
    }
  } else if (some_result) {
    for (const auto& n : some_result->inputs) {
      in[n.name] = n.artifact.digest.hex();
      inputs.push_back({n.name, n.artifact.digest});
    }
  }
  parts["inputs"] = in;
  Digest recomputed = promises::job_id(view->job.stage_digest, inputs, view->job.shard);
  parts["recomputed_job_id"] = recomputed.hex();
  parts["matches"] = recomputed == *id;
  j["id_parts"] = parts;
  // Memoized: the canonical result was signed before the newest source version this
  // pipeline's plan uses, so the latest run reused it instead of running the job.
  const Statement* canonical = core().canonical(*id);
  if (canonical) {
    std::int64_t newest_source = 0;
    for (const auto& [key, st] : core().ledger().sources()) {
      if (key.first == view->job.pipeline)
        newest_source = std::max(newest_source, st->wall_unix_ms);
    }
    bool memoized = newest_source > 0 && canonical->wall_unix_ms < newest_source;
    j["memoized"] = memoized;
    j["from_result"] = statement_name(*canonical);
    if (auto a = attestation(*canonical); a.is_ok()) j["attestation"] = a->digest.hex();
  } else {
    j["memoized"] = false;
  }
  j["rule"] =
      "the canonical result is the successful one with the least (epoch, outputs digest); "
      "every agent applies the same rule to the same statements";
  return j;
}

json Daemon::Impl::resolve_json(const json& args) {
  auto digests = resolve_artifact(args.value("ref", ""));
  if (!digests.is_ok()) return error_answer(digests.status());
  if (digests->size() != 1) {
    return {{"error", args.value("ref", "") + " names " + std::to_string(digests->size()) +
                          " artifacts (one per shard): give one by digest (vow jobs)"}};
  }
  const Digest& d = digests->front();
  auto kind = agent->is_tree(d);
  json holders = json::array();
  for (const auto& k : core().holders(d)) holders.push_back(agent_ref(k));
  json j = {{"digest", d.hex()},
            {"held_here", core().holds(d)},
            {"holders", holders},
            {"artifacts_root", fs::absolute(store::artifacts_root(state_dir)).string()}};
  if (kind) j["kind"] = *kind ? "tree" : "file";
  if (repairing.count(d)) j["repairing"] = true;
  if (agent->fetching(d)) {
    struct stat sb {};
    j["fetching"] = true;
    j["received_bytes"] = ::stat(incoming_path(state_dir, d).c_str(), &sb) == 0 ? sb.st_size : 0;
  }
  if (const Statement* st = producer_of(d)) {
    if (const auto* r = std::get_if<JobResult>(&st->body)) {
      for (const auto& n : r->outputs) {
        if (n.artifact.digest == d) j["size_bytes"] = n.artifact.size_bytes;
      }
    } else if (const auto* v = std::get_if<SourceVersion>(&st->body)) {
      if (v->artifact.digest == d) j["size_bytes"] = v->artifact.size_bytes;
    }
  }
  return j;
}

json Daemon::Impl::fetch_json(const json& args) {
  auto d = Digest::from_hex(args.value("digest", ""));
  if (!d) return {{"error", "fetch: expected {\"digest\": 64 hex digits}"}};
  if (core().holds(*d)) return {{"held_here", true}};
  if (!agent->fetch_for_client(*d)) return {{"error", "no live agent holds " + d->hex()}};
  log->info("fetching {} for the command line", d->short_hex());
  return {{"held_here", false}, {"fetching", true}};
}

json Daemon::Impl::verify_json() {
  agent->commit_held();  // the checks read the ledger file
  auto report = verify_ledger(*ledger);
  if (!report.is_ok()) return {{"error", report.status().to_string()}};
  // The proofs this agent holds (rule 5), whether or not its store has them.
  std::set<std::string> equivocators(report->equivocators.begin(), report->equivocators.end());
  for (const auto& k : core().binding_report().equivocators) {
    equivocators.insert(transport::agent_id(k));
  }
  return {{"statements", report->statements},
          {"links", report->links},
          {"attestations", report->attestations},
          {"evidence", report->evidence},
          {"equivocators", equivocators},
          {"problems", report->problems},
          {"ok", report->problems.empty()}};
}

}  // namespace vow::agent
