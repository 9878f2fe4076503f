// What a finished job may hand to the store (docs/sandbox.md): checked before its
// outputs are imported. A regular file with more than one link may be a name for a file
// the job did not make (`ln /etc/shadow "$VOW_OUT_x"`); a file owned by another user is
// not the job's. Either refuses the output, and so fails the job.
//
// Reads the file system (lstat; never follows a symbolic link). Thread-safe.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace vow::agent {

// The reason the first refused file among `outputs` (names under `out_dir`, each a file
// or a directory, walked whole) is refused, naming it: empty when none is. Outputs
// that are missing are left to the import, which reports them.
std::string refused_output(const std::string& out_dir, const std::vector<std::string>& outputs,
                           uid_t job_uid);

}  // namespace vow::agent
