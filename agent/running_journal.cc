#include "agent/running_journal.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <string_view>

namespace vow::agent {
namespace {

// FNV-1a, 64 bits: a line that is not one whole line as written (the tail of a longer
// one of an earlier generation) does not check out.
std::uint64_t check_of(std::string_view text) {
  std::uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

std::string hex64(std::uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// "GEN JOB EPOCH PID STARTED" (the checked part, without the work directory).
std::string head_of(std::uint64_t gen, const store::RunningJob& row) {
  return std::to_string(gen) + ' ' + row.job.hex() + ' ' + std::to_string(row.epoch) + ' ' +
         std::to_string(row.pid) + ' ' + std::to_string(row.started_unix_ms);
}

template <typename T>
bool number(std::string_view s, T* out, int base = 10) {
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out, base);
  return ec == std::errc() && end == s.data() + s.size() && !s.empty();
}

// Splits off the next space-separated field of LINE.
std::string_view field(std::string_view& line) {
  auto sp = line.find(' ');
  std::string_view f = line.substr(0, sp);
  line = sp == std::string_view::npos ? std::string_view() : line.substr(sp + 1);
  return f;
}

}  // namespace

std::string running_journal_path(const std::string& state_dir) {
  return state_dir + "/running.journal";
}

RunningJournal::RunningJournal(std::string path) : path_(std::move(path)) {}

RunningJournal::~RunningJournal() {
  if (fd_ >= 0) ::close(fd_);
}

Result<std::vector<store::RunningJob>> RunningJournal::read(const std::string& path) {
  std::vector<store::RunningJob> out;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return out;
    return Status::io("open " + path + ": " + std::strerror(errno));
  }
  std::string text;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int e = errno;
      ::close(fd);
      return Status::io("read " + path + ": " + std::strerror(e));
    }
    if (n == 0) break;
    text.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  std::map<Digest, std::size_t> at;  // job -> its place in `out`
  std::optional<std::uint64_t> gen;
  std::size_t pos = 0;
  while (pos < text.size()) {
    auto nl = text.find('\n', pos);
    if (nl == std::string::npos) break;  // not whole
    std::string_view line(text.data() + pos, nl - pos);
    pos = nl + 1;
    std::string_view rest = line;
    std::uint64_t g = 0;
    if (!number(field(rest), &g) || (gen && g != *gen)) break;
    gen = g;
    if (rest == "-") break;  // started again, nothing noted since
    store::RunningJob row;
    auto job = Digest::from_hex(field(rest));
    std::uint64_t check = 0;
    if (!job || !number(field(rest), &row.epoch) || !number(field(rest), &row.pid) ||
        !number(field(rest), &row.started_unix_ms)) {
      break;
    }
    if (!number(field(rest), &check, 16) || rest.empty()) break;
    row.job = *job;
    row.work_dir = std::string(rest);
    if (check_of(head_of(g, row) + ' ' + row.work_dir) != check) break;
    if (auto it = at.find(row.job); it != at.end()) {
      out[it->second] = std::move(row);
    } else {
      at.emplace(row.job, out.size());
      out.push_back(std::move(row));
    }
  }
  return out;
}

Status RunningJournal::note(const store::RunningJob& row) {
  if (fd_ < 0) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd_ < 0) return Status::io("open " + path_ + ": " + std::strerror(errno));
    offset_ = 0;
  }
  const std::string head = head_of(gen_, row);
  const std::string line =
      head + ' ' + hex64(check_of(head + ' ' + row.work_dir)) + ' ' + row.work_dir + '\n';
  // Not with the head's fields: a work directory is one line (no newline in a path the
  // agent makes).
  ssize_t n = ::pwrite(fd_, line.data(), line.size(), static_cast<off_t>(offset_));
  if (n != static_cast<ssize_t>(line.size())) {
    return Status::io("write " + path_ + ": " + (n < 0 ? std::strerror(errno) : "short write"));
  }
  offset_ += line.size();
  return Status::ok();
}

void RunningJournal::settle() {
  if (fd_ < 0 || offset_ == 0) return;
  const std::string marker = std::to_string(gen_ + 1) + " -\n";
  if (::pwrite(fd_, marker.data(), marker.size(), 0) != static_cast<ssize_t>(marker.size())) {
    return;  // the lines stay current: a restart takes their runs over again, harmlessly
  }
  ++gen_;
  offset_ = 0;
}

std::vector<store::RunningJob> merge_noted_runs(std::vector<store::RunningJob> rows,
                                                const std::vector<store::RunningJob>& noted,
                                                std::vector<store::RunningJob>* added) {
  for (const auto& n : noted) {
    auto it = std::find_if(rows.begin(), rows.end(), [&](const auto& r) { return r.job == n.job; });
    if (it != rows.end() && *it == n) continue;
    if (added != nullptr) added->push_back(n);
    if (it != rows.end()) {
      *it = n;
    } else {
      rows.push_back(n);
    }
  }
  return rows;
}

}  // namespace vow::agent
