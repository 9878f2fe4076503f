// bind_forge: writes the frames a hostile-but-trusted peer sends in the chaos test's
// binding scenario (tests/chaos/chaos_test.py): validly signed statements by its own key
// that break the rules of docs/coordination.md (sources bind to providers, results to
// claims, epochs are earned, equivocation is proof, bounds on what a peer can make an
// agent hold). Made with the real codec and real Ed25519 signatures; this program never
// opens a socket.
//
// usage: bind_forge --key KEYFILE --template FILE --source PIPELINE/SOURCE --out DIR
//   KEYFILE   the hostile peer's identity (its key is trusted by the mesh)
//   FILE      the exact bytes of a result statement from a ledger: its job is attacked
//   SOURCE    a dataset of the pipeline, provided by an honest agent
//   DIR       one file per frame, DIR/<name>.frame, each a batch of one statement
//
// Frames, in sequence order of the key:
//   advert            seq 1: promises the template's stage (so its claims are judged on
//                     their epochs), provides nothing
//   hijack            seq 2: the dataset at version 2^64-1 (it does not provide it)
//   unclaimed-result  seq 3: the template's result by this key, epoch 0, all-zero
//                     outputs (first in the canonical min-register if it counted)
//   top-epoch-claim   seq 4: a claim of the job at epoch 2^32-1, superseding nothing
//   oversized-name    seq 5: an advert whose name is 1 MiB
//   flood-00..flood-NN seq 6..: pipeline definitions of 2 MiB each that its advert does
//                     not name: more than the per-author budget holds
//   equivocation-a/b  the next seq: two different releases with that one seq
// Exit status: 0 written, 1 on an error (printed), 2 on bad arguments.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <limits>
#include <map>
#include <string>

#include "promises/limits.h"
#include "tests/chaos/frames.h"
#include "transport/codec.h"
#include "transport/identity.h"
#include "transport/message.h"

namespace {

using namespace vow;
using namespace vow::transport;

// Pipeline definitions in the flood: each costs 1 + 2 MiB / 4 KiB tokens of the
// author's budget (promises/limits.h), so this many spend more than its burst.
constexpr int kFloodFrames = 22;
constexpr std::size_t kFloodTextBytes = promises::kMaxPipelineTextBytes - 4096;

int fail(const std::string& what) {
  std::cerr << "bind_forge: " << what << "\n";
  return 1;
}

std::string frame_of(const Identity& id, const Statement& st) {
  auto s = sign_statement(id, st);
  if (!s) {
    std::cerr << "bind_forge: sign: " << s.status().to_string() << "\n";
    std::exit(1);
  }
  Statement out;
  out.signed_form = *s;
  auto frame = encode_message(Message{kProtocolVersion, StatementBatch{{out}}});
  if (!frame) {
    std::cerr << "bind_forge: encode: " << frame.status().to_string() << "\n";
    std::exit(1);
  }
  return *frame;
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> args;
  for (int i = 1; i + 1 < argc; i += 2) args[argv[i]] = argv[i + 1];
  if (argc != 9 || !args.count("--key") || !args.count("--template") ||
      !args.count("--source") || !args.count("--out")) {
    std::cerr << "usage: bind_forge --key KEYFILE --template FILE --source PIPELINE/SOURCE "
                 "--out DIR\n";
    return 2;
  }
  auto me = load_key_file(args["--key"]);
  if (!me) return fail(me.status().to_string());
  std::string dataset = args["--source"];
  auto slash = dataset.find('/');
  if (slash == std::string::npos) return fail("--source: want PIPELINE/SOURCE, got " + dataset);
  std::ifstream in(args["--template"], std::ios::binary);
  std::string template_bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  auto templ = decode_statement_unverified(template_bytes);
  if (!templ) return fail("template: " + templ.status().to_string());
  const auto* model = std::get_if<JobResult>(&templ->body);
  if (model == nullptr) return fail("template is not a result");
  const JobRef job = model->job;

  std::uint64_t seq = 0;
  auto statement = [&](StatementBody body) {
    return Statement{me->key(), ++seq, 0, std::move(body), {}};
  };
  std::map<std::string, std::string> frames;
  frames["advert"] = frame_of(
      *me, statement(Advert{"mallory", {}, {{job.pipeline, job.stage, job.stage_digest, 1}}, {}}));
  ArtifactRef nothing;
  nothing.size_bytes = 1;
  frames["hijack"] = frame_of(
      *me, statement(SourceVersion{dataset.substr(0, slash), dataset.substr(slash + 1),
                                   std::numeric_limits<std::uint64_t>::max(), nothing}));
  JobResult forged = *model;
  forged.epoch = 0;
  forged.ok = true;
  for (auto& o : forged.outputs) {
    o.artifact.digest = Digest{};
    o.artifact.entries.clear();
    o.artifact.size_bytes = 0;
  }
  forged.stdout_digest.reset();
  forged.stderr_digest.reset();
  frames["unclaimed-result"] = frame_of(*me, statement(forged));
  frames["top-epoch-claim"] = frame_of(
      *me, statement(Claim{job, std::numeric_limits<std::uint32_t>::max(), 0, std::nullopt}));
  frames["oversized-name"] =
      frame_of(*me, statement(Advert{std::string(std::size_t{1} << 20, 'm'), {}, {}, {}}));
  for (int k = 0; k < kFloodFrames; ++k) {
    char name[16];
    std::snprintf(name, sizeof name, "flood-%02d", k);
    PipelineDef def;
    def.name = "flood";
    Hasher h;
    h.update_field(name);
    def.digest = h.finish();
    def.canonical = std::string(kFloodTextBytes, static_cast<char>('a' + k % 26));
    frames[name] = frame_of(*me, statement(std::move(def)));
  }
  Statement a = statement(Release{job, 1, "one story"});
  Statement b = a;
  std::get<Release>(b.body).reason = "another story";
  frames["equivocation-a"] = frame_of(*me, a);
  frames["equivocation-b"] = frame_of(*me, b);

  if (std::string e = chaos::write_frames(args["--out"], frames); !e.empty()) return fail(e);
  std::cout << "mallory " << me->id() << "\n";
  return 0;
}
