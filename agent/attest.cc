// Attestations: the in-toto Statement of a result or source version, its DSSE
// signature, and the envelope a bundle carries (docs/provenance.md).
#include "agent/attest.h"

#include <sodium.h>

#include <algorithm>
#include <ctime>

namespace vow::agent {
namespace {

using nlohmann::json;

std::string statement_name(const Statement& st) {
  return transport::agent_id(st.author) + "/" + std::to_string(st.seq);
}

// RFC 3339 in UTC with milliseconds: 2024-05-01T12:00:00.123Z.
std::string rfc3339(std::int64_t unix_ms) {
  std::int64_t secs = unix_ms >= 0 ? unix_ms / 1000 : (unix_ms - 999) / 1000;
  auto ms = static_cast<int>(unix_ms - secs * 1000);
  std::time_t t = static_cast<std::time_t>(secs);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%03dZ", ms);
  return buf;
}

json digest_set(const Digest& d, bool is_tree) {
  return {{std::string(is_tree ? kTreeDigestAlgorithm : kFileDigestAlgorithm), d.hex()}};
}

const char* entry_kind_name(EntryKind k) {
  switch (k) {
    case EntryKind::kFile:
      return "file";
    case EntryKind::kExecutable:
      return "executable";
    case EntryKind::kTree:
      return "tree";
  }
  return "file";
}

// The artifact `a` named `name`, then, for a tree, each of its entries named
// `name/ENTRY`: what a consumer's dependencies name one by one (a fan-out shard is an
// entry; a fan-in directory is made of other steps' outputs).
void add_descriptors(json& list, const std::string& name, const ArtifactRef& a) {
  list.push_back({{"name", name},
                  {"digest", digest_set(a.digest, a.is_tree)},
                  {"annotations",
                   {{"kind", a.is_tree ? "tree" : "file"}, {"sizeBytes", a.size_bytes}}}});
  for (const auto& e : a.entries) {
    list.push_back({{"name", name + "/" + e.name},
                    {"digest", digest_set(e.digest, e.kind == EntryKind::kTree)},
                    {"annotations", {{"kind", entry_kind_name(e.kind)}, {"entryOf", name}}}});
  }
}

json builder(const AgentKey& author) {
  return {{"id", "urn:vow:agent:" + transport::agent_id(author)}};
}

json in_toto(json subject, json predicate) {
  return {{"_type", kInTotoStatementType},
          {"subject", std::move(subject)},
          {"predicateType", kSlsaProvenanceType},
          {"predicate", std::move(predicate)}};
}

}  // namespace

json stage_definition_json(const promises::Stage& stage) {
  std::vector<std::string> inputs;
  for (const auto& i : stage.inputs) inputs.push_back(i.to_string());
  std::sort(inputs.begin(), inputs.end());
  std::vector<std::string> outputs = stage.outputs;
  std::sort(outputs.begin(), outputs.end());
  json def = {{"name", stage.name},
              {"form", stage.run_is_shell ? "shell" : "argv"},
              {"argv", stage.argv},
              {"inputs", inputs},
              {"outputs", outputs},
              {"env", stage.env},
              {"foreach", stage.foreach ? stage.foreach->to_string() : ""}};
  // Only when set, so the attestations of stages without it stay as they were.
  if (!stage.image.empty()) def["image"] = stage.image;
  if (stage.root) def["root"] = stage.root->to_string();
  return def;
}

Result<json> attestation_statement(const Statement& st, const promises::Stage* stage) {
  if (const auto* v = std::get_if<SourceVersion>(&st.body)) {
    json subject = json::array();
    add_descriptors(subject, v->pipeline + "/" + v->source, v->artifact);
    json predicate = {
        {"buildDefinition",
         {{"buildType", kSourceBuildType},
          {"externalParameters",
           {{"pipeline", v->pipeline}, {"source", v->source}, {"version", v->version}}},
          {"resolvedDependencies", json::array()}}},
        {"runDetails",
         {{"builder", builder(st.author)},
          {"metadata",
           {{"invocationId", statement_name(st)}, {"finishedOn", rfc3339(st.wall_unix_ms)}}}}}};
    return in_toto(std::move(subject), std::move(predicate));
  }
  const auto* r = std::get_if<JobResult>(&st.body);
  if (r == nullptr) {
    return Status::invalid("statement " + statement_name(st) + " is a " +
                           statement_kind_name(st.kind()) +
                           ", not a result or a source version: it has no attestation");
  }
  if (!r->ok) {
    return Status::invalid("result " + statement_name(st) +
                           " is a failure: only successful results have attestations");
  }
  if (stage == nullptr || stage->digest != r->job.stage_digest) {
    return Status::invalid("the attestation of result " + statement_name(st) +
                           " needs the definition of stage " + r->job.pipeline + "/" +
                           r->job.stage + " " + r->job.stage_digest.hex());
  }
  std::string step = r->job.pipeline + "/" + r->job.stage +
                     (r->job.shard.empty() ? "" : "[" + r->job.shard + "]");
  json subject = json::array();
  for (const auto& o : r->outputs) add_descriptors(subject, step + "." + o.name, o.artifact);
  json deps = json::array();
  for (const auto& i : r->inputs) add_descriptors(deps, i.name, i.artifact);
  json byproducts = json::array();
  if (r->stdout_digest) {
    byproducts.push_back({{"name", "stdout"}, {"digest", digest_set(*r->stdout_digest, false)}});
  }
  if (r->stderr_digest) {
    byproducts.push_back({{"name", "stderr"}, {"digest", digest_set(*r->stderr_digest, false)}});
  }
  json predicate = {
      {"buildDefinition",
       {{"buildType", kJobBuildType},
        {"externalParameters",
         {{"pipeline", r->job.pipeline},
          {"stage", r->job.stage},
          {"shard", r->job.shard},
          {"stageDigest", r->job.stage_digest.hex()},
          {"definition", stage_definition_json(*stage)}}},
        {"internalParameters", {{"job", r->job.job.hex()}, {"epoch", r->epoch}}},
        {"resolvedDependencies", std::move(deps)}}},
      {"runDetails",
       {{"builder", builder(st.author)},
        {"metadata",
         {{"invocationId", statement_name(st)},
          {"startedOn", rfc3339(r->started_unix_ms)},
          {"finishedOn", rfc3339(r->ended_unix_ms)}}},
        {"byproducts", std::move(byproducts)}}}};
  return in_toto(std::move(subject), std::move(predicate));
}

std::string attestation_payload(const json& statement) {
  // nlohmann's objects are sorted maps; invalid UTF-8 (which a TOML file cannot hold)
  // is replaced rather than thrown.
  return statement.dump(-1, ' ', false, json::error_handler_t::replace);
}

namespace {

// A JSON string as nlohmann's dump writes it (its escapes, invalid UTF-8 replaced). One
// of printable ASCII but for the quote and the backslash (a digest, a name, a time),
// which it writes as it is, is written here; any other goes through nlohmann.
void put_string(std::string& out, std::string_view s) {
  const bool plain = std::all_of(s.begin(), s.end(), [](char c) {
    return c >= 0x20 && c <= 0x7e && c != '"' && c != '\\';
  });
  if (!plain) {
    out += json(std::string(s)).dump(-1, ' ', false, json::error_handler_t::replace);
    return;
  }
  out += '"';
  out += s;
  out += '"';
}

void put_digest_set(std::string& out, const Digest& d, bool is_tree) {
  out += '{';
  put_string(out, is_tree ? kTreeDigestAlgorithm : kFileDigestAlgorithm);
  out += ':';
  put_string(out, d.hex());
  out += '}';
}

// add_descriptors, written: {"annotations":{...},"digest":{...},"name":...} each.
void put_descriptors(std::string& out, bool& first, const std::string& name,
                     const ArtifactRef& a) {
  out += first ? "" : ",";
  first = false;
  out += R"({"annotations":{"kind":)";
  out += a.is_tree ? R"("tree")" : R"("file")";
  out += R"(,"sizeBytes":)";
  out += std::to_string(a.size_bytes);
  out += R"(},"digest":)";
  put_digest_set(out, a.digest, a.is_tree);
  out += R"(,"name":)";
  put_string(out, name);
  out += '}';
  for (const auto& e : a.entries) {
    out += R"(,{"annotations":{"entryOf":)";
    put_string(out, name);
    out += R"(,"kind":)";
    put_string(out, entry_kind_name(e.kind));
    out += R"(},"digest":)";
    put_digest_set(out, e.digest, e.kind == EntryKind::kTree);
    out += R"(,"name":)";
    put_string(out, name + "/" + e.name);
    out += '}';
  }
}

void put_strings(std::string& out, const std::vector<std::string>& list) {
  out += '[';
  for (std::size_t k = 0; k < list.size(); ++k) {
    if (k > 0) out += ',';
    put_string(out, list[k]);
  }
  out += ']';
}

// stage_definition_json, written (its keys in order: argv, env, foreach, form, image,
// inputs, name, outputs, root).
void put_definition(std::string& out, const promises::Stage& stage) {
  std::vector<std::string> inputs;
  for (const auto& i : stage.inputs) inputs.push_back(i.to_string());
  std::sort(inputs.begin(), inputs.end());
  std::vector<std::string> outputs = stage.outputs;
  std::sort(outputs.begin(), outputs.end());
  out += R"({"argv":)";
  put_strings(out, stage.argv);
  out += R"(,"env":{)";
  bool first = true;
  for (const auto& [k, v] : stage.env) {  // a std::map: nlohmann's order
    out += first ? "" : ",";
    first = false;
    put_string(out, k);
    out += ':';
    put_string(out, v);
  }
  out += R"(},"foreach":)";
  put_string(out, stage.foreach ? stage.foreach->to_string() : "");
  out += R"(,"form":)";
  out += stage.run_is_shell ? R"("shell")" : R"("argv")";
  if (!stage.image.empty()) {
    out += R"(,"image":)";
    put_string(out, stage.image);
  }
  out += R"(,"inputs":)";
  put_strings(out, inputs);
  out += R"(,"name":)";
  put_string(out, stage.name);
  out += R"(,"outputs":)";
  put_strings(out, outputs);
  if (stage.root) {
    out += R"(,"root":)";
    put_string(out, stage.root->to_string());
  }
  out += '}';
}

}  // namespace

Result<std::string> result_attestation_payload(const Statement& st,
                                               const promises::Stage* stage) {
  const auto* r = std::get_if<JobResult>(&st.body);
  if (r == nullptr || !r->ok || stage == nullptr || stage->digest != r->job.stage_digest) {
    // Not a successful result of this stage: the tree says why.
    auto statement = attestation_statement(st, stage);
    if (!statement.is_ok()) return statement.status();
    return attestation_payload(*statement);
  }
  std::string step = r->job.pipeline + "/" + r->job.stage +
                     (r->job.shard.empty() ? "" : "[" + r->job.shard + "]");
  std::string out;
  out.reserve(2048);
  out += R"({"_type":)";
  put_string(out, kInTotoStatementType);
  out += R"(,"predicate":{"buildDefinition":{"buildType":)";
  put_string(out, kJobBuildType);
  out += R"(,"externalParameters":{"definition":)";
  put_definition(out, *stage);
  out += R"(,"pipeline":)";
  put_string(out, r->job.pipeline);
  out += R"(,"shard":)";
  put_string(out, r->job.shard);
  out += R"(,"stage":)";
  put_string(out, r->job.stage);
  out += R"(,"stageDigest":)";
  put_string(out, r->job.stage_digest.hex());
  out += R"(},"internalParameters":{"epoch":)";
  out += std::to_string(r->epoch);
  out += R"(,"job":)";
  put_string(out, r->job.job.hex());
  out += R"(},"resolvedDependencies":[)";
  bool first = true;
  for (const auto& i : r->inputs) put_descriptors(out, first, i.name, i.artifact);
  out += R"(]},"runDetails":{"builder":{"id":)";
  put_string(out, "urn:vow:agent:" + transport::agent_id(st.author));
  out += R"(},"byproducts":[)";
  first = true;
  for (const auto& [name, digest] : {std::pair{"stdout", &r->stdout_digest},
                                     std::pair{"stderr", &r->stderr_digest}}) {
    if (!digest->has_value()) continue;
    out += first ? "" : ",";
    first = false;
    out += R"({"digest":)";
    put_digest_set(out, **digest, false);
    out += R"(,"name":)";
    put_string(out, name);
    out += '}';
  }
  out += R"(],"metadata":{"finishedOn":)";
  put_string(out, rfc3339(r->ended_unix_ms));
  out += R"(,"invocationId":)";
  put_string(out, statement_name(st));
  out += R"(,"startedOn":)";
  put_string(out, rfc3339(r->started_unix_ms));
  out += R"(}}},"predicateType":)";
  put_string(out, kSlsaProvenanceType);
  out += R"(,"subject":[)";
  first = true;
  for (const auto& o : r->outputs) put_descriptors(out, first, step + "." + o.name, o.artifact);
  out += "]}";
  return out;
}

std::string dsse_pae(std::string_view payload_type, std::string_view payload) {
  std::string out = "DSSEv1 ";
  out += std::to_string(payload_type.size());
  out += ' ';
  out += payload_type;
  out += ' ';
  out += std::to_string(payload.size());
  out += ' ';
  out += payload;
  return out;
}

AttestationSignature sign_attestation(const transport::Identity& identity,
                                      std::string_view payload) {
  std::string pae = dsse_pae(kDssePayloadType, payload);
  return identity.sign(std::span(reinterpret_cast<const std::uint8_t*>(pae.data()), pae.size()));
}

bool verify_attestation(const AgentKey& signer, std::string_view payload,
                        const AttestationSignature& signature) {
  std::string pae = dsse_pae(kDssePayloadType, payload);
  return transport::verify_signature(
      signer, std::span(reinterpret_cast<const std::uint8_t*>(pae.data()), pae.size()),
      signature);
}

std::string base64(std::span<const std::uint8_t> bytes) {
  const int variant = sodium_base64_VARIANT_ORIGINAL;
  std::string out(sodium_base64_encoded_len(bytes.size(), variant), '\0');
  sodium_bin2base64(out.data(), out.size(), bytes.data(), bytes.size(), variant);
  out.resize(out.size() - 1);  // the terminating NUL
  return out;
}

std::string base64(std::string_view bytes) {
  return base64(std::span(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()));
}

const std::optional<AttestationSignature>* attestation_field(const Statement& st) {
  if (const auto* r = std::get_if<JobResult>(&st.body)) return &r->attestation;
  if (const auto* v = std::get_if<SourceVersion>(&st.body)) return &v->attestation;
  return nullptr;
}

bool attest_own(const transport::Identity& identity, Statement& st,
                const std::function<const promises::Stage*(const Digest&)>& find_stage) {
  const promises::Stage* stage = nullptr;
  std::optional<AttestationSignature>* field = nullptr;
  if (auto* r = std::get_if<JobResult>(&st.body)) {
    if (!r->ok) return true;
    stage = find_stage(r->job.stage_digest);
    if (stage == nullptr) return false;
    field = &r->attestation;
  } else if (auto* v = std::get_if<SourceVersion>(&st.body)) {
    field = &v->attestation;
  } else {
    return true;
  }
  if (std::holds_alternative<JobResult>(st.body)) {
    auto payload = result_attestation_payload(st, stage);
    if (!payload.is_ok()) return false;
    *field = sign_attestation(identity, *payload);
    return true;
  }
  auto statement = attestation_statement(st, stage);
  if (!statement.is_ok()) return false;
  *field = sign_attestation(identity, attestation_payload(*statement));
  return true;
}

Result<Attestation> attestation_of(const Statement& st, const promises::Stage* stage) {
  const auto* field = attestation_field(st);
  if (field == nullptr || !field->has_value()) {
    const auto* r = std::get_if<JobResult>(&st.body);
    if (r != nullptr && !r->ok) {
      return Status::not_found("result " + statement_name(st) +
                               " is a failure: only successful results have attestations");
    }
    return Status::not_found("statement " + statement_name(st) + " (" +
                             statement_kind_name(st.kind()) +
                             ") carries no attestation: its author signed it before agents "
                             "attested their results");
  }
  auto statement = attestation_statement(st, stage);
  if (!statement.is_ok()) return statement.status();
  std::string payload = attestation_payload(*statement);
  if (!verify_attestation(st.author, payload, **field)) {
    return Status::corrupt("the attestation signature of statement " + statement_name(st) +
                           " does not verify: the stage definition known here is not the one "
                           "its author signed");
  }
  Attestation a;
  a.statement = std::move(statement).value();
  json signature = {{"keyid", st.author.hex()},
                    {"sig", base64(std::span<const std::uint8_t>(**field))}};
  a.envelope = json::object();
  a.envelope["payloadType"] = kDssePayloadType;
  a.envelope["payload"] = base64(payload);
  a.envelope["signatures"] = json::array({signature});
  a.line = a.envelope.dump();
  a.digest = blake2b(a.line);
  return a;
}

json public_key_json(const AgentKey& key) {
  return {{"keytype", "ed25519"},
          {"scheme", "ed25519"},
          {"keyval", {{"public", key.hex()}}},
          {"id", transport::agent_id(key)}};
}

}  // namespace vow::agent
