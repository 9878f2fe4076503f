#include "promises/digest.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "promises/statement.h"

namespace vow {

TEST_CASE("blake2b-256 of known input matches b2sum --length=256") {
  // printf 'abc' | b2sum --length=256
  CHECK(blake2b("abc").hex() == "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319");
}

TEST_CASE("incremental hashing equals one-shot hashing") {
  Hasher h;
  h.update("hello ");
  h.update("world");
  CHECK(h.finish() == blake2b("hello world"));
}

TEST_CASE("hex round trip and rejection of bad hex") {
  Digest d = blake2b("x");
  auto back = Digest::from_hex(d.hex());
  REQUIRE(back.has_value());
  CHECK(*back == d);
  CHECK_FALSE(Digest::from_hex("zz").has_value());
  CHECK_FALSE(Digest::from_hex(d.hex().substr(1)).has_value());
  std::string bad = d.hex();
  bad[5] = 'g';
  CHECK_FALSE(Digest::from_hex(bad).has_value());
}

}  // namespace vow

namespace vow {

TEST_CASE("digests and agent keys order byte by byte, as their byte arrays do") {
  std::vector<Digest> ds;
  for (int i = 0; i < 64; ++i) ds.push_back(blake2b("order " + std::to_string(i)));
  // Values that differ in one byte only, at each 8-byte boundary and inside a word.
  for (std::size_t at : {0u, 7u, 8u, 15u, 16u, 24u, 31u}) {
    Digest a = ds[0], b = ds[0];
    a.bytes[at] = 0x01;
    b.bytes[at] = 0xf0;
    ds.push_back(a);
    ds.push_back(b);
  }
  ds.push_back(ds[0]);
  for (const auto& x : ds) {
    for (const auto& y : ds) {
      CHECK((x < y) == (x.bytes < y.bytes));
      CHECK((x == y) == (x.bytes == y.bytes));
      AgentKey kx, ky;
      kx.bytes = x.bytes;
      ky.bytes = y.bytes;
      CHECK((kx < ky) == (x.bytes < y.bytes));
      CHECK((kx == ky) == (x.bytes == y.bytes));
    }
  }
}

}  // namespace vow
