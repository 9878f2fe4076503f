#include "transport/stream.h"

#include <doctest/doctest.h>

#include "transport/link.h"
#include "transport/test_util.h"

namespace vow::transport {
namespace {

using testing::DiscardSink;
using testing::identity_of;
using testing::Loop;
using testing::MemorySink;
using testing::PatternProvider;

struct Agent {
  Identity id;
  NoSequences seqs;
  PatternProvider provider;
  std::unique_ptr<Transport> t;
  Agent(std::uint8_t n, TransportOptions o = {}) : id(identity_of(n)) {
    TrustSet trust;
    for (std::uint8_t k = 1; k <= 4; ++k) trust.add(identity_of(k).key());
    o.listen = "tcp://127.0.0.1:*";
    auto r = Transport::create(id, trust, o, &seqs, {});
    REQUIRE_MESSAGE(r, r.status().to_string());
    t = std::move(r).value();
    t->set_artifact_provider(&provider);
  }
};

std::vector<std::uint8_t> pattern(std::uint64_t seed, std::uint64_t size) {
  std::vector<std::uint8_t> v(size);
  testing::fill_pattern(seed, 0, v);
  return v;
}

TEST_CASE("an artifact streams over a CURVE link and verifies") {
  Agent server(1), client(2);
  constexpr std::uint64_t kSize = 5 * (256 << 10) + 12345;  // not a multiple of a chunk
  Digest d = server.provider.add(11, kSize);
  REQUIRE(client.t->connect(server.id.key(), server.t->endpoint()).is_ok());
  Loop loop({server.t.get(), client.t.get()});
  auto sink = std::make_unique<MemorySink>();
  auto state = sink->state;
  auto id = client.t->fetch(server.id.key(), d, 0, kSize, std::move(sink), testing::now_ms());
  REQUIRE(id);
  REQUIRE(loop.run_until([&] { return !loop.outcomes[client.t.get()].empty(); }));
  auto& out = loop.outcomes[client.t.get()][0];
  CHECK_MESSAGE(out.status.is_ok(), out.status.to_string());
  CHECK(out.stream_id == *id);
  CHECK(out.received_bytes == kSize);
  CHECK(state->finished);
  CHECK(state->bytes == pattern(11, kSize));
  CHECK(client.t->counters().streams.fetches_ok == 1);
  CHECK(server.t->counters().streams.bytes_sent == kSize);

  // An empty artifact, and one the server does not hold.
  Digest empty = server.provider.add(3, 0);
  REQUIRE(client.t->fetch(server.id.key(), empty, 0, 0, std::make_unique<MemorySink>(),
                          testing::now_ms()));
  REQUIRE(client.t->fetch(server.id.key(), testing::digest_of("nope"), 0, std::nullopt,
                          std::make_unique<MemorySink>(), testing::now_ms()));
  REQUIRE(loop.run_until([&] { return loop.outcomes[client.t.get()].size() == 3; }));
  CHECK(loop.outcomes[client.t.get()][1].status.is_ok());
  CHECK(loop.outcomes[client.t.get()][2].status.code() == StatusCode::kNotFound);
}

TEST_CASE("a corrupted chunk is detected, naming the artifact and the peer") {
  Agent server(1), client(2);
  constexpr std::uint64_t kSize = 3 << 20;
  Digest d = testing::pattern_digest(5, kSize);
  server.provider.add_as(d, {5, kSize, 2'000'000});
  REQUIRE(client.t->connect(server.id.key(), server.t->endpoint()).is_ok());
  Loop loop({server.t.get(), client.t.get()});
  auto sink = std::make_unique<MemorySink>();
  auto state = sink->state;
  REQUIRE(client.t->fetch(server.id.key(), d, 0, kSize, std::move(sink), testing::now_ms()));
  REQUIRE(loop.run_until([&] { return !loop.outcomes[client.t.get()].empty(); }));
  auto& out = loop.outcomes[client.t.get()][0];
  CHECK(out.status.code() == StatusCode::kCorrupt);
  CHECK(out.status.message().find(d.hex()) != std::string::npos);
  CHECK(out.status.message().find(server.id.id()) != std::string::npos);
  CHECK(out.status.message().find("digest mismatch") != std::string::npos);
  CHECK(state->aborted);
  CHECK(!state->finished);
}

TEST_CASE("a stream cut in the middle resumes from its offset on another holder") {
  TransportOptions o;
  o.streams.window_chunks = 4;
  Agent first(1, o), second(2, o), client(3, o);
  constexpr std::uint64_t kSize = 16 * (256 << 10);
  Digest d = first.provider.add(9, kSize);
  second.provider.add(9, kSize);
  REQUIRE(client.t->connect(first.id.key(), first.t->endpoint()).is_ok());
  REQUIRE(client.t->connect(second.id.key(), second.t->endpoint()).is_ok());
  auto sink = std::make_unique<MemorySink>();
  auto state = sink->state;
  std::int64_t t0 = testing::now_ms();
  REQUIRE(client.t->fetch(first.id.key(), d, 0, kSize, std::move(sink), t0));
  {
    // Run until `first` has sent its first window, then stop serving it: it gets no more
    // credit, the client receives that window and stalls.
    Loop loop({first.t.get(), client.t.get()});
    REQUIRE(loop.run_until([&] { return first.t->counters().streams.chunks_sent > 0; }));
    Loop client_only({client.t.get()});
    REQUIRE(client_only.run_until([&] {
      return client.t->counters().streams.chunks_received ==
             first.t->counters().streams.chunks_sent;
    }));
  }
  first.t.reset();  // the holder dies
  // No progress for the idle timeout (time is the caller's): the fetch fails.
  client.t->tick(testing::now_ms() + o.streams.idle_timeout_ms + 1);
  auto outs = client.t->take_fetch_outcomes();
  REQUIRE(outs.size() == 1);
  CHECK(outs[0].status.code() == StatusCode::kUnavailable);
  std::uint64_t offset = outs[0].received_bytes;
  CHECK(offset > 0);
  CHECK(offset < kSize);
  CHECK(state->bytes.size() == offset);

  // Resume from the other holder with the bytes already held.
  auto resumed = std::make_unique<MemorySink>();
  resumed->state = state;
  REQUIRE(
      client.t->fetch(second.id.key(), d, offset, kSize, std::move(resumed), testing::now_ms()));
  Loop loop({second.t.get(), client.t.get()});
  REQUIRE(loop.run_until([&] { return !loop.outcomes[client.t.get()].empty(); }));
  auto& out = loop.outcomes[client.t.get()][0];
  CHECK_MESSAGE(out.status.is_ok(), out.status.to_string());
  CHECK(second.t->counters().streams.bytes_sent == kSize - offset);
  CHECK(state->bytes == pattern(9, kSize));
}

// The receiving state machine alone, fed by hand: a sender that lies.
struct Harness {
  std::vector<Message> sent;
  Streams streams{StreamOptions{}, [this](const AgentKey&, const Message& m) {
                    sent.push_back(m);
                    return true;
                  }};
  AgentKey peer = identity_of(1).key();
};

Message chunk(std::uint64_t id, std::uint64_t offset, std::uint64_t total, std::string data,
              bool last) {
  return Message{kProtocolVersion, Chunk{id, offset, total, std::move(data), last}};
}

TEST_CASE("a truncated or out-of-order stream is an error naming the artifact and peer") {
  Digest d = testing::digest_of("0123456789");
  SUBCASE("ends early") {
    Harness h;
    auto id = *h.streams.fetch(h.peer, d, 0, std::nullopt, std::make_unique<MemorySink>(), 0);
    REQUIRE(h.sent.size() == 1);
    CHECK(std::holds_alternative<FetchRequest>(h.sent[0].body));
    h.streams.on_message(h.peer, chunk(id, 0, 10, "01234", true), 1);
    auto out = h.streams.take_outcomes();
    REQUIRE(out.size() == 1);
    CHECK(out[0].status.code() == StatusCode::kCorrupt);
    CHECK(out[0].status.message().find("truncated") != std::string::npos);
    CHECK(out[0].status.message().find(d.hex()) != std::string::npos);
    CHECK(out[0].status.message().find(agent_id(h.peer)) != std::string::npos);
  }
  SUBCASE("gap") {
    Harness h;
    auto id = *h.streams.fetch(h.peer, d, 0, std::nullopt, std::make_unique<MemorySink>(), 0);
    h.streams.on_message(h.peer, chunk(id, 5, 10, "56789", true), 1);
    auto out = h.streams.take_outcomes();
    REQUIRE(out.size() == 1);
    CHECK(out[0].status.code() == StatusCode::kCorrupt);
  }
  SUBCASE("length differs from the expected") {
    Harness h;
    auto id = *h.streams.fetch(h.peer, d, 0, 11, std::make_unique<MemorySink>(), 0);
    h.streams.on_message(h.peer, chunk(id, 0, 10, "0123456789", true), 1);
    auto out = h.streams.take_outcomes();
    REQUIRE(out.size() == 1);
    CHECK(out[0].status.code() == StatusCode::kCorrupt);
  }
  SUBCASE("a chunk from another peer is ignored; the right one completes") {
    Harness h;
    auto id = *h.streams.fetch(h.peer, d, 0, 10, std::make_unique<MemorySink>(), 0);
    h.streams.on_message(identity_of(2).key(), chunk(id, 0, 10, "xxxxxxxxxx", true), 1);
    CHECK(h.streams.take_outcomes().empty());
    h.streams.on_message(h.peer, chunk(id, 0, 10, "0123456789", true), 1);
    auto out = h.streams.take_outcomes();
    REQUIRE(out.size() == 1);
    CHECK(out[0].status.is_ok());
  }
  SUBCASE("credit is granted back while chunks arrive") {
    Harness h;
    std::string data(100, 'a');
    auto id = *h.streams.fetch(h.peer, blake2b(data), 0, 100, std::make_unique<MemorySink>(), 0);
    for (int i = 0; i < 9; ++i)
      h.streams.on_message(h.peer, chunk(id, i * 10, 100, std::string(10, 'a'), false), 1);
    int credits = 0;
    for (auto& m : h.sent) {
      if (auto* c = std::get_if<Credit>(&m.body)) credits += static_cast<int>(c->credits);
    }
    CHECK(credits == 8);
  }
}

TEST_CASE("a 1 GiB artifact streams and verifies") {
  Agent server(1), client(2);
  constexpr std::uint64_t kSize = 1ull << 30;
  Digest d = server.provider.add(1234, kSize);  // hashes the generated bytes once
  REQUIRE(client.t->connect(server.id.key(), server.t->endpoint()).is_ok());
  Loop loop({server.t.get(), client.t.get()});
  REQUIRE(client.t->fetch(server.id.key(), d, 0, kSize, std::make_unique<DiscardSink>(),
                          testing::now_ms()));
  REQUIRE(loop.run_until([&] { return !loop.outcomes[client.t.get()].empty(); }, 300'000));
  auto& out = loop.outcomes[client.t.get()][0];
  CHECK_MESSAGE(out.status.is_ok(), out.status.to_string());
  CHECK(out.received_bytes == kSize);
}

}  // namespace
}  // namespace vow::transport
