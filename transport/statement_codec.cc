// The statement half of the codec (codec.h): statement bodies to and from Cap'n Proto,
// signing and verification, and the framing checks both halves use (codec_internal.h).
#include <capnp/message.h>
#include <capnp/serialize.h>

#include <bit>
#include <cstring>

#include "promises/assert.h"
#include "promises/batch_proof.h"
#include "transport/codec.h"
#include "transport/codec_internal.h"
#include "transport/protocol.capnp.h"

namespace vow::transport {
namespace {

namespace w = wire;
using namespace internal;  // the helpers both halves of the codec share

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
void put(capnp::List<w::Accept::Binding>::Builder l, const std::vector<InputBinding>& v) {
  for (unsigned i = 0; i < l.size(); ++i) {
    l[i].setInput(text_of(v[i].input));
    l[i].setDigest(data_of(v[i].digest.bytes));
    l[i].setProducer(data_of(v[i].producer.bytes));
    l[i].setProducerSeq(v[i].producer_seq);
  }
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
  if (s.attestation) o.setAttestation(data_of(*s.attestation));
}
void put_body(w::StatementBody::Body::Builder b, const Claim& c) {
  auto o = b.initClaim();
  put(o.initJob(), c.job);
  o.setEpoch(c.epoch);
  o.setExpectedDurationMs(c.expected_duration_ms);
  if (c.supersedes) {
    o.setSupersedesAuthor(data_of(c.supersedes->author.bytes));
    o.setSupersedesSeq(c.supersedes->seq);
  }
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
  if (r.attestation) o.setAttestation(data_of(*r.attestation));
  if (!r.bindings.empty())
    put(o.initBindings(static_cast<unsigned>(r.bindings.size())), r.bindings);
}
void put_body(w::StatementBody::Body::Builder b, const Accept& a) {
  auto o = b.initAccept();
  put(o.initJob(), a.job);
  o.setEpoch(a.epoch);
  put(o.initBindings(static_cast<unsigned>(a.bindings.size())), a.bindings);
}
void put_body(w::StatementBody::Body::Builder b, const Checkpoint& c) {
  auto o = b.initCheckpoint();
  put(o.initJob(), c.job);
  o.setEpoch(c.epoch);
  put(o.initArtifact(), c.artifact);
}
void put_body(w::StatementBody::Body::Builder b, const Horizon& h) {
  auto o = b.initHorizon();
  o.setNumber(h.number);
  o.setPrevious(data_of(h.previous.bytes));
  auto cuts = o.initCuts(static_cast<unsigned>(h.cuts.size()));
  for (unsigned i = 0; i < cuts.size(); ++i) {
    cuts[i].setAuthor(data_of(h.cuts[i].author.bytes));
    cuts[i].setSeq(h.cuts[i].seq);
    cuts[i].setPrefix(data_of(h.cuts[i].prefix.bytes));
    cuts[i].setMember(h.cuts[i].member);
  }
  auto ranges = o.initRetired(static_cast<unsigned>(h.retired.size()));
  for (unsigned i = 0; i < ranges.size(); ++i) {
    ranges[i].setCut(h.retired[i].cut);
    ranges[i].setFirst(h.retired[i].first);
    ranges[i].setLast(h.retired[i].last);
  }
  auto refs = o.initSettled(static_cast<unsigned>(h.settled.size()));
  for (unsigned i = 0; i < refs.size(); ++i) {
    refs[i].setCut(h.settled[i].cut);
    refs[i].setSeq(h.settled[i].seq);
    if (h.settled[i].vouch != Digest{}) refs[i].setVouch(data_of(h.settled[i].vouch.bytes));
  }
  if (h.endorses) {
    o.setEndorsesAuthor(data_of(h.endorses->author.bytes));
    o.setEndorsesSeq(h.endorses->seq);
  }
  o.setContent(data_of(h.content.bytes));
  o.setSuperseded(h.superseded);
  o.setCheckpoint(h.checkpoint);
  if (!h.bases.empty()) {
    auto bases = o.initBases(static_cast<unsigned>(h.bases.size()));
    for (unsigned i = 0; i < bases.size(); ++i) {
      bases[i].setCut(h.bases[i].cut);
      bases[i].setPipeline(h.bases[i].pipeline);
      bases[i].setSource(h.bases[i].source);
      bases[i].setVersion(h.bases[i].version);
      bases[i].setSeq(h.bases[i].seq);
    }
  }
}
void put_body(w::StatementBody::Body::Builder b, const Retry& r) {
  auto o = b.initRetry();
  put(o.initJob(), r.job);
  o.setEpoch(r.epoch);
  o.setReason(text_of(r.reason));
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
std::vector<InputBinding> get(capnp::List<w::Accept::Binding>::Reader l, const char* field) {
  check_list(l, field);
  std::vector<InputBinding> v;
  v.reserve(l.size());
  for (auto b : l) {
    v.push_back(InputBinding{str(b.getInput()), digest_of(b.getDigest(), "binding digest"),
                             key_of(b.getProducer(), "binding producer"), b.getProducerSeq()});
  }
  return v;
}
std::optional<Digest> optional_digest(capnp::Data::Reader d, const char* field) {
  if (d.size() == 0) return std::nullopt;
  return digest_of(d, field);
}

std::optional<AttestationSignature> optional_signature(capnp::Data::Reader d, const char* field) {
  if (d.size() == 0) return std::nullopt;
  if (d.size() != std::tuple_size_v<AttestationSignature>) {
    bad(std::string(field) + ": " + std::to_string(d.size()) + " bytes, expected 64");
  }
  AttestationSignature s{};
  std::copy(d.begin(), d.end(), s.begin());
  return s;
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
                           get(o.getArtifact()),
                           optional_signature(o.getAttestation(), "source version attestation")};
    }
    case w::StatementBody::Body::CLAIM: {
      auto o = r.getBody().getClaim();
      Claim c{get(o.getJob()), o.getEpoch(), o.getExpectedDurationMs(), std::nullopt};
      if (o.getSupersedesAuthor().size() != 0) {
        c.supersedes =
            StatementRef{key_of(o.getSupersedesAuthor(), "claim supersedes"), o.getSupersedesSeq()};
      } else if (o.getSupersedesSeq() != 0) {
        bad("claim supersedes a seq without an author");
      }
      return c;
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
      x.attestation = optional_signature(o.getAttestation(), "result attestation");
      x.bindings = get(o.getBindings(), "result bindings");
      return x;
    }
    case w::StatementBody::Body::ACCEPT: {
      auto o = r.getBody().getAccept();
      Accept a;
      a.job = get(o.getJob());
      a.epoch = o.getEpoch();
      a.bindings = get(o.getBindings(), "accept bindings");
      return a;
    }
    case w::StatementBody::Body::CHECKPOINT: {
      auto o = r.getBody().getCheckpoint();
      return Checkpoint{get(o.getJob()), o.getEpoch(), get(o.getArtifact())};
    }
    case w::StatementBody::Body::RETRY: {
      auto o = r.getBody().getRetry();
      return Retry{get(o.getJob()), o.getEpoch(), str(o.getReason())};
    }
    case w::StatementBody::Body::HORIZON: {
      auto o = r.getBody().getHorizon();
      Horizon h;
      h.number = o.getNumber();
      h.previous = digest_of(o.getPrevious(), "horizon previous");
      auto cuts = o.getCuts();
      check_list(cuts, "horizon cuts");
      for (auto c : cuts) {
        h.cuts.push_back(HorizonCut{key_of(c.getAuthor(), "horizon cut author"), c.getSeq(),
                                    digest_of(c.getPrefix(), "horizon cut prefix"),
                                    c.getMember()});
      }
      auto ranges = o.getRetired();
      check_list(ranges, "horizon retired");
      for (auto x : ranges) h.retired.push_back(HorizonRange{x.getCut(), x.getFirst(), x.getLast()});
      auto refs = o.getSettled();
      check_list(refs, "horizon settled");
      for (auto x : refs) {
        HorizonRef ref{x.getCut(), x.getSeq(), {}};
        if (x.getVouch().size() != 0) ref.vouch = digest_of(x.getVouch(), "horizon settled vouch");
        h.settled.push_back(ref);
      }
      if (o.getEndorsesAuthor().size() != 0) {
        h.endorses = StatementRef{key_of(o.getEndorsesAuthor(), "horizon endorses"),
                                  o.getEndorsesSeq()};
      }
      h.content = digest_of(o.getContent(), "horizon content");
      h.superseded = o.getSuperseded();
      h.checkpoint = o.getCheckpoint();
      auto bases = o.getBases();
      check_list(bases, "horizon bases");
      for (auto x : bases) {
        h.bases.push_back(HorizonLineBase{x.getCut(), str(x.getPipeline()), str(x.getSource()),
                                          x.getVersion(), x.getSeq()});
      }
      return h;
    }
  }
  bad("unknown statement kind " + std::to_string(static_cast<int>(r.getBody().which())));
}

}  // namespace

// ---- Framing (shared with message_codec.cc) ----

namespace internal {

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

AlignedWords::AlignedWords(std::span<const std::uint8_t> b) {
  if (reinterpret_cast<std::uintptr_t>(b.data()) % alignof(capnp::word) == 0) {
    words_ = kj::arrayPtr(reinterpret_cast<const capnp::word*>(b.data()), b.size() / 8);
  } else {
    copy_ = kj::heapArray<capnp::word>(b.size() / 8);
    std::memcpy(copy_.begin(), b.data(), b.size() / 8 * 8);
    words_ = copy_.asPtr();
  }
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

}  // namespace internal

namespace {

// ---- Statements ----

std::string flat_string(capnp::MessageBuilder& mb) {
  auto flat = capnp::messageToFlatArray(mb);
  auto bytes = flat.asBytes();
  return std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
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

}  // namespace

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

void sign_together(const Identity& identity, const std::vector<SignedForm*>& forms) {
  sign_forms_together(forms, [&](std::string_view message) { return sign(identity, message); });
}

bool verify_signed(const AgentKey& author, std::string_view bytes, const Signature& signature,
                   std::string_view path) {
  std::string storage;
  auto message = signed_message(bytes, path, storage);
  return message && verify_signature(author, as_span(*message), signature);
}

SignedForm sign_or_empty(const Identity& identity, const Statement& statement) {
  auto s = sign_statement(identity, statement);
  return s.is_ok() ? std::move(s).value() : SignedForm{};
}

Result<Statement> decode_statement_unverified(std::string_view bytes, DecodeError* error) {
  return decode_statement_impl(bytes, error);
}

Result<Statement> verify_decoded(Statement st, std::string_view bytes,
                                 const Signature& signature, std::string_view path,
                                 DecodeError* error) {
  if (!verify_signed(st.author, bytes, signature, path)) {
    set_error(error, DecodeError::kBadSignature);
    return Status::corrupt("bad signature: statement " + std::to_string(st.seq) +
                           " does not verify under its author " + st.author.hex());
  }
  st.signed_form.bytes = std::string(bytes);
  st.signed_form.signature = signature;
  st.signed_form.path = std::string(path);
  return st;
}

Result<Statement> decode_and_verify(std::string_view bytes, const Signature& signature,
                                    std::string_view path, DecodeError* error) {
  auto s = decode_statement_impl(bytes, error);
  if (!s) return s;
  return verify_decoded(std::move(s).value(), bytes, signature, path, error);
}

Result<Statement> decode_and_verify(const SignedStatement& s, DecodeError* error) {
  return decode_and_verify(s.bytes, s.signature, s.path, error);
}

}  // namespace vow::transport
