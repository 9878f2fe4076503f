#include "store/env.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace vow::store {

Status errno_status(const char* op, const std::string& path, int err) {
  std::string msg = std::string(op) + " " + path + ": " + std::strerror(err);
  if (err == ENOSPC || err == EDQUOT) return Status::unavailable(std::move(msg));
  return Status::io(std::move(msg));
}

namespace {

class PosixWritableFile final : public WritableFile {
 public:
  PosixWritableFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixWritableFile() override {
    if (fd_ >= 0) ::close(fd_);
  }
  PosixWritableFile(const PosixWritableFile&) = delete;
  PosixWritableFile& operator=(const PosixWritableFile&) = delete;

  Status append(std::span<const std::uint8_t> data) override {
    while (!data.empty()) {
      ssize_t n = ::write(fd_, data.data(), data.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno_status("write", path_, errno);
      }
      data = data.subspan(static_cast<std::size_t>(n));
    }
    return Status::ok();
  }
  Status sync() override {
    if (::fsync(fd_) != 0) return errno_status("fsync", path_, errno);
    return Status::ok();
  }
  Status close() override {
    int fd = fd_;
    fd_ = -1;
    if (fd >= 0 && ::close(fd) != 0) return errno_status("close", path_, errno);
    return Status::ok();
  }

 private:
  std::string path_;
  int fd_;
};

class PosixReadableFile final : public ReadableFile {
 public:
  PosixReadableFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixReadableFile() override { ::close(fd_); }
  PosixReadableFile(const PosixReadableFile&) = delete;
  PosixReadableFile& operator=(const PosixReadableFile&) = delete;

  Result<std::size_t> read_at(std::uint64_t offset, std::span<std::uint8_t> out) override {
    for (;;) {
      ssize_t n = ::pread(fd_, out.data(), out.size(), static_cast<off_t>(offset));
      if (n >= 0) return static_cast<std::size_t>(n);
      if (errno != EINTR) return errno_status("read", path_, errno);
    }
  }
  Result<std::uint64_t> size() override {
    struct stat st;
    if (::fstat(fd_, &st) != 0) return errno_status("fstat", path_, errno);
    return static_cast<std::uint64_t>(st.st_size);
  }

 private:
  std::string path_;
  int fd_;
};

class PosixEnv final : public Env {
 public:
  Result<std::unique_ptr<WritableFile>> new_writable(const std::string& path,
                                                     mode_t mode) override {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) return errno_status("create", path, errno);
    return std::unique_ptr<WritableFile>(new PosixWritableFile(path, fd));
  }
  Result<std::unique_ptr<ReadableFile>> open_readable(const std::string& path) override {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
      if (errno == ENOENT) return Status::not_found("open " + path + ": " + std::strerror(errno));
      return errno_status("open", path, errno);
    }
    return std::unique_ptr<ReadableFile>(new PosixReadableFile(path, fd));
  }
  Result<FileInfo> stat(const std::string& path) override {
    struct stat st;
    FileInfo info;
    if (::lstat(path.c_str(), &st) != 0) {
      if (errno == ENOENT) return info;
      return errno_status("lstat", path, errno);
    }
    if (S_ISREG(st.st_mode)) {
      info.type = FileType::kRegular;
    } else if (S_ISDIR(st.st_mode)) {
      info.type = FileType::kDirectory;
    } else if (S_ISLNK(st.st_mode)) {
      info.type = FileType::kSymlink;
    } else {
      info.type = FileType::kOther;
    }
    info.size_bytes = static_cast<std::uint64_t>(st.st_size);
    info.mode = st.st_mode & 07777;
    info.device = static_cast<std::uint64_t>(st.st_dev);
    info.inode = static_cast<std::uint64_t>(st.st_ino);
    info.mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
    info.ctime_ns = static_cast<std::int64_t>(st.st_ctim.tv_sec) * 1'000'000'000 + st.st_ctim.tv_nsec;
    return info;
  }
  Result<std::vector<std::string>> list_dir(const std::string& path) override {
    DIR* dir = ::opendir(path.c_str());
    if (dir == nullptr) {
      if (errno == ENOENT)
        return Status::not_found("opendir " + path + ": " + std::strerror(errno));
      return errno_status("opendir", path, errno);
    }
    std::vector<std::string> names;
    errno = 0;
    while (struct dirent* e = ::readdir(dir)) {
      std::string_view name(e->d_name);
      if (name != "." && name != "..") names.emplace_back(name);
    }
    int err = errno;
    ::closedir(dir);
    if (err != 0) return errno_status("readdir", path, err);
    return names;
  }
  Status make_dir(const std::string& path, mode_t mode) override {
    if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) {
      return errno_status("mkdir", path, errno);
    }
    return Status::ok();
  }
  Status rename(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0)
      return errno_status("rename", from + " to " + to, errno);
    return Status::ok();
  }
  Status sync_dir(const std::string& path) override {
    int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return errno_status("open directory", path, errno);
    int rc = ::fsync(fd);
    int err = errno;
    ::close(fd);
    if (rc != 0) return errno_status("fsync directory", path, err);
    return Status::ok();
  }
  Status sync_file(const std::string& path) override {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return errno_status("open", path, errno);
    int rc = ::fsync(fd);
    int err = errno;
    ::close(fd);
    if (rc != 0) return errno_status("fsync", path, err);
    return Status::ok();
  }
  Status sync_filesystem(const std::string& path) override {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno_status("open", path, errno);
    int rc = ::syncfs(fd);
    int err = errno;
    ::close(fd);
    if (rc != 0) return errno_status("syncfs", path, err);
    return Status::ok();
  }
  Status remove_file(const std::string& path) override {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) return errno_status("unlink", path, errno);
    return Status::ok();
  }
  Status chmod(const std::string& path, mode_t mode) override {
    if (::chmod(path.c_str(), mode) != 0) return errno_status("chmod", path, errno);
    return Status::ok();
  }
  Result<bool> link(const std::string& from, const std::string& to) override {
    if (::link(from.c_str(), to.c_str()) == 0) return true;
    if (errno == EXDEV || errno == EPERM || errno == EMLINK) return false;
    return errno_status("link", from + " to " + to, errno);
  }
};

}  // namespace

Env& posix_env() {
  static PosixEnv env;  // stateless
  return env;
}

class FaultyWritableFile final : public WritableFile {
 public:
  FaultyWritableFile(FaultyEnv& env, std::string path, std::unique_ptr<WritableFile> base)
      : env_(env), path_(std::move(path)), base_(std::move(base)) {}
  Status append(std::span<const std::uint8_t> data) override {
    VOW_RETURN_IF_ERROR(env_.before_append(path_));
    return base_->append(data);
  }
  Status sync() override {
    if (env_.plan_.fail_sync) return errno_status("fsync", path_, EIO);
    return base_->sync();
  }
  Status close() override { return base_->close(); }

 private:
  FaultyEnv& env_;
  std::string path_;
  std::unique_ptr<WritableFile> base_;
};

Result<std::unique_ptr<WritableFile>> FaultyEnv::new_writable(const std::string& path,
                                                              mode_t mode) {
  auto file = base_.new_writable(path, mode);
  if (!file.is_ok()) return file.status();
  return std::unique_ptr<WritableFile>(
      new FaultyWritableFile(*this, path, std::move(file).value()));
}

Status FaultyEnv::before_append(const std::string& path) {
  ++writes_;
  if (plan_.disk_full) return errno_status("write", path, ENOSPC);
  if (plan_.fail_write_n != 0 && writes_ == plan_.fail_write_n) {
    return errno_status("write", path, EIO);
  }
  return Status::ok();
}

Result<FileInfo> FaultyEnv::stat(const std::string& path) {
  looked_at_.push_back(path);
  auto info = base_.stat(path);
  if (info.is_ok() && plan_.fixed_times_ns != 0 && info->type != FileType::kMissing) {
    info->mtime_ns = plan_.fixed_times_ns;
    info->ctime_ns = plan_.fixed_times_ns;
  }
  return info;
}

Status FaultyEnv::rename(const std::string& from, const std::string& to) {
  if (plan_.fail_rename) return errno_status("rename", from + " to " + to, EIO);
  return base_.rename(from, to);
}

Status FaultyEnv::sync_dir(const std::string& path) {
  synced_.push_back(path);
  if (plan_.fail_sync) return errno_status("fsync directory", path, EIO);
  return base_.sync_dir(path);
}

Status FaultyEnv::sync_filesystem(const std::string& path) {
  synced_.push_back("syncfs " + path);
  if (plan_.fail_sync) return errno_status("syncfs", path, EIO);
  return base_.sync_filesystem(path);
}

Status FaultyEnv::sync_file(const std::string& path) {
  if (plan_.fail_sync) return errno_status("fsync", path, EIO);
  return base_.sync_file(path);
}

}  // namespace vow::store
