#include "promises/pipeline.h"

#include <algorithm>

namespace vow::promises {
namespace {

// Canonical encodings are sequences of length-prefixed fields (Hasher::update_field
// framing: u64 little-endian length, then bytes), so no two definitions share one.
void put_field(std::string& out, std::string_view s) {
  std::uint64_t n = s.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(n >> (8 * i)));
  out.append(s);
}

void put_count(std::string& out, std::size_t n) { put_field(out, std::to_string(n)); }

}  // namespace

std::string Location::to_string() const {
  return file + ":" + std::to_string(line) + ":" + std::to_string(column);
}

std::string Diagnostic::to_string() const { return where.to_string() + ": " + message; }

const Stage* Pipeline::find_stage(std::string_view n) const {
  for (const auto& s : stages) {
    if (s.name == n) return &s;
  }
  return nullptr;
}

const Source* Pipeline::find_source(std::string_view n) const {
  for (const auto& s : sources) {
    if (s.name == n) return &s;
  }
  return nullptr;
}

std::string canonical_stage(const Stage& stage) {
  std::string out;
  put_field(out, "vow-stage-v1");
  put_field(out, stage.name);
  put_field(out, stage.run_is_shell ? "shell" : "argv");
  put_count(out, stage.argv.size());
  for (const auto& a : stage.argv) put_field(out, a);
  // Inputs and outputs are sets: their order in the file does not change the stage.
  std::vector<std::string> inputs;
  for (const auto& in : stage.inputs) inputs.push_back(in.to_string());
  std::sort(inputs.begin(), inputs.end());
  put_count(out, inputs.size());
  for (const auto& in : inputs) put_field(out, in);
  std::vector<std::string> outputs = stage.outputs;
  std::sort(outputs.begin(), outputs.end());
  put_count(out, outputs.size());
  for (const auto& o : outputs) put_field(out, o);
  put_count(out, stage.env.size());  // std::map: sorted by key
  for (const auto& [k, v] : stage.env) {
    put_field(out, k);
    put_field(out, v);
  }
  put_field(out, stage.foreach ? stage.foreach->to_string() : "");
  return out;
}

Digest stage_digest(const Stage& stage) { return blake2b(canonical_stage(stage)); }

std::string canonical_pipeline(const Pipeline& pipeline) {
  std::string out;
  put_field(out, "vow-pipeline-v1");
  put_field(out, pipeline.name);
  std::vector<std::string> sources;
  for (const auto& s : pipeline.sources) sources.push_back(s.name);
  std::sort(sources.begin(), sources.end());
  put_count(out, sources.size());
  for (const auto& s : sources) put_field(out, s);
  std::vector<const Stage*> stages;
  for (const auto& s : pipeline.stages) stages.push_back(&s);
  std::sort(stages.begin(), stages.end(),
            [](const Stage* a, const Stage* b) { return a->name < b->name; });
  put_count(out, stages.size());
  for (const auto* s : stages) put_field(out, canonical_stage(*s));
  return out;
}

Digest pipeline_digest(const Pipeline& pipeline) { return blake2b(canonical_pipeline(pipeline)); }

Digest job_id(const Digest& stage_digest, std::vector<JobInput> inputs, std::string_view shard) {
  std::sort(inputs.begin(), inputs.end());
  Hasher h;
  h.update_field("vow-job-v1");
  h.update(stage_digest.bytes);
  h.update_u64(inputs.size());
  for (const auto& in : inputs) {
    h.update_field(in.name);
    h.update(in.digest.bytes);
  }
  h.update_field(shard);
  return h.finish();
}

}  // namespace vow::promises
