// Fuzz target: the inbound path of every frame an agent receives (transport/validator.h)
// and the stored-statement path (decode_and_verify). Properties checked beyond "no
// crash": a frame that decodes re-encodes and decodes to the same value, and so does a
// statement; the validator never accepts what does not decode.
//
// Input layout: the whole input is one frame for the validator; the same input, split
// as signature (first 64 bytes) and bytes (the rest), goes to decode_and_verify. The
// trusted keys are the identities of seeds 1 and 2 (fill bytes), as in the corpus.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "promises/assert.h"
#include "promises/batch_proof.h"
#include "transport/codec.h"
#include "transport/validator.h"

namespace {

using namespace vow;
using namespace vow::transport;

Identity identity_of(std::uint8_t n) {
  std::array<std::uint8_t, 32> seed{};
  seed.fill(n);
  return Identity::from_seed(seed);
}

struct Fixture {
  TrustSet trust;
  NoSequences sequences;
  AgentKey peer;
  Fixture() {
    trust.add(identity_of(1).key());
    trust.add(identity_of(2).key());
    trust.add(identity_of(3).key(), PeerRole::kClient);
    peer = identity_of(1).key();
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static Fixture* f = new Fixture();
  std::span<const std::uint8_t> frame(data, size);
  Validator validator(&f->trust, &f->sequences, kMaxFrameBytes, {});
  auto m = validator.validate(frame, f->peer, PeerRole::kAgent);
  (void)validator.validate(frame, identity_of(3).key(), PeerRole::kClient);

  auto plain = decode_message(frame);
  if (plain) {
    auto again = encode_message(*plain);
    VOW_ASSERT(again.is_ok(), "decoded frame does not re-encode: %s",
               again.status().to_string().c_str());
    auto back = decode_message(*again);
    VOW_ASSERT(back.is_ok() && *back == *plain, "frame round trip changed the message");
  }
  VOW_ASSERT(!m || plain, "validator accepted a frame that does not decode");

  if (size >= 64) {
    Signature sig;
    std::memcpy(sig.data(), data, 64);
    std::string_view bytes(reinterpret_cast<const char*>(data) + 64, size - 64);
    auto st = decode_and_verify(bytes, sig, "");
    auto unverified = decode_statement_unverified(bytes);
    VOW_ASSERT(!st || unverified, "verified a statement that does not decode");
    if (unverified) {
      auto re = encode_statement(*unverified);
      VOW_ASSERT(re.is_ok(), "decoded statement does not re-encode");
      auto back = decode_statement_unverified(*re);
      VOW_ASSERT(back.is_ok() && *back == *unverified, "statement round trip changed it");
    }
  }
  // A batch path from the input (its first byte says how long): any bytes name a root or
  // none, read within bounds.
  if (size >= 1) {
    const std::size_t n = std::min<std::size_t>(size - 1, std::size_t{data[0]} * 4);
    std::string_view path(reinterpret_cast<const char*>(data) + 1, n);
    std::string_view leaf(reinterpret_cast<const char*>(data) + 1 + n, size - 1 - n);
    auto root = batch_root(leaf, path);
    VOW_ASSERT(!root || (path.size() >= 40 && (path.size() - 8) % 32 == 0),
               "a root from a path of %zu bytes", path.size());
  }
  return 0;
}
