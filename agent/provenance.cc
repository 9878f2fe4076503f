// Attestations in the daemon (docs/provenance.md): signing the attestation of every own
// successful result and source version as it is published, rebuilding and checking the
// attestation of any statement in the ledger, and the `attest` control method behind
// `vow attest`.
#include <charconv>
#include <set>

#include "agent/daemon_internal.h"

namespace vow::agent {

using nlohmann::json;

const promises::Stage* Daemon::Impl::stage_definition(const Digest& stage_digest) {
  for (const auto& p : pipelines) {
    for (const auto& s : p.stages) {
      if (s.digest == stage_digest) return &s;
    }
  }
  auto it = retired_stages.find(stage_digest);
  if (it != retired_stages.end()) return &it->second;
  if (!agent) return nullptr;
  for (const auto& p : core().plan().known) {
    for (const auto& s : p->stages) {
      if (s.digest == stage_digest) return &s;
    }
  }
  return nullptr;
}

void Daemon::Impl::attest_own_statement(Statement& st) {
  // Only this agent's own files: a stage it runs is one it loaded (the core is in the
  // middle of publishing and is not asked).
  auto own = [this](const Digest& d) -> const promises::Stage* {
    for (const auto& p : pipelines) {
      for (const auto& s : p.stages) {
        if (s.digest == d) return &s;
      }
    }
    auto it = retired_stages.find(d);
    return it == retired_stages.end() ? nullptr : &it->second;
  };
  if (!attest_own(*identity, st, own)) {
    const auto* r = std::get_if<JobResult>(&st.body);
    log->warn("result of job {} published without an attestation: stage {} is not in this "
              "agent's pipeline files",
              r ? r->job.job.short_hex() : "?", r ? r->job.stage_digest.short_hex() : "?");
  }
}

Result<Attestation> Daemon::Impl::attestation(const Statement& st) {
  const promises::Stage* stage = nullptr;
  if (const auto* r = std::get_if<JobResult>(&st.body)) {
    stage = stage_definition(r->job.stage_digest);
    if (stage == nullptr && r->ok && r->attestation) {
      return Status::not_found("the definition of stage " + r->job.pipeline + "/" +
                               r->job.stage + " " + r->job.stage_digest.hex() +
                               " is known to no agent this one heard from");
    }
  }
  return attestation_of(st, stage);
}

json Daemon::Impl::attest_json(const json& args) {
  json lineage = lineage_json(args);
  if (lineage.contains("error")) return lineage;
  json attestations = json::array();
  json keys = json::object();
  json problems = json::array();
  for (const auto& step : lineage["steps"]) {
    std::string id = step.value("id", "");
    auto slash = id.rfind('/');
    auto author = transport::parse_agent_id(id.substr(0, slash));
    std::uint64_t seq = 0;
    const char* digits = id.data() + slash + 1;
    std::from_chars(digits, id.data() + id.size(), seq);
    const Statement* st = author.is_ok() ? core().ledger().get(*author, seq) : nullptr;
    if (st == nullptr) {
      problems.push_back("statement " + id + " is not in the ledger");
      continue;
    }
    auto a = attestation(*st);
    if (!a.is_ok()) {
      problems.push_back(a.status().message());
      continue;
    }
    json key = public_key_json(st->author);
    key["name"] = agent_name(st->author);
    keys[st->author.hex()] = key;
    attestations.push_back({{"step", id},
                            {"kind", step.value("kind", "")},
                            {"digest", a->digest.hex()},
                            {"line", a->line}});
  }
  return {{"ref", lineage["ref"]},
          {"artifacts", lineage["artifacts"]},
          {"attestations", attestations},
          {"keys", keys},
          {"problems", problems}};
}

}  // namespace vow::agent
