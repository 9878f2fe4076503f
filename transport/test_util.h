// Helpers shared by the transport tests: deterministic identities and statements, and
// waiting on a condition with a deadline (never a fixed sleep).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>

#include "promises/statement.h"
#include "transport/identity.h"

namespace vow::transport::testing {

inline Identity identity_of(std::uint8_t n) {
  std::array<std::uint8_t, 32> seed{};
  seed.fill(n);
  return Identity::from_seed(seed);
}

inline std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

inline Digest digest_of(std::string_view s) { return blake2b(s); }

inline JobRef job_ref() {
  return JobRef{digest_of("job"), "wordcount", "count", digest_of("stage"), "part-00"};
}

inline Statement claim(const AgentKey& author, std::uint64_t seq) {
  Statement s;
  s.author = author;
  s.seq = seq;
  s.wall_unix_ms = 1'700'000'000'000;
  s.body = Claim{job_ref(), 3, 1500};
  return s;
}

}  // namespace vow::transport::testing
