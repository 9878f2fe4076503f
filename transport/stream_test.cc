#include "transport/stream.h"

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

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

TransportOptions bulk_on() {
  TransportOptions o;
  o.bulk_integrity_only = true;
  return o;
}

// Fetches SIZE pattern bytes of SEED from SERVER into CLIENT; the outcome and the bytes.
std::pair<FetchOutcome, std::vector<std::uint8_t>> fetch_all(Agent& server, Agent& client,
                                                             const Digest& d, std::uint64_t size) {
  Loop loop({server.t.get(), client.t.get()});
  auto sink = std::make_unique<MemorySink>();
  auto state = sink->state;
  auto id = client.t->fetch(server.id.key(), d, 0, size, std::move(sink), testing::now_ms());
  REQUIRE(id);
  REQUIRE(loop.run_until([&] { return !loop.outcomes[client.t.get()].empty(); }));
  return {loop.outcomes[client.t.get()][0], state->bytes};
}

TEST_CASE("integrity-only bulk: chunks go on the plain link where both ends allow it") {
  constexpr std::uint64_t kSize = 6 * (256 << 10) + 777;
  SUBCASE("both allow it, each dials the other: plain, verified") {
    Agent server(1, bulk_on()), client(2, bulk_on());
    CHECK(client.t->bulk_port() != 0);
    Digest d = server.provider.add(21, kSize);
    REQUIRE(client.t->connect(server.id.key(), server.t->endpoint()).is_ok());
    REQUIRE(server.t->connect(client.id.key(), client.t->endpoint()).is_ok());
    auto [out, bytes] = fetch_all(server, client, d, kSize);
    CHECK_MESSAGE(out.status.is_ok(), out.status.to_string());
    CHECK(bytes == pattern(21, kSize));
    auto sent = server.t->counters().streams;
    auto got = client.t->counters().streams;
    CHECK(sent.chunks_sent == 7);
    CHECK(sent.bulk_chunks_sent == sent.chunks_sent);
    CHECK(got.bulk_chunks_received == got.chunks_received);
    CHECK(got.bytes_received == kSize);
  }
  SUBCASE("the sender does not allow it: on the encrypted link, verified") {
    Agent server(1), client(2, bulk_on());
    Digest d = server.provider.add(22, kSize);
    REQUIRE(client.t->connect(server.id.key(), server.t->endpoint()).is_ok());
    REQUIRE(server.t->connect(client.id.key(), client.t->endpoint()).is_ok());
    auto [out, bytes] = fetch_all(server, client, d, kSize);
    CHECK_MESSAGE(out.status.is_ok(), out.status.to_string());
    CHECK(bytes == pattern(22, kSize));
    CHECK(server.t->counters().streams.bulk_chunks_sent == 0);
    CHECK(client.t->counters().streams.bulk_chunks_received == 0);
    CHECK(client.t->counters().streams.chunks_received == 7);
  }
  SUBCASE("the sender does not dial the receiver: it has no host to send to, so the link") {
    Agent server(1, bulk_on()), client(2, bulk_on());
    Digest d = server.provider.add(23, kSize);
    REQUIRE(client.t->connect(server.id.key(), server.t->endpoint()).is_ok());
    auto [out, bytes] = fetch_all(server, client, d, kSize);
    CHECK_MESSAGE(out.status.is_ok(), out.status.to_string());
    CHECK(server.t->counters().streams.bulk_chunks_sent == 0);
    CHECK(server.t->counters().streams.chunks_sent == 7);
  }
  SUBCASE("a chunk changed on the way is caught by the digest, as on the link") {
    Agent server(1, bulk_on()), client(2, bulk_on());
    Digest d = testing::pattern_digest(24, kSize);
    server.provider.add_as(d, {24, kSize, 1'000'000});  // one byte differs
    REQUIRE(client.t->connect(server.id.key(), server.t->endpoint()).is_ok());
    REQUIRE(server.t->connect(client.id.key(), client.t->endpoint()).is_ok());
    auto [out, bytes] = fetch_all(server, client, d, kSize);
    CHECK(out.status.code() == StatusCode::kCorrupt);
    CHECK(out.status.message().find("digest mismatch") != std::string::npos);
    CHECK(server.t->counters().streams.bulk_chunks_sent > 0);
  }
}

TEST_CASE("integrity-only bulk: the plain listener takes the port it is given") {
  // A port free a moment ago (the kernel's pick for a socket then closed).
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in at{};
  at.sin_family = AF_INET;
  at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&at), sizeof(at)) == 0);
  socklen_t len = sizeof(at);
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&at), &len) == 0);
  ::close(fd);
  TransportOptions o = bulk_on();
  o.bulk_port = ntohs(at.sin_port);
  Agent server(1, bulk_on()), client(2, o);
  CHECK(client.t->bulk_port() == o.bulk_port);
  Digest d = server.provider.add(26, 3 * (256 << 10));
  REQUIRE(client.t->connect(server.id.key(), server.t->endpoint()).is_ok());
  REQUIRE(server.t->connect(client.id.key(), client.t->endpoint()).is_ok());
  auto [out, bytes] = fetch_all(server, client, d, 3 * (256 << 10));
  CHECK_MESSAGE(out.status.is_ok(), out.status.to_string());
  CHECK(client.t->counters().streams.bulk_chunks_received == 3);
}

TEST_CASE("integrity-only bulk: frames that name no stream of the receiver are dropped") {
  constexpr std::uint64_t kSize = 4 * (256 << 10);
  Agent server(1, bulk_on()), client(2, bulk_on());
  Digest d = server.provider.add(25, kSize);
  REQUIRE(client.t->connect(server.id.key(), server.t->endpoint()).is_ok());
  REQUIRE(server.t->connect(client.id.key(), client.t->endpoint()).is_ok());
  // Anybody may connect to the plain listener: a made-up token, a chunk without a token,
  // a token before bytes that are no message.
  void* ctx = zmq_ctx_new();
  void* forger = zmq_socket(ctx, ZMQ_DEALER);
  int zero = 0;
  zmq_setsockopt(forger, ZMQ_LINGER, &zero, sizeof(zero));
  std::string at = "tcp://127.0.0.1:" + std::to_string(client.t->bulk_port());
  REQUIRE(zmq_connect(forger, at.c_str()) == 0);
  auto frame = *encode_message(Message{kProtocolVersion, Chunk{1, 0, kSize, "forged", false}});
  std::string token(kBulkTokenBytes, 'x');
  zmq_send(forger, token.data(), token.size(), ZMQ_SNDMORE);
  zmq_send(forger, frame.data(), frame.size(), 0);
  zmq_send(forger, frame.data(), frame.size(), 0);
  zmq_send(forger, token.data(), token.size(), ZMQ_SNDMORE);
  zmq_send(forger, "junk", 4, 0);
  Loop loop({server.t.get(), client.t.get()});
  REQUIRE(loop.run_until([&] {
    return client.t->counters().streams.bulk_frames_dropped +
               client.t->counters().bulk_frames_dropped >=
           3;
  }));
  // The real fetch is untouched by them.
  auto [out, bytes] = fetch_all(server, client, d, kSize);
  CHECK_MESSAGE(out.status.is_ok(), out.status.to_string());
  CHECK(bytes == pattern(25, kSize));
  CHECK(client.t->counters().streams.bulk_chunks_received == 4);
  zmq_close(forger);
  zmq_ctx_term(ctx);
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

TEST_CASE("integrity-only bulk: a peer whose plain stream stalled is asked on the link") {
  Harness h;
  h.streams.set_bulk(40000, std::nullopt);
  Digest d = testing::digest_of("0123456789");
  REQUIRE(h.streams.fetch(h.peer, d, 0, std::nullopt, std::make_unique<MemorySink>(), 0));
  const auto& first = std::get<FetchRequest>(h.sent.back().body);
  CHECK(first.bulk_port == 40000);
  CHECK(first.bulk_token.size() == kBulkTokenBytes);
  // A made-up token names no stream; the real one does.
  CHECK(!h.streams.bulk_peer(std::string(kBulkTokenBytes, 'z')));
  CHECK(h.streams.bulk_peer(first.bulk_token) == h.peer);
  h.streams.tick(StreamOptions{}.idle_timeout_ms + 1);
  REQUIRE(h.streams.take_outcomes().size() == 1);
  CHECK(!h.streams.bulk_peer(first.bulk_token));  // the stream is gone, and its token
  REQUIRE(h.streams.fetch(h.peer, d, 0, std::nullopt, std::make_unique<MemorySink>(), 0));
  CHECK(std::get<FetchRequest>(h.sent.back().body).bulk_port == 0);
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
