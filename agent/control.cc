// The control socket: the command line's way into a running agent (docs/cli.md).
// A ZeroMQ ROUTER bound at ipc://STATE/control.sock, mode 0600 (only the agent's user);
// requests and answers are JSON: {"method": "status", "args": {...}} ->
// {"ok": true, ...} or {"error": "..."}. The same methods answer trusted clients over
// the CURVE endpoint (Daemon::Impl::handle_inbound). Methods: docs/cli.md.
#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <tuple>

#include "agent/daemon_internal.h"
#include "agent/metrics.h"
#include "agent/vow_version.h"
#include "store/sqlite_ledger.h"
#include "transport/message.h"
#include "transport/validator.h"

namespace vow::agent {

Status Daemon::Impl::open_control() {
  control_ctx = zmq_ctx_new();
  control = zmq_socket(control_ctx, ZMQ_ROUTER);
  int linger = 0;
  zmq_setsockopt(control, ZMQ_LINGER, &linger, sizeof(linger));
  std::int64_t max = kMaxControlBytes;
  zmq_setsockopt(control, ZMQ_MAXMSGSIZE, &max, sizeof(max));
  std::string path = config.control.empty() ? state_dir + "/control.sock" : config.control;
  if (path.rfind("ipc://", 0) == 0) path = path.substr(6);
  ::unlink(path.c_str());
  // Created with no access for others from the start, then made exactly 0600.
  mode_t old = ::umask(0077);
  int rc = zmq_bind(control, ("ipc://" + path).c_str());
  ::umask(old);
  if (rc != 0) return Status::io("bind control socket " + path + ": " + zmq_strerror(zmq_errno()));
  std::size_t fd_len = sizeof(control_fd);
  if (zmq_getsockopt(control, ZMQ_FD, &control_fd, &fd_len) != 0) {
    return Status::io(std::string("control socket descriptor: ") + zmq_strerror(zmq_errno()));
  }
  if (config.control_group.empty()) {
    ::chmod(path.c_str(), 0600);
  } else {
    // [agent] control_group: members of the group may use the command line too.
    struct group* g = ::getgrnam(config.control_group.c_str());
    if (!g) {
      ::unlink(path.c_str());
      return Status::invalid(config.file + ": control_group '" + config.control_group +
                             "' is no group on this host");
    }
    if (::chown(path.c_str(), static_cast<uid_t>(-1), g->gr_gid) != 0) {
      ::unlink(path.c_str());
      return Status::io("chown control socket " + path + " to group " + config.control_group +
                        ": " + std::strerror(errno));
    }
    ::chmod(path.c_str(), 0660);
  }
  control_endpoint = "ipc://" + path;
  return Status::ok();
}

void Daemon::Impl::serve_control() {
  std::int64_t until = now_ms() + kControlBudgetMs;
  for (int i = 0; i < 64 && now_ms() < until; ++i) {
    std::vector<std::string> frames;
    for (;;) {
      zmq_msg_t m;
      zmq_msg_init(&m);
      if (zmq_msg_recv(&m, control, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&m);
        // Nothing more (EAGAIN): the descriptor signals the next request.
        if (frames.empty() && zmq_errno() == EAGAIN) control_unread = false;
        break;
      }
      frames.emplace_back(static_cast<const char*>(zmq_msg_data(&m)), zmq_msg_size(&m));
      int more = zmq_msg_more(&m);
      zmq_msg_close(&m);
      if (!more) break;
    }
    if (frames.empty()) return;
    nlohmann::json answer;
    nlohmann::json req = nlohmann::json::parse(frames.back(), nullptr, false);
    if (req.is_discarded() || !req.is_object() || !req.contains("method") ||
        !req["method"].is_string()) {
      answer = {{"error", "bad request: expected {\"method\": ..., \"args\": {...}}"}};
    } else {
      nlohmann::json args = req.value("args", nlohmann::json::object());
      answer = control_request(req["method"].get<std::string>(), args);
    }
    std::string body = answer.dump();
    for (std::size_t f = 0; f + 1 < frames.size(); ++f) {
      zmq_send(control, frames[f].data(), frames[f].size(), ZMQ_SNDMORE | ZMQ_DONTWAIT);
    }
    zmq_send(control, body.data(), body.size(), ZMQ_DONTWAIT);
  }
}

nlohmann::json Daemon::Impl::control_request(const std::string& method, const nlohmann::json& args,
                                             bool remote) {
  if (!args.is_object()) return {{"error", "bad request: \"args\" must be an object"}};
  try {
    if (method == "status") return status_json();
    if (method == "wait") return wait_json(args);
    if (method == "retry") {
      // A client key may only ask questions ([trust] clients are read-only).
      if (remote) return {{"error", "retry is refused to client keys: ask the agent's host"}};
      return retry_json(args);
    }
    if (method == "gc") {
      if (remote) return {{"error", "gc is refused to client keys: ask the agent's host"}};
      return gc_json(args);
    }
    // A client key may ask for a repair as it may ask for a fetch: the agent only drops
    // objects that do not match their digest and fetches them again from another holder.
    if (method == "repair") return repair_json(args);
    if (method == "jobs") return jobs_json(args);
    if (method == "job") {
      auto id = resolve_job(args.value("job", ""));
      if (!id.is_ok()) return error_answer(id.status());
      auto view = core().job(*id);
      if (!view) return error_answer(Status::not_found("no job " + id->hex()));
      return job_json(*view, true);
    }
    if (method == "peers") return peers_json();
    if (method == "promises") return promises_json();
    if (method == "lineage") return lineage_json(args);
    if (method == "attest") return attest_json(args);
    if (method == "why") return why_json(args);
    if (method == "verify") return verify_json();
    if (method == "resolve") return resolve_json(args);
    if (method == "fetch") return fetch_json(args);
    if (method.rfind("web_", 0) == 0) return web_json(method, args);  // agent/web.h
  } catch (const nlohmann::json::exception& e) {
    // A wrongly typed argument ("job": 5): the request is refused, nothing changes.
    return {{"error", std::string("bad request: ") + e.what()}};
  }
  return {{"error", "unknown method '" + method + "'"}};
}

// This agent and every peer as status reports them (vow status, the web view's mesh).
nlohmann::json Daemon::Impl::agents_json() {
  using nlohmann::json;
  json agents = json::array();
  std::int64_t now = now_ms();
  agents.push_back({{"name", config.name},
                    {"id", identity->id()},
                    {"self", true},
                    {"alive", true},
                    {"running", agent->jobs_here()},
                    {"catching_up", core().catching_up()},
                    {"vv_sum", core().ledger().vv_sum()},
                    {"last_seen_ms", 0}});
  for (const auto& p : core().peers()) {
    agents.push_back({{"name", p.name},
                      {"id", transport::agent_id(p.key)},
                      {"self", false},
                      {"alive", p.liveness == promises::Liveness::kAlive},
                      {"liveness", promises::liveness_name(p.liveness)},
                      {"running", p.running},
                      {"capacity", p.capacity},
                      {"vv_sum", p.vv_sum},
                      {"last_seen_ms", p.last_heard_ms ? now - *p.last_heard_ms : -1}});
  }
  return agents;
}

// Inbound messages and statements dropped, by reason (docs/cli.md, `rejected`).
nlohmann::json Daemon::Impl::rejected_json() {
  using nlohmann::json;
  json rejected = json::object();
  auto counters = transport->counters();
  for (std::size_t i = 0; i < transport::kRejectReasonCount; ++i) {
    rejected[transport::reject_reason_name(static_cast<transport::RejectReason>(i))] =
        counters.rejected[i];
  }
  rejected["untrusted_handshake"] = counters.zap_denied;
  rejected["tree_too_large"] = agent->counters().trees_refused;
  rejected["attachment_mismatch"] = agent->counters().attached_refused;
  for (const char* reason : {"over_limit", "over_budget"}) {
    auto it = core().refused().find(reason);
    rejected[reason] = it == core().refused().end() ? 0 : it->second;
  }
  return rejected;
}

// The sources this agent provides (docs/cli.md, `sources`): the latest snapshot, and
// the error that keeps it from being read, since when.
nlohmann::json Daemon::Impl::sources_json() {
  using nlohmann::json;
  json out = json::array();
  for (const auto& src : sources) {
    json s = {{"pipeline", src.decl.pipeline},
              {"source", src.decl.source},
              {"path", src.path},
              {"watch", src.decl.watch},
              {"state", !src.error.empty() ? "error" : src.snapshotted ? "ok" : "unchecked"},
              {"snapshot", src.reported ? json(src.reported->hex()) : json(nullptr)},
              {"last_ok_ms", src.last_ok_ms}};
    if (!src.error.empty()) {
      s["error"] = src.error;
      s["error_since_ms"] = src.error_since_ms;
    }
    out.push_back(std::move(s));
  }
  return out;
}

std::uint64_t Daemon::Impl::http_snapshot_key(bool is_ready, const std::string& why) {
  std::uint64_t h = 1469598103934665603ULL;  // FNV-1a over 64-bit words
  auto mix = [&h](std::uint64_t v) {
    h ^= v;
    h *= 1099511628211ULL;
  };
  const promises::Ledger& l = core().ledger();
  for (std::uint64_t v :
       {l.vv_sum(), static_cast<std::uint64_t>(l.size()), l.horizon_number(), l.retired_count()}) {
    mix(v);
  }
  for (const auto& [reason, n] : core().plans_made()) mix(n);
  for (const auto& [reason, n] : core().refused()) mix(n);
  mix(core().catching_up() ? 1 : 0);
  mix(agent->jobs_here());
  const AgentCounters& ac = agent->counters();
  for (std::uint64_t v :
       {ac.statements_in, ac.statements_persisted, ac.jobs_started, ac.jobs_adopted,
        ac.worker_backlogged, ac.worker_refused, ac.trees_refused, ac.outputs_refused,
        ac.attached_sent, ac.attached_used, ac.attached_refused}) {
    mix(v);
  }
  const transport::TransportCounters tc = transport->counters();
  for (std::uint64_t v : tc.rejected) mix(v);
  for (std::uint64_t v :
       {tc.duplicates, tc.vouched, tc.equivocations, tc.dropped_queue_full, tc.dropped_no_link,
        tc.zap_denied, tc.handshakes_failed, tc.disconnects}) {
    mix(v);
  }
  const transport::StreamCounters& sc = tc.streams;
  for (std::uint64_t v :
       {sc.bytes_sent, sc.bytes_received, sc.fetches_ok, sc.fetches_failed, sc.serves_refused}) {
    mix(v);
  }
  mix(static_cast<std::uint64_t>(core().held().size()));
  mix(gc.bytes_held);
  mix(gc.collected_bytes);
  mix(gc.passes_made);
  mix(gc.passes_skipped);
  mix(slow_turns);
  for (const auto& p : core().peers()) {
    mix(static_cast<std::uint64_t>(p.liveness));
    mix(p.running);
    mix(p.capacity);
    mix(p.vv_sum);
  }
  for (const auto& src : sources) {
    mix(src.snapshotted ? 1 : 0);
    mix(static_cast<std::uint64_t>(src.last_ok_ms));
    mix(std::hash<std::string>{}(src.error));
  }
  mix(is_ready ? 1 : 0);
  mix(std::hash<std::string>{}(why));
  return h;
}

nlohmann::json Daemon::Impl::status_json() {
  using nlohmann::json;
  json agents = agents_json();
  // Jobs by pipeline and stage of the current definitions (docs/coordination.md section
  // 4), and the canonical outputs of finished ones.
  std::map<std::string, std::map<std::string, std::map<std::string, int>>> counts;
  std::map<std::string, std::map<std::string, json>> outputs;
  std::map<std::string, std::map<std::string, json>> stage_info;
  const promises::Plan& plan = core().plan();
  for (const auto& sp : plan.stages) {
    auto& c = counts[sp.pipeline][sp.stage];
    for (const char* k : {"pending", "ready", "running", "done", "failed", "superseded"}) c[k] = 0;
    json info = {{"state", promises::stage_state_name(sp.state)},
                 {"digest", sp.stage_digest.hex()}};
    if (!sp.reason.empty()) info["reason"] = sp.reason;
    stage_info[sp.pipeline][sp.stage] = info;
  }
  // Two current definitions of one stage: which agents promise which.
  std::map<std::string, json> conflicts;
  for (const auto& c : plan.conflicts) {
    json defs = json::array();
    for (const auto& [digest, agents] : c.promised_by) {
      json who = json::array();
      for (const auto& a : agents) who.push_back(agent_ref(a));
      defs.push_back({{"digest", digest.hex()}, {"agents", who}});
    }
    auto& list = conflicts[c.pipeline];
    if (list.is_null()) list = json::array();
    list.push_back({{"stage", c.stage}, {"planned", c.planned.hex()}, {"definitions", defs}});
  }
  // Counts from the core's job index (the cost is what changed since the last query);
  // the canonical outputs of stages small enough to list (kMaxStatusResults).
  for (const auto& [key, jc] : core().job_counts()) {
    auto& c = counts[key.first][key.second];
    for (auto st : {promises::JobState::kReady, promises::JobState::kRunning,
                    promises::JobState::kDone, promises::JobState::kFailed,
                    promises::JobState::kSuperseded}) {
      c[promises::job_state_name(st)] = static_cast<int>(jc.of(st));
    }
    if (!c.count("pending")) c["pending"] = 0;
  }
  std::map<std::string, std::map<std::string, std::size_t>> omitted;
  for (const auto& sp : plan.stages) {
    if (sp.jobs.size() > kMaxStatusResults) {
      std::size_t done = 0;
      auto it = counts.find(sp.pipeline);
      if (it != counts.end() && it->second.count(sp.stage)) done = it->second[sp.stage]["done"];
      if (done > 0) omitted[sp.pipeline][sp.stage] = done;
      continue;
    }
    std::vector<Digest> ids = sp.jobs;
    std::sort(ids.begin(), ids.end());  // job id order, as `vow jobs`
    for (const auto& job : ids) {
      const Statement* st = core().canonical(job);
      const auto* r = st ? std::get_if<JobResult>(&st->body) : nullptr;
      if (!r) continue;
      auto& o = outputs[sp.pipeline][sp.stage];
      if (o.is_null()) o = json::array();
      json outs = json::object();
      for (const auto& n : r->outputs) outs[n.name] = n.artifact.digest.hex();
      o.push_back({{"job", job.hex()},
                   {"shard", r->job.shard},
                   {"executor", transport::agent_id(st->author)},
                   {"outputs", outs}});
    }
  }
  json pls = json::array();
  for (const auto& [pname, stages] : counts) {
    json ss = json::array();
    std::string digest;
    for (const auto& pl : plan.pipelines) {
      if (pl->name == pname) digest = pl->digest.hex();
    }
    for (const auto& [sname, c] : stages) {
      json s = {{"name", sname}, {"jobs", c}};
      auto info = stage_info[pname].find(sname);
      if (info != stage_info[pname].end()) s.update(info->second);
      if (outputs[pname].count(sname)) s["results"] = outputs[pname][sname];
      if (omitted[pname].count(sname)) s["results_omitted"] = omitted[pname][sname];
      ss.push_back(s);
    }
    json p = {{"name", pname}, {"digest", digest}, {"stages", ss}};
    p["conflicts"] = conflicts.count(pname) ? conflicts[pname] : json::array();
    pls.push_back(p);
  }
  json rejected = rejected_json();
  auto counters = transport->counters();
  // Authors proven to sign two statements with one seq: none of theirs counts.
  const promises::BindingReport& binding = core().binding_summary();
  json equivocators = json::array();
  for (const auto& k : binding.equivocators) equivocators.push_back(transport::agent_id(k));
  json unbound = json::object();
  for (const auto& [reason, n] : binding.unbound) unbound[reason] = n;
  return {
      {"agent", {{"name", config.name}, {"id", identity->id()}, {"listen", transport->endpoint()},
                 {"advertise", advertised_endpoint()}}},
      {"agents", agents},
      {"pipelines", pls},
      {"sources", sources_json()},
      {"rejected", rejected},
      {"statements",
       {{"received", agent->counters().statements_in},
        {"persisted", agent->counters().statements_persisted},
        {"duplicates", counters.duplicates},
        {"vouched", counters.vouched},
        {"equivocations", counters.equivocations}}},
      {"equivocators", equivocators},
      {"unbound", unbound},
      {"jobs_started_here", agent->counters().jobs_started},
      {"jobs_adopted_here", agent->counters().jobs_adopted},
      {"outputs_refused_here", agent->counters().outputs_refused},
      {"worker_backlogged", agent->counters().worker_backlogged}};
}

}  // namespace vow::agent

namespace vow::agent {

// /metrics: Prometheus text format. Names and meanings: docs/cli.md.
std::string Daemon::Impl::metrics_text() {
  std::string out;
  header(out, "vow_build_info", "gauge",
         "Always 1: the release of this agent and the wire protocol it speaks.");
  sample(out, "vow_build_info",
         {{"version", VOW_VERSION}, {"protocol", std::to_string(transport::kProtocolVersion)},
          {"schema", std::to_string(store::kSchemaVersion)}},
         1);
  process_metrics(out);
  header(out, "vow_ledger_statements", "gauge",
         "Statements this agent's ledger holds (the whole mesh's, not only its own).");
  sample(out, "vow_ledger_statements", {}, static_cast<double>(core().ledger().size()));
  {
    // The SQLite file and its write-ahead log: two stats a snapshot.
    std::string path = store::ledger_path(state_dir);
    struct stat db {}, wal {};
    if (::stat(path.c_str(), &db) == 0) {
      double bytes = static_cast<double>(db.st_size);
      if (::stat((path + "-wal").c_str(), &wal) == 0) bytes += static_cast<double>(wal.st_size);
      header(out, "vow_ledger_bytes", "gauge",
             "Bytes of this agent's ledger on disk (the SQLite file and its write-ahead log).");
      sample(out, "vow_ledger_bytes", {}, bytes);
    }
  }
  std::map<std::tuple<std::string, std::string, std::string>, int> by_state;
  for (const auto& sp : core().plan().stages) {
    for (const char* k : {"pending", "ready", "running", "done", "failed", "superseded"}) {
      by_state[{sp.pipeline, sp.stage, k}] = 0;
    }
  }
  std::uint64_t nondeterministic = 0;
  for (const auto& [key, c] : core().job_counts()) {
    for (auto st : {promises::JobState::kReady, promises::JobState::kRunning,
                    promises::JobState::kDone, promises::JobState::kFailed,
                    promises::JobState::kSuperseded}) {
      by_state[{key.first, key.second, promises::job_state_name(st)}] =
          static_cast<int>(c.of(st));
    }
    nondeterministic += c.nondeterministic;
  }
  header(out, "vow_jobs", "gauge", "Jobs of the current plan by pipeline, stage and state.");
  for (const auto& [k, n] : by_state) {
    sample(out, "vow_jobs",
           {{"pipeline", std::get<0>(k)}, {"stage", std::get<1>(k)}, {"state", std::get<2>(k)}}, n);
  }
  header(out, "vow_artifact_bytes", "gauge",
         "Bytes of objects in this agent's artifact store, as of the latest GC pass.");
  if (gc.bytes_known) sample(out, "vow_artifact_bytes", {}, static_cast<double>(gc.bytes_held));
  header(out, "vow_artifact_collected_bytes_total", "counter",
         "Bytes of objects garbage collection removed from the artifact store.");
  sample(out, "vow_artifact_collected_bytes_total", {}, static_cast<double>(gc.collected_bytes));
  header(out, "vow_artifact_collected_objects_total", "counter",
         "Objects garbage collection removed from the artifact store.");
  sample(out, "vow_artifact_collected_objects_total", {},
         static_cast<double>(gc.collected_objects));
  header(out, "vow_gc_passes_total", "counter",
         "Garbage collection passes: made, or skipped because nothing they read had changed "
         "since a periodic pass that found nothing to do.");
  sample(out, "vow_gc_passes_total", {{"outcome", "made"}}, static_cast<double>(gc.passes_made));
  sample(out, "vow_gc_passes_total", {{"outcome", "skipped"}},
         static_cast<double>(gc.passes_skipped));
  header(out, "vow_loop_slow_turns_total", "counter",
         "Turns of the event loop that took 200 ms or more (each is logged).");
  sample(out, "vow_loop_slow_turns_total", {}, static_cast<double>(slow_turns));
  header(out, "vow_loop_turn_max_seconds", "gauge", "The longest turn of the event loop so far.");
  sample(out, "vow_loop_turn_max_seconds", {}, static_cast<double>(turn_max_us) / 1e6);
  header(out, "vow_http_snapshots_total", "counter",
         "HTTP snapshots the loop made (this one included): after a change, else every 5 s.");
  sample(out, "vow_http_snapshots_total", {}, static_cast<double>(http_snapshots + 1));
  header(out, "vow_jobs_running_here", "gauge", "Job processes this agent runs now.");
  sample(out, "vow_jobs_running_here", {}, static_cast<double>(agent->jobs_here()));
  header(out, "vow_claims_total", "counter", "Claims this agent made.");
  sample(out, "vow_claims_total", {}, static_cast<double>(agent->metrics().claims));
  header(out, "vow_takeovers_total", "counter",
         "Claims this agent made at an epoch above 1 (taking over a job).");
  sample(out, "vow_takeovers_total", {}, static_cast<double>(agent->metrics().takeovers));
  header(out, "vow_results_total", "counter", "Results this agent signed, by outcome.");
  sample(out, "vow_results_total", {{"outcome", "ok"}},
         static_cast<double>(agent->metrics().results_ok));
  sample(out, "vow_results_total", {{"outcome", "failed"}},
         static_cast<double>(agent->metrics().results_failed));
  header(out, "vow_nondeterministic_jobs", "gauge",
         "Jobs with successful results that disagree on their outputs.");
  sample(out, "vow_nondeterministic_jobs", {}, static_cast<double>(nondeterministic));
  header(out, "vow_stage_conflicts", "gauge",
         "Stages whose current adverts promise more than one definition.");
  sample(out, "vow_stage_conflicts", {}, static_cast<double>(core().plan().conflicts.size()));
  header(out, "vow_plans_made_total", "counter",
         "Plans made (each a pass over every job known), by what called for it.");
  for (const auto& [reason, n] : core().plans_made()) {
    sample(out, "vow_plans_made_total", {{"reason", reason}}, static_cast<double>(n));
  }
  header(out, "vow_jobs_indexed_total", "counter",
         "Jobs the job index behind status and /metrics looked at again.");
  sample(out, "vow_jobs_indexed_total", {}, static_cast<double>(core().jobs_indexed()));
  header(out, "vow_statements_received_total", "counter",
         "Statements received from peers that passed validation.");
  sample(out, "vow_statements_received_total", {},
         static_cast<double>(agent->counters().statements_in));
  header(out, "vow_statements_broadcast_total", "counter",
         "Statements sent to every peer, and the batches (one frame to each peer) they went in.");
  sample(out, "vow_statements_broadcast_total", {{"unit", "statement"}},
         static_cast<double>(agent->counters().statements_broadcast));
  sample(out, "vow_statements_broadcast_total", {{"unit", "batch"}},
         static_cast<double>(agent->counters().batches_broadcast));
  header(out, "vow_statements_signed_total", "counter",
         "Own statements written to the ledger, and the signatures they took (one for each "
         "batch of statements published at once).");
  sample(out, "vow_statements_signed_total", {{"unit", "statement"}},
         static_cast<double>(agent->counters().own_statements));
  sample(out, "vow_statements_signed_total", {{"unit", "signature"}},
         static_cast<double>(agent->counters().own_signatures));
  header(out, "vow_statements_persisted_total", "counter", "Statements written to the ledger.");
  sample(out, "vow_statements_persisted_total", {},
         static_cast<double>(agent->counters().statements_persisted));
  auto counters = transport->counters();
  header(out, "vow_messages_rejected_total", "counter", "Messages dropped, by reason.");
  for (std::size_t i = 0; i < transport::kRejectReasonCount; ++i) {
    sample(out, "vow_messages_rejected_total",
           {{"reason", transport::reject_reason_name(static_cast<transport::RejectReason>(i))}},
           static_cast<double>(counters.rejected[i]));
  }
  sample(out, "vow_messages_rejected_total", {{"reason", "untrusted_handshake"}},
         static_cast<double>(counters.zap_denied));
  sample(out, "vow_messages_rejected_total", {{"reason", "tree_too_large"}},
         static_cast<double>(agent->counters().trees_refused));
  sample(out, "vow_messages_rejected_total", {{"reason", "attachment_mismatch"}},
         static_cast<double>(agent->counters().attached_refused));
  for (const char* reason : {"over_limit", "over_budget"}) {
    auto it = core().refused().find(reason);
    sample(out, "vow_messages_rejected_total", {{"reason", reason}},
           it == core().refused().end() ? 0.0 : static_cast<double>(it->second));
  }
  header(out, "vow_outputs_refused_total", "counter",
         "Finished jobs failed because an output was refused (a hard link, another owner).");
  sample(out, "vow_outputs_refused_total", {},
         static_cast<double>(agent->counters().outputs_refused));
  const promises::BindingReport& binding = core().binding_summary();
  header(out, "vow_equivocating_authors", "gauge",
         "Authors proven to sign two different statements with one sequence number.");
  sample(out, "vow_equivocating_authors", {}, static_cast<double>(binding.equivocators.size()));
  header(out, "vow_unbound_statements", "gauge",
         "Statements held that do not count (kept as evidence), by rule and reason.");
  for (const auto& [reason, n] : binding.unbound) {
    sample(out, "vow_unbound_statements", {{"reason", label_token(reason)}},
           static_cast<double>(n));
  }
  header(out, "vow_duplicate_statements_total", "counter",
         "Statements received again byte for byte (dropped quietly).");
  sample(out, "vow_duplicate_statements_total", {}, static_cast<double>(counters.duplicates));
  header(out, "vow_vouched_statements_total", "counter",
         "Statements taken on a horizon's word, their signature not checked again.");
  sample(out, "vow_vouched_statements_total", {}, static_cast<double>(counters.vouched));
  header(out, "vow_shared_signature_statements_total", "counter",
         "Statements received signed together with one whose batch signature was checked "
         "already: only their place in the batch was checked.");
  sample(out, "vow_shared_signature_statements_total", {},
         static_cast<double>(counters.shared));
  const promises::Ledger& ledger = core().ledger();
  header(out, "vow_ledger_horizon", "gauge",
         "The last ledger horizon applied here, and the last checkpoint among them.");
  sample(out, "vow_ledger_horizon", {{"kind", "horizon"}},
         static_cast<double>(ledger.horizon_number()));
  sample(out, "vow_ledger_horizon", {{"kind", "checkpoint"}},
         static_cast<double>(ledger.checkpoint_number()));
  header(out, "vow_ledger_retired_statements_total", "counter",
         "Statements horizons retired here (dropped from memory and disk).");
  sample(out, "vow_ledger_retired_statements_total", {},
         static_cast<double>(ledger.retired_count()));
  header(out, "vow_artifact_sent_bytes_total", "counter", "Artifact bytes sent to peers.");
  sample(out, "vow_artifact_sent_bytes_total", {},
         static_cast<double>(counters.streams.bytes_sent));
  header(out, "vow_artifact_received_bytes_total", "counter",
         "Artifact bytes received from peers.");
  sample(out, "vow_artifact_received_bytes_total", {},
         static_cast<double>(counters.streams.bytes_received));
  header(out, "vow_attached_outputs_total", "counter",
         "Small outputs that went with their result, and small source files with their "
         "version (docs/coordination.md): sent with own statements, and peers' stored "
         "without a transfer.");
  sample(out, "vow_attached_outputs_total", {{"direction", "out"}},
         static_cast<double>(agent->counters().attached_sent));
  sample(out, "vow_attached_outputs_total", {{"direction", "used"}},
         static_cast<double>(agent->counters().attached_used));
  header(out, "vow_artifact_chunks_total", "counter",
         "Artifact chunks, by direction and link (\"plain\": integrity-only bulk, "
         "docs/protocol.md; \"dropped\": frames on the plain listener naming no stream).");
  const auto& sc = counters.streams;
  sample(out, "vow_artifact_chunks_total", {{"direction", "out"}, {"link", "encrypted"}},
         static_cast<double>(sc.chunks_sent - sc.bulk_chunks_sent));
  sample(out, "vow_artifact_chunks_total", {{"direction", "out"}, {"link", "plain"}},
         static_cast<double>(sc.bulk_chunks_sent));
  sample(out, "vow_artifact_chunks_total", {{"direction", "in"}, {"link", "encrypted"}},
         static_cast<double>(sc.chunks_received - sc.bulk_chunks_received));
  sample(out, "vow_artifact_chunks_total", {{"direction", "in"}, {"link", "plain"}},
         static_cast<double>(sc.bulk_chunks_received));
  sample(out, "vow_artifact_chunks_total", {{"direction", "in"}, {"link", "dropped"}},
         static_cast<double>(sc.bulk_frames_dropped + counters.bulk_frames_dropped));
  header(out, "vow_frames_total", "counter", "Protocol frames, by direction.");
  sample(out, "vow_frames_total", {{"direction", "in"}}, static_cast<double>(counters.frames_in));
  sample(out, "vow_frames_total", {{"direction", "out"}}, static_cast<double>(counters.frames_out));
  agent->metrics().handoff.render(out, "vow_handoff_latency_seconds",
                                  "Upstream result signed to the downstream job started here.");
  header(out, "vow_job_duration_seconds", "histogram",
         "Wall time of job processes run here, by pipeline and stage.");
  for (const auto& [key, h] : agent->metrics().job_duration) {
    h.series(out, "vow_job_duration_seconds", {{"pipeline", key.first}, {"stage", key.second}});
  }
  header(out, "vow_source_ok", "gauge",
         "1 if the latest check of a source this agent provides read it, else 0.");
  for (const auto& src : sources) {
    sample(out, "vow_source_ok",
           {{"pipeline", src.decl.pipeline}, {"source", src.decl.source}, {"path", src.path}},
           src.snapshotted && src.error.empty() ? 1 : 0);
  }
  header(out, "vow_source_last_snapshot_timestamp_seconds", "gauge",
         "When a check last read a source this agent provides (Unix time; 0 never).");
  for (const auto& src : sources) {
    sample(out, "vow_source_last_snapshot_timestamp_seconds",
           {{"pipeline", src.decl.pipeline}, {"source", src.decl.source}, {"path", src.path}},
           static_cast<double>(src.last_ok_ms) / 1e3);
  }
  header(out, "vow_source_error_since_timestamp_seconds", "gauge",
         "Since when a source this agent provides cannot be read (Unix time), with the error.");
  for (const auto& src : sources) {
    if (src.error.empty()) continue;
    sample(out, "vow_source_error_since_timestamp_seconds",
           {{"pipeline", src.decl.pipeline},
            {"source", src.decl.source},
            {"path", src.path},
            {"error", src.error}},
           static_cast<double>(src.error_since_ms) / 1e3);
  }
  int alive = 0;
  int known = 0;
  for (const auto& p : core().peers()) {
    ++known;
    if (p.liveness == promises::Liveness::kAlive) ++alive;
  }
  header(out, "vow_peers", "gauge", "Peers this agent knows, by liveness.");
  sample(out, "vow_peers", {{"liveness", "alive"}}, alive);
  sample(out, "vow_peers", {{"liveness", "not_alive"}}, known - alive);
  header(out, "vow_peers_alive", "gauge", "Peers heard from within the detection window.");
  sample(out, "vow_peers_alive", {}, alive);
  return out;
}

}  // namespace vow::agent
