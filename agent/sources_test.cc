#include <doctest/doctest.h>

#include "agent/daemon_internal.h"

namespace vow::agent {

TEST_CASE("a source's walks of everything are spaced by what the last one took") {
  // A small source: the safety net every kSourceRescanMs, polling every kSourcePollMs.
  CHECK(source_walk_spacing(kSourceRescanMs, kSourceRescanShare, 12) == kSourceRescanMs);
  CHECK(source_walk_spacing(kSourcePollMs, kSourcePollShare, 12) == kSourcePollMs);
  // 100,000 files walked in 1.1 s: the safety net at most 0.1% of a core (every ~18 min),
  // polling at most 5% (every 22 s).
  CHECK(source_walk_spacing(kSourceRescanMs, kSourceRescanShare, 1'100) == 1'100'000);
  CHECK(source_walk_spacing(kSourcePollMs, kSourcePollShare, 1'100) == 22'000);
  // Never further apart than kSourceWalkMaxMs, never sooner than the least spacing.
  CHECK(source_walk_spacing(kSourceRescanMs, kSourceRescanShare, 86'400'000) == kSourceWalkMaxMs);
  CHECK(source_walk_spacing(kSourcePollMs, kSourcePollShare, -5) == kSourcePollMs);
}

}  // namespace vow::agent
