#include "promises/statement.h"

#include <algorithm>

namespace vow {

const char* statement_kind_name(StatementKind kind) {
  switch (kind) {
    case StatementKind::kAdvert:
      return "advert";
    case StatementKind::kPipeline:
      return "pipeline";
    case StatementKind::kSourceVersion:
      return "source-version";
    case StatementKind::kClaim:
      return "claim";
    case StatementKind::kRelease:
      return "release";
    case StatementKind::kResult:
      return "result";
    case StatementKind::kAccept:
      return "accept";
    case StatementKind::kCheckpoint:
      return "checkpoint";
    case StatementKind::kRetry:
      return "retry";
    case StatementKind::kHorizon:
      return "horizon";
  }
  return "unknown";
}

Digest outputs_digest(const JobResult& result) {
  std::vector<std::pair<std::string, Digest>> outs;
  for (const auto& o : result.outputs) outs.emplace_back(o.name, o.artifact.digest);
  std::sort(outs.begin(), outs.end());
  Hasher h;
  h.update_field("vow-outputs-v1");
  h.update_u64(outs.size());
  for (const auto& [name, d] : outs) {
    h.update_field(name);
    h.update(d.bytes);
  }
  return h.finish();
}

bool binding_matches_inputs(const JobResult& result, const InputBinding& binding) {
  for (const auto& in : result.inputs) {
    if (binding.input == in.name) return binding.digest == in.artifact.digest;
    if (binding.input.size() > in.name.size() && binding.input.starts_with(in.name) &&
        binding.input[in.name.size()] == '/') {
      std::string_view entry = std::string_view(binding.input).substr(in.name.size() + 1);
      for (const auto& e : in.artifact.entries) {
        if (e.name == entry) return e.digest == binding.digest;
      }
    }
  }
  return false;
}

bool made_artifact(const Statement& st, const Digest& digest) {
  auto in = [&](const ArtifactRef& a) {
    if (a.digest == digest) return true;
    return std::any_of(a.entries.begin(), a.entries.end(),
                       [&](const TreeEntry& e) { return e.digest == digest; });
  };
  if (const auto* r = std::get_if<JobResult>(&st.body)) {
    return r->ok && std::any_of(r->outputs.begin(), r->outputs.end(),
                                [&](const NamedArtifact& o) { return in(o.artifact); });
  }
  if (const auto* v = std::get_if<SourceVersion>(&st.body)) return in(v->artifact);
  return false;
}

std::optional<Digest> Statement::job() const {
  return std::visit(
      [](const auto& b) -> std::optional<Digest> {
        using T = std::decay_t<decltype(b)>;
        if constexpr (requires { b.job.job; }) {
          return b.job.job;
        } else {
          (void)sizeof(T);
          return std::nullopt;
        }
      },
      body);
}

}  // namespace vow

namespace vow {

std::uint32_t statement_epoch(const Statement& st) {
  return std::visit(
      [](const auto& b) -> std::uint32_t {
        if constexpr (requires { b.epoch; }) {
          return b.epoch;
        } else {
          return 0;
        }
      },
      st.body);
}

Digest horizon_content(const Horizon& h) {
  Hasher x;
  x.update_field("vow-horizon-v1");
  x.update_u64(h.number);
  x.update(h.previous.bytes);
  x.update_u64(h.cuts.size());
  for (const auto& c : h.cuts) {
    x.update(c.author.bytes);
    x.update_u64(c.seq);
    x.update(c.prefix.bytes);
    x.update_u64(c.member ? 1 : 0);
  }
  x.update_u64(h.retired.size());
  for (const auto& r : h.retired) {
    x.update_u64(r.cut);
    x.update_u64(r.first);
    x.update_u64(r.last);
  }
  x.update_u64(h.settled.size());
  for (const auto& r : h.settled) {
    x.update_u64(r.cut);
    x.update_u64(r.seq);
  }
  if (h.superseded) x.update_field("superseded");  // absent: the digests made before it
  // Absent too when no settled statement has a digest (horizons made before them).
  if (std::any_of(h.settled.begin(), h.settled.end(),
                  [](const HorizonRef& r) { return r.vouch != Digest{}; })) {
    x.update_field("vouched");
    for (const auto& r : h.settled) x.update(r.vouch.bytes);
  }
  if (!h.bases.empty()) {  // absent: the digests made before source lines had bases
    x.update_field("bases");
    x.update_u64(h.bases.size());
    for (const auto& b : h.bases) {
      x.update_u64(b.cut);
      x.update_field(b.pipeline);
      x.update_field(b.source);
      x.update_u64(b.version);
      x.update_u64(b.seq);
    }
  }
  if (h.checkpoint) x.update_field("checkpoint");  // absent: the digests made before them
  return x.finish();
}

Digest signed_digest(std::string_view bytes, const std::array<std::uint8_t, 64>& signature,
                     std::string_view path) {
  Hasher x;
  x.update_field("vow-signed-v1");
  x.update_field(bytes);
  x.update(std::span<const std::uint8_t>(signature.data(), signature.size()));
  // A statement signed alone has the digest it had before batches existed.
  if (!path.empty()) x.update_field(path);
  return x.finish();
}

}  // namespace vow
