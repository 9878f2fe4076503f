#include "promises/digest.h"

#include <doctest/doctest.h>

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
