#include "promises/pipeline.h"

#include <algorithm>
#include <charconv>

#include "promises/pipeline_check.h"

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

// Reads the fields put_field and put_count wrote. Every read is bounded by the bytes
// left, so a hostile encoding cannot make it allocate more than its own size.
class FieldReader {
 public:
  explicit FieldReader(std::string_view in) : in_(in) {}
  bool done() const { return pos_ == in_.size(); }

  std::optional<std::string_view> field() {
    if (in_.size() - pos_ < 8) return std::nullopt;
    std::uint64_t n = 0;
    for (int i = 0; i < 8; ++i) {
      n |= std::uint64_t(static_cast<std::uint8_t>(in_[pos_ + i])) << (8 * i);
    }
    pos_ += 8;
    if (n > in_.size() - pos_) return std::nullopt;
    std::string_view out = in_.substr(pos_, n);
    pos_ += n;
    return out;
  }

  // A count written by put_count: decimal, no leading zeros, at most the bytes left (each
  // counted item takes at least 8).
  std::optional<std::size_t> count() {
    auto f = field();
    if (!f || f->empty() || f->size() > 19 || ((*f)[0] == '0' && f->size() > 1)) {
      return std::nullopt;
    }
    std::size_t n = 0;
    auto [end, ec] = std::from_chars(f->data(), f->data() + f->size(), n);
    if (ec != std::errc() || end != f->data() + f->size()) return std::nullopt;
    if (n > (in_.size() - pos_) / 8) return std::nullopt;
    return n;
  }

 private:
  std::string_view in_;
  std::size_t pos_ = 0;
};

// The fields that came after `network` and `memory`, in their order in the encoding.
constexpr std::string_view kLaterFields[] = {"image", "pids", "cpus", "root"};

bool has_later_fields(const Stage& s) {
  return !s.image.empty() || s.pids != 0 || s.cpus != 0 || s.root.has_value();
}

// A positive count as put_field(std::to_string(n)) wrote it, up to `max`.
std::optional<int> positive_count(std::string_view text, int max) {
  int n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || end != text.data() + text.size() || n < 1 || n > max) {
    return std::nullopt;
  }
  if (std::to_string(n) != text) return std::nullopt;  // no leading zeros or signs
  return n;
}

InputRef input_ref_from(std::string_view text) {
  auto dot = text.find('.');
  if (dot == std::string_view::npos || dot == 0) return InputRef{"", std::string(text)};
  return InputRef{std::string(text.substr(0, dot)), std::string(text.substr(dot + 1))};
}

std::optional<Stage> decode_stage(std::string_view canonical) {
  FieldReader r(canonical);
  Stage s;
  auto tag = r.field();
  auto name = r.field();
  auto form = r.field();
  if (!tag || *tag != "vow-stage-v1" || !name || !form) return std::nullopt;
  s.name = std::string(*name);
  if (*form != "shell" && *form != "argv") return std::nullopt;
  s.run_is_shell = *form == "shell";
  auto argc = r.count();
  if (!argc) return std::nullopt;
  for (std::size_t i = 0; i < *argc; ++i) {
    auto a = r.field();
    if (!a) return std::nullopt;
    s.argv.emplace_back(*a);
  }
  auto inputs = r.count();
  if (!inputs) return std::nullopt;
  for (std::size_t i = 0; i < *inputs; ++i) {
    auto in = r.field();
    if (!in) return std::nullopt;
    s.inputs.push_back(input_ref_from(*in));
  }
  auto outputs = r.count();
  if (!outputs) return std::nullopt;
  for (std::size_t i = 0; i < *outputs; ++i) {
    auto o = r.field();
    if (!o) return std::nullopt;
    s.outputs.emplace_back(*o);
  }
  auto env = r.count();
  if (!env) return std::nullopt;
  for (std::size_t i = 0; i < *env; ++i) {
    auto k = r.field();
    auto v = r.field();
    if (!k || !v) return std::nullopt;
    s.env[std::string(*k)] = std::string(*v);
  }
  auto foreach = r.field();
  if (!foreach) return std::nullopt;
  if (!foreach->empty()) s.foreach = input_ref_from(*foreach);
  if (!r.done()) {
    auto network = r.field();
    auto memory = r.field();
    if (!network || !memory || (*network != "network" && *network != "no-network")) {
      return std::nullopt;
    }
    s.network = *network == "network";
    std::int64_t bytes = 0;
    auto [end, ec] = std::from_chars(memory->data(), memory->data() + memory->size(), bytes);
    if (ec != std::errc() || end != memory->data() + memory->size() || bytes < 0) {
      return std::nullopt;
    }
    s.memory_bytes = bytes;
    // Later fields, each a tag and a value, in the order of kLaterFields, only when set.
    std::size_t next = 0;
    while (!r.done()) {
      auto tag = r.field();
      auto value = r.field();
      if (!tag || !value || value->empty()) return std::nullopt;
      while (next < std::size(kLaterFields) && kLaterFields[next] != *tag) ++next;
      if (next == std::size(kLaterFields)) return std::nullopt;  // unknown or out of order
      ++next;
      if (*tag == "image") {
        if (!image_problem(*value).empty()) return std::nullopt;
        s.image = std::string(*value);
      } else if (*tag == "root") {
        s.root = input_ref_from(*value);  // check_pipeline checks it names an input
      } else {
        auto n = positive_count(*value, *tag == "pids" ? kMaxStagePids : kMaxStageCpus);
        if (!n) return std::nullopt;
        (*tag == "pids" ? s.pids : s.cpus) = *n;
      }
    }
    if (!s.network && s.memory_bytes == 0 && !has_later_fields(s)) {
      return std::nullopt;  // not canonical
    }
  }
  bool shell_ok = s.argv.size() == 3 && s.argv[0] == "/bin/sh" && s.argv[1] == "-c";
  if (s.run_is_shell ? !shell_ok : s.argv.empty()) return std::nullopt;
  return s;
}


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

std::string image_problem(std::string_view image) {
  constexpr std::string_view kAlgo = "sha256:";
  constexpr std::size_t kMaxImageBytes = 256;
  if (image.size() > kMaxImageBytes) return "is longer than 256 bytes";
  std::string_view name;
  std::string_view digest = image;
  if (auto at = image.rfind('@'); at != std::string_view::npos) {
    name = image.substr(0, at);
    digest = image.substr(at + 1);
    if (name.empty()) return "has nothing before '@'";
    for (char c : name) {
      if (c <= ' ' || c > '~') return "has a space or a character that is not printable ASCII";
    }
  }
  bool hex = digest.size() == kAlgo.size() + 64 && digest.substr(0, kAlgo.size()) == kAlgo;
  for (std::size_t i = kAlgo.size(); hex && i < digest.size(); ++i) {
    char c = digest[i];
    hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  }
  if (!hex) {
    return "does not name an image by its digest: write \"sha256:<64 hex digits>\" or "
           "\"NAME@sha256:<64 hex digits>\" (a tag can name other bytes tomorrow)";
  }
  return "";
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
  if (stage.network || stage.memory_bytes != 0 || has_later_fields(stage)) {
    put_field(out, stage.network ? "network" : "no-network");
    put_field(out, std::to_string(stage.memory_bytes));
  }
  if (!stage.image.empty()) {
    put_field(out, "image");
    put_field(out, stage.image);
  }
  if (stage.pids != 0) {
    put_field(out, "pids");
    put_field(out, std::to_string(stage.pids));
  }
  if (stage.cpus != 0) {
    put_field(out, "cpus");
    put_field(out, std::to_string(stage.cpus));
  }
  if (stage.root) {
    put_field(out, "root");
    put_field(out, stage.root->to_string());
  }
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

Result<Pipeline> parse_canonical_pipeline(std::string_view canonical) {
  auto corrupt = [](std::string why) {
    return Status::corrupt("canonical pipeline: " + std::move(why));
  };
  FieldReader r(canonical);
  Pipeline p;
  auto tag = r.field();
  if (!tag || *tag != "vow-pipeline-v1") return corrupt("missing vow-pipeline-v1 tag");
  auto name = r.field();
  auto sources = r.count();
  if (!name || !sources) return corrupt("truncated header");
  p.name = std::string(*name);
  for (std::size_t i = 0; i < *sources; ++i) {
    auto s = r.field();
    if (!s) return corrupt("truncated source list");
    p.sources.push_back(Source{std::string(*s), {}});
  }
  auto stages = r.count();
  if (!stages) return corrupt("truncated stage count");
  for (std::size_t i = 0; i < *stages; ++i) {
    auto enc = r.field();
    if (!enc) return corrupt("truncated stage list");
    auto stage = decode_stage(*enc);
    if (!stage) return corrupt("malformed stage " + std::to_string(i));
    p.stages.push_back(std::move(*stage));
  }
  if (!r.done()) return corrupt("trailing bytes");
  // Only the one encoding of this pipeline is accepted (sorted, no duplicates), so that
  // the digest of the bytes received is the digest of what was decoded.
  if (canonical_pipeline(p) != canonical) return corrupt("not in canonical form");
  std::vector<Diagnostic> errors;
  if (!check_pipeline(p, PipelineSpans{}, errors)) return corrupt(errors.front().message);
  return p;
}

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
