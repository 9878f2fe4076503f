// SWIM membership with Lifeguard (docs/coordination.md, "Membership"): a FailureDetector
// whose cost per agent does not grow with the mesh.
//
// Each protocol period the agent pings one peer, taken in turn from a shuffled list of
// the peers not known dead (reshuffled each round, new peers inserted at a random place),
// so every peer is probed once within a round of at most N periods. Without an ack within
// the probe timeout it asks k other alive peers to ping the target (ping-req) and relay
// the ack; without one by the end of the period the target is suspected. A suspicion
// carries the target's incarnation: the target refutes it by raising its incarnation,
// and is declared dead when the suspicion outlives its timeout, which (Lifeguard) starts
// at max_mult * min and falls towards min = suspicion_mult * max(1, log10 N) * interval
// as independent suspicions of the same incarnation arrive (up to k of them).
//
// Updates (alive / suspect / dead with incarnation) ride on probes and acks, at most
// kMaxProbeUpdates per message, fewest-sent first, each retransmitted
// retransmit_mult * ceil(log10(N + 1)) times. A message to a peer this agent holds
// suspect or dead also carries that record, so the peer learns of it and refutes.
//
// Lifeguard's local health (0..max_local_health): +1 for a probe that got no ack and for
// each refutation this agent had to make, -1 for each probe acked. The probe interval and
// timeout are multiplied by (health + 1): an agent that is starved (its acks arrive late
// because it runs late) probes less and waits longer before it accuses anyone.
//
// Dead peers are not probed in turn; one of them, at random, is pinged every
// kDeadProbeEvery periods (and a dead or suspected peer heard from directly is pinged
// at once), so a peer that
// comes back (restart, healed partition) refutes and is alive again.
//
// Pure: times are the caller's monotonic milliseconds; randomness from a PRNG seeded by
// the caller (the core derives it from the agent key). Not thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include "promises/liveness.h"

namespace vow::promises {

// One dead peer is pinged every this many probe periods.
inline constexpr int kDeadProbeEvery = 10;

class SwimDetector final : public FailureDetector {
 public:
  SwimDetector(AgentKey self, const SwimTiming& timing, std::uint64_t seed);

  void learned(const AgentKey& peer, std::int64_t now_ms) override;
  void heard_from(const AgentKey& peer, std::int64_t now_ms) override;
  Liveness liveness(const AgentKey& peer, std::int64_t now_ms) const override;
  std::uint64_t generation() const override { return generation_; }
  std::int64_t next_expiry_ms() const override;
  // The members whose state changed (or that were added) since the last call, and the
  // suspects (a suspicion expires with time), in key order.
  std::optional<std::vector<AgentKey>> take_changed() override;
  std::optional<std::int64_t> last_heard_ms(const AgentKey& peer) const override;
  std::vector<AgentKey> heartbeat_targets(std::int64_t now_ms) override;
  std::vector<AgentKey> peers() const override;
  std::int64_t window_ms() const override;
  std::vector<Send> probes(std::int64_t now_ms) override;
  std::vector<Send> on_probe(const AgentKey& from, const Probe& probe,
                             std::int64_t now_ms) override;

  // ---- For tests and metrics ----
  std::uint64_t incarnation() const { return incarnation_; }
  int local_health() const { return health_; }
  // The current probe interval and timeout (scaled by the local health).
  std::int64_t probe_interval_ms() const;
  std::int64_t probe_timeout_ms() const;
  // A suspicion's timeout after `confirmations` independent suspicions besides the first.
  std::int64_t suspicion_timeout_ms(std::size_t confirmations) const;
  // How many times one update is piggybacked at the current mesh size.
  int retransmit_limit() const;
  std::size_t queued_updates() const { return queue_.size(); }
  std::uint64_t probes_started() const { return probes_started_; }

 private:
  struct Member {
    std::uint64_t incarnation = 0;
    MemberState state = MemberState::kAlive;
    std::int64_t last_heard_ms = 0;
    std::int64_t suspect_since_ms = 0;
    std::set<AgentKey> suspecters;     // independent suspicions of this incarnation
    std::int64_t last_reprobe_ms = -1'000'000;
    bool reprobe = false;  // heard from while suspect or dead: ping it at once
  };
  struct Queued {
    MemberUpdate update;
    int sent = 0;
  };
  struct Pending {  // this agent's probe of the current period
    AgentKey target;
    std::uint64_t seq = 0;
    std::int64_t sent_ms = 0;
    bool indirect = false;
    bool acked = false;
    int helpers = 0;  // ping-reqs sent
    int nacks = 0;    // their nacks received
  };
  struct Forward {  // a ping sent on behalf of a ping-req
    AgentKey requester;
    std::uint64_t their_seq = 0;
    AgentKey target;
    std::int64_t expires_ms = 0;
    std::int64_t nack_ms = 0;  // no ack from the target by then: nack the requester
    bool nacked = false;
  };

  std::uint64_t next_random();
  std::size_t members_alive() const;  // not dead, self included
  void apply(const MemberUpdate& u, const AgentKey& from, std::int64_t now_ms);
  void set_state(const AgentKey& key, Member& m, MemberState state, std::uint64_t incarnation,
                 std::int64_t now_ms, std::optional<AgentKey> origin);
  void queue(const MemberUpdate& u);
  void refute(std::uint64_t accused);
  void expire_suspicions(std::int64_t now_ms);
  Send make(const AgentKey& to, Probe::Kind kind, std::uint64_t seq,
            std::optional<AgentKey> target = std::nullopt);
  std::optional<AgentKey> next_target();
  void adjust_health(int delta);

  AgentKey self_;
  SwimTiming timing_;
  std::uint64_t rng_;
  std::uint64_t incarnation_ = 0;
  int health_ = 0;
  std::map<AgentKey, Member> members_;
  std::set<AgentKey> suspects_;
  std::set<AgentKey> changed_;  // see take_changed()
  std::set<AgentKey> reprobes_;  // members with `reprobe` set (probes() pings them)
  std::uint64_t generation_ = 1;  // see FailureDetector::generation
  std::map<AgentKey, Queued> queue_;  // one update per agent, the newest
  // queue_ by (times sent, agent): what make() piggybacks first, without a pass over
  // the queue per probe.
  std::set<std::pair<int, AgentKey>> queue_order_;
  std::vector<AgentKey> order_;
  std::size_t order_index_ = 0;
  std::optional<Pending> pending_;
  std::map<std::uint64_t, Forward> forwards_;
  std::uint64_t next_seq_ = 1;
  std::int64_t next_probe_ms_ = 0;
  std::uint64_t periods_ = 0;
  std::uint64_t probes_started_ = 0;
};

}  // namespace vow::promises
