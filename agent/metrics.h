// What an agent counts for /metrics (Prometheus text format 0.0.4) and how it is
// written. The loop thread owns a Metrics and renders it into a snapshot string; the
// HTTP thread only ever serves snapshots (agent/http.h). Names and labels: docs/cli.md.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace vow::agent {

// A cumulative histogram with fixed upper bounds in seconds.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double seconds);
  // "# HELP/# TYPE" lines, then NAME_bucket{le=...}, NAME_sum and NAME_count.
  void render(std::string& out, const std::string& name, const std::string& help) const;

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
  Histogram job_duration{{0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600}};
};

// One sample line: NAME{LABELS} VALUE. Label values are escaped.
void sample(std::string& out, const std::string& name,
            const std::vector<std::pair<std::string, std::string>>& labels, double value);
// "# HELP NAME HELP\n# TYPE NAME TYPE\n".
void header(std::string& out, const std::string& name, const std::string& type,
            const std::string& help);

}  // namespace vow::agent
