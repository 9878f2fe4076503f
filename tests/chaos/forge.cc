// chaos_forge: writes the frames a hostile peer sends in the chaos test (hostile
// scenario of tests/chaos/chaos_test.py), made with the real codec and real Ed25519
// signatures and then damaged where the attack needs it. The Python driver sends them
// over its own CurveZMQ link; this program never opens a socket.
//
// usage: chaos_forge --key KEYFILE --victim AGENT_ID --template FILE --out DIR
//   KEYFILE   the hostile peer's identity (a vow key file; its key is trusted)
//   AGENT_ID  a trusted agent of the mesh, whose name the forgeries take
//   FILE      the exact bytes of a result statement from a ledger: the forged results
//             are copies of it whose outputs (all zero digests) would win the
//             canonical-result min-register if any were accepted
//   DIR       one file per frame, DIR/<name>.frame (names below)
//
// Frames (each a whole ZeroMQ frame, i.e. an Envelope; a statement goes in a batch of one):
//   honest-1, honest-2   an advert and a checkpoint by the key itself, seq 1 and 2
//   bad-signature        forged result, seq 3, one bit of the signature flipped
//   wrong-author         forged result naming AGENT_ID as author, signed by the key
//   stale-sequence       forged result, seq 1 (below the held 2), validly signed
//   replayed             forged result, seq 2 (equal to the held 2), validly signed
//   untrusted-author     forged result by a fresh key nobody trusts, validly signed
//   peer-mismatch        a hello naming AGENT_ID on the key's own link
//   bad-version          a valid forged result (seq 3) in an envelope of version 99
//   truncated            the first half of a valid frame
//   malformed            a well-formed segment table followed by garbage words
// Exit status: 0 written, 1 on an error (printed), 2 on bad arguments.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <string>

#include "tests/chaos/frames.h"
#include "transport/codec.h"
#include "transport/identity.h"
#include "transport/message.h"

namespace {

using namespace vow;
using namespace vow::transport;

constexpr std::uint64_t kForgedSeqFar = 1'000'000;  // any: the signature fails first
constexpr std::uint32_t kBadVersion = 99;

int fail(const std::string& what) {
  std::cerr << "chaos_forge: " << what << "\n";
  return 1;
}

// A batch of one statement, as agents send them.
std::string statement_frame(const SignedStatement& s, std::uint32_t version = kProtocolVersion) {
  Statement st;
  st.signed_form = s;
  auto frame = encode_message(Message{version, StatementBatch{{st}}});
  if (!frame) {
    std::cerr << "chaos_forge: encode: " << frame.status().to_string() << "\n";
    std::exit(1);
  }
  return *frame;
}

SignedStatement must_sign(const Identity& id, const Statement& st) {
  auto s = sign_statement(id, st);
  if (!s) {
    std::cerr << "chaos_forge: sign: " << s.status().to_string() << "\n";
    std::exit(1);
  }
  return *s;
}

// The statement's bytes signed by `signer`, whoever the bytes name as author.
SignedStatement sign_as(const Identity& signer, const Statement& st) {
  auto bytes = encode_statement(st);
  if (!bytes) {
    std::cerr << "chaos_forge: encode: " << bytes.status().to_string() << "\n";
    std::exit(1);
  }
  return {*bytes, sign(signer, *bytes)};
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> args;
  for (int i = 1; i + 1 < argc; i += 2) args[argv[i]] = argv[i + 1];
  if (argc != 9 || !args.count("--key") || !args.count("--victim") || !args.count("--template") ||
      !args.count("--out")) {
    std::cerr << "usage: chaos_forge --key KEYFILE --victim AGENT_ID --template FILE --out DIR\n";
    return 2;
  }
  auto me = load_key_file(args["--key"]);
  if (!me) return fail(me.status().to_string());
  auto victim = parse_agent_key(args["--victim"]);
  if (!victim) return fail(victim.status().to_string());
  std::ifstream in(args["--template"], std::ios::binary);
  std::string template_bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  auto templ = decode_statement_unverified(template_bytes);
  if (!templ) return fail("template: " + templ.status().to_string());
  if (!std::holds_alternative<JobResult>(templ->body)) return fail("template is not a result");

  // A result for the template's job whose outputs are all-zero digests: least by
  // (epoch, outputs digest), so it would become canonical everywhere if accepted.
  Statement forged = *templ;
  auto& result = std::get<JobResult>(forged.body);
  for (auto& o : result.outputs) {
    o.artifact.digest = Digest{};
    o.artifact.entries.clear();
    o.artifact.size_bytes = 0;
  }
  result.ok = true;
  result.stdout_digest.reset();
  result.stderr_digest.reset();
  auto forged_by = [&](const AgentKey& author, std::uint64_t seq) {
    Statement s = forged;
    s.author = author;
    s.seq = seq;
    return s;
  };

  std::map<std::string, std::string> frames;
  // An advert, then a checkpoint (not a second advert: an advert superseded at once is
  // void, its body forgotten, and the stale-sequence frame below needs one held at 1).
  Advert advert;
  advert.name = "mallory";
  Checkpoint checkpoint{forged.job().has_value() ? std::get<JobResult>(forged.body).job : JobRef{},
                        1, ArtifactRef{}};
  frames["honest-1"] = statement_frame(must_sign(*me, Statement{me->key(), 1, 0, advert, {}}));
  frames["honest-2"] = statement_frame(must_sign(*me, Statement{me->key(), 2, 0, checkpoint, {}}));
  SignedStatement bad_sig = must_sign(*me, forged_by(me->key(), 3));
  bad_sig.signature[17] ^= 0x04;
  frames["bad-signature"] = statement_frame(bad_sig);
  frames["wrong-author"] = statement_frame(sign_as(*me, forged_by(*victim, kForgedSeqFar)));
  frames["stale-sequence"] = statement_frame(must_sign(*me, forged_by(me->key(), 1)));
  frames["replayed"] = statement_frame(must_sign(*me, forged_by(me->key(), 2)));
  Identity stranger = Identity::generate();
  frames["untrusted-author"] = statement_frame(must_sign(stranger, forged_by(stranger.key(), 1)));
  Hello hello;
  hello.agent = *victim;
  hello.name = "mallory";
  auto hello_frame = encode_message(Message{kProtocolVersion, hello});
  if (!hello_frame) return fail(hello_frame.status().to_string());
  frames["peer-mismatch"] = *hello_frame;
  std::string valid = statement_frame(must_sign(*me, forged_by(me->key(), 3)));
  frames["bad-version"] = statement_frame(must_sign(*me, forged_by(me->key(), 3)), kBadVersion);
  frames["truncated"] = valid.substr(0, valid.size() / 2);
  // Segment table: one segment (count - 1 = 0) of 4 words, then 4 words of 0xab.
  std::string garbage("\0\0\0\0\4\0\0\0", 8);
  garbage += std::string(32, '\xab');
  frames["malformed"] = garbage;

  if (std::string e = chaos::write_frames(args["--out"], frames); !e.empty()) return fail(e);
  std::cout << "mallory " << me->id() << "\n";
  return 0;
}
