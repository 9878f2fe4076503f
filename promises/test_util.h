// Helpers the unit tests of promises/ share. Test code only.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "promises/digest.h"
#include "promises/statement.h"

namespace vow::promises::testing {

// An agent key whose 32 bytes are all `b`: distinct, readable keys for tests.
inline AgentKey key(std::uint8_t b) {
  AgentKey k;
  k.bytes.fill(b);
  return k;
}

// A statement of `author` (key(author)) at `seq`, unsigned (the core only reads bodies;
// the transport checks signatures).
inline Statement statement(std::uint8_t author, std::uint64_t seq, StatementBody body) {
  Statement st;
  st.author = key(author);
  st.seq = seq;
  st.body = std::move(body);
  return st;
}

// Job `name` (its id the digest of the name) of stage "s" of pipeline "p".
inline JobRef job_ref(const std::string& name, const Digest& stage_digest) {
  JobRef j;
  j.job = blake2b(name);
  j.pipeline = "p";
  j.stage = "s";
  j.stage_digest = stage_digest;
  return j;
}

// Pipeline "p": stage `s` reads source `src`, stage `t` reads `s`'s output `o`; each
// runs "true".
inline constexpr const char* kTwoStagePipeline = R"([pipeline]
name = "p"
[[source]]
name = "src"
[[stage]]
name = "s"
inputs = ["src"]
outputs = ["o"]
run = "true"
[[stage]]
name = "t"
inputs = ["s.o"]
outputs = ["o"]
run = "true"
)";

}  // namespace vow::promises::testing
