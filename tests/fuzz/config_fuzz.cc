// Fuzz target: arbitrary bytes as a pipeline file and as an agent file. The parsers must
// never crash, hang or leak, and must report an error for anything they do not accept.
// A parsed pipeline must survive the canonical round trip with its digest unchanged.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "promises/assert.h"
#include "promises/config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace vow::promises;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto pipeline = parse_pipeline(text, "fuzz.toml");
  VOW_ASSERT(pipeline.value.has_value() != !pipeline.errors.empty(),
             "a pipeline parse must give a value or errors: value=%d errors=%zu",
             int(pipeline.value.has_value()), pipeline.errors.size());
  if (pipeline.value) {
    auto back = parse_canonical_pipeline(canonical_pipeline(*pipeline.value));
    VOW_ASSERT(back.is_ok(), "canonical round trip failed: %s", back.status().to_string().c_str());
    VOW_ASSERT(back->digest == pipeline.value->digest, "digest changed in round trip: %s",
               back->digest.hex().c_str());
  }
  auto agent = parse_agent(text, "fuzz.toml");
  VOW_ASSERT(agent.value.has_value() != !agent.errors.empty(),
             "an agent parse must give a value or errors: value=%d errors=%zu",
             int(agent.value.has_value()), agent.errors.size());
  if (agent.value && pipeline.value) {
    (void)validate_agent_against(*agent.value, {*pipeline.value});
  }
  (void)detect_config_kind(text);
  // The canonical decoder takes bytes from peers: it must refuse garbage, not crash.
  (void)parse_canonical_pipeline(text);
  return 0;
}
