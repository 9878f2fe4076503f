#include "agent/metrics.h"

#include <doctest/doctest.h>

#include <cstdlib>
#include <string>

namespace vow::agent {
namespace {

// The value of the first sample line starting with `prefix`.
std::string value_of(const std::string& text, const std::string& prefix) {
  auto at = text.find("\n" + prefix);
  if (at == std::string::npos) return "";
  at = text.find(' ', at + 1);
  auto end = text.find('\n', at);
  return text.substr(at + 1, end - at - 1);
}

TEST_CASE("sample values read back as the same double") {
  std::string out;
  sample(out, "a", {}, 123456.789012345);
  sample(out, "b", {}, 9007199254740992.0);  // 2^53: an integer, printed as one
  sample(out, "c", {}, 0.1);
  CHECK(std::strtod(value_of("\n" + out, "a").c_str(), nullptr) == 123456.789012345);
  CHECK(value_of("\n" + out, "b") == "9007199254740992");
  CHECK(value_of("\n" + out, "c") == "0.1");
}

TEST_CASE("a histogram's sum keeps its precision as it grows, series carry their labels") {
  Metrics m;
  for (int i = 0; i < 100000; ++i) m.observe_job("p", "s", 1.001);
  m.observe_job("p", "t", 0.05);
  std::string out;
  for (const auto& [key, h] : m.job_duration) {
    h.series(out, "d", {{"pipeline", key.first}, {"stage", key.second}});
  }
  std::string sum = value_of("\n" + out, "d_sum{pipeline=\"p\",stage=\"s\"}");
  double expected = 0;
  for (int i = 0; i < 100000; ++i) expected += 1.001;
  CHECK(std::strtod(sum.c_str(), nullptr) == expected);
  CHECK(value_of("\n" + out, "d_count{pipeline=\"p\",stage=\"t\"}") == "1");
  CHECK(value_of("\n" + out, "d_bucket{pipeline=\"p\",stage=\"t\",le=\"0.1\"}") == "1");
  CHECK(value_of("\n" + out, "d_bucket{pipeline=\"p\",stage=\"s\",le=\"+Inf\"}") == "100000");
}

TEST_CASE("reason labels have one spelling") {
  CHECK(label_token("result: no claim") == "result_no_claim");
  CHECK(label_token("source version: not provided") == "source_version_not_provided");
  CHECK(label_token("bad_signature") == "bad_signature");
  CHECK(label_token("Over-Limit") == "over_limit");
}

TEST_CASE("process metrics are read from /proc/self") {
  std::string out;
  process_metrics(out);
  for (const char* name : {"process_cpu_seconds_total", "process_resident_memory_bytes",
                           "process_start_time_seconds", "process_open_fds"}) {
    CAPTURE(name);
    CHECK(out.find(std::string("\n") + name + " ") != std::string::npos);
  }
  CHECK(std::strtod(value_of(out, "process_open_fds ").c_str(), nullptr) >= 3);
}

}  // namespace
}  // namespace vow::agent
