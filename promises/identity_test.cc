// Golden vectors for the encodings in docs/identity.md, computed by an independent
// implementation of that document (Python hashlib.blake2b, digest_size=32). A change
// here changes the identity of every job and artifact: it needs a new version tag.
#include <doctest/doctest.h>

#include "promises/pipeline.h"
#include "promises/statement.h"
#include "promises/tree.h"

namespace vow::promises {

TEST_CASE("job id golden vector") {
  Digest stage = blake2b("stage");
  CHECK(stage.hex() == "2791fe5eac84c0d593cb685f3f0098c1dc1d5417cb7a6917ea7245bd04d88cfd");
  std::vector<JobInput> inputs{{"b", blake2b("2")}, {"a", blake2b("1")}};
  CHECK(job_id(stage, inputs, "part-aa").hex() ==
        "d12921a96779d7e27a0bf109330369b658863016cc064d19186ba0ed323a3c03");
  CHECK(job_id(stage, inputs, "").hex() ==
        "b02aed2c441b6c7304ee14d4f031002bbfc6ba924ba2cf4c0967c97ae013e998");
}

TEST_CASE("outputs digest golden vector") {
  JobResult r;
  ArtifactRef log, counts;
  log.digest = blake2b("2");
  counts.digest = blake2b("1");
  r.outputs.push_back({"log", log});
  r.outputs.push_back({"counts", counts});
  CHECK(outputs_digest(r).hex() ==
        "0bfb365948950ba8709cb6969b35e199c020a395f0cd16d6f9b850b798e8021c");
}

TEST_CASE("tree digest golden vector") {
  auto d = tree_digest(
      {{"sub", EntryKind::kTree, blake2b("2")}, {"a.txt", EntryKind::kFile, blake2b("1")}});
  REQUIRE(d.is_ok());
  CHECK(d->hex() == "176189a6ba319adb0a22644ba3e29c4cd92eb5a65f5f45951e294dbd969491ef");
}

}  // namespace vow::promises
