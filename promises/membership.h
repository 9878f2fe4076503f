// Membership: the peers one core knows, what they said about themselves (name, load,
// ledger size) and what it asked of them, and whether each is alive, suspected or dead,
// as judged by the FailureDetector it is given. It is the one place that knows how
// long a silent peer takes to be declared dead: the rest asks for a peer's deadline()
// or the detection_window_ms().
//
// Owns the detector and the peer table (at most one row per agent that ever sent or
// was named in anything; never the agent itself). Pure: times are the caller's
// monotonic milliseconds. Not thread-safe (owned by one Core).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "promises/liveness.h"
#include "promises/statement.h"

namespace vow::promises {

class Membership {
 public:
  struct Peer {
    std::string name;
    std::uint32_t running = 0;             // from its latest heartbeat
    std::uint32_t capacity = 0;            // from its latest heartbeat
    std::uint64_t vv_sum = 0;              // from its latest heartbeat
    Liveness reported = Liveness::kAlive;  // last liveness a transition was reported for
    std::int64_t last_sync_request_ms = -1'000'000;
    // Its vv_sum when the last full SyncRequest went to it, whether an answer's batch
    // since brought news, and the highest vv_sum at which an answer that was not cut
    // told everything it held for this agent (Core::Impl::request_sync): a heartbeat
    // that shows no more than that is not worth a request, even if this agent's sum is
    // smaller (the peer holds statements this agent refuses, such as an author it does
    // not trust).
    std::uint64_t vv_sum_asked = 0;
    bool answer_news = false;
    std::uint64_t answered_vv_sum = 0;
    // It marks the last batch of its answers (StatementBatch::answer); a peer of an
    // earlier version does not.
    bool marks_answers = false;
    std::int64_t summary_sent_ms = -1'000'000;  // a summary-only SyncRequest sent to it
    std::int64_t last_have_request_ms = -1'000'000;
    // A HaveRequest went and no Have came back since: the next waits kHaveRetryMs, not a
    // heartbeat (an agent whose answer is slow in coming, or slow to be read, is not
    // asked for its whole holdings again every heartbeat meanwhile).
    bool have_asked = false;
    std::uint64_t connect_sent_for_seq = 0;
    // Its holdings version as its latest heartbeat or probe told it (SWIM: asked again
    // for a Have until the one applied matches, since no heartbeat repeats it).
    std::pair<std::uint64_t, std::uint64_t> holdings_told{0, 0};
    bool heard = false;  // anything ever arrived from it (else: dial its endpoints)
    bool spoke = false;  // a message of its own arrived (a link alone is not enough)
  };
  struct Transition {
    AgentKey peer;
    Liveness liveness;
  };

  Membership(AgentKey self, std::unique_ptr<FailureDetector> detector);

  // The row of a peer, created (and the detector told) if new; nullptr for self.
  Peer* peer(const AgentKey& key, std::int64_t now_ms);
  const Peer* find(const AgentKey& key) const;
  const std::map<AgentKey, Peer>& peers() const { return peers_; }
  // Anything arrived from `from` (ignored for self).
  void heard(const AgentKey& from, std::int64_t now_ms);
  // Peers heard from for the first time since the last call (for the log), in order.
  std::vector<AgentKey> take_first_heard() { return std::exchange(first_heard_, {}); }

  Liveness liveness(const AgentKey& peer, std::int64_t now_ms) const;
  // Alive or suspected; self always.
  bool is_live(const AgentKey& agent, std::int64_t now_ms) const;
  std::optional<std::int64_t> last_heard_ms(const AgentKey& peer) const;
  // When a live peer is declared dead unless heard from first; nullopt for a dead or
  // unknown one.
  std::optional<std::int64_t> deadline(const AgentKey& peer, std::int64_t now_ms) const;
  // The earliest time after now_ms at which a live peer's liveness may change by time
  // alone (the detector's next expiry when it knows it, else the earliest deadline);
  // nullopt: none. Decisions are taken again then.
  std::optional<std::int64_t> next_deadline(std::int64_t now_ms) const;
  std::int64_t detection_window_ms() const { return detector_->window_ms(); }
  // Its latest heartbeat shows as many jobs running as it has places (never self).
  bool full(const AgentKey& agent) const;
  // Peers whose liveness changed since the last call, in key order, each once.
  std::vector<Transition> transitions(std::int64_t now_ms);
  std::vector<AgentKey> heartbeat_targets(std::int64_t now_ms);
  // SWIM probes due now, and the answer to one that arrived (FailureDetector).
  std::vector<FailureDetector::Send> probes(std::int64_t now_ms);
  std::vector<FailureDetector::Send> on_probe(const AgentKey& from, const Probe& probe,
                                              std::int64_t now_ms);
  const FailureDetector& detector() const { return *detector_; }
  std::vector<AgentKey> live_peers(std::int64_t now_ms) const;  // in key order

 private:
  AgentKey self_;
  std::vector<AgentKey> first_heard_;
  std::unique_ptr<FailureDetector> detector_;
  std::map<AgentKey, Peer> peers_;
  // What transitions() saw at its last scan of every peer (FailureDetector::generation).
  std::uint64_t scanned_generation_ = 0;
  std::size_t scanned_peers_ = 0;
  std::int64_t scanned_until_ms_ = INT64_MIN;
};

}  // namespace vow::promises
