// Helpers the unit tests of promises/ share. Test code only.
#pragma once

#include <cstdint>

#include "promises/statement.h"

namespace vow::promises::testing {

// An agent key whose 32 bytes are all `b`: distinct, readable keys for tests.
inline AgentKey key(std::uint8_t b) {
  AgentKey k;
  k.bytes.fill(b);
  return k;
}

}  // namespace vow::promises::testing
