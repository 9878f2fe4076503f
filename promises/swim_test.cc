#include "promises/swim.h"

#include <doctest/doctest.h>

#include <map>
#include <set>

namespace vow::promises {
namespace {

AgentKey key(int i) {
  AgentKey k;
  k.bytes[0] = static_cast<std::uint8_t>(i + 1);
  k.bytes[1] = static_cast<std::uint8_t>((i + 1) >> 8);
  return k;
}

SwimTiming lan() { return swim_profile(MembershipProfile::kLan); }

// One detector under test, agent 0, knowing agents 1..n at time 0.
SwimDetector make(int n, SwimTiming t = lan()) {
  SwimDetector d(key(0), t, 42);
  for (int i = 1; i <= n; ++i) d.learned(key(i), 0);
  return d;
}

const FailureDetector::Send* find(const std::vector<FailureDetector::Send>& out, Probe::Kind kind) {
  for (const auto& s : out) {
    if (s.probe.kind == kind) return &s;
  }
  return nullptr;
}

Probe ack(std::uint64_t seq, std::uint64_t incarnation = 0) {
  Probe p;
  p.kind = Probe::Kind::kAck;
  p.seq = seq;
  p.incarnation = incarnation;
  return p;
}

}  // namespace

TEST_CASE("swim: every peer is probed once per round of N periods, each once") {
  const int n = 9;
  SwimDetector d = make(n);
  std::int64_t interval = lan().probe_interval_ms;
  for (int round = 0; round < 3; ++round) {
    std::map<AgentKey, int> probed;
    for (int period = 0; period < n; ++period) {
      std::int64_t now = (round * n + period) * interval;
      auto out = d.probes(now);
      const auto* ping = find(out, Probe::Kind::kPing);
      REQUIRE(ping != nullptr);
      ++probed[ping->to];
      CHECK(d.on_probe(ping->to, ack(ping->probe.seq), now + 1).empty());
    }
    CHECK(probed.size() == static_cast<std::size_t>(n));
    for (const auto& [k, c] : probed) CHECK(c == 1);
  }
  // Every probe was acked: nobody suspected, local health at its best.
  for (int i = 1; i <= n; ++i) CHECK(d.liveness(key(i), 100 * interval) == Liveness::kAlive);
  CHECK(d.local_health() == 0);
}

TEST_CASE("swim: a silent target is probed through k others, whose relayed ack keeps it alive") {
  SwimDetector d = make(6);
  SwimTiming t = lan();
  auto out = d.probes(0);
  const auto* ping = find(out, Probe::Kind::kPing);
  REQUIRE(ping != nullptr);
  AgentKey target = ping->to;
  std::uint64_t seq = ping->probe.seq;
  CHECK(find(d.probes(t.probe_timeout_ms - 1), Probe::Kind::kPingReq) == nullptr);
  out = d.probes(t.probe_timeout_ms);
  std::set<AgentKey> helpers;
  for (const auto& s : out) {
    if (s.probe.kind != Probe::Kind::kPingReq) continue;
    CHECK(s.probe.target == target);
    CHECK(s.to != target);
    helpers.insert(s.to);
  }
  CHECK(helpers.size() == static_cast<std::size_t>(t.indirect_probes));
  // One helper relays the target's ack.
  Probe relayed = ack(seq);
  relayed.target = target;
  d.on_probe(*helpers.begin(), relayed, t.probe_timeout_ms + 5);
  d.probes(t.probe_interval_ms);  // the period ends
  CHECK(d.liveness(target, t.probe_interval_ms) == Liveness::kAlive);
  CHECK(d.local_health() == 0);
}

TEST_CASE("swim: a helper pings the target for a ping-req and relays its ack") {
  SwimDetector helper = make(3);
  Probe req;
  req.kind = Probe::Kind::kPingReq;
  req.seq = 77;
  req.target = key(2);
  auto out = helper.on_probe(key(1), req, 10);
  REQUIRE(out.size() == 1);
  CHECK(out[0].to == key(2));
  CHECK(out[0].probe.kind == Probe::Kind::kPing);
  auto back = helper.on_probe(key(2), ack(out[0].probe.seq), 12);
  REQUIRE(back.size() == 1);
  CHECK(back[0].to == key(1));
  CHECK(back[0].probe.kind == Probe::Kind::kAck);
  CHECK(back[0].probe.seq == 77);
  CHECK(back[0].probe.target == key(2));
}

TEST_CASE("swim: an unanswered probe suspects the target; it refutes with a higher incarnation") {
  SwimDetector a = make(4);
  SwimDetector target(key(1), lan(), 7);
  for (int i : {0, 2, 3, 4}) target.learned(key(i), 0);
  SwimTiming t = lan();
  // Run a's periods without answering until it suspects agent 1.
  std::int64_t now = 0;
  std::vector<FailureDetector::Send> out;
  while (a.liveness(key(1), now) == Liveness::kAlive && now < 100 * t.probe_interval_ms) {
    out = a.probes(now);
    now += 10;
  }
  REQUIRE(a.liveness(key(1), now) == Liveness::kSuspect);
  CHECK(a.local_health() >= 1);  // it missed an ack
  // The suspicion rides on a's next messages (gossip); one reaches agent 1, which refutes.
  Probe ping;
  bool carries_suspicion = false;
  // (Nothing answered, no helper nacked either: a's health multiplier is high, its
  // periods long: the probe sent with the suspicion may be the one to look at.)
  for (int i = 0; i < 50 && !carries_suspicion; ++i) {
    if (i > 0) out = a.probes(now);
    for (const auto& s : out) {
      for (const auto& u : s.probe.updates) {
        if (u.agent == key(1) && u.state == MemberState::kSuspect) {
          carries_suspicion = true;
          ping = s.probe;
        }
      }
    }
    now += 10;
  }
  REQUIRE(carries_suspicion);
  REQUIRE(a.liveness(key(1), now) == Liveness::kSuspect);
  CHECK(target.incarnation() == 0);
  auto answer = target.on_probe(key(0), ping, now);
  CHECK(target.incarnation() == 1);
  CHECK(target.local_health() == 1);  // being accused counts against its own health
  REQUIRE(!answer.empty());
  CHECK(answer[0].probe.incarnation == 1);
  a.on_probe(key(1), answer[0].probe, now + 1);
  CHECK(a.liveness(key(1), now + 1) == Liveness::kAlive);
}

TEST_CASE("swim: a suspect that does not refute is dead after the suspicion timeout") {
  SwimDetector a = make(4);
  SwimTiming t = lan();
  std::int64_t now = 0;
  std::optional<std::int64_t> suspected_at;
  std::optional<AgentKey> suspect;
  std::int64_t dead_at = 0;
  // Answer every probe but those of agent 3.
  while (now < 200 * t.probe_interval_ms) {
    for (const auto& s : a.probes(now)) {
      if (s.to != key(3) && s.probe.kind == Probe::Kind::kPing && s.probe.seq != 0) {
        a.on_probe(s.to, ack(s.probe.seq), now + 1);
      }
    }
    Liveness l = a.liveness(key(3), now);
    if (l == Liveness::kSuspect && !suspected_at) suspected_at = now;
    if (l == Liveness::kDead) {
      dead_at = now;
      break;
    }
    now += 5;
  }
  REQUIRE(suspected_at);
  REQUIRE(dead_at > 0);
  // No confirmation came: the longest suspicion.
  CHECK(dead_at - *suspected_at >= a.suspicion_timeout_ms(0));
  CHECK(dead_at - *suspected_at <= a.suspicion_timeout_ms(0) + 5);
  for (int i : {1, 2, 4}) CHECK(a.liveness(key(i), now) == Liveness::kAlive);
}

TEST_CASE("swim: independent suspicions shorten the suspicion timeout down to its minimum") {
  SwimDetector a = make(9);
  SwimTiming t = lan();
  std::int64_t max = a.suspicion_timeout_ms(0);
  std::int64_t min = a.suspicion_timeout_ms(100);
  CHECK(max == t.suspicion_max_mult * min);
  CHECK(a.suspicion_timeout_ms(1) < max);
  CHECK(a.suspicion_timeout_ms(2) < a.suspicion_timeout_ms(1));
  CHECK(a.suspicion_timeout_ms(static_cast<std::size_t>(t.indirect_probes)) == min);
  // Three others suspect agent 5 (as gossip from agent 1): dead after the minimum.
  Probe p = ack(0);
  for (int origin : {6, 7, 8}) {
    p.updates.push_back(MemberUpdate{key(5), 0, MemberState::kSuspect, key(origin)});
  }
  p.updates.push_back(MemberUpdate{key(5), 0, MemberState::kSuspect, key(9)});
  a.on_probe(key(1), p, 1000);
  CHECK(a.liveness(key(5), 1000) == Liveness::kSuspect);
  CHECK(a.liveness(key(5), 1000 + min - 1) == Liveness::kSuspect);
  CHECK(a.liveness(key(5), 1000 + min) == Liveness::kDead);
  // The minimum grows with the mesh (log10 N).
  SwimDetector big = make(999);
  CHECK(big.suspicion_timeout_ms(100) == 3 * min);
}

TEST_CASE("swim: a failed probe of a peer others suspect confirms the suspicion") {
  SwimDetector a = make(3);
  std::int64_t max = a.suspicion_timeout_ms(0);
  std::int64_t min = a.suspicion_timeout_ms(100);
  REQUIRE(min < max);
  // Agent 1 suspects agent 3 (gossip), before agent 0 probed it.
  Probe p = ack(0);
  p.updates.push_back(MemberUpdate{key(3), 0, MemberState::kSuspect, key(1)});
  a.on_probe(key(1), p, 10);
  REQUIRE(a.liveness(key(3), 10) == Liveness::kSuspect);
  // Agent 0's own probes: every peer but agent 3 answers. Its probe of 3 fails.
  std::int64_t now = 10;
  bool confirmed = false;
  while (now < 10 + max && a.liveness(key(3), now) != Liveness::kDead) {
    for (const auto& s : a.probes(now)) {
      if (s.to != key(3) && s.probe.kind == Probe::Kind::kPing && s.probe.seq != 0) {
        a.on_probe(s.to, ack(s.probe.seq), now + 1);
      }
      for (const auto& u : s.probe.updates) {
        confirmed = confirmed || (u.agent == key(3) && u.state == MemberState::kSuspect &&
                                  u.origin == key(0));
      }
    }
    now += 5;
  }
  // Two suspecters: dead after the shorter timeout, and the confirmation gossiped.
  CHECK(a.liveness(key(3), now) == Liveness::kDead);
  CHECK(now - 10 < max);
  CHECK(confirmed);
}

TEST_CASE("swim: a ping-req helper nacks a silent target; a prober whose helpers nack keeps its health") {
  SwimTiming t = lan();
  // The helper: agent 2, asked by agent 0 to probe agent 1, which does not answer.
  SwimDetector h(key(2), t, 5);
  for (int i : {0, 1, 3}) h.learned(key(i), 0);
  Probe req;
  req.kind = Probe::Kind::kPingReq;
  req.seq = 77;
  req.target = key(1);
  auto sent = h.on_probe(key(0), req, 1000);
  REQUIRE(find(sent, Probe::Kind::kPing) != nullptr);
  CHECK(find(sent, Probe::Kind::kPing)->to == key(1));
  int nacks = 0;
  std::int64_t nacked_at = 0;
  for (std::int64_t now = 1000; now <= 1000 + t.probe_interval_ms; now += 5) {
    for (const auto& s : h.probes(now)) {
      if (s.probe.kind != Probe::Kind::kNack) continue;
      ++nacks;
      nacked_at = now;
      CHECK(s.to == key(0));
      CHECK(s.probe.seq == 77);
      CHECK(s.probe.target == key(1));
    }
  }
  CHECK(nacks == 1);
  CHECK(nacked_at - 1000 < t.probe_timeout_ms);  // before the prober's period ends

  // The prober: each period, its probe of agent 4 gets no ack. With every helper's nack,
  // its health stays; without them, each missing nack counts against it.
  for (bool with_nacks : {true, false}) {
    SwimDetector a = make(4);
    std::int64_t now = 0;
    int judged = 0;
    for (; now < 40 * t.probe_interval_ms && judged < 6; now += 5) {
      for (const auto& s : a.probes(now)) {
        if (s.probe.kind == Probe::Kind::kPing && s.probe.seq != 0) {
          if (s.to != key(4)) {
            a.on_probe(s.to, ack(s.probe.seq), now + 1);
          } else {
            ++judged;
          }
        }
        if (s.probe.kind == Probe::Kind::kPingReq && with_nacks) {
          Probe n;
          n.kind = Probe::Kind::kNack;
          n.seq = s.probe.seq;
          n.target = s.probe.target;
          a.on_probe(s.to, n, now + 1);
        }
      }
      // Agent 4 refutes at once whatever it is accused of: it stays a target.
      if (a.liveness(key(4), now) != Liveness::kAlive) {
        Probe alive = ack(0, 100 + static_cast<std::uint64_t>(now));
        a.on_probe(key(4), alive, now);
      }
    }
    if (with_nacks) {
      CHECK(a.local_health() == 0);
    } else {
      CHECK(a.local_health() >= 2);
    }
  }
}

TEST_CASE("swim: missed acks raise the local health multiplier, which slows probing") {
  SwimDetector a = make(5);
  SwimTiming t = lan();
  CHECK(a.probe_interval_ms() == t.probe_interval_ms);
  std::int64_t now = 0;
  for (int i = 0; i < 400 && a.local_health() < 3; ++i) {
    a.probes(now);  // nothing is ever answered: this agent is cut off (or starved)
    now += 5;
  }
  REQUIRE(a.local_health() >= 3);
  CHECK(a.probe_interval_ms() == (a.local_health() + 1) * t.probe_interval_ms);
  CHECK(a.probe_timeout_ms() == (a.local_health() + 1) * t.probe_timeout_ms);
  // Fewer probes per second than at full health.
  std::uint64_t before = a.probes_started();
  for (std::int64_t end = now + 20 * t.probe_interval_ms; now < end; now += 5) a.probes(now);
  CHECK(a.probes_started() - before <= 20 / 4 + 1);
  // Answered probes bring it back down.
  int health = a.local_health();
  for (int i = 0; i < 40'000 && a.local_health() > 0; ++i) {
    for (const auto& s : a.probes(now)) {
      // The peers it gave up on refute (incarnation 100) and answer again.
      if (s.probe.kind == Probe::Kind::kPing) a.on_probe(s.to, ack(s.probe.seq, 100), now + 1);
    }
    now += 5;
  }
  CHECK(health > 0);
  CHECK(a.local_health() == 0);
  // Never above its bound.
  SwimTiming capped = lan();
  capped.max_local_health = 2;
  SwimDetector b = make(5, capped);
  for (std::int64_t tt = 0; tt < 100'000; tt += 5) b.probes(tt);
  CHECK(b.local_health() == 2);
  CHECK(b.probe_interval_ms() == 3 * capped.probe_interval_ms);
}

TEST_CASE("swim: an update is piggybacked a bounded number of times, a few per message") {
  SwimDetector a = make(30);
  // Twenty agents declared dead by gossip: twenty updates to pass on.
  Probe p = ack(0);
  for (int i = 10; i < 26; ++i) p.updates.push_back(MemberUpdate{key(i), 0, MemberState::kDead, {}});
  a.on_probe(key(1), p, 0);
  CHECK(a.queued_updates() == 16);
  std::map<AgentKey, int> sent;
  std::int64_t now = 0;
  for (int i = 0; i < 400; ++i, now += 50) {
    for (const auto& s : a.probes(now)) {
      CHECK(s.probe.updates.size() <= kMaxProbeUpdates);
      for (const auto& u : s.probe.updates) {
        if (u.agent != s.to) ++sent[u.agent];
      }
      if (s.probe.kind == Probe::Kind::kPing && s.probe.seq != 0) {
        a.on_probe(s.to, ack(s.probe.seq), now + 1);
      }
    }
  }
  CHECK(a.queued_updates() == 0);
  int limit = a.retransmit_limit();
  CHECK(limit == lan().retransmit_mult * 2);  // 31 agents: ceil(log10(32)) = 2
  for (int i = 10; i < 26; ++i) {
    CHECK(sent[key(i)] >= limit);
    // Besides the bounded gossip, a dead agent is pinged once in a while with its record.
    CHECK(sent[key(i)] <= limit + 400 / kDeadProbeEvery);
  }
}

TEST_CASE("swim: a dead agent that is heard from again is pinged with its record and revives") {
  SwimDetector a = make(3);
  Probe p = ack(0);
  p.updates.push_back(MemberUpdate{key(2), 4, MemberState::kDead, {}});
  a.on_probe(key(1), p, 0);
  CHECK(a.liveness(key(2), 0) == Liveness::kDead);
  a.heard_from(key(2), 500);  // its hello after a restart
  auto out = a.probes(500);
  const FailureDetector::Send* to2 = nullptr;
  for (const auto& s : out) {
    if (s.to == key(2)) to2 = &s;
  }
  REQUIRE(to2 != nullptr);
  // The restarted agent (incarnation 0) refutes past 4.
  SwimDetector b(key(2), lan(), 3);
  for (int i : {0, 1, 3}) b.learned(key(i), 0);
  auto answer = b.on_probe(key(0), to2->probe, 501);
  CHECK(b.incarnation() == 5);
  REQUIRE(answer.size() == 1);
  a.on_probe(key(2), answer[0].probe, 502);
  CHECK(a.liveness(key(2), 502) == Liveness::kAlive);
}

}  // namespace vow::promises
