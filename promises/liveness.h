// Failure detection behind a small interface (docs/coordination.md, "Membership"): the
// all-to-all heartbeats here, or SWIM with Lifeguard (promises/swim.h), without touching
// the rest of the core.
//
// A detector is told when anything is heard from a peer and asked which peers to send
// a heartbeat to, or which probes to send (SWIM), and is given the probes that arrive;
// it answers, for the current time, whether a peer is alive, suspected or dead. A peer that was learned of but never heard from gets `dead_after_ms` from
// the moment it was learned of to prove itself, so a fresh agent does not declare the
// whole mesh dead at start.
//
// Pure, no clock: times are the caller's monotonic milliseconds. Not thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "promises/messages.h"
#include "promises/pipeline.h"
#include "promises/statement.h"

namespace vow::promises {

enum class Liveness : std::uint8_t { kAlive, kSuspect, kDead };
const char* liveness_name(Liveness liveness);

class FailureDetector {
 public:
  virtual ~FailureDetector() = default;
  // A peer exists (from an advert, a seed, a hello); starts its grace period if new.
  virtual void learned(const AgentKey& peer, std::int64_t now_ms) = 0;
  // Anything arrived from this peer.
  virtual void heard_from(const AgentKey& peer, std::int64_t now_ms) = 0;
  virtual Liveness liveness(const AgentKey& peer, std::int64_t now_ms) const = 0;
  // Last time heard from (or learned of); nullopt for an unknown peer.
  virtual std::optional<std::int64_t> last_heard_ms(const AgentKey& peer) const = 0;
  // The peers to send a heartbeat to now (empty if none is due).
  virtual std::vector<AgentKey> heartbeat_targets(std::int64_t now_ms) = 0;
  virtual std::vector<AgentKey> peers() const = 0;
  // Silence after which a peer is declared dead: the detection window.
  virtual std::int64_t window_ms() const = 0;

  // A probe to send; the core fills in its load (Probe::load).
  struct Send {
    AgentKey to;
    Probe probe;
  };
  // The probes due now (SWIM; none for heartbeats).
  virtual std::vector<Send> probes(std::int64_t now_ms) {
    (void)now_ms;
    return {};
  }
  // A probe arrived from `from`; returns what to send at once (acks, relayed pings).
  virtual std::vector<Send> on_probe(const AgentKey& from, const Probe& probe,
                                     std::int64_t now_ms) {
    (void)from, (void)probe, (void)now_ms;
    return {};
  }
  // For the callers that look for changes of liveness (Membership::transitions): a
  // number that moves whenever an answer of liveness() may change other than by the
  // passing of time, and the earliest time an answer may change by time alone. While
  // neither moved, no answer changed, and a scan of every peer can be skipped. The
  // defaults ask for a scan every time (answers that change with silence alone).
  virtual std::uint64_t generation() const { return 0; }
  virtual std::int64_t next_expiry_ms() const { return INT64_MIN; }
  // With generation(): the peers whose answer may have changed other than by time since
  // the last call, and those whose answer may change by time (so a scan of them finds
  // every change); nullopt (the default): a scan must look at every peer.
  virtual std::optional<std::vector<AgentKey>> take_changed() { return std::nullopt; }
};

// All-to-all heartbeats every heartbeat_ms; suspect after suspect_after_ms of silence,
// dead after dead_after_ms. Good to about a hundred agents.
class HeartbeatDetector final : public FailureDetector {
 public:
  explicit HeartbeatDetector(const Timing& timing) : timing_(timing) {}
  void learned(const AgentKey& peer, std::int64_t now_ms) override;
  void heard_from(const AgentKey& peer, std::int64_t now_ms) override;
  Liveness liveness(const AgentKey& peer, std::int64_t now_ms) const override;
  std::optional<std::int64_t> last_heard_ms(const AgentKey& peer) const override;
  std::vector<AgentKey> heartbeat_targets(std::int64_t now_ms) override;
  std::vector<AgentKey> peers() const override;
  std::int64_t window_ms() const override { return timing_.dead_after_ms; }

 private:
  Timing timing_;
  std::map<AgentKey, std::int64_t> last_heard_ms_;
  std::int64_t next_heartbeat_ms_ = 0;
};

}  // namespace vow::promises
