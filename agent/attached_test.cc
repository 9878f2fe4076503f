#include "agent/attached.h"

#include <doctest/doctest.h>

#include <string>

#include "promises/digest.h"

namespace vow::agent {
namespace {

Digest d(int n) { return blake2b(std::to_string(n)); }

TEST_CASE("attached bytes: taken once, the oldest dropped past the count or the bytes") {
  AttachedBytes a(3, 10);
  a.put(d(1), "aaa");
  a.put(d(2), "bbb");
  a.put(d(3), "ccc");
  CHECK(a.size() == 3);
  CHECK(a.bytes() == 9);
  a.put(d(4), "dd");  // 4 items, 11 bytes: the oldest goes
  CHECK(!a.take(d(1)));
  CHECK(a.take(d(2)) == "bbb");
  CHECK(!a.take(d(2)));  // taken once
  CHECK(a.bytes() == 5);
  // Replacing keeps one entry, counted once, in the new place of the order.
  a.put(d(3), "cccc");
  CHECK(a.size() == 2);
  CHECK(a.bytes() == 6);
  a.put(d(5), "eeee");  // 10 bytes, 3 items: all fit
  a.put(d(6), "f");     // 11 bytes: d(4), now the oldest, goes; d(3) stays
  CHECK(!a.take(d(4)));
  CHECK(a.take(d(3)) == "cccc");
  CHECK(a.take(d(5)) == "eeee");
  CHECK(a.take(d(6)) == "f");
  CHECK(a.empty());
  CHECK(a.bytes() == 0);
  a.put(d(7), std::string(11, 'x'));  // larger than all it may hold: not kept
  CHECK(a.empty());
}

TEST_CASE("attached bytes: many put and taken behind a kept one stay bounded") {
  AttachedBytes a(4, 1 << 20);
  a.put(d(0), "kept");
  for (int i = 1; i < 10'000; ++i) {
    a.put(d(i), "x");
    CHECK(a.take(d(i)) == "x");
  }
  CHECK(a.size() == 1);
  CHECK(a.take(d(0)) == "kept");
  CHECK(a.order_entries() <= 2 * 1 + 16 + 1);
}

}  // namespace
}  // namespace vow::agent
