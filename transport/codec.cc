#include "transport/codec.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <cstring>
#include <new>

#include "promises/assert.h"
#include "transport/codec_internal.h"
#include "transport/protocol.capnp.h"

namespace vow::transport {
namespace {

namespace w = wire;
static_assert(w::PROTOCOL_VERSION == kProtocolVersion,
              "message.h and protocol.capnp disagree on the protocol version");

// Thrown inside this file only, for a field that decodes but makes no sense; caught at
// the edge of every public decode function along with kj::Exception.
struct BadInput {
  DecodeError error;
  std::string what;
};

[[noreturn]] void bad(std::string what, DecodeError e = DecodeError::kMalformed) {
  throw BadInput{e, std::move(what)};
}

capnp::Data::Reader data_of(std::span<const std::uint8_t> b) {
  return capnp::Data::Reader(reinterpret_cast<const kj::byte*>(b.data()), b.size());
}
capnp::Text::Reader text_of(const std::string& s) {
  return capnp::Text::Reader(s.data(), s.size());
}
std::string str(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }
std::string str(capnp::Data::Reader d) {
  return std::string(reinterpret_cast<const char*>(d.begin()), d.size());
}

template <std::size_t N>
std::array<std::uint8_t, N> fixed(capnp::Data::Reader d, const char* field) {
  if (d.size() != N) {
    bad(std::string(field) + " has " + std::to_string(d.size()) + " bytes, want " +
        std::to_string(N));
  }
  std::array<std::uint8_t, N> out;
  std::memcpy(out.data(), d.begin(), N);
  return out;
}
AgentKey key_of(capnp::Data::Reader d, const char* field) {
  return AgentKey{fixed<AgentKey::kSize>(d, field)};
}
Digest digest_of(capnp::Data::Reader d, const char* field) {
  return Digest{fixed<Digest::kSize>(d, field)};
}
template <typename List>
void check_list(const List& l, const char* field) {
  if (l.size() > kMaxListItems) bad(std::string(field) + ": too many items");
}

// ---- Statement bodies: values -> builders ----

void put(w::TreeEntry::Builder b, const TreeEntry& e) {
  b.setName(text_of(e.name));
  b.setKind(static_cast<std::uint8_t>(e.kind));
  b.setDigest(data_of(e.digest.bytes));
}
void put(w::ArtifactRef::Builder b, const ArtifactRef& a) {
  b.setDigest(data_of(a.digest.bytes));
  b.setIsTree(a.is_tree);
  b.setSizeBytes(a.size_bytes);
  auto l = b.initEntries(static_cast<unsigned>(a.entries.size()));
  for (unsigned i = 0; i < l.size(); ++i) put(l[i], a.entries[i]);
}
void put(w::JobRef::Builder b, const JobRef& j) {
  b.setJob(data_of(j.job.bytes));
  b.setPipeline(text_of(j.pipeline));
  b.setStage(text_of(j.stage));
  b.setStageDigest(data_of(j.stage_digest.bytes));
  b.setShard(text_of(j.shard));
}
void put(capnp::List<w::NamedArtifact>::Builder l, const std::vector<NamedArtifact>& v) {
  for (unsigned i = 0; i < l.size(); ++i) {
    l[i].setName(text_of(v[i].name));
    put(l[i].initArtifact(), v[i].artifact);
  }
}
void put_texts(capnp::List<capnp::Text>::Builder l, const std::vector<std::string>& v) {
  for (unsigned i = 0; i < l.size(); ++i) l.set(i, text_of(v[i]));
}

void put_body(w::StatementBody::Body::Builder b, const Advert& a) {
  auto o = b.initAdvert();
  o.setName(text_of(a.name));
  put_texts(o.initEndpoints(static_cast<unsigned>(a.endpoints.size())), a.endpoints);
  auto ps = o.initPromises(static_cast<unsigned>(a.promises.size()));
  for (unsigned i = 0; i < ps.size(); ++i) {
    ps[i].setPipeline(text_of(a.promises[i].pipeline));
    ps[i].setStage(text_of(a.promises[i].stage));
    ps[i].setStageDigest(data_of(a.promises[i].stage_digest.bytes));
    ps[i].setCapacity(a.promises[i].capacity);
  }
  auto ss = o.initSources(static_cast<unsigned>(a.sources.size()));
  for (unsigned i = 0; i < ss.size(); ++i) {
    ss[i].setPipeline(text_of(a.sources[i].pipeline));
    ss[i].setSource(text_of(a.sources[i].source));
  }
}
void put_body(w::StatementBody::Body::Builder b, const PipelineDef& p) {
  auto o = b.initPipeline();
  o.setName(text_of(p.name));
  o.setDigest(data_of(p.digest.bytes));
  o.setCanonical(text_of(p.canonical));
}
void put_body(w::StatementBody::Body::Builder b, const SourceVersion& s) {
  auto o = b.initSourceVersion();
  o.setPipeline(text_of(s.pipeline));
  o.setSource(text_of(s.source));
  o.setVersion(s.version);
  put(o.initArtifact(), s.artifact);
}
void put_body(w::StatementBody::Body::Builder b, const Claim& c) {
  auto o = b.initClaim();
  put(o.initJob(), c.job);
  o.setEpoch(c.epoch);
  o.setExpectedDurationMs(c.expected_duration_ms);
}
void put_body(w::StatementBody::Body::Builder b, const Release& r) {
  auto o = b.initRelease();
  put(o.initJob(), r.job);
  o.setEpoch(r.epoch);
  o.setReason(text_of(r.reason));
}
void put_body(w::StatementBody::Body::Builder b, const JobResult& r) {
  auto o = b.initResult();
  put(o.initJob(), r.job);
  o.setEpoch(r.epoch);
  put(o.initInputs(static_cast<unsigned>(r.inputs.size())), r.inputs);
  put(o.initOutputs(static_cast<unsigned>(r.outputs.size())), r.outputs);
  o.setOk(r.ok);
  o.setExitStatus(r.exit_status);
  o.setError(text_of(r.error));
  o.setStartedUnixMs(r.started_unix_ms);
  o.setEndedUnixMs(r.ended_unix_ms);
  if (r.stdout_digest) o.setStdoutDigest(data_of(r.stdout_digest->bytes));
  if (r.stderr_digest) o.setStderrDigest(data_of(r.stderr_digest->bytes));
}
void put_body(w::StatementBody::Body::Builder b, const Accept& a) {
  auto o = b.initAccept();
  put(o.initJob(), a.job);
  o.setEpoch(a.epoch);
  auto l = o.initBindings(static_cast<unsigned>(a.bindings.size()));
  for (unsigned i = 0; i < l.size(); ++i) {
    const auto& x = a.bindings[i];
    l[i].setInput(text_of(x.input));
    l[i].setDigest(data_of(x.digest.bytes));
    l[i].setProducer(data_of(x.producer.bytes));
    l[i].setProducerSeq(x.producer_seq);
  }
}
void put_body(w::StatementBody::Body::Builder b, const Checkpoint& c) {
  auto o = b.initCheckpoint();
  put(o.initJob(), c.job);
  o.setEpoch(c.epoch);
  put(o.initArtifact(), c.artifact);
}

// ---- Statement bodies: readers -> values ----

TreeEntry get(w::TreeEntry::Reader r) {
  TreeEntry e;
  e.name = str(r.getName());
  auto k = r.getKind();
  if (k != 'f' && k != 'x' && k != 'd') bad("tree entry kind " + std::to_string(k));
  e.kind = static_cast<EntryKind>(k);
  e.digest = digest_of(r.getDigest(), "tree entry digest");
  return e;
}
ArtifactRef get(w::ArtifactRef::Reader r) {
  ArtifactRef a;
  a.digest = digest_of(r.getDigest(), "artifact digest");
  a.is_tree = r.getIsTree();
  a.size_bytes = r.getSizeBytes();
  auto l = r.getEntries();
  check_list(l, "artifact entries");
  a.entries.reserve(l.size());
  for (auto e : l) a.entries.push_back(get(e));
  return a;
}
JobRef get(w::JobRef::Reader r) {
  JobRef j;
  j.job = digest_of(r.getJob(), "job id");
  j.pipeline = str(r.getPipeline());
  j.stage = str(r.getStage());
  j.stage_digest = digest_of(r.getStageDigest(), "stage digest");
  j.shard = str(r.getShard());
  return j;
}
std::vector<NamedArtifact> get(capnp::List<w::NamedArtifact>::Reader l, const char* field) {
  check_list(l, field);
  std::vector<NamedArtifact> v;
  v.reserve(l.size());
  for (auto x : l) v.push_back(NamedArtifact{str(x.getName()), get(x.getArtifact())});
  return v;
}
std::vector<std::string> get_texts(capnp::List<capnp::Text>::Reader l, const char* field) {
  check_list(l, field);
  std::vector<std::string> v;
  v.reserve(l.size());
  for (auto t : l) v.push_back(str(t));
  return v;
}
std::optional<Digest> optional_digest(capnp::Data::Reader d, const char* field) {
  if (d.size() == 0) return std::nullopt;
  return digest_of(d, field);
}

StatementBody get_body(w::StatementBody::Reader r) {
  switch (r.getBody().which()) {
    case w::StatementBody::Body::ADVERT: {
      auto o = r.getBody().getAdvert();
      Advert a;
      a.name = str(o.getName());
      a.endpoints = get_texts(o.getEndpoints(), "advert endpoints");
      auto ps = o.getPromises();
      check_list(ps, "advert promises");
      for (auto p : ps) {
        a.promises.push_back(AdvertPromise{str(p.getPipeline()), str(p.getStage()),
                                           digest_of(p.getStageDigest(), "stage digest"),
                                           p.getCapacity()});
      }
      auto ss = o.getSources();
      check_list(ss, "advert sources");
      for (auto s : ss) a.sources.push_back(AdvertSource{str(s.getPipeline()), str(s.getSource())});
      return a;
    }
    case w::StatementBody::Body::PIPELINE: {
      auto o = r.getBody().getPipeline();
      return PipelineDef{str(o.getName()), digest_of(o.getDigest(), "pipeline digest"),
                         str(o.getCanonical())};
    }
    case w::StatementBody::Body::SOURCE_VERSION: {
      auto o = r.getBody().getSourceVersion();
      return SourceVersion{str(o.getPipeline()), str(o.getSource()), o.getVersion(),
                           get(o.getArtifact())};
    }
    case w::StatementBody::Body::CLAIM: {
      auto o = r.getBody().getClaim();
      return Claim{get(o.getJob()), o.getEpoch(), o.getExpectedDurationMs()};
    }
    case w::StatementBody::Body::RELEASE: {
      auto o = r.getBody().getRelease();
      return Release{get(o.getJob()), o.getEpoch(), str(o.getReason())};
    }
    case w::StatementBody::Body::RESULT: {
      auto o = r.getBody().getResult();
      JobResult x;
      x.job = get(o.getJob());
      x.epoch = o.getEpoch();
      x.inputs = get(o.getInputs(), "result inputs");
      x.outputs = get(o.getOutputs(), "result outputs");
      x.ok = o.getOk();
      x.exit_status = o.getExitStatus();
      x.error = str(o.getError());
      x.started_unix_ms = o.getStartedUnixMs();
      x.ended_unix_ms = o.getEndedUnixMs();
      x.stdout_digest = optional_digest(o.getStdoutDigest(), "stdout digest");
      x.stderr_digest = optional_digest(o.getStderrDigest(), "stderr digest");
      return x;
    }
    case w::StatementBody::Body::ACCEPT: {
      auto o = r.getBody().getAccept();
      Accept a;
      a.job = get(o.getJob());
      a.epoch = o.getEpoch();
      auto l = o.getBindings();
      check_list(l, "accept bindings");
      for (auto b : l) {
        a.bindings.push_back(
            Accept::Binding{str(b.getInput()), digest_of(b.getDigest(), "binding digest"),
                            key_of(b.getProducer(), "binding producer"), b.getProducerSeq()});
      }
      return a;
    }
    case w::StatementBody::Body::CHECKPOINT: {
      auto o = r.getBody().getCheckpoint();
      return Checkpoint{get(o.getJob()), o.getEpoch(), get(o.getArtifact())};
    }
  }
  bad("unknown statement kind " + std::to_string(static_cast<int>(r.getBody().which())));
}

// ---- Framing ----

// Checks the standard Cap'n Proto framing (segment table) before Cap'n Proto reads it,
// so that a short or lying frame is classified and never over-read.
DecodeError check_framing(std::span<const std::uint8_t> b, std::size_t max_bytes) {
  if (b.size() > max_bytes) return DecodeError::kOversized;
  if (b.size() < 8) return DecodeError::kTruncated;
  auto u32 = [&](std::size_t at) {
    std::uint32_t v;
    std::memcpy(&v, b.data() + at, 4);
    return v;  // little-endian hosts only (static_assert below)
  };
  std::uint64_t segments = std::uint64_t{u32(0)} + 1;
  if (segments > kMaxSegments) return DecodeError::kMalformed;
  std::uint64_t header_bytes = ((4 + 4 * segments) + 7) / 8 * 8;
  if (b.size() < header_bytes) return DecodeError::kTruncated;
  std::uint64_t body_bytes = 0;
  for (std::uint64_t i = 0; i < segments; ++i) {
    body_bytes += std::uint64_t{u32(4 + 4 * i)} * 8;  // <= 64 * 32 GiB: no overflow
  }
  if (body_bytes == 0) return DecodeError::kMalformed;
  if (b.size() < header_bytes + body_bytes) return DecodeError::kTruncated;
  if (b.size() > header_bytes + body_bytes) return DecodeError::kMalformed;
  return DecodeError::kNone;
}
static_assert(std::endian::native == std::endian::little, "vow assumes a little-endian host");

capnp::ReaderOptions reader_options(std::size_t bytes) {
  capnp::ReaderOptions o;
  // Every word may be read a few times (size checks, then the copy), never more:
  // pointer tricks that alias data to amplify work hit this limit.
  o.traversalLimitInWords = bytes / 8 * 4 + 64;
  o.nestingLimit = kMaxNestingDepth;
  return o;
}

// Holds the frame as aligned words (copied only if the caller's buffer is not aligned).
class AlignedWords {
 public:
  explicit AlignedWords(std::span<const std::uint8_t> b) {
    if (reinterpret_cast<std::uintptr_t>(b.data()) % alignof(capnp::word) == 0) {
      words_ = kj::arrayPtr(reinterpret_cast<const capnp::word*>(b.data()), b.size() / 8);
    } else {
      copy_ = kj::heapArray<capnp::word>(b.size() / 8);
      std::memcpy(copy_.begin(), b.data(), b.size() / 8 * 8);
      words_ = copy_.asPtr();
    }
  }
  kj::ArrayPtr<const capnp::word> words() const { return words_; }

 private:
  kj::Array<capnp::word> copy_;
  kj::ArrayPtr<const capnp::word> words_;
};

std::string flat_string(capnp::MessageBuilder& mb) {
  auto flat = capnp::messageToFlatArray(mb);
  auto bytes = flat.asBytes();
  return std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
}

std::span<const std::uint8_t> as_span(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

void set_error(DecodeError* out, DecodeError e) {
  if (out) *out = e;
}

Status status_for(DecodeError e, const std::string& what) {
  switch (e) {
    case DecodeError::kOversized:
      return Status::invalid("oversized: " + what);
    case DecodeError::kTruncated:
      return Status::corrupt("truncated: " + what);
    case DecodeError::kBadVersion:
      return Status::invalid("protocol version: " + what);
    case DecodeError::kBadSignature:
      return Status::corrupt("bad signature: " + what);
    default:
      return Status::corrupt("malformed: " + what);
  }
}

Statement decode_statement_reader(w::StatementBody::Reader r) {
  Statement s;
  s.author = key_of(r.getAuthor(), "statement author");
  s.seq = r.getSeq();
  if (s.seq == 0) bad("statement seq is 0");
  s.wall_unix_ms = r.getWallUnixMs();
  s.body = get_body(r);
  return s;
}

// Runs `fn` and converts every failure into a Status with its DecodeError.
template <typename T, typename Fn>
Result<T> guarded(DecodeError* error, Fn&& fn) {
  try {
    return fn();
  } catch (const BadInput& e) {
    set_error(error, e.error);
    return status_for(e.error, e.what);
  } catch (const kj::Exception& e) {
    set_error(error, DecodeError::kMalformed);
    return status_for(DecodeError::kMalformed, e.getDescription().cStr());
  } catch (const std::bad_alloc&) {
    set_error(error, DecodeError::kMalformed);
    return status_for(DecodeError::kMalformed, "out of memory while decoding");
  }
}

Result<Statement> decode_statement_impl(std::string_view bytes, DecodeError* error) {
  set_error(error, DecodeError::kNone);
  auto span = as_span(bytes);
  DecodeError f = check_framing(span, kMaxStatementBytes);
  if (f != DecodeError::kNone) {
    set_error(error, f);
    return status_for(f, "statement of " + std::to_string(bytes.size()) + " bytes");
  }
  return guarded<Statement>(error, [&]() -> Statement {
    AlignedWords words(span);
    capnp::FlatArrayMessageReader reader(words.words(), reader_options(bytes.size()));
    return decode_statement_reader(reader.getRoot<w::StatementBody>());
  });
}

// ---- Messages ----

void put_vv(capnp::List<w::VersionEntry>::Builder l, const VersionVector& vv) {
  unsigned i = 0;
  for (const auto& [k, seq] : vv) {
    l[i].setAuthor(data_of(k.bytes));
    l[i].setSeq(seq);
    ++i;
  }
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
}
SignedStatement get_signed(w::SignedStatement::Reader r) {
  SignedStatement s;
  if (r.getBytes().size() > kMaxStatementBytes) bad("statement bytes", DecodeError::kOversized);
  s.bytes = str(r.getBytes());
  s.signature = fixed<64>(r.getSignature(), "signature");
  return s;
}

struct BodyWriter {
  w::Envelope::Body::Builder b;
  void operator()(const Hello& h) {
    auto o = b.initHello();
    o.setAgent(data_of(h.agent.bytes));
    o.setName(text_of(h.name));
    put_texts(o.initEndpoints(static_cast<unsigned>(h.endpoints.size())), h.endpoints);
    o.setProtocolVersion(h.protocol_version);
    put_vv(o.initVersionVector(static_cast<unsigned>(h.version_vector.size())), h.version_vector);
  }
  void operator()(const Heartbeat& h) {
    auto o = b.initHeartbeat();
    o.setRunning(h.running);
    o.setCapacity(h.capacity);
    o.setActiveClaims(h.active_claims);
    o.setHighestSeq(h.highest_seq);
    auto claims = o.initClaims(static_cast<unsigned>(h.claims.size()));
    for (unsigned i = 0; i < claims.size(); ++i) {
      claims[i].setJob(data_of(h.claims[i].first.bytes));
      claims[i].setEpoch(h.claims[i].second);
    }
    o.setVvSum(h.vv_sum);
    o.setHoldingsIncarnation(h.holdings_incarnation);
    o.setHoldingsVersion(h.holdings_version);
  }
  void operator()(const HaveRequest&) { b.initHaveRequest(); }
  void operator()(const Have& h) {
    auto o = b.initHave();
    o.setIncarnation(h.incarnation);
    o.setVersion(h.version);
    auto l = o.initDigests(static_cast<unsigned>(h.digests.size()));
    for (unsigned i = 0; i < l.size(); ++i) l.set(i, data_of(h.digests[i].bytes));
  }
  void operator()(const StatementMsg& s) { put_signed(b.initStatement(), s.signed_statement); }
  void operator()(const LedgerRequest& r) {
    put_vv(b.initLedgerRequest().initHave(static_cast<unsigned>(r.have.size())), r.have);
  }
  void operator()(const LedgerBatch& r) {
    auto o = b.initLedgerBatch();
    auto l = o.initStatements(static_cast<unsigned>(r.signed_statements.size()));
    for (unsigned i = 0; i < l.size(); ++i) put_signed(l[i], r.signed_statements[i]);
    o.setMore(r.more);
  }
  void operator()(const FetchRequest& r) {
    auto o = b.initFetchRequest();
    o.setStreamId(r.stream_id);
    o.setArtifact(data_of(r.artifact.bytes));
    o.setOffset(r.offset);
    o.setCredits(r.credits);
    o.setChunkBytes(r.chunk_bytes);
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

MessageBody get_message_body(w::Envelope::Body::Reader b) {
  using B = w::Envelope::Body;
  switch (b.which()) {
    case B::HELLO: {
      auto o = b.getHello();
      Hello h;
      h.agent = key_of(o.getAgent(), "hello agent");
      h.name = str(o.getName());
      h.endpoints = get_texts(o.getEndpoints(), "hello endpoints");
      h.protocol_version = o.getProtocolVersion();
      h.version_vector = get_vv(o.getVersionVector());
      return h;
    }
    case B::HEARTBEAT: {
      auto o = b.getHeartbeat();
      Heartbeat h{
          o.getRunning(), o.getCapacity(), o.getActiveClaims(), o.getHighestSeq(), {}, 0, 0, 0};
      auto claims = o.getClaims();
      check_list(claims, "heartbeat claims");
      for (auto c : claims) {
        h.claims.emplace_back(digest_of(c.getJob(), "heartbeat claim"), c.getEpoch());
      }
      h.vv_sum = o.getVvSum();
      h.holdings_incarnation = o.getHoldingsIncarnation();
      h.holdings_version = o.getHoldingsVersion();
      return h;
    }
    case B::STATEMENT:
      return StatementMsg{get_signed(b.getStatement()), {}};
    case B::LEDGER_REQUEST:
      return LedgerRequest{get_vv(b.getLedgerRequest().getHave())};
    case B::LEDGER_BATCH: {
      auto o = b.getLedgerBatch();
      LedgerBatch r;
      auto l = o.getStatements();
      check_list(l, "ledger batch");
      r.signed_statements.reserve(l.size());
      for (auto s : l) r.signed_statements.push_back(get_signed(s));
      r.more = o.getMore();
      return r;
    }
    case B::FETCH_REQUEST: {
      auto o = b.getFetchRequest();
      return FetchRequest{o.getStreamId(), digest_of(o.getArtifact(), "fetch artifact"),
                          o.getOffset(), o.getCredits(), o.getChunkBytes()};
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
    case B::HAVE_REQUEST:
      return HaveRequest{};
    case B::HAVE: {
      auto o = b.getHave();
      Have h;
      h.incarnation = o.getIncarnation();
      h.version = o.getVersion();
      auto l = o.getDigests();
      check_list(l, "have digests");
      h.digests.reserve(l.size());
      for (auto d : l) h.digests.push_back(digest_of(d, "have digest"));
      return h;
    }
  }
  bad("unknown message kind " + std::to_string(static_cast<int>(b.which())));
}

}  // namespace

const char* message_kind_name(const MessageBody& body) {
  static constexpr const char* kNames[] = {
      "hello", "heartbeat", "statement",   "ledger-request",  "ledger-batch",     "fetch-request",
      "chunk", "credit",    "fetch-error", "control-request", "control-response", "have-request",
      "have"};
  static_assert(std::size(kNames) == std::variant_size_v<MessageBody>);
  return kNames[body.index()];
}

Result<std::string> encode_statement(const Statement& statement) {
  if (statement.seq == 0) return Status::invalid("statement seq must be >= 1");
  capnp::MallocMessageBuilder mb;
  auto root = mb.initRoot<w::StatementBody>();
  root.setAuthor(data_of(statement.author.bytes));
  root.setSeq(statement.seq);
  root.setWallUnixMs(statement.wall_unix_ms);
  auto body = root.initBody();
  std::visit([&](const auto& b) { put_body(body, b); }, statement.body);
  std::string out = flat_string(mb);
  if (out.size() > kMaxStatementBytes) {
    return Status::invalid("statement " + std::to_string(statement.seq) + " is " +
                           std::to_string(out.size()) + " bytes, over the limit of " +
                           std::to_string(kMaxStatementBytes));
  }
  return out;
}

Signature sign(const Identity& identity, std::string_view bytes) {
  return identity.sign(as_span(bytes));
}

Result<SignedStatement> sign_statement(const Identity& identity, const Statement& statement) {
  VOW_ASSERT(statement.author == identity.key(), "signing a statement authored by %s with key %s",
             statement.author.hex().c_str(), identity.key().hex().c_str());
  auto bytes = encode_statement(statement);
  if (!bytes) return bytes.status();
  SignedStatement s;
  s.signature = sign(identity, *bytes);
  s.bytes = std::move(bytes).value();
  return s;
}

SignedForm sign_or_empty(const Identity& identity, const Statement& statement) {
  auto s = sign_statement(identity, statement);
  return s.is_ok() ? std::move(s).value() : SignedForm{};
}

Result<Statement> decode_statement_unverified(std::string_view bytes, DecodeError* error) {
  return decode_statement_impl(bytes, error);
}

Result<Statement> decode_and_verify(std::string_view bytes, const Signature& signature,
                                    DecodeError* error) {
  auto s = decode_statement_impl(bytes, error);
  if (!s) return s;
  if (!verify_signature(s->author, as_span(bytes), signature)) {
    set_error(error, DecodeError::kBadSignature);
    return Status::corrupt("bad signature: statement " + std::to_string(s->seq) +
                           " does not verify under its author " + s->author.hex());
  }
  s->signed_form.bytes = std::string(bytes);
  s->signed_form.signature = signature;
  return s;
}

Result<Statement> decode_and_verify(const SignedStatement& s, DecodeError* error) {
  return decode_and_verify(s.bytes, s.signature, error);
}

Result<kj::Array<capnp::word>> internal::encode_message_words(const Message& message) {
  // First segment big enough for the bulk of a large message: one segment, no regrowth.
  std::size_t bulk = 0;
  if (auto* c = std::get_if<Chunk>(&message.body)) bulk = c->data.size();
  if (auto* b = std::get_if<LedgerBatch>(&message.body)) {
    for (const auto& s : b->signed_statements) bulk += s.bytes.size() + 96;
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
