// The control methods that ask the agent to do something rather than answer a question
// (docs/cli.md): `retry` (run failed jobs again: the core publishes a signed Retry per
// job), `wait` (how far a pipeline is, as of its sources on disk now: the watched
// sources this agent provides are checked afresh before the answer can say done) and
// `repair` (a copy `vow get` found corrupt is replaced from another holder).
// Loop thread only, like the rest of Daemon::Impl.
#include <algorithm>
#include <set>

#include "agent/daemon_internal.h"

namespace vow::agent {
namespace {

using nlohmann::json;

// A stage named PIPELINE/STAGE, split; nullopt if `text` has no '/'.
std::optional<std::pair<std::string, std::string>> stage_name(const std::string& text) {
  auto slash = text.find('/');
  if (slash == std::string::npos) return std::nullopt;
  return std::make_pair(text.substr(0, slash), text.substr(slash + 1));
}

// On the worker: every object of `digest` that does not hash to its name, or is missing,
// and every tree above one (a tree is fetched again only with its children missing);
// each object once. False if the subtree at `digest` is not intact.
bool damaged_objects(store::ArtifactStore& store, const Digest& digest, bool tree, int depth,
                     std::set<Digest>& seen, std::vector<Digest>& out) {
  if (!seen.insert(digest).second) {
    return std::find(out.begin(), out.end(), digest) == out.end();
  }
  if (depth > store::kMaxTreeDepth) return true;
  if (!tree) {
    if (store.verify(digest).is_ok()) return true;
    out.push_back(digest);
    return false;
  }
  auto entries = store.read_tree(digest);  // checks the tree's own encoding
  if (!entries.is_ok()) {
    out.push_back(digest);
    return false;
  }
  bool intact = true;
  for (const auto& e : *entries) {
    intact &= damaged_objects(store, e.digest, e.kind == EntryKind::kTree, depth + 1, seen, out);
  }
  if (!intact) out.push_back(digest);
  return intact;
}

}  // namespace

json Daemon::Impl::repair_json(const json& args) {
  auto d = Digest::from_hex(args.value("digest", ""));
  if (!d) return error_answer(Status::invalid("repair: expected {\"digest\": 64 hex digits}"));
  if (repairing.count(*d)) return {{"repairing", true}};
  std::vector<AgentKey> others = core().holders(*d);
  std::erase(others, core().key());
  if (others.empty()) {
    return error_answer(Status::unavailable(
        "no other agent holds " + d->hex() + ": the corrupt copy here cannot be replaced"));
  }
  store::ArtifactStore* store = worker->artifacts.get();
  auto kind = agent->is_tree(*d);
  const Digest digest = *d;
  Status submitted = background->submit([this, store, digest, kind]() -> std::function<void()> {
    std::vector<Digest> damaged;
    bool tree = kind.value_or(false);
    if (!kind) {
      auto rec = store->stat(digest);
      tree = rec.is_ok() && rec->kind == store::ArtifactKind::kTree;
    }
    std::set<Digest> seen;
    damaged_objects(*store, digest, tree, 0, seen, damaged);
    std::vector<Digest> removed;
    for (const auto& x : damaged) {
      Status s = store->remove(x);
      if (s.is_ok() || s.code() == StatusCode::kNotFound) removed.push_back(x);
    }
    return [this, digest, damaged, removed] {
      if (damaged.empty()) {
        log->info("artifact {}: asked to repair it, but every object of it is intact",
                  digest.short_hex());
        repairing.erase(digest);
        return;
      }
      log->warn("artifact {}: {} object(s) corrupt or missing in the store, removed; fetching "
                "it again from another holder",
                digest.short_hex(), damaged.size());
      agent->artifacts_removed(removed);
      if (!agent->fetch_for_client(digest)) {
        log->error("artifact {}: no other agent holds it now: not repaired", digest.short_hex());
      }
      repairing.erase(digest);
    };
  });
  if (!submitted.is_ok()) return error_answer(submitted);
  repairing.insert(digest);
  log->info("artifact {}: found corrupt by the command line; checking every object of it",
            digest.short_hex());
  return {{"repairing", true}};
}

json Daemon::Impl::retry_json(const json& args) {
  std::string target = args.value("target", "");
  std::vector<Digest> jobs;
  if (auto name = stage_name(target)) {
    const promises::StagePlan* sp = nullptr;
    for (const auto& s : core().plan().stages) {
      if (s.pipeline == name->first && s.stage == name->second) sp = &s;
    }
    if (sp == nullptr) return error_answer(Status::not_found("no stage " + target + " is known"));
    for (const Digest& id : sp->jobs) {
      auto v = core().job(id);
      if (v && v->state == promises::JobState::kFailed) jobs.push_back(id);
    }
    if (jobs.empty()) return {{"error", "stage " + target + " has no job failed past its retries"}};
  } else {
    auto id = resolve_job(target);
    if (!id.is_ok()) return error_answer(id.status());
    auto v = core().job(*id);
    if (!v) return error_answer(Status::not_found("no job " + id->hex()));
    if (v->state != promises::JobState::kFailed) {
      return {{"error", "job " + id->short_hex() + " is " + promises::job_state_name(v->state) +
                            ", not failed past its retries: nothing to retry"}};
    }
    jobs.push_back(*id);
  }
  json ids = json::array();
  for (const auto& id : jobs) ids.push_back(id.hex());
  log->info("retry of {} job(s) asked for ({})", jobs.size(), target);
  agent->retry(std::move(jobs), "vow retry " + target);
  return {{"retried", ids}};
}

std::uint64_t Daemon::Impl::refresh_sources(const std::string& pipeline) {
  std::uint64_t ticket = ++refresh_tickets;
  for (auto& src : sources) {
    if (src.decl.pipeline == pipeline && src.decl.watch) src.refresh_asked = ticket;
  }
  poll_sources();
  return ticket;
}

bool Daemon::Impl::sources_checked(const std::string& pipeline, std::uint64_t ticket) const {
  return std::all_of(sources.begin(), sources.end(), [&](const WatchedSource& src) {
    return src.decl.pipeline != pipeline || !src.decl.watch || src.refresh_done >= ticket;
  });
}

// {"state": "done" | "failed" | "running" | "unknown", "why", "ticket"}. The first
// request (no ticket) asks for fresh source checks; later ones pass the ticket back, and
// the answer is "running" until those checks are done and their versions planned.
json Daemon::Impl::wait_json(const json& args) {
  std::string pipeline = args.value("pipeline", "");
  std::string stage = args.value("stage", "");
  std::uint64_t ticket = args.value("ticket", std::uint64_t{0});
  bool known = false;
  std::vector<const promises::StagePlan*> stages;
  for (const auto& sp : core().plan().stages) {
    if (sp.pipeline != pipeline) continue;
    known = true;
    if (stage.empty() || sp.stage == stage) stages.push_back(&sp);
  }
  if (!known) {
    return {{"state", "unknown"}, {"why", "no pipeline '" + pipeline + "' is known here"}};
  }
  if (stages.empty()) {
    return {{"state", "unknown"},
            {"why", "pipeline '" + pipeline + "' has no stage '" + stage + "'"}};
  }
  // A ticket from before a restart of this agent is asked again.
  if (ticket == 0 || ticket > refresh_tickets) ticket = refresh_sources(pipeline);
  json answer = {{"ticket", ticket}};
  if (!sources_checked(pipeline, ticket)) {
    answer["state"] = "running";
    answer["why"] = "reading the sources it provides again";
    return answer;
  }
  // Two current definitions of a stage (agents part way through a restart or a reload
  // with an edited file): which one will stand is not known yet.
  for (const auto& c : core().plan().conflicts) {
    if (c.pipeline == pipeline && (stage.empty() || c.stage == stage)) {
      answer["state"] = "running";
      answer["why"] = "stage " + c.stage + " has conflicting current definitions (vow status)";
      return answer;
    }
  }
  // The stages are looked up again: the checks may have published new versions.
  std::string why;
  int failed = 0;
  bool done = true;
  for (const auto& sp : core().plan().stages) {
    if (sp.pipeline != pipeline || (!stage.empty() && sp.stage != stage)) continue;
    if (sp.state == promises::StageState::kBlocked) {
      int here = 0;
      for (const Digest& id : sp.jobs) {
        auto v = core().job(id);
        if (v && v->state == promises::JobState::kFailed) ++here;
      }
      if (here > 0 && failed == 0) {
        why = "stage " + sp.stage + ": " + std::to_string(here) +
              " job(s) failed past their retries (vow retry " + pipeline + "/" + sp.stage +
              " runs them again)";
      }
      failed += here;
    }
    if (sp.state != promises::StageState::kDone) {
      if (done && failed == 0) {
        why = "stage " + sp.stage + ": " + promises::stage_state_name(sp.state) +
              (sp.reason.empty() ? "" : " (" + sp.reason + ")");
      }
      done = false;
    }
  }
  // A source this agent provides that cannot be read holds the pipeline back: say so.
  if (!done && failed == 0) {
    for (const auto& src : sources) {
      if (src.decl.pipeline == pipeline && !src.error.empty()) {
        why = "source " + src.decl.source + " cannot be read: " + src.error + " (vow status)";
        break;
      }
    }
  }
  answer["state"] = failed > 0 ? "failed" : done ? "done" : "running";
  if (!why.empty()) answer["why"] = why;
  return answer;
}

}  // namespace vow::agent
