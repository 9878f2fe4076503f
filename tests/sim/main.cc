// vow-sim: runs the coordination core simulator over a range of seeds and reports
// per-seed invariant failures (with the seed, which replays the run exactly) and a
// summary line "N passed, N failed". See docs/coordination.md, "Simulator".
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "tests/sim/sim.h"

namespace {

std::int64_t percentile(std::vector<std::int64_t> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  auto idx = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(idx, v.size() - 1)];
}

// "WHAT: n=N p50=X ms p99=Y ms max=Z ms" of a sample of simulated times.
void print_times(const char* what, const std::vector<std::int64_t>& v) {
  std::printf("%s: n=%zu p50=%lld ms p99=%lld ms max=%lld ms", what, v.size(),
              static_cast<long long>(percentile(v, 0.5)),
              static_cast<long long>(percentile(v, 0.99)),
              static_cast<long long>(percentile(v, 1.0)));
}

void print_wall(const std::vector<double>& wall_ms, int agents) {
  std::vector<std::int64_t> w;
  for (double x : wall_ms) w.push_back(static_cast<std::int64_t>(x * 1000));
  std::printf("wall time per seed: p50=%.1f ms max=%.1f ms (%d agents)\n",
              static_cast<double>(percentile(w, 0.5)) / 1000.0,
              static_cast<double>(percentile(w, 1.0)) / 1000.0, agents);
}

}  // namespace

int main(int argc, char** argv) {
  std::string options;
  CLI::App app{"vow-sim: deterministic simulation of the vow coordination core"};
  std::uint64_t seeds = 100;
  std::uint64_t first_seed = 1;
  std::optional<std::uint64_t> seed;
  int agents = 5;
  int jobs = 5;
  std::string faults = "all";
  bool report_failover = false;
  bool membership = false;
  bool verbose = false;
  int replay_every = 16;
  app.add_option("--seeds", seeds, "number of seeds to run")
      ->check(CLI::Range(1ULL, 100'000'000ULL));
  app.add_option("--first-seed", first_seed, "first seed of the range");
  app.add_option("--seed", seed, "run this one seed (replays a failure)");
  app.add_option("--agents", agents, "agents per run")->check(CLI::Range(1, 1000));
  app.add_option("--jobs", jobs, "stages in each generated pipeline")->check(CLI::Range(1, 200));
  app.add_option("--faults", faults, "faults to inject")
      ->check(CLI::IsMember({"none", "net", "crash", "all"}));
  app.add_flag("--report-failover", report_failover,
               "print claimant-crash to takeover-start times (p50, p99)");
  app.add_flag("--membership", membership,
               "measure membership: no faults but one agent killed at 3 s (restarted at 13 s), "
               "with --faults net a lossy network too; print detection time, false "
               "suspicions and messages per agent per second");
  std::uint64_t horizon_every = 30;
  app.add_option("--horizon-every", horizon_every,
                 "statements beyond the last ledger horizon before one is proposed (0: none)");
  int source_updates = 0;
  app.add_option("--source-updates", source_updates,
                 "source updates in the fault window beyond the one a third of the seeds get");
  int checkpoint_percent = -1;
  app.add_option("--checkpoint-percent", checkpoint_percent,
                 "a horizon is a checkpoint once those since the last listed this percentage "
                 "of what it would (0: none; default: 10, 30 or 100 by seed)");
  bool keep_superseded = false;
  app.add_flag("--keep-superseded", keep_superseded,
               "horizons do not retire superseded jobs ([agent] retire_superseded = false)");
  std::string profile = "lan";
  app.add_option("--profile", profile, "membership profile of every agent ([timing] membership)")
      ->check(CLI::IsMember({"lan", "wan", "all-to-all"}));
  app.add_flag("--verbose,-v", verbose, "print the event trace");
  int shards = 0;
  bool squeeze_worker = false, slow_kills = false, crash_unsynced_runs = false;
  app.add_option("--shards", shards, "source entries: the first stage fans out this wide")
      ->check(CLI::Range(0, 100'000));
  app.add_flag("--squeeze-worker", squeeze_worker, "the worker's queue holds one task");
  app.add_flag("--slow-kills", slow_kills, "every killed process takes 0.2-1.5 s to die");
  app.add_flag("--crash-unsynced-runs", crash_unsynced_runs,
               "an agent crashes when it runs a process whose claim is not durable yet (up to "
               "twice a seed)");
  // The agent syncs off its loop (agent/daemon_internal.h, kDeferSync): modelled in half
  // the seeds by default, the other half syncing every commit at once.
  bool deferred_sync = true;
  app.add_flag("--deferred-sync,!--sync-on-loop", deferred_sync,
               "in half the seeds (the default), disk commits are durable only once a later "
               "sync completes; --sync-on-loop: every commit durable at once");
  bool hostile = false;
  app.add_flag("--hostile", hostile,
               "a hostile host with a trusted key in every seed (else in some seeds with "
               "--faults all)");
  app.add_option("--replay-every", replay_every,
                 "run every Nth seed twice and compare trace hashes (0: never)");
  try {
    app.parse(argc, argv);
    // The options of this run but the seeds, to replay one failed seed with.
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      bool seed_option = a == "--seeds" || a == "--first-seed" || a == "--seed";
      if (seed_option) {
        ++i;  // and its value
        continue;
      }
      if (a.rfind("--seeds=", 0) == 0 || a.rfind("--first-seed=", 0) == 0 ||
          a.rfind("--seed=", 0) == 0) {
        continue;
      }
      options += " " + a;
    }
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return e.get_exit_code() == 0 ? rc : 2;
  }
  vow::sim::SimOptions opt;
  opt.agents = agents;
  opt.stages = jobs;
  opt.verbose = verbose;
  opt.shards = shards;
  opt.squeeze_worker = squeeze_worker;
  opt.slow_kills = slow_kills;
  opt.crash_unsynced_runs = crash_unsynced_runs;
  opt.deferred_sync = deferred_sync;
  opt.hostile = hostile;
  opt.membership = membership;
  opt.horizon_every = horizon_every;
  opt.retire_superseded = !keep_superseded;
  opt.checkpoint_percent = checkpoint_percent;
  opt.source_updates = source_updates;
  opt.profile = profile == "wan"          ? vow::promises::MembershipProfile::kWan
                : profile == "all-to-all" ? vow::promises::MembershipProfile::kAllToAll
                                          : vow::promises::MembershipProfile::kLan;
  opt.faults = faults == "none"    ? vow::sim::Faults::kNone
               : faults == "net"   ? vow::sim::Faults::kNet
               : faults == "crash" ? vow::sim::Faults::kCrash
                                   : vow::sim::Faults::kAll;
  std::uint64_t from = seed ? *seed : first_seed;
  std::uint64_t count = seed ? 1 : seeds;
  std::uint64_t passed = 0, failed = 0, hostile_seeds = 0, bomb_seeds = 0;
  std::size_t largest_ledger = 0;
  std::uint64_t horizon_seeds = 0, most_horizons = 0, most_retired = 0;
  std::uint64_t checkpoint_seeds = 0, most_checkpoints = 0, alone_seeds = 0;
  std::uint64_t superseded_seeds = 0, most_superseded = 0, base_seeds = 0, highest_base = 1;
  std::vector<std::int64_t> failover;
  std::vector<std::int64_t> failover_claim;
  std::vector<double> wall_ms;
  std::vector<std::int64_t> detect_all, detect_first;
  std::uint64_t undetected = 0, false_suspicions = 0, false_deaths = 0;
  std::uint64_t messages = 0, membership_messages = 0;
  double agent_seconds = 0;
  std::uint64_t started_early = 0, claim_lost_seeds = 0, synced_in_pass = 0;
  std::uint64_t held_passes = 0, held_lost = 0, held_lost_seeds = 0;
  std::uint64_t statement_broadcasts = 0, statements_broadcast = 0;
  std::uint64_t attached_used = 0, attached_refused = 0, hostile_attachments = 0;
  for (std::uint64_t s = from; s < from + count; ++s) {
    opt.seed = s;
    auto t0 = std::chrono::steady_clock::now();
    auto r = vow::sim::run_seed(opt);
    wall_ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    // (7) the same seed gives the same run, byte for byte.
    if (replay_every > 0 && (seed || s % static_cast<std::uint64_t>(replay_every) == 0)) {
      auto again = vow::sim::run_seed(opt);
      if (again.trace_hash != r.trace_hash) {
        r.failures.push_back("replaying the seed gave a different trace (invariant 8)");
      }
    }
    hostile_seeds += r.hostile ? 1 : 0;
    started_early += r.started_before_sync;
    synced_in_pass += r.synced_in_pass;
    if (r.runs_without_claim > 0) ++claim_lost_seeds;
    held_passes += r.held_passes;
    statement_broadcasts += r.statement_broadcasts;
    statements_broadcast += r.statements_broadcast;
    attached_used += r.attached_used;
    attached_refused += r.attached_refused;
    hostile_attachments += r.hostile_attachments;
    held_lost += r.held_lost;
    if (r.held_lost > 0) ++held_lost_seeds;
    bomb_seeds += r.trees_refused != 0 ? 1 : 0;
    if (r.detect_all_ms >= 0) {
      detect_all.push_back(r.detect_all_ms);
    } else {
      ++undetected;
    }
    if (r.detect_first_ms >= 0) detect_first.push_back(r.detect_first_ms);
    false_suspicions += r.false_suspicions;
    false_deaths += r.false_deaths;
    messages += r.messages;
    membership_messages += r.membership_messages;
    agent_seconds += static_cast<double>(agents) * static_cast<double>(r.sim_end_ms) / 1000.0;
    largest_ledger = std::max(largest_ledger, r.ledger_size);
    if (r.horizons > 0) ++horizon_seeds;
    most_horizons = std::max(most_horizons, r.horizons);
    most_retired = std::max(most_retired, r.retired);
    if (r.checkpoints > 0) ++checkpoint_seeds;
    most_checkpoints = std::max(most_checkpoints, r.checkpoints);
    if (r.checkpoints_alone > 0) ++alone_seeds;
    if (r.jobs_emptied > 0) ++superseded_seeds;
    most_superseded = std::max(most_superseded, r.jobs_emptied);
    if (r.line_base > 1) ++base_seeds;
    highest_base = std::max(highest_base, r.line_base);
    failover.insert(failover.end(), r.failover_ms.begin(), r.failover_ms.end());
    failover_claim.insert(failover_claim.end(), r.failover_claim_ms.begin(),
                          r.failover_claim_ms.end());
    if (r.failures.empty()) {
      ++passed;
    } else {
      ++failed;
      std::printf("seed %llu FAILED (replay: vow-sim --seed %llu%s)\n",
                  static_cast<unsigned long long>(s), static_cast<unsigned long long>(s),
                  options.c_str());
      for (const auto& f : r.failures) std::printf("  %s\n", f.c_str());
    }
    if (verbose || seed) {
      std::printf("seed %llu: trace %s, %llu deliveries, %llu job exits, ended at %lld ms\n",
                  static_cast<unsigned long long>(s), r.trace_hash.short_hex().c_str(),
                  static_cast<unsigned long long>(r.deliveries),
                  static_cast<unsigned long long>(r.jobs_done),
                  static_cast<long long>(r.sim_end_ms));
    }
  }
  if (report_failover) {
    print_times("failover (claimant crash -> job started on another agent, simulated)", failover);
    std::printf("\n");
    print_times("failover (claimant crash -> job claimed by another agent, simulated)",
                failover_claim);
    std::printf("\n");
    print_wall(wall_ms, agents);
  }
  if (membership) {
    print_times("detection (kill -> every live agent marks it dead, simulated)", detect_all);
    std::printf("; not by all: %llu\n", static_cast<unsigned long long>(undetected));
    std::printf("detection (kill -> first agent marks it dead): p50=%lld ms max=%lld ms\n",
                static_cast<long long>(percentile(detect_first, 0.5)),
                static_cast<long long>(percentile(detect_first, 1.0)));
    double hours = agent_seconds / 3600.0;
    std::printf(
        "false suspicions (an agent that was up marked suspect): %llu, %.2f per agent-hour; "
        "false deaths: %llu\n",
        static_cast<unsigned long long>(false_suspicions),
        hours > 0 ? static_cast<double>(false_suspicions) / hours : 0.0,
        static_cast<unsigned long long>(false_deaths));
  }
  if (membership || report_failover) {
    std::printf(
        "messages per agent per second (simulated): %.1f membership (heartbeats, probes), "
        "%.1f in all\n",
        agent_seconds > 0 ? static_cast<double>(membership_messages) / agent_seconds : 0.0,
        agent_seconds > 0 ? static_cast<double>(messages) / agent_seconds : 0.0);
    if (membership && !report_failover) print_wall(wall_ms, agents);
  }
  std::printf("jobs started before their claim's sync: %llu (a crash lost such a claim while "
              "the run went on in %llu seeds)\n",
              static_cast<unsigned long long>(started_early),
              static_cast<unsigned long long>(claim_lost_seeds));
  std::printf("passes whose sync was made at once (a fast disk): %llu\n",
              static_cast<unsigned long long>(synced_in_pass));
  std::printf("passes whose peers' statements were held for a later commit: %llu (a crash "
              "lost %llu held statements in %llu seeds)\n",
              static_cast<unsigned long long>(held_passes),
              static_cast<unsigned long long>(held_lost),
              static_cast<unsigned long long>(held_lost_seeds));
  std::printf("statements broadcast: %llu in %llu messages\n",
              static_cast<unsigned long long>(statements_broadcast),
              static_cast<unsigned long long>(statement_broadcasts));
  std::printf("small outputs stored as they came with their result: %llu; forged bytes "
              "attached by the hostile host: %llu, dropped on arrival: %llu\n",
              static_cast<unsigned long long>(attached_used),
              static_cast<unsigned long long>(hostile_attachments),
              static_cast<unsigned long long>(attached_refused));
  std::printf("hostile host in %llu seeds (a tree bomb refused in %llu); largest ledger %zu "
              "statements\n",
              static_cast<unsigned long long>(hostile_seeds),
              static_cast<unsigned long long>(bomb_seeds), largest_ledger);
  std::printf("horizons applied in %llu seeds (at most %llu in a run, %llu statements retired "
              "by one agent)\n",
              static_cast<unsigned long long>(horizon_seeds),
              static_cast<unsigned long long>(most_horizons),
              static_cast<unsigned long long>(most_retired));
  std::printf(
      "checkpoints applied in %llu seeds (at most %llu by one agent; one applied without "
      "the horizons before it, by a joiner, a restart or a laggard, in %llu seeds)\n",
      static_cast<unsigned long long>(checkpoint_seeds),
      static_cast<unsigned long long>(most_checkpoints),
      static_cast<unsigned long long>(alone_seeds));
  std::printf("jobs retired whole (superseded, or of a laggard) in %llu seeds (at most %llu by "
              "one agent)\n",
              static_cast<unsigned long long>(superseded_seeds),
              static_cast<unsigned long long>(most_superseded));
  std::printf(
      "old source versions retired in %llu seeds (a line starting at version %llu at "
      "most)\n",
      static_cast<unsigned long long>(base_seeds), static_cast<unsigned long long>(highest_base));
  std::printf("%llu passed, %llu failed\n", static_cast<unsigned long long>(passed),
              static_cast<unsigned long long>(failed));
  return failed == 0 ? 0 : 1;
}
