// The message half of the codec (codec.h): envelopes to and from Cap'n Proto. The
// core's messages (promises/messages.h) are encoded as they are; the fields that
// protocol.capnp marks unused are neither written nor read.
#include <capnp/message.h>
#include <capnp/serialize.h>

#include <algorithm>
#include <map>
#include <string>

#include "transport/codec.h"
#include "transport/codec_internal.h"
#include "transport/protocol.capnp.h"

namespace vow::transport {
namespace {

namespace w = wire;
using namespace internal;  // the helpers both halves of the codec share
static_assert(w::PROTOCOL_VERSION == kProtocolVersion,
              "message.h and protocol.capnp disagree on the protocol version");

void put_vv(capnp::List<w::VersionEntry>::Builder l, const VersionVector& vv,
            const std::map<AgentKey, Digest>* digests = nullptr) {
  unsigned i = 0;
  for (const auto& [k, seq] : vv) {
    l[i].setAuthor(data_of(k.bytes));
    l[i].setSeq(seq);
    if (digests != nullptr) {
      if (auto d = digests->find(k); d != digests->end()) {
        l[i].setPrefixDigest(data_of(d->second.bytes));
      }
    }
    ++i;
  }
}
// The prefix digests of a LedgerRequest's version vector (entries without one omitted).
std::map<AgentKey, Digest> get_prefix_digests(capnp::List<w::VersionEntry>::Reader l) {
  std::map<AgentKey, Digest> out;
  for (auto e : l) {
    if (e.getPrefixDigest().size() == 0) continue;
    out[key_of(e.getAuthor(), "version vector author")] =
        digest_of(e.getPrefixDigest(), "version vector prefix digest");
  }
  return out;
}
VersionVector get_vv(capnp::List<w::VersionEntry>::Reader l) {
  check_list(l, "version vector");
  VersionVector vv;
  for (auto e : l) vv[key_of(e.getAuthor(), "version vector author")] = e.getSeq();
  return vv;
}
void put_signed(w::SignedStatement::Builder b, const SignedStatement& s) {
  b.setBytes(data_of(as_span(s.bytes)));
  b.setSignature(data_of(s.signature));
  if (!s.path.empty()) b.setPath(data_of(as_span(s.path)));
}
// A statement that holds only its signed form, for the validator to verify.
Statement get_signed(w::SignedStatement::Reader r) {
  Statement st;
  if (r.getBytes().size() > kMaxStatementBytes) bad("statement bytes", DecodeError::kOversized);
  // No bytes is no signed form: nothing a sender can have signed (nor re-encode).
  if (r.getBytes().size() == 0) bad("statement without bytes");
  st.signed_form.bytes = str(r.getBytes());
  st.signed_form.signature = fixed<64>(r.getSignature(), "signature");
  // A batch of at most kMaxBatchLeaves: a path of at most 16 digests (the validator
  // checks the rest).
  if (r.getPath().size() > 8 + 16 * Digest::kSize) bad("statement path", DecodeError::kOversized);
  st.signed_form.path = str(r.getPath());
  return st;
}

// The first statement of a batch that cannot travel (no signed form), if any.
const Statement* unsigned_statement(const StatementBatch& batch) {
  for (const auto& st : batch.statements) {
    if (st.signed_form.empty()) return &st;
  }
  return nullptr;
}

void put_heartbeat(w::Heartbeat::Builder o, const Heartbeat& h) {
  o.setRunning(h.running);
  o.setCapacity(h.capacity);
  o.setVvSum(h.vv_sum);
  o.setHoldingsIncarnation(h.holdings_incarnation);
  o.setHoldingsVersion(h.holdings_version);
}
// activeClaims, highestSeq and claims (unused) are not read, nor checked.
Heartbeat get_heartbeat(w::Heartbeat::Reader o) {
  Heartbeat h;
  h.running = o.getRunning();
  h.capacity = o.getCapacity();
  h.vv_sum = o.getVvSum();
  h.holdings_incarnation = o.getHoldingsIncarnation();
  h.holdings_version = o.getHoldingsVersion();
  return h;
}
// A probe: a kind or state this version does not know, a key that is not 32 bytes, or
// more than kMaxProbeUpdates updates make the frame malformed.
Probe get_probe(w::Probe::Reader o) {
  Probe p;
  auto kind = static_cast<unsigned>(o.getKind());
  if (kind > static_cast<unsigned>(Probe::Kind::kNack)) bad("unknown probe kind");
  p.kind = static_cast<Probe::Kind>(kind);
  p.seq = o.getSeq();
  if (o.getTarget().size() != 0) p.target = key_of(o.getTarget(), "probe target");
  p.incarnation = o.getIncarnation();
  auto l = o.getUpdates();
  if (l.size() > promises::kMaxProbeUpdates) {
    bad("probe holds " + std::to_string(l.size()) + " updates, over " +
        std::to_string(promises::kMaxProbeUpdates));
  }
  p.updates.reserve(l.size());
  for (auto u : l) {
    MemberUpdate m;
    m.agent = key_of(u.getAgent(), "probe update agent");
    m.incarnation = u.getIncarnation();
    auto state = static_cast<unsigned>(u.getState());
    if (state > static_cast<unsigned>(MemberState::kDead)) bad("unknown member state");
    m.state = static_cast<MemberState>(state);
    if (u.getOrigin().size() != 0) m.origin = key_of(u.getOrigin(), "probe update origin");
    p.updates.push_back(std::move(m));
  }
  p.load = get_heartbeat(o.getLoad());
  return p;
}

struct BodyWriter {
  w::Envelope::Body::Builder b;
  void operator()(const Hello& h) {
    auto o = b.initHello();
    o.setAgent(data_of(h.agent.bytes));
    o.setName(text_of(h.name));
    put_texts(o.initEndpoints(static_cast<unsigned>(h.endpoints.size())), h.endpoints);
    o.setProtocolVersion(kProtocolVersion);
    o.setVvSum(h.vv_sum);
  }
  // activeClaims, highestSeq and claims are unused (protocol.capnp): not written.
  void operator()(const Heartbeat& h) { put_heartbeat(b.initHeartbeat(), h); }
  void operator()(const Probe& p) {
    auto o = b.initProbe();
    o.setKind(static_cast<w::Probe::Kind>(p.kind));
    o.setSeq(p.seq);
    if (p.target) o.setTarget(data_of(p.target->bytes));
    o.setIncarnation(p.incarnation);
    auto l = o.initUpdates(static_cast<unsigned>(p.updates.size()));
    for (unsigned i = 0; i < l.size(); ++i) {
      const MemberUpdate& u = p.updates[i];
      l[i].setAgent(data_of(u.agent.bytes));
      l[i].setIncarnation(u.incarnation);
      l[i].setState(static_cast<w::Probe::MemberUpdate::State>(u.state));
      if (u.origin) l[i].setOrigin(data_of(u.origin->bytes));
    }
    put_heartbeat(o.initLoad(), p.load);
  }
  void operator()(const SyncRequest& r) {
    auto req = b.initLedgerRequest();
    put_vv(req.initHave(static_cast<unsigned>(r.have.size())), r.have, &r.digests);
    req.setHorizon(r.horizon);
    if (r.summary) req.setSummary(data_of(r.summary->bytes));
  }
  // Every statement has its signed form (encode_message_words checked). `more` unused.
  void operator()(const StatementBatch& r) {
    auto batch = b.initLedgerBatch();
    batch.setAnswer(r.answer);
    batch.setCut(r.cut);
    auto l = batch.initStatements(static_cast<unsigned>(r.statements.size()));
    for (unsigned i = 0; i < l.size(); ++i) put_signed(l[i], r.statements[i].signed_form);
    if (!r.voids.empty()) {
      auto v = batch.initVoids(static_cast<unsigned>(r.voids.size()));
      for (unsigned i = 0; i < v.size(); ++i) {
        v[i].setAuthor(data_of(r.voids[i].author.bytes));
        v[i].setFirst(r.voids[i].first);
        v[i].setLast(r.voids[i].last);
      }
    }
    if (!r.attached.empty()) {
      auto a = batch.initAttached(static_cast<unsigned>(r.attached.size()));
      for (unsigned i = 0; i < a.size(); ++i) {
        a[i].setDigest(data_of(r.attached[i].digest.bytes));
        a[i].setBytes(capnp::Data::Reader(
            reinterpret_cast<const capnp::byte*>(r.attached[i].bytes.data()),
            r.attached[i].bytes.size()));
      }
    }
  }
  void operator()(const HaveRequest& r) {
    auto o = b.initHaveRequest();
    o.setIncarnation(r.incarnation);
    o.setVersion(r.version);
  }
  void operator()(const Have& h) {
    auto o = b.initHave();
    o.setIncarnation(h.incarnation);
    o.setVersion(h.version);
    auto l = o.initDigests(static_cast<unsigned>(h.digests.size()));
    for (unsigned i = 0; i < l.size(); ++i) l.set(i, data_of(h.digests[i].bytes));
    if (h.delta) {
      o.setDelta(true);
      o.setBaseVersion(h.base_version);
      auto r = o.initRemoved(static_cast<unsigned>(h.removed.size()));
      for (unsigned i = 0; i < r.size(); ++i) r.set(i, data_of(h.removed[i].bytes));
    }
  }
  void operator()(const FetchRequest& r) {
    auto o = b.initFetchRequest();
    o.setStreamId(r.stream_id);
    o.setArtifact(data_of(r.artifact.bytes));
    o.setOffset(r.offset);
    o.setCredits(r.credits);
    o.setChunkBytes(r.chunk_bytes);
    if (r.bulk_port != 0) {
      o.setBulkPort(r.bulk_port);
      o.setBulkToken(data_of(as_span(r.bulk_token)));
    }
  }
  void operator()(const Chunk& c) {
    auto o = b.initChunk();
    o.setStreamId(c.stream_id);
    o.setOffset(c.offset);
    o.setTotalBytes(c.total_bytes);
    o.setData(data_of(as_span(c.data)));
    o.setLast(c.last);
  }
  void operator()(const Credit& c) {
    auto o = b.initCredit();
    o.setStreamId(c.stream_id);
    o.setCredits(c.credits);
    o.setCancel(c.cancel);
  }
  void operator()(const FetchError& e) {
    auto o = b.initFetchError();
    o.setStreamId(e.stream_id);
    o.setCode(e.code);
    o.setMessage(text_of(e.message));
  }
  void operator()(const ControlRequest& r) {
    auto o = b.initControlRequest();
    o.setRequestId(r.request_id);
    o.setMethod(text_of(r.method));
    o.setJson(text_of(r.json));
  }
  void operator()(const ControlResponse& r) {
    auto o = b.initControlResponse();
    o.setRequestId(r.request_id);
    o.setOk(r.ok);
    o.setJson(text_of(r.json));
    o.setError(text_of(r.error));
  }
};

StatementBatch get_batch(capnp::List<w::SignedStatement>::Reader l) {
  check_list(l, "ledger batch");
  StatementBatch r;
  r.statements.reserve(l.size());
  for (auto s : l) r.statements.push_back(get_signed(s));
  return r;
}

StatementBatch get_batch(w::LedgerBatch::Reader b) {
  StatementBatch r = get_batch(b.getStatements());
  r.answer = b.getAnswer();
  r.cut = b.getCut();
  auto v = b.getVoids();
  check_list(v, "ledger batch voids");
  for (auto x : v) {
    r.voids.push_back(VoidRange{key_of(x.getAuthor(), "void author"), x.getFirst(), x.getLast()});
  }
  auto a = b.getAttached();
  check_list(a, "ledger batch attached");
  std::size_t total = 0;
  for (auto x : a) {
    auto bytes = x.getBytes();
    if (bytes.size() > promises::kMaxAttachedBytes) {
      bad("attached artifact of " + std::to_string(bytes.size()) + " bytes, over " +
          std::to_string(promises::kMaxAttachedBytes));
    }
    total += bytes.size();
    if (total > promises::kMaxAttachedBatchBytes) {
      bad("attached artifacts over " + std::to_string(promises::kMaxAttachedBatchBytes) +
          " bytes in one batch");
    }
    r.attached.push_back(promises::Attached{
        digest_of(x.getDigest(), "attached digest"),
        std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size())});
  }
  return r;
}

MessageBody get_message_body(w::Envelope::Body::Reader b) {
  using B = w::Envelope::Body;
  switch (b.which()) {
    case B::HELLO: {
      // protocolVersion is informative: the envelope's version is the one checked.
      auto o = b.getHello();
      Hello h;
      h.agent = key_of(o.getAgent(), "hello agent");
      h.name = str(o.getName());
      h.endpoints = get_texts(o.getEndpoints(), "hello endpoints");
      h.vv_sum = o.getVvSum();
      return h;
    }
    case B::HEARTBEAT:
      return get_heartbeat(b.getHeartbeat());
    case B::PROBE:
      return get_probe(b.getProbe());
    case B::STATEMENT: {
      // Unused by current senders; an old sender's single statement is a batch of one.
      StatementBatch r;
      r.statements.push_back(get_signed(b.getStatement()));
      return r;
    }
    case B::LEDGER_REQUEST: {
      auto req = b.getLedgerRequest();
      auto have = req.getHave();
      VersionVector vv = get_vv(have);
      SyncRequest r{std::move(vv), get_prefix_digests(have), req.getHorizon(), std::nullopt};
      if (req.hasSummary()) r.summary = digest_of(req.getSummary(), "ledger request summary");
      return r;
    }
    case B::LEDGER_BATCH:
      return get_batch(b.getLedgerBatch());  // `more` (unused) not read
    case B::FETCH_REQUEST: {
      auto o = b.getFetchRequest();
      FetchRequest r{o.getStreamId(), digest_of(o.getArtifact(), "fetch artifact"),
                     o.getOffset(),   o.getCredits(),
                     o.getChunkBytes(), o.getBulkPort(),
                     str(o.getBulkToken())};
      if (r.bulk_port == 0) r.bulk_token.clear();  // no plain link asked: nothing to lead
      if (r.bulk_port != 0 && r.bulk_token.size() != kBulkTokenBytes) {
        bad("bulk token of " + std::to_string(r.bulk_token.size()) + " bytes, not " +
            std::to_string(kBulkTokenBytes));
      }
      return r;
    }
    case B::CHUNK: {
      auto o = b.getChunk();
      return Chunk{o.getStreamId(), o.getOffset(), o.getTotalBytes(), str(o.getData()),
                   o.getLast()};
    }
    case B::CREDIT: {
      auto o = b.getCredit();
      return Credit{o.getStreamId(), o.getCredits(), o.getCancel()};
    }
    case B::FETCH_ERROR: {
      auto o = b.getFetchError();
      return FetchError{o.getStreamId(), o.getCode(), str(o.getMessage())};
    }
    case B::CONTROL_REQUEST: {
      auto o = b.getControlRequest();
      return ControlRequest{o.getRequestId(), str(o.getMethod()), str(o.getJson())};
    }
    case B::CONTROL_RESPONSE: {
      auto o = b.getControlResponse();
      return ControlResponse{o.getRequestId(), o.getOk(), str(o.getJson()), str(o.getError())};
    }
    case B::HAVE_REQUEST: {
      auto o = b.getHaveRequest();
      return HaveRequest{o.getIncarnation(), o.getVersion()};
    }
    case B::HAVE: {
      auto o = b.getHave();
      Have h;
      h.incarnation = o.getIncarnation();
      h.version = o.getVersion();
      auto l = o.getDigests();
      check_list(l, "have digests");
      h.digests.reserve(l.size());
      for (auto d : l) h.digests.push_back(digest_of(d, "have digest"));
      h.delta = o.getDelta();
      if (h.delta) {
        h.base_version = o.getBaseVersion();
        auto r = o.getRemoved();
        check_list(r, "have removed digests");
        h.removed.reserve(r.size());
        for (auto d : r) h.removed.push_back(digest_of(d, "have removed digest"));
      }
      return h;
    }
  }
  bad("unknown message kind " + std::to_string(static_cast<int>(b.which())));
}

}  // namespace

const char* message_kind_name(const MessageBody& body) {
  static constexpr const char* kNames[] = {
      "hello",         "heartbeat", "ledger-request", "ledger-batch", "have-request",
      "have",          "probe",     "fetch-request",  "chunk",        "credit",
      "fetch-error",   "control-request", "control-response"};
  static_assert(std::size(kNames) == std::variant_size_v<MessageBody>);
  return kNames[body.index()];
}

Result<kj::Array<capnp::word>> internal::encode_message_words(const Message& message) {
  // First segment big enough for the bulk of a large message: one segment, no regrowth.
  std::size_t bulk = 0;
  if (auto* c = std::get_if<Chunk>(&message.body)) bulk = c->data.size();
  if (auto* b = std::get_if<StatementBatch>(&message.body)) {
    if (const Statement* st = unsigned_statement(*b)) {
      // The core signs its own statements and the validator verifies peers': a bug.
      return Status::invalid("bug: statement " + std::to_string(st->seq) + " by " +
                             st->author.hex() + " in a batch has no signed form");
    }
    for (const auto& s : b->statements) {
      bulk += s.signed_form.bytes.size() + s.signed_form.path.size() + 96;
    }
    for (const auto& a : b->attached) bulk += a.bytes.size() + 64;
  }
  capnp::MallocMessageBuilder mb(static_cast<unsigned>(std::min<std::size_t>(
      bulk / sizeof(capnp::word) + 256, kMaxFrameBytes / sizeof(capnp::word))));
  auto root = mb.initRoot<w::Envelope>();
  root.setProtocolVersion(message.protocol_version);
  std::visit(BodyWriter{root.initBody()}, message.body);
  auto words = capnp::messageToFlatArray(mb);
  if (words.size() * sizeof(capnp::word) > kMaxFrameBytes) {
    return Status::invalid(std::string(message_kind_name(message.body)) + " message is " +
                           std::to_string(words.size() * sizeof(capnp::word)) +
                           " bytes, over the frame limit of " + std::to_string(kMaxFrameBytes));
  }
  return words;
}

Result<std::string> encode_message(const Message& message) {
  auto words = internal::encode_message_words(message);
  if (!words) return words.status();
  auto bytes = words->asBytes();
  return std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
}

Result<Message> decode_message(std::span<const std::uint8_t> frame, std::size_t max_frame_bytes,
                               DecodeError* error) {
  set_error(error, DecodeError::kNone);
  DecodeError f = check_framing(frame, max_frame_bytes);
  if (f != DecodeError::kNone) {
    set_error(error, f);
    return status_for(f, "frame of " + std::to_string(frame.size()) + " bytes");
  }
  return guarded<Message>(error, [&]() -> Message {
    AlignedWords words(frame);
    capnp::FlatArrayMessageReader reader(words.words(), reader_options(frame.size()));
    auto root = reader.getRoot<w::Envelope>();
    Message m;
    m.protocol_version = root.getProtocolVersion();
    if (m.protocol_version != kProtocolVersion) {
      bad("peer speaks version " + std::to_string(m.protocol_version) + ", we speak " +
              std::to_string(kProtocolVersion),
          DecodeError::kBadVersion);
    }
    m.body = get_message_body(root.getBody());
    return m;
  });
}

Result<Message> decode_message(std::string_view frame, std::size_t max_frame_bytes,
                               DecodeError* error) {
  return decode_message(as_span(frame), max_frame_bytes, error);
}

}  // namespace vow::transport
