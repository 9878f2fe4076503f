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
