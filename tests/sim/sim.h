// The deterministic simulator of the coordination core (DESIGN.md section 8): N cores
// over a seeded fake network that drops, duplicates, delays, reorders and partitions;
// agents that crash and restart keeping only what they persisted; fake jobs with
// seeded durations, deterministic or not, that may fail; pipelines generated from the
// seed; forged statements the shell must drop. Invariants are checked during the run
// and at the end of each seed (see docs/coordination.md, "Simulator").
//
// Single-threaded; all randomness comes from one std::mt19937_64 seeded per run, so a
// seed replays byte for byte.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "promises/digest.h"

namespace vow::sim {

enum class Faults { kNone, kNet, kCrash, kAll };

struct SimOptions {
  std::uint64_t seed = 1;
  int agents = 5;
  int stages = 5;  // stages in the generated pipeline (--jobs)
  Faults faults = Faults::kAll;
  bool verbose = false;  // print the event trace
};

struct SimResult {
  std::vector<std::string> failures;            // empty: every invariant held
  Digest trace_hash;                            // over every step of the run
  std::vector<std::int64_t> failover_ms;        // claimant crash -> job started elsewhere
  std::vector<std::int64_t> failover_claim_ms;  // claimant crash -> claimed elsewhere
  std::int64_t sim_end_ms = 0;
  std::uint64_t deliveries = 0;
  std::uint64_t jobs_done = 0;
};

SimResult run_seed(const SimOptions& options);

}  // namespace vow::sim
