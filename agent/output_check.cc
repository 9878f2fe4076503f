#include "agent/output_check.h"

#include <dirent.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <memory>

namespace vow::agent {
namespace {

constexpr int kMaxDepth = 64;

// `shown` is the path as the message names it ("out/name/sub/file").
std::string check(const std::string& path, const std::string& shown, uid_t uid, int depth,
                  const StoreObjectTest& ours) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return "";
    return shown + ": cannot inspect it: " + std::strerror(errno);
  }
  if (st.st_uid != uid) {
    return shown + " is owned by uid " + std::to_string(st.st_uid) + ", not by the job's uid " +
           std::to_string(uid);
  }
  if (S_ISREG(st.st_mode) && st.st_nlink > 1 && !(st.st_nlink == 2 && ours && ours(path))) {
    return shown + " is a hard link (" + std::to_string(st.st_nlink) +
           " names for one file): an output must be a file the job wrote";
  }
  if (!S_ISDIR(st.st_mode)) return "";
  if (depth >= kMaxDepth) return shown + ": directories nested deeper than " +
                                 std::to_string(kMaxDepth);
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(path.c_str()), ::closedir);
  if (!dir) return shown + ": cannot list it: " + std::strerror(errno);
  while (const dirent* e = ::readdir(dir.get())) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    std::string why = check(path + "/" + name, shown + "/" + name, uid, depth + 1, ours);
    if (!why.empty()) return why;
  }
  return "";
}

}  // namespace

std::string refused_output(const std::string& out_dir, const std::vector<std::string>& outputs,
                           uid_t job_uid, const StoreObjectTest& ours) {
  for (const auto& name : outputs) {
    std::string why = check(out_dir + "/" + name, "out/" + name, job_uid, 0, ours);
    if (!why.empty()) return "output '" + name + "' refused: " + why;
  }
  return "";
}

}  // namespace vow::agent
