// What an agent counts for /metrics (Prometheus text format 0.0.4) and how it is
// written. The loop thread owns a Metrics and renders it into a snapshot string; the
// HTTP thread only ever serves snapshots (agent/http.h). Names and labels: docs/cli.md.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace vow::agent {

// A cumulative histogram with fixed upper bounds in seconds.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double seconds);
  // "# HELP/# TYPE" lines, then NAME_bucket{le=...}, NAME_sum and NAME_count.
  void render(std::string& out, const std::string& name, const std::string& help) const;
  // The samples only (no header), each with `labels` before `le`.
  void series(std::string& out, const std::string& name,
              const std::vector<std::pair<std::string, std::string>>& labels) const;

 private:
  std::vector<double> bounds_;
  std::vector<std::uint64_t> counts_;  // per bucket, not cumulative
  double sum_ = 0;
  std::uint64_t count_ = 0;
};

struct Metrics {
  std::uint64_t claims = 0;      // claims this agent made
  std::uint64_t takeovers = 0;   // of them, at an epoch above 1 (someone else's job first)
  std::uint64_t results_ok = 0;  // results this agent signed
  std::uint64_t results_failed = 0;
  // Upstream result signed -> downstream process started here (wall clock).
  Histogram handoff{{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}};
  // Wall time of job processes run here, by pipeline and stage.
  std::map<std::pair<std::string, std::string>, Histogram> job_duration;
  void observe_job(const std::string& pipeline, const std::string& stage, double seconds);
};

// The bounds of vow_job_duration_seconds (seconds).
inline const std::vector<double> kJobDurationBounds = {0.01, 0.1, 0.5, 1,   5,    10,
                                                       30,   60,  300, 1800, 3600};

// The process_* metrics of the Prometheus client conventions, read from /proc/self:
// process_cpu_seconds_total, process_resident_memory_bytes, process_virtual_memory_bytes,
// process_start_time_seconds, process_open_fds, process_max_fds. What cannot be read is
// left out.
void process_metrics(std::string& out);

// A label value in the one spelling of vow's reason labels: lower case letters, digits
// and `_` ("result: no claim" -> "result_no_claim").
std::string label_token(std::string_view text);

// One sample line: NAME{LABELS} VALUE. Label values are escaped.
void sample(std::string& out, const std::string& name,
            const std::vector<std::pair<std::string, std::string>>& labels, double value);
// "# HELP NAME HELP\n# TYPE NAME TYPE\n".
void header(std::string& out, const std::string& name, const std::string& type,
            const std::string& help);

}  // namespace vow::agent
