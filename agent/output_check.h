// What a finished job may hand to the store (docs/sandbox.md): checked before its
// outputs are imported. A regular file with more than one link may be a name for a file
// the job did not make (`ln /etc/shadow "$VOW_OUT_x"`); a file owned by another user is
// not the job's. Either refuses the output, and so fails the job.
//
// Reads the file system (lstat; never follows a symbolic link). Thread-safe.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

namespace vow::agent {

// Whether the regular file at a path is an object of the agent's own store: the store
// took the output by a hard link, and the agent stopped before the work directory was
// emptied. Its second name is then the store's, not one the job made.
using StoreObjectTest = std::function<bool(const std::string& path)>;

// The reason the first refused file among `outputs` (names under `out_dir`, each a file
// or a directory, walked whole) is refused, naming it: empty when none is. Outputs
// that are missing are left to the import, which reports them. A file of exactly two
// names passes if `ours` says the other is the store's object (a run collected again
// after a restart).
std::string refused_output(const std::string& out_dir, const std::vector<std::string>& outputs,
                           uid_t job_uid, const StoreObjectTest& ours = {});

}  // namespace vow::agent
