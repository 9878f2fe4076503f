#include "agent/job_layout.h"

#include <doctest/doctest.h>

#include <algorithm>

namespace vow::agent {

TEST_CASE("a job sees its inputs, outputs and identity in VOW_ variables") {
  promises::Stage stage;
  stage.name = "count";
  stage.inputs = {{"split", "shards"}, {"", "stopwords"}};
  stage.outputs = {"counts"};
  stage.env = {{"LC_ALL", "C"}, {"VOW_JOB", "spoofed"}, {"PATH", "/opt/bin"}};
  Digest job = blake2b("job");
  auto layout = job_layout("/var/lib/vow", job, 3);
  CHECK(layout.work_dir == "/var/lib/vow/jobs/" + job.hex() + ".3");
  auto env = job_environment(layout, stage, {job, "wordcount", "part-aa"});
  auto has = [&](const std::string& kv) {
    return std::find(env.begin(), env.end(), kv) != env.end();
  };
  CHECK(has("VOW_IN_shards=" + layout.work_dir + "/in/shards"));
  CHECK(has("VOW_IN_stopwords=" + layout.work_dir + "/in/stopwords"));
  CHECK(has("VOW_OUT_counts=" + layout.work_dir + "/out/counts"));
  CHECK(has("VOW_JOB=" + job.hex()));  // the stage cannot override VOW_ variables
  CHECK(has("VOW_STAGE=count"));
  CHECK(has("VOW_SHARD=part-aa"));
  CHECK(has("VOW_PIPELINE=wordcount"));
  CHECK(has("VOW_WORKDIR=" + layout.work_dir));
  CHECK(has("LC_ALL=C"));
  CHECK(has("PATH=/opt/bin"));  // but it can set its own PATH
  CHECK(std::is_sorted(env.begin(), env.end()));
}

}  // namespace vow::agent
