#include "agent/slurm_executor.h"

#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;

namespace vow::agent {
namespace {

bool has(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

promises::StartJob start_of(const promises::Stage& stage) {
  promises::StartJob s;
  s.job.job = blake2b(std::string_view("a job"));
  s.job.pipeline = "p";
  s.epoch = 3;
  s.stage = stage;
  return s;
}

}  // namespace

TEST_CASE("sbatch's options: name, logs, time from timeout, resources from the limits") {
  promises::SlurmConfig config;
  config.shared_dir = "/shared";
  promises::Stage stage;
  stage.name = "s";
  stage.argv = {"true"};
  promises::StartJob s = start_of(stage);
  JobLayout l = job_layout(config.shared_dir, s.job.job, s.epoch);
  auto o = sbatch_options(config, l, s);
  CHECK(o.front() == "sbatch");
  CHECK(has(o, "--job-name=vow-" + s.job.job.hex().substr(0, 16) + ".3"));
  CHECK(has(o, "--output=" + l.stdout_path));
  CHECK(has(o, "--error=" + l.stderr_path));
  CHECK(has(o, "--chdir=" + l.work_dir));
  CHECK(std::none_of(o.begin(), o.end(), [](const std::string& x) {
    return x.rfind("--time", 0) == 0 || x.rfind("--mem", 0) == 0 || x.rfind("--cpus", 0) == 0 ||
           x.rfind("--partition", 0) == 0;
  }));
  s.timeout_ms = 90'000;  // 1.5 minutes: 2, and one more as the backstop
  s.stage.memory_bytes = (std::int64_t{1} << 30) + 1;
  s.stage.cpus = 4;
  config.partition = "gpu";
  o = sbatch_options(config, l, s);
  CHECK(has(o, "--time=3"));
  CHECK(has(o, "--mem=1025M"));
  CHECK(has(o, "--cpus-per-task=4"));
  CHECK(has(o, "--partition=gpu"));
}

TEST_CASE("the batch script runs the supervisor in the work directory with the job's env") {
  JobLayout l = job_layout("/shared", blake2b(std::string_view("x")), 1);
  std::string script =
      slurm_batch_script(l, {"A=it's", "PATH=/usr/bin:/bin"}, {"/bin/sh", "-c", "echo $A"});
  CHECK(script.rfind("#!/bin/sh\n", 0) == 0);
  CHECK(script.find("cd '" + l.work_dir + "' || exit 1") != std::string::npos);
  CHECK(script.find("exec env -i") != std::string::npos);
  CHECK(script.find("'A=it'\\''s'") != std::string::npos);  // quoted for the shell
  CHECK(script.find("vow-job '" + l.status_path + "'") != std::string::npos);

  // Run as the batch job would be: the command's output, and its status written.
  std::string tmpl = (fs::temp_directory_path() / "vow-slurm-XXXXXX").string();
  fs::path dir = ::mkdtemp(tmpl.data());
  JobLayout real = job_layout(dir.string(), blake2b(std::string_view("x")), 1);
  fs::create_directories(real.out_dir);
  std::ofstream(real.work_dir + "/job.sh")
      << slurm_batch_script(real, {"A=it's", "PATH=/usr/bin:/bin"},
                            {"/bin/sh", "-c", "echo \"$A\" > out/said; pwd >> out/said; exit 4"});
  int rc = std::system(("/bin/sh '" + real.work_dir + "/job.sh' > /dev/null 2>&1").c_str());
  CHECK(WEXITSTATUS(rc) == 4);
  std::ifstream said(real.output_path("said"));
  std::string first, second;
  std::getline(said, first);
  std::getline(said, second);
  CHECK(first == "it's");
  CHECK(second == real.work_dir);
  auto st = read_status_file(real.status_path);
  REQUIRE(st.is_ok());
  REQUIRE(st->has_value());
  CHECK((*st)->exit_status == 4);
  fs::remove_all(dir);
}

}  // namespace vow::agent
