#include "agent/fetch_sink.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace vow::agent {

void ReceivedInMemory::put(const Digest& digest, std::string bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  bytes_[digest] = {next_++, std::move(bytes)};
  if (bytes_.size() <= kMaxInMemoryReceived) return;
  auto oldest = bytes_.begin();
  for (auto it = bytes_.begin(); it != bytes_.end(); ++it) {
    if (it->second.first < oldest->second.first) oldest = it;
  }
  bytes_.erase(oldest);
}

std::optional<std::string> ReceivedInMemory::take(const Digest& digest) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = bytes_.find(digest);
  if (it == bytes_.end()) return std::nullopt;
  std::string out = std::move(it->second.second);
  bytes_.erase(it);
  return out;
}

std::size_t ReceivedInMemory::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bytes_.size();
}

namespace {

std::string errno_text() { return std::strerror(errno); }

class FetchSink final : public transport::ChunkSink {
 public:
  FetchSink(std::string path, const Digest& digest, ReceivedInMemory* received)
      : path_(std::move(path)), digest_(digest), received_(received) {}
  ~FetchSink() override {
    if (fd_ >= 0) ::close(fd_);
  }

  Status write(std::uint64_t offset, std::span<const std::uint8_t> data) override {
    if (fd_ < 0 && offset + data.size() <= kInMemoryFetchBytes) {
      if (buffer_.size() < offset + data.size()) buffer_.resize(offset + data.size());
      std::memcpy(buffer_.data() + offset, data.data(), data.size());
      return Status::ok();
    }
    if (fd_ < 0) {
      // Larger than memory holds: what arrived so far goes to the file first.
      std::error_code ec;
      std::filesystem::create_directories(std::filesystem::path(path_).parent_path(), ec);
      fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      if (fd_ < 0) return Status::io("open " + path_ + ": " + errno_text());
      std::string held = std::move(buffer_);
      buffer_.clear();
      VOW_RETURN_IF_ERROR(write_file(0, std::span<const std::uint8_t>(
                                            reinterpret_cast<const std::uint8_t*>(held.data()),
                                            held.size())));
    }
    VOW_RETURN_IF_ERROR(write_file(offset, data));
    // Write-behind: the disk starts on what arrived while the rest is on its way, so the
    // sync when the file is adopted into the store has little left to write (at 1 GiB
    // it was most of the hand-off's time after the stream; BENCHMARKS.md).
    const std::uint64_t end = offset + data.size();
    if (end >= kicked_ + kWriteBehindBytes) {
      (void)::sync_file_range(fd_, static_cast<off_t>(kicked_), static_cast<off_t>(end - kicked_),
                              SYNC_FILE_RANGE_WRITE);
      kicked_ = end;
    }
    return Status::ok();
  }

  Status read(std::uint64_t offset, std::span<std::uint8_t> out) override {
    if (fd_ < 0) {
      if (offset + out.size() > buffer_.size()) {
        return Status::io("read of bytes not received yet (" + digest_.short_hex() + ")");
      }
      std::memcpy(out.data(), buffer_.data() + offset, out.size());
      return Status::ok();
    }
    std::size_t done = 0;
    while (done < out.size()) {
      ssize_t n = ::pread(fd_, out.data() + done, out.size() - done,
                          static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return Status::io("read " + path_ + ": " + (n == 0 ? "short" : errno_text()));
      done += static_cast<std::size_t>(n);
    }
    return Status::ok();
  }

  Status finish(std::uint64_t total_bytes) override {
    if (fd_ < 0) {
      buffer_.resize(total_bytes);
      received_->put(digest_, std::move(buffer_));
      buffer_.clear();
      return Status::ok();
    }
    if (::ftruncate(fd_, static_cast<off_t>(total_bytes)) != 0) {
      return Status::io("truncate " + path_ + ": " + errno_text());
    }
    return Status::ok();
  }

  void abort(const Status&) override {
    buffer_.clear();
    if (fd_ >= 0) ::unlink(path_.c_str());
  }

 private:
  Status write_file(std::uint64_t offset, std::span<const std::uint8_t> data) {
    std::size_t done = 0;
    while (done < data.size()) {
      ssize_t n =
          ::pwrite(fd_, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return Status::io("write " + path_ + ": " + errno_text());
      done += static_cast<std::size_t>(n);
    }
    return Status::ok();
  }

  std::string path_;
  Digest digest_;
  ReceivedInMemory* received_;
  std::string buffer_;
  int fd_ = -1;
  std::uint64_t kicked_ = 0;  // bytes before it handed to the disk's writeback
  static constexpr std::uint64_t kWriteBehindBytes = 8u << 20;
};

}  // namespace

std::unique_ptr<transport::ChunkSink> make_fetch_sink(std::string path, const Digest& digest,
                                                      ReceivedInMemory* received) {
  return std::make_unique<FetchSink>(std::move(path), digest, received);
}

}  // namespace vow::agent
