#include "agent/sandbox.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

namespace vow::agent {
namespace {

// Options every sandbox has. The supervisor's session is the job's process group;
// bwrap keeps it (no --new-session), so a kill of the group reaches the command inside.
// stdin is /dev/null and there is no controlling terminal, so no terminal to abuse.
std::vector<std::string> base_options() {
  return {"--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
          "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent"};
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

}  // namespace

std::string find_bwrap() {
  for (const char* p : {"/usr/bin/bwrap", "/bin/bwrap", "/usr/local/bin/bwrap"}) {
    if (::access(p, X_OK) == 0) return p;
  }
  return "";
}

Status probe_bwrap(const std::string& bwrap) {
  if (bwrap.empty()) {
    return Status::not_found("bwrap is not installed (Debian package bubblewrap)");
  }
  std::string cmd = shell_quote(bwrap);
  for (const auto& o : base_options()) cmd += " " + shell_quote(o);
  cmd += " --unshare-net /bin/true 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return Status::io("cannot run " + bwrap);
  std::string said;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p) != nullptr) {
    if (said.size() < 2000) said += buf;
  }
  int st = ::pclose(p);
  if (st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0) return Status::ok();
  while (!said.empty() && (said.back() == '\n' || said.back() == '\r')) said.pop_back();
  if (said.empty()) said = "exit status " + std::to_string(WIFEXITED(st) ? WEXITSTATUS(st) : -1);
  return Status::io(bwrap + " does not work here: " + said);
}

std::vector<std::string> sandboxed_argv(const std::string& bwrap, const std::string& state_dir,
                                        const JobLayout& layout, const promises::Stage& stage) {
  std::vector<std::string> argv;
  if (!bwrap.empty()) {
    argv.push_back(bwrap);
    for (auto& o : base_options()) argv.push_back(std::move(o));
    if (!stage.network) argv.push_back("--unshare-net");
    // The state directory (identity key, ledger, store, other jobs) is hidden under an
    // empty tmpfs; the job's work directory is bound back writable, its inputs
    // read-only over it.
    argv.insert(argv.end(), {"--tmpfs", state_dir, "--bind", layout.work_dir, layout.work_dir,
                             "--ro-bind", layout.in_dir, layout.in_dir});
    argv.insert(argv.end(), {"--chdir", layout.work_dir, "--"});
  }
  if (stage.memory_bytes > 0) {
    // ulimit -v counts KiB. The limit is set by a shell that then becomes the command.
    argv.insert(argv.end(), {"/bin/sh", "-c", "ulimit -v \"$1\" || exit 126; shift; exec \"$@\"",
                             "vow-limits", std::to_string(stage.memory_bytes / 1024)});
  }
  argv.insert(argv.end(), stage.argv.begin(), stage.argv.end());
  return argv;
}

std::string format_bytes(std::int64_t bytes) {
  constexpr std::int64_t kKiB = 1024, kMiB = kKiB << 10, kGiB = kMiB << 10;
  if (bytes % kGiB == 0) return std::to_string(bytes / kGiB) + " GiB";
  if (bytes % kMiB == 0) return std::to_string(bytes / kMiB) + " MiB";
  if (bytes % kKiB == 0) return std::to_string(bytes / kKiB) + " KiB";
  return std::to_string(bytes) + " bytes";
}

}  // namespace vow::agent
