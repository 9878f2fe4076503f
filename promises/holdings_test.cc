#include "promises/holdings.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>

#include "promises/test_util.h"

namespace vow::promises {
namespace {

using testing::key;

Digest d(int i) { return blake2b("artifact " + std::to_string(i)); }

// Two agents' holdings: `a` holds artifacts, `b` learns them from a's Haves.
struct Pair {
  Membership ma{key(1), std::make_unique<HeartbeatDetector>(Timing{})};
  Membership mb{key(2), std::make_unique<HeartbeatDetector>(Timing{})};
  Holdings a{ma};
  Holdings b{mb};
  Pair() { a.set_incarnation(7); }
  // b asks a (naming what it last applied) and applies the answer; the answer.
  Have sync() {
    auto [inc, ver] = b.seen(key(1));
    Have h = a.have_since(inc, ver);
    b.on_have(key(1), h, 0);
    return h;
  }
  bool converged() const {
    const auto* seen = b.of(key(1));
    return seen != nullptr && *seen == a.held() &&
           b.seen(key(1)) == std::pair<std::uint64_t, std::uint64_t>{a.incarnation(), a.version()};
  }
};

TEST_CASE("holdings: after the first complete set, changes travel as deltas") {
  Pair p;
  for (int i = 0; i < 100; ++i) p.a.restore(d(i));
  Have first = p.sync();
  CHECK_FALSE(first.delta);
  CHECK(first.digests.size() == 100);
  CHECK(p.converged());

  p.a.add(d(100));
  CHECK(p.a.remove(d(3)));
  p.a.changed();
  Have delta = p.sync();
  CHECK(delta.delta);
  CHECK(delta.base_version == 0);
  CHECK(delta.digests == std::vector<Digest>{d(100)});
  CHECK(delta.removed == std::vector<Digest>{d(3)});
  CHECK(p.converged());

  // Nothing changed: an empty delta.
  Have none = p.sync();
  CHECK(none.delta);
  CHECK(none.digests.empty());
  CHECK(none.removed.empty());
  CHECK(p.converged());
}

TEST_CASE("holdings: a peer that missed deltas converges to the right holdings") {
  Pair p;
  for (int i = 0; i < 50; ++i) p.a.restore(d(i));
  p.sync();
  // Three versions pass; b hears none of their deltas.
  p.a.add(d(50));
  p.a.changed();
  Have lost1 = p.a.have_since(7, 0);
  p.a.remove(d(50));  // added and removed again: b must not keep it
  p.a.remove(d(1));
  p.a.changed();
  p.a.add(d(1));  // removed and added again
  p.a.add(d(51));
  p.a.changed();
  // A stale delta (its base is not what b holds) is ignored.
  Have stale = p.a.have_since(7, 2);
  CHECK(stale.delta);
  p.b.on_have(key(1), stale, 0);
  CHECK(p.b.seen(key(1)) == std::pair<std::uint64_t, std::uint64_t>{7, 0});
  // Asking from what it holds brings all three versions at once.
  Have caught = p.sync();
  CHECK(caught.delta);
  CHECK(caught.base_version == 0);
  CHECK(p.converged());
  CHECK(p.b.of(key(1))->count(d(50)) == 0);
  CHECK(p.b.of(key(1))->count(d(1)) == 1);
  CHECK(p.b.of(key(1))->count(d(51)) == 1);
  // The delta of a version b already has passed is older than what it holds: ignored.
  p.b.on_have(key(1), lost1, 0);
  CHECK(p.converged());
}

TEST_CASE("holdings: a complete set when the peer is too far behind or restarted") {
  Pair p;
  for (int i = 0; i < 10; ++i) p.a.restore(d(i));
  p.sync();
  // More changes than the log keeps: the oldest versions drop out of it.
  for (std::size_t i = 0; i <= kMaxHoldingsLog; ++i) {
    p.a.add(d(1000 + static_cast<int>(i)));
    p.a.changed();
  }
  Have full = p.sync();
  CHECK_FALSE(full.delta);
  CHECK(p.converged());
  // Another incarnation of `a` (it restarted): b's version names the old one.
  Pair q;
  q.a.restore(d(1));
  q.sync();
  q.a.set_incarnation(8);
  q.a.add(d(2));
  q.a.changed();
  Have again = q.sync();
  CHECK_FALSE(again.delta);
  CHECK(q.converged());
  // A requester that names no version (an older agent) gets the complete set.
  CHECK_FALSE(q.a.have_since(0, 0).delta);
}

TEST_CASE("holdings: changes as large as the set are sent as the set") {
  Pair p;
  p.a.restore(d(1));
  p.sync();
  p.a.remove(d(1));
  for (int i = 2; i < 10; ++i) p.a.add(d(i));
  p.a.changed();
  Have h = p.sync();
  CHECK_FALSE(h.delta);
  CHECK(p.converged());
}

TEST_CASE("holdings: the walk over many digests names the holders a lookup of each names") {
  Membership m{key(1), std::make_unique<HeartbeatDetector>(Timing{})};
  Holdings h{m};
  const std::int64_t now = 10'000;
  m.heard(key(5), 0);  // dead by now
  for (std::uint8_t k : {2, 3, 4}) m.heard(key(k), now);
  for (int i = 0; i < 300; i += 2) h.restore(d(i));
  auto have_of = [](int every) {
    Have have;
    have.incarnation = 1;
    have.version = 1;
    for (int i = 0; i < 300; i += every) have.digests.push_back(d(i));
    std::sort(have.digests.begin(), have.digests.end());
    return have;
  };
  h.on_have(key(2), have_of(3), now);
  h.on_have(key(5), have_of(1), 0);
  // Peer 3 sent no Have: a holder where its statements presume so. Peer 2's result
  // names what its last Have did not list: announced, so a holder for a while.
  auto result_of = [](std::uint8_t k, std::initializer_list<int> outs) {
    Statement st;
    st.author = key(k);
    st.seq = 1;
    JobResult r;
    r.ok = true;
    for (int i : outs) {
      NamedArtifact o;
      o.name = "o" + std::to_string(i);
      o.artifact.digest = d(i);
      r.outputs.push_back(o);
    }
    st.body = r;
    return st;
  };
  h.note(result_of(3, {4, 8, 10, 12, 299}), now);
  h.note(result_of(2, {14, 16, 18}), now);
  std::vector<Digest> asked;
  for (int i = 0; i < 320; ++i) asked.push_back(d(i));
  std::sort(asked.begin(), asked.end());
  int visited = 0;
  int shared = 0;
  std::vector<Digest> seen;
  h.for_each_held(asked, now, [&](const Digest& x, const std::vector<AgentKey>& holders) {
    ++visited;
    seen.push_back(x);
    CHECK(h.holds(x));
    CHECK(holders == h.live_holders(x, now));
    shared += holders.empty() ? 0 : 1;
  });
  CHECK(visited == 150);  // every held digest asked about, and only those
  CHECK(std::is_sorted(seen.begin(), seen.end()));
  // Held here and by a live peer: multiples of 6 (peer 2), 4, 8, 10, 12 (peer 3), 14, 16
  // 18 (peer 2, announced); peer 5's set is not counted, it is dead.
  int expected = 0;
  for (int i = 0; i < 300; i += 2) {
    expected += (i % 6 == 0 || i == 4 || i == 8 || i == 10 || i == 14 || i == 16) ? 1 : 0;
  }
  CHECK(shared == expected);
  // A digest not asked about is not visited.
  int none = 0;
  h.for_each_held({}, now, [&](const Digest&, const std::vector<AgentKey>&) { ++none; });
  CHECK(none == 0);
}

}  // namespace
}  // namespace vow::promises
