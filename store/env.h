// Env: every file-system side effect of the artifact store goes through this interface,
// so tests can swap in a fault-injecting implementation (LevelDB's Env, SQLite's os
// layer). PosixEnv is the real one; FaultyEnv wraps another Env and fails chosen
// operations (the Nth write, every fsync, disk full) the way the OS would.
//
// Errors name the operation and the path and carry strerror(errno) text:
//   "io: write /var/lib/vow/artifacts/tmp/obj-12: No space left on device".
// Disk full is reported as kUnavailable (retry later, after GC), other OS failures as kIo.
//
// Ownership: files returned by an Env are owned by the caller (unique_ptr) and close
// themselves when destroyed. An Env must outlive the files it returned.
// Thread-safety: PosixEnv is thread-safe (stateless); a file object is used by one thread
// at a time. FaultyEnv's counters are not synchronized: use it from one thread.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "promises/status.h"

namespace vow::store {

// A file being written: appended to, synced, closed. Destroying it without close()
// closes the descriptor and ignores errors (the caller is abandoning the file anyway).
class WritableFile {
 public:
  virtual ~WritableFile() = default;
  virtual Status append(std::span<const std::uint8_t> data) = 0;
  virtual Status sync() = 0;  // fsync: data and metadata are durable when this returns
  virtual Status close() = 0;
};

// A file opened for positional reads.
class ReadableFile {
 public:
  virtual ~ReadableFile() = default;
  // Reads up to out.size() bytes at offset; returns the count (0 at end of file).
  virtual Result<std::size_t> read_at(std::uint64_t offset, std::span<std::uint8_t> out) = 0;
  virtual Result<std::uint64_t> size() = 0;
};

enum class FileType { kMissing, kRegular, kDirectory, kSymlink, kOther };

struct FileInfo {
  FileType type = FileType::kMissing;
  std::uint64_t size_bytes = 0;
  mode_t mode = 0;  // permission bits
  // What an incremental import compares (store/import_cache.h): the file's identity and
  // its modification and status-change times, in nanoseconds since the epoch.
  std::uint64_t device = 0;
  std::uint64_t inode = 0;
  std::int64_t mtime_ns = 0;
  std::int64_t ctime_ns = 0;
};

class Env {
 public:
  virtual ~Env() = default;
  // Creates PATH exclusively (O_CREAT|O_EXCL) with the given mode.
  virtual Result<std::unique_ptr<WritableFile>> new_writable(const std::string& path,
                                                             mode_t mode) = 0;
  virtual Result<std::unique_ptr<ReadableFile>> open_readable(const std::string& path) = 0;
  // lstat: a symbolic link is reported as kSymlink, never followed. kMissing if absent.
  virtual Result<FileInfo> stat(const std::string& path) = 0;
  // Names in a directory, without "." and "..", unsorted.
  virtual Result<std::vector<std::string>> list_dir(const std::string& path) = 0;
  virtual Status make_dir(const std::string& path, mode_t mode) = 0;  // ok if it exists
  virtual Status rename(const std::string& from, const std::string& to) = 0;
  virtual Status sync_dir(const std::string& path) = 0;
  // fsync of an existing file, written by someone else (a file handed to the store).
  virtual Status sync_file(const std::string& path) = 0;
  // syncfs: everything written to the file system holding PATH (data, names, metadata)
  // is durable when this returns. One call instead of many fsyncs of files on it.
  virtual Status sync_filesystem(const std::string& path) = 0;
  virtual Status remove_file(const std::string& path) = 0;  // ok if already gone
  virtual Status chmod(const std::string& path, mode_t mode) = 0;
  // Hard link. Returns false (not an error) when the OS cannot link across these paths
  // (EXDEV, EPERM, EMLINK): the caller copies instead.
  virtual Result<bool> link(const std::string& from, const std::string& to) = 0;
};

// The process's real file system. Stateless.
Env& posix_env();

// Which operations a FaultyEnv fails. Counters count calls made through this Env.
struct FaultPlan {
  // Fail the Nth WritableFile::append (1-based, counted across all files); 0 = never.
  std::uint64_t fail_write_n = 0;
  // every WritableFile::sync, sync_dir, sync_file and sync_filesystem fails (EIO)
  bool fail_sync = false;
  bool disk_full = false;    // every append fails with ENOSPC
  bool fail_rename = false;  // every rename fails (EIO)
  // Nonzero: stat reports this as every entry's mtime and ctime (a file system that keeps
  // no times, as some FUSE and virtual file systems do).
  std::int64_t fixed_times_ns = 0;
};

class FaultyEnv final : public Env {
 public:
  explicit FaultyEnv(Env& base) : base_(base) {}
  FaultPlan& plan() { return plan_; }
  std::uint64_t writes() const { return writes_; }
  // Files opened for reading through this Env, and the paths, in order.
  std::uint64_t opens() const { return opened_.size(); }
  const std::vector<std::string>& opened() const { return opened_; }
  void clear_opened() { opened_.clear(); }
  // Paths stat'ed or listed through this Env, in order (what a walk looked at).
  const std::vector<std::string>& looked_at() const { return looked_at_; }
  void clear_looked_at() { looked_at_.clear(); }
  // Directories synced through this Env ("syncfs PATH" for a file system), in order.
  const std::vector<std::string>& synced() const { return synced_; }

  Result<std::unique_ptr<WritableFile>> new_writable(const std::string& path, mode_t mode) override;
  Result<std::unique_ptr<ReadableFile>> open_readable(const std::string& path) override {
    opened_.push_back(path);
    return base_.open_readable(path);
  }
  Result<FileInfo> stat(const std::string& path) override;
  Result<std::vector<std::string>> list_dir(const std::string& path) override {
    looked_at_.push_back(path);
    return base_.list_dir(path);
  }
  Status make_dir(const std::string& path, mode_t mode) override {
    return base_.make_dir(path, mode);
  }
  Status rename(const std::string& from, const std::string& to) override;
  Status sync_dir(const std::string& path) override;
  Status sync_file(const std::string& path) override;
  Status sync_filesystem(const std::string& path) override;
  Status remove_file(const std::string& path) override { return base_.remove_file(path); }
  Status chmod(const std::string& path, mode_t mode) override { return base_.chmod(path, mode); }
  Result<bool> link(const std::string& from, const std::string& to) override {
    return base_.link(from, to);
  }

 private:
  friend class FaultyWritableFile;
  // Returns a failure for this append, or ok.
  Status before_append(const std::string& path);

  Env& base_;
  FaultPlan plan_;
  std::uint64_t writes_ = 0;
  std::vector<std::string> opened_;
  std::vector<std::string> looked_at_;
  std::vector<std::string> synced_;
};

// "OP PATH: strerror(err)", as kUnavailable for ENOSPC/EDQUOT, else kIo.
Status errno_status(const char* op, const std::string& path, int err);

}  // namespace vow::store
