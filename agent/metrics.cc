#include "agent/metrics.h"

#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>

namespace vow::agent {
namespace {

// Integral values as integers (exact up to 2^53); others with the fewest significant
// digits (15 to 17) that read back as the same double: a growing _sum loses nothing,
// and a bucket bound of 0.1 stays "0.1".
std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  char buf[64];
  if (v == std::floor(v) && std::fabs(v) <= 9007199254740992.0) {
    std::snprintf(buf, sizeof(buf), "%.0f", v);
    return buf;
  }
  for (int digits = 15; digits <= 17; ++digits) {
    std::snprintf(buf, sizeof(buf), "%.*g", digits, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double seconds) {
  std::size_t i = 0;
  while (i < bounds_.size() && seconds > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += seconds;
  ++count_;
}

void Histogram::render(std::string& out, const std::string& name, const std::string& help) const {
  header(out, name, "histogram", help);
  series(out, name, {});
}

void Histogram::series(std::string& out, const std::string& name,
                       const std::vector<std::pair<std::string, std::string>>& labels) const {
  auto with_le = [&](const std::string& le) {
    auto l = labels;
    l.emplace_back("le", le);
    return l;
  };
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    sample(out, name + "_bucket", with_le(number(bounds_[i])), static_cast<double>(cumulative));
  }
  sample(out, name + "_bucket", with_le("+Inf"), static_cast<double>(count_));
  sample(out, name + "_sum", labels, sum_);
  sample(out, name + "_count", labels, static_cast<double>(count_));
}

void Metrics::observe_job(const std::string& pipeline, const std::string& stage,
                          double seconds) {
  auto it = job_duration.find({pipeline, stage});
  if (it == job_duration.end()) {
    it = job_duration.emplace(std::make_pair(pipeline, stage), Histogram(kJobDurationBounds))
             .first;
  }
  it->second.observe(seconds);
}

std::string label_token(std::string_view text) {
  std::string out;
  for (char c : text) {
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
      out += c;
    } else if (c >= 'A' && c <= 'Z') {
      out += static_cast<char>(c - 'A' + 'a');
    } else if (!out.empty() && out.back() != '_') {
      out += '_';
    }
  }
  while (!out.empty() && out.back() == '_') out.pop_back();
  return out;
}

void process_metrics(std::string& out) {
  const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(::sysconf(_SC_PAGESIZE));
  // /proc/self/stat: fields after the command (which may hold spaces and parentheses).
  std::ifstream stat_file("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
  auto close = stat.rfind(')');
  std::vector<std::string> f;  // f[0] is field 3 (state)
  if (close != std::string::npos) {
    std::istringstream rest(stat.substr(close + 1));
    for (std::string x; rest >> x;) f.push_back(x);
  }
  auto field = [&](std::size_t n) -> std::optional<double> {  // n: field number, from 1
    if (n < 3 || n - 3 >= f.size()) return std::nullopt;
    char* end = nullptr;
    double v = std::strtod(f[n - 3].c_str(), &end);
    if (end == f[n - 3].c_str()) return std::nullopt;
    return v;
  };
  auto utime = field(14), stime = field(15), start = field(22), vsize = field(23), rss = field(24);
  if (utime && stime && ticks > 0) {
    header(out, "process_cpu_seconds_total", "counter", "User and system CPU time spent in seconds.");
    sample(out, "process_cpu_seconds_total", {}, (*utime + *stime) / ticks);
  }
  if (rss && page > 0) {
    header(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    sample(out, "process_resident_memory_bytes", {}, *rss * page);
  }
  if (vsize) {
    header(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
    sample(out, "process_virtual_memory_bytes", {}, *vsize);
  }
  // The start time is in ticks after boot: boot time (btime of /proc/stat) added.
  static const std::optional<double> btime = [] {  // read once: it does not change
    std::ifstream proc_stat("/proc/stat");
    for (std::string line; std::getline(proc_stat, line);) {
      if (line.rfind("btime ", 0) == 0) return std::optional(std::strtod(line.c_str() + 6, nullptr));
    }
    return std::optional<double>();
  }();
  if (start && btime && ticks > 0) {
    header(out, "process_start_time_seconds", "gauge",
           "Start time of the process since the Unix epoch in seconds.");
    sample(out, "process_start_time_seconds", {}, *btime + *start / ticks);
  }
  std::error_code ec;
  std::size_t fds = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++fds;
  }
  if (!ec) {
    header(out, "process_open_fds", "gauge", "Number of open file descriptors.");
    // The directory's own descriptor, open while it is read, is not counted.
    sample(out, "process_open_fds", {}, static_cast<double>(fds > 0 ? fds - 1 : 0));
  }
  struct rlimit lim {};
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY) {
    header(out, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
    sample(out, "process_max_fds", {}, static_cast<double>(lim.rlim_cur));
  }
}

void sample(std::string& out, const std::string& name,
            const std::vector<std::pair<std::string, std::string>>& labels, double value) {
  out += name;
  if (!labels.empty()) {
    out += '{';
    for (std::size_t i = 0; i < labels.size(); ++i) {
      if (i) out += ',';
      out += labels[i].first + "=\"" + escape(labels[i].second) + "\"";
    }
    out += '}';
  }
  out += ' ';
  out += number(value);
  out += '\n';
}

void header(std::string& out, const std::string& name, const std::string& type,
            const std::string& help) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

}  // namespace vow::agent
