#include "transport/link.h"

#include <doctest/doctest.h>

#include <random>

#include "transport/codec.h"
#include "transport/test_util.h"

namespace vow::transport {
namespace {

using testing::identity_of;
using testing::Loop;

struct MapSequences final : SequenceView {
  std::map<AgentKey, std::uint64_t> highest;
  std::uint64_t highest_seq(const AgentKey& a) const override {
    auto it = highest.find(a);
    return it == highest.end() ? 0 : it->second;
  }
};

struct Node {
  Identity id;
  MapSequences seqs;
  std::unique_ptr<Transport> t;
  std::vector<std::string> log;
  Node(std::uint8_t n, const std::vector<std::uint8_t>& trusted, TransportOptions o = {})
      : id(identity_of(n)) {
    TrustSet trust;
    for (auto k : trusted) trust.add(identity_of(k).key());
    if (o.listen.empty()) o.listen = "tcp://127.0.0.1:*";
    auto r = Transport::create(id, trust, o, &seqs,
                               [this](LogLevel, std::string_view l) { log.emplace_back(l); });
    REQUIRE_MESSAGE(r, r.status().to_string());
    t = std::move(r).value();
  }
};

Message statement_msg(const Identity& author, std::uint64_t seq) {
  auto s = sign_statement(author, testing::claim(author.key(), seq));
  REQUIRE(s);
  return testing::batch_of({*s});
}

TEST_CASE("two agents exchange signed statements both ways over CURVE") {
  Node a(1, {1, 2}), b(2, {1, 2});
  REQUIRE(a.t->connect(b.id.key(), b.t->endpoint()).is_ok());
  Loop loop({a.t.get(), b.t.get()});
  REQUIRE(a.t->send(b.id.key(), statement_msg(a.id, 1)).is_ok());
  REQUIRE(loop.run_until([&] { return loop.inbox[b.t.get()].size() == 1; }));
  auto& in = loop.inbox[b.t.get()][0];
  CHECK(in.peer == a.id.key());
  CHECK(in.role == PeerRole::kAgent);
  CHECK(std::get<StatementBatch>(in.message.body).statements.at(0) ==
        testing::claim(a.id.key(), 1));
  // b answers on the link a opened (b has no outbound link to a).
  REQUIRE(b.t->send(a.id.key(), statement_msg(b.id, 1)).is_ok());
  REQUIRE(loop.run_until([&] { return loop.inbox[a.t.get()].size() == 1; }));
  CHECK(loop.inbox[a.t.get()][0].peer == b.id.key());
  CHECK(std::get<StatementBatch>(loop.inbox[a.t.get()][0].message.body).statements.at(0).author ==
        b.id.key());
  CHECK(b.t->counters().zap_allowed >= 1);
  CHECK(b.t->counters().handshakes_ok >= 1);
  // A broadcast reaches every linked peer.
  CHECK(b.t->broadcast(Message{kProtocolVersion, Heartbeat{1, 2, 0, 0, 0}}) == 1);
  REQUIRE(loop.run_until([&] { return loop.inbox[a.t.get()].size() == 2; }));
  CHECK(std::get<Heartbeat>(loop.inbox[a.t.get()][1].message.body).capacity == 2);
}

TEST_CASE("a statement relayed through a third agent still verifies") {
  Node a(1, {1, 2, 3}), b(2, {1, 2, 3}), c(3, {1, 2, 3});
  REQUIRE(a.t->connect(b.id.key(), b.t->endpoint()).is_ok());
  REQUIRE(b.t->connect(c.id.key(), c.t->endpoint()).is_ok());
  Loop loop({a.t.get(), b.t.get(), c.t.get()});
  REQUIRE(a.t->send(b.id.key(), statement_msg(a.id, 7)).is_ok());
  REQUIRE(loop.run_until([&] { return loop.inbox[b.t.get()].size() == 1; }));
  // b relays the verified statement as it is: its signed form, unchanged, is what travels.
  Statement verified =
      std::get<StatementBatch>(loop.inbox[b.t.get()][0].message.body).statements.at(0);
  SignedStatement stored = verified.signed_form;
  REQUIRE(b.t->send(c.id.key(), Message{kProtocolVersion, StatementBatch{{verified}}}).is_ok());
  REQUIRE(loop.run_until([&] { return loop.inbox[c.t.get()].size() == 1; }));
  auto& in = loop.inbox[c.t.get()][0];
  CHECK(in.peer == b.id.key());
  CHECK(std::get<StatementBatch>(in.message.body).statements.at(0).author == a.id.key());
  CHECK(decode_and_verify(stored).is_ok());
}

TEST_CASE("an untrusted client is refused at the handshake") {
  Node server(1, {1, 2});
  Node stranger(9, {1});  // trusts the server, the server does not trust it
  REQUIRE(stranger.t->connect(server.id.key(), server.t->endpoint()).is_ok());
  (void)stranger.t->send(server.id.key(), statement_msg(stranger.id, 1));
  Loop loop({server.t.get(), stranger.t.get()});
  REQUIRE(loop.run_until([&] { return server.t->counters().zap_denied >= 1; }));
  REQUIRE(loop.run_until([&] { return server.t->counters().handshakes_failed >= 1; }));
  loop.once(20);
  CHECK(loop.inbox[server.t.get()].empty());
  CHECK(server.t->counters().frames_in == 0);
  // Nor can the server be made to talk to it.
  CHECK(server.t->send(stranger.id.key(), Message{kProtocolVersion, Heartbeat{}}).code() ==
        StatusCode::kUnavailable);
  // Connecting to an untrusted key is refused outright.
  CHECK(server.t->connect(stranger.id.key(), stranger.t->endpoint()).code() ==
        StatusCode::kInvalid);
}

TEST_CASE("a plain client without CURVE gets nothing") {
  Node server(1, {1});
  void* ctx = zmq_ctx_new();
  void* plain = zmq_socket(ctx, ZMQ_DEALER);
  int linger = 0;
  zmq_setsockopt(plain, ZMQ_LINGER, &linger, sizeof(linger));
  REQUIRE(zmq_connect(plain, server.t->endpoint().c_str()) == 0);
  auto frame = *encode_message(Message{kProtocolVersion, ControlRequest{1, "status", "{}"}});
  zmq_send(plain, frame.data(), frame.size(), ZMQ_DONTWAIT);
  Loop loop({server.t.get()});
  REQUIRE(loop.run_until([&] { return server.t->counters().handshakes_failed >= 1; }));
  CHECK(loop.inbox[server.t.get()].empty());
  CHECK(server.t->counters().frames_in == 0);
  char buf[64];
  CHECK(zmq_recv(plain, buf, sizeof(buf), ZMQ_DONTWAIT) < 0);
  zmq_close(plain);
  zmq_ctx_term(ctx);
}

TEST_CASE("bad frames over a real link are each rejected under their own reason") {
  TransportOptions small;
  small.max_frame_bytes = 64 << 10;
  Node a(1, {1, 2, 3}), b(2, {1, 2}, small);
  b.seqs.highest[a.id.key()] = 5;
  REQUIRE(a.t->connect(b.id.key(), b.t->endpoint()).is_ok());
  Loop loop({a.t.get(), b.t.get()});
  auto frame_of = [](const SignedStatement& s) { return *encode_message(testing::batch_of({s})); };
  auto good = *sign_statement(a.id, testing::claim(a.id.key(), 6));
  SignedStatement flipped = good;
  flipped.bytes[flipped.bytes.size() - 3] ^= 0x04;  // inside a text field: still decodes
  auto forged_bytes = *encode_statement(testing::claim(b.id.key(), 9));
  Identity unknown = identity_of(3);
  std::string good_frame = frame_of(good);
  std::mt19937_64 rng(7);
  std::string garbage(300, '\0');
  for (auto& c : garbage) c = static_cast<char>(rng());
  garbage[0] = '\x7f';  // a segment count over the limit: malformed, whatever follows
  std::string oversized(small.max_frame_bytes + 8, '\0');

  struct Case {
    std::string name;
    std::string frame;
    RejectReason reason;
  };
  std::vector<Case> cases = {
      {"flipped bit", frame_of(flipped), RejectReason::kBadSignature},
      {"wrong author", frame_of(SignedStatement{forged_bytes, sign(a.id, forged_bytes)}),
       RejectReason::kWrongAuthor},
      {"unknown author", frame_of(*sign_statement(unknown, testing::claim(unknown.key(), 1))),
       RejectReason::kUntrustedAuthor},
      {"truncated", good_frame.substr(0, good_frame.size() - 16), RejectReason::kTruncated},
      {"oversized", oversized, RejectReason::kOversized},
      {"garbage", garbage, RejectReason::kMalformed},
      {"wrong version", *encode_message(Message{99, Heartbeat{}}), RejectReason::kBadVersion},
  };
  // a's own frame limit is the default, so it sends what b's smaller limit rejects.
  for (auto& c : cases) {
    CAPTURE(c.name);
    auto before = b.t->counters().rejected;
    REQUIRE(a.t->send_frame(b.id.key(), c.frame).is_ok());
    auto idx = static_cast<std::size_t>(c.reason);
    REQUIRE(loop.run_until([&] { return b.t->counters().rejected[idx] == before[idx] + 1; }));
    auto after = b.t->counters().rejected;
    for (std::size_t i = 0; i < kRejectReasonCount; ++i) {
      if (i != idx) CHECK(after[i] == before[i]);
    }
  }
  // The link still works and only the good statement gets through.
  REQUIRE(a.t->send_frame(b.id.key(), good_frame).is_ok());
  REQUIRE(loop.run_until([&] { return !loop.inbox[b.t.get()].empty(); }));
  loop.once(10);
  REQUIRE(loop.inbox[b.t.get()].size() == 1);
  CHECK(std::get<StatementBatch>(loop.inbox[b.t.get()][0].message.body).statements.at(0).seq == 6);
  CHECK(!b.log.empty());
  // Another statement at a held seq, signed by its author: equivocation evidence. It is
  // not rejected but delivered (the core keeps it as proof) and counted.
  auto rejected_before = b.t->counters().rejected;
  loop.inbox[b.t.get()].clear();
  REQUIRE(
      a.t->send_frame(b.id.key(), frame_of(*sign_statement(a.id, testing::claim(a.id.key(), 3))))
          .is_ok());
  REQUIRE(loop.run_until([&] { return !loop.inbox[b.t.get()].empty(); }));
  CHECK(std::get<StatementBatch>(loop.inbox[b.t.get()][0].message.body).statements.at(0).seq == 3);
  CHECK(b.t->counters().equivocations == 1);
  CHECK(b.t->counters().rejected == rejected_before);
}

TEST_CASE("a full send queue drops the newest message and counts it") {
  TransportOptions o;
  o.send_queue_messages = 8;
  Node a(1, {1, 2}, o);
  Identity absent = identity_of(2);
  // Nobody listens there: messages queue on the link until the queue is full.
  REQUIRE(a.t->connect(absent.key(), "tcp://127.0.0.1:1").is_ok());
  int overloaded = 0;
  for (int i = 0; i < 200; ++i) {
    Status st = a.t->send(absent.key(), Message{kProtocolVersion, Heartbeat{}});
    if (st.code() == StatusCode::kOverloaded) ++overloaded;
  }
  CHECK(overloaded > 0);
  CHECK(a.t->counters().dropped_queue_full == static_cast<std::uint64_t>(overloaded));
  CHECK(a.t->send(identity_of(7).key(), Message{kProtocolVersion, Heartbeat{}}).code() ==
        StatusCode::kUnavailable);
}

TEST_CASE("a command-line client without a listener asks and gets an answer") {
  Identity client_id = identity_of(5);
  TrustSet server_trust;
  server_trust.add(identity_of(1).key());
  server_trust.add(client_id.key(), PeerRole::kClient);
  NoSequences none;
  TransportOptions listening;
  listening.listen = "tcp://127.0.0.1:*";
  auto server =
      std::move(Transport::create(identity_of(1), server_trust, listening, &none, {})).value();
  TrustSet client_trust;
  client_trust.add(identity_of(1).key());
  auto client =
      std::move(Transport::create(client_id, client_trust, TransportOptions{}, &none, {})).value();
  CHECK(client->endpoint().empty());
  REQUIRE(client->connect(identity_of(1).key(), server->endpoint()).is_ok());
  REQUIRE(client
              ->send(identity_of(1).key(),
                     Message{kProtocolVersion, ControlRequest{42, "status", "{}"}})
              .is_ok());
  Loop loop({server.get(), client.get()});
  REQUIRE(loop.run_until([&] { return !loop.inbox[server.get()].empty(); }));
  auto& req = loop.inbox[server.get()][0];
  CHECK(req.role == PeerRole::kClient);
  CHECK(std::get<ControlRequest>(req.message.body).method == "status");
  REQUIRE(server->send(req.peer, Message{kProtocolVersion, ControlResponse{42, true, "{}", ""}})
              .is_ok());
  REQUIRE(loop.run_until([&] { return !loop.inbox[client.get()].empty(); }));
  CHECK(std::get<ControlResponse>(loop.inbox[client.get()][0].message.body).request_id == 42);
  // A client may not publish statements.
  (void)client->send(identity_of(1).key(), statement_msg(identity_of(1), 1));
  REQUIRE(loop.run_until([&] {
    return server->counters().rejected[static_cast<int>(RejectReason::kNotAllowed)] == 1;
  }));
}

TEST_CASE("peer addresses carry the key") {
  Identity a = identity_of(1);
  auto p = parse_peer_address(a.id() + "@tcp://10.0.0.1:7400");
  REQUIRE(p);
  CHECK(p->key == a.key());
  CHECK(p->endpoint == "tcp://10.0.0.1:7400");
  CHECK(parse_peer_address(a.key().hex() + "@ipc:///run/vow.sock"));
  CHECK(!parse_peer_address("tcp://10.0.0.1:7400"));
  CHECK(!parse_peer_address(a.id() + "@"));
  CHECK(!parse_peer_address("vowxyz@tcp://h:1"));
}

// Agent 2 listens, `a` links to it and a statement gets through, then agent 2 stops:
// the endpoint it listened on.
std::string link_to_stopped_peer(Node& a) {
  auto b = std::make_unique<Node>(2, std::vector<std::uint8_t>{1, 2});
  std::string endpoint = b->t->endpoint();
  REQUIRE(a.t->connect(b->id.key(), endpoint).is_ok());
  Loop loop({a.t.get(), b->t.get()});
  REQUIRE(a.t->send(b->id.key(), statement_msg(a.id, 1)).is_ok());
  REQUIRE(loop.run_until([&] { return loop.inbox[b->t.get()].size() == 1; }));
  return endpoint;
}

TEST_CASE("a link reconnects when the far agent restarts") {
  Node a(1, {1, 2});
  TransportOptions o;
  std::string endpoint = link_to_stopped_peer(a);
  o.listen = endpoint;  // same port
  auto b2 = std::make_unique<Node>(2, std::vector<std::uint8_t>{1, 2}, o);
  Loop loop({a.t.get(), b2->t.get()});
  // Heartbeats until one gets through the re-established link.
  REQUIRE(loop.run_until([&] {
    (void)a.t->send(b2->id.key(), Message{kProtocolVersion, Heartbeat{}});
    return !loop.inbox[b2->t.get()].empty();
  }));
}

TEST_CASE("a peer dialed slowly is dialed at the usual pace again once it speaks") {
  TransportOptions slow;
  slow.slow_reconnect_ms = 60'000;  // longer than the test: only a frame from it helps
  slow.slow_reconnect_max_ms = 60'000;
  Node a(1, {1, 2}, slow);
  std::string endpoint = link_to_stopped_peer(a);
  a.t->dial_slowly(identity_of(2).key());  // declared dead
  TransportOptions o;
  o.listen = endpoint;  // back on the same port
  auto b2 = std::make_unique<Node>(2, std::vector<std::uint8_t>{1, 2}, o);
  Loop loop({a.t.get(), b2->t.get()});
  // It dials us and speaks; our link to it is dialed again at once, and what we send
  // on it arrives (dialed slowly, it would wait the full minute).
  REQUIRE(b2->t->connect(a.id.key(), a.t->endpoint()).is_ok());
  REQUIRE(b2->t->send(a.id.key(), Message{kProtocolVersion, Heartbeat{}}).is_ok());
  REQUIRE(loop.run_until([&] { return !loop.inbox[a.t.get()].empty(); }));
  REQUIRE(a.t->send(b2->id.key(), statement_msg(a.id, 2)).is_ok());
  CHECK(loop.run_until([&] { return !loop.inbox[b2->t.get()].empty(); }));
}

}  // namespace
}  // namespace vow::transport
