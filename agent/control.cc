// The control socket: the command line's way into a running agent (DESIGN.md section 7).
// A ZeroMQ ROUTER bound at ipc://STATE/control.sock, mode 0600 (only the agent's user);
// requests and answers are JSON: {"method": "status", "args": {...}} ->
// {"ok": true, ...} or {"error": "..."}. The same methods answer trusted clients over
// the CURVE endpoint (Daemon::Impl::handle_inbound). Methods: docs/cli.md.
#include <sys/stat.h>

#include "agent/daemon_internal.h"
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
  ::chmod(path.c_str(), 0600);
  control_endpoint = "ipc://" + path;
  return Status::ok();
}

void Daemon::Impl::serve_control() {
  for (int i = 0; i < 64; ++i) {
    std::vector<std::string> frames;
    for (;;) {
      zmq_msg_t m;
      zmq_msg_init(&m);
      if (zmq_msg_recv(&m, control, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&m);
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

nlohmann::json Daemon::Impl::control_request(const std::string& method, const nlohmann::json&) {
  if (method == "status") return status_json();
  return {{"error", "unknown method '" + method + "'"}};
}

nlohmann::json Daemon::Impl::status_json() {
  using nlohmann::json;
  json agents = json::array();
  std::int64_t now = now_ms();
  agents.push_back({{"name", config.name},
                    {"id", identity->id()},
                    {"self", true},
                    {"alive", true},
                    {"running", jobs.size()},
                    {"last_seen_ms", 0}});
  for (const auto& p : core->peers()) {
    agents.push_back({{"name", p.name},
                      {"id", transport::agent_id(p.key)},
                      {"self", false},
                      {"alive", p.liveness == promises::Liveness::kAlive},
                      {"liveness", promises::liveness_name(p.liveness)},
                      {"running", p.running},
                      {"capacity", p.capacity},
                      {"last_seen_ms", p.last_heard_ms ? now - *p.last_heard_ms : -1}});
  }
  // Jobs by pipeline and stage, and the canonical outputs of finished ones.
  std::map<std::string, std::map<std::string, std::map<std::string, int>>> counts;
  std::map<std::string, std::map<std::string, json>> outputs;
  for (const auto& pl : pipelines) {
    for (const auto& st : pl.stages) {
      auto& c = counts[pl.name][st.name];
      for (const char* k : {"pending", "ready", "running", "done", "failed", "superseded"})
        c[k] = 0;
    }
  }
  for (const auto& v : core->jobs()) {
    auto& c = counts[v.job.pipeline][v.job.stage];
    c[promises::job_state_name(v.state)]++;
    if (v.state != promises::JobState::kDone) continue;
    if (const Statement* st = core->canonical(v.job.job)) {
      if (const auto* r = std::get_if<JobResult>(&st->body)) {
        auto& o = outputs[v.job.pipeline][v.job.stage];
        if (o.is_null()) o = json::array();
        json outs = json::object();
        for (const auto& n : r->outputs) outs[n.name] = n.artifact.digest.hex();
        o.push_back({{"job", v.job.job.hex()},
                     {"shard", v.job.shard},
                     {"executor", transport::agent_id(st->author)},
                     {"outputs", outs}});
      }
    }
  }
  json pls = json::array();
  for (const auto& [pname, stages] : counts) {
    json ss = json::array();
    std::string digest;
    for (const auto& pl : pipelines) {
      if (pl.name == pname) digest = pl.digest.hex();
    }
    for (const auto& [sname, c] : stages) {
      json s = {{"name", sname}, {"jobs", c}};
      if (outputs[pname].count(sname)) s["results"] = outputs[pname][sname];
      ss.push_back(s);
    }
    pls.push_back({{"name", pname}, {"digest", digest}, {"stages", ss}});
  }
  json rejected = json::object();
  auto counters = transport->counters();
  for (std::size_t i = 0; i < transport::kRejectReasonCount; ++i) {
    rejected[transport::reject_reason_name(static_cast<transport::RejectReason>(i))] =
        counters.rejected[i];
  }
  rejected["untrusted-handshake"] = counters.zap_denied;
  return {
      {"agent", {{"name", config.name}, {"id", identity->id()}, {"listen", transport->endpoint()}}},
      {"agents", agents},
      {"pipelines", pls},
      {"rejected", rejected},
      {"statements",
       {{"received", statements_in},
        {"persisted", statements_persisted},
        {"duplicates", counters.duplicates}}},
      {"jobs_started_here", jobs_started},
      {"jobs_adopted_here", jobs_adopted}};
}

}  // namespace vow::agent
