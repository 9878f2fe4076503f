// The command of the benchmark jobs that bench/run times (bench/run writes the pipelines).
//
//   stamp LOG [OUTPUT_NAME...]
//
// First thing after exec, it reads the wall clock (CLOCK_REALTIME, which all agents on
// one host share) and appends one line to LOG:
//   <unix ns> <pid> <VOW_STAGE> <VOW_SHARD or -> <VOW_WORKDIR> <token or ->
// where the token is the first word of the file $VOW_IN_token. Then it creates each
// named output ($VOW_OUT_<name>) holding the token (so a token passes down a chain of
// stamp jobs), and exits 0. The clock reading is when "the process started": it exists
// and runs its own code. It uses libc only and is linked statically, so exec costs as
// little as a program can.
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

namespace {

const char* env_or_dash(const char* name) {
  const char* v = getenv(name);
  return (v && *v) ? v : "-";
}

// The first line of a small input file, so a run can tell its trials apart.
void first_line(const char* path, char* out, size_t size) {
  snprintf(out, size, "-");
  if (!path) return;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ssize_t n = read(fd, out, size - 1);
  close(fd);
  if (n <= 0) {
    snprintf(out, size, "-");
    return;
  }
  out[n] = '\0';
  for (ssize_t i = 0; i < n; ++i) {
    if (out[i] == '\n' || out[i] == ' ') {
      out[i] = '\0';
      break;
    }
  }
}

bool write_all(int fd, const char* data, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, data, len);
    if (n <= 0) return false;
    data += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  if (argc < 2) {
    fprintf(stderr, "usage: stamp LOG [OUTPUT_NAME...]\n");
    return 2;
  }
  char token[128];
  first_line(getenv("VOW_IN_token"), token, sizeof(token));
  char line[4096];
  int len = snprintf(line, sizeof(line), "%lld %d %s %s %s %s\n",
                     static_cast<long long>(ts.tv_sec) * 1000000000LL + ts.tv_nsec,
                     static_cast<int>(getpid()), env_or_dash("VOW_STAGE"), env_or_dash("VOW_SHARD"),
                     env_or_dash("VOW_WORKDIR"), token);
  if (len <= 0 || static_cast<size_t>(len) >= sizeof(line)) return 1;
  // One write() with O_APPEND: lines of concurrent jobs do not interleave.
  int fd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0 || !write_all(fd, line, static_cast<size_t>(len))) return 1;
  close(fd);
  for (int i = 2; i < argc; ++i) {
    char name[256];
    snprintf(name, sizeof(name), "VOW_OUT_%s", argv[i]);
    const char* path = getenv(name);
    if (!path) return 1;
    int out = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0 || !write_all(out, token, strlen(token)) || !write_all(out, "\n", 1)) return 1;
    close(out);
  }
  return 0;
}
