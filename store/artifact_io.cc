// ArtifactReader, and the ArtifactWriter the store hands out (StoreWriter).
#include <algorithm>

#include "promises/assert.h"
#include "store/artifact_store.h"

namespace vow::store {
namespace {

// Largest tree object accepted through an ArtifactWriter (held in memory to validate).
constexpr std::size_t kMaxTreeObjectBytes = 64 << 20;

}  // namespace

// ---------------------------------------------------------------------------------------
// ArtifactReader

ArtifactReader::ArtifactReader(std::unique_ptr<ReadableFile> file, Digest digest,
                               std::uint64_t size_bytes)
    : file_(std::move(file)), digest_(digest), size_(size_bytes) {}

Result<std::size_t> ArtifactReader::read_at(std::uint64_t offset, std::span<std::uint8_t> out) {
  if (offset >= size_) return std::size_t{0};
  std::uint64_t left = size_ - offset;
  if (out.size() > left) out = out.subspan(0, static_cast<std::size_t>(left));
  return file_->read_at(offset, out);
}

Result<std::size_t> ArtifactReader::read_next(std::span<std::uint8_t> out) {
  if (done_) return std::size_t{0};
  auto n = file_->read_at(pos_, out);
  if (!n.is_ok()) return n.status();
  if (*n > 0) {
    hasher_.update(out.subspan(0, *n));
    pos_ += *n;
    return *n;
  }
  done_ = true;
  if (pos_ != size_) {
    return Status::corrupt("artifact " + digest_.hex() + ": size " + std::to_string(pos_) +
                           ", expected " + std::to_string(size_));
  }
  if (hasher_.finish() != digest_) {
    return Status::corrupt("artifact " + digest_.hex() + ": content does not match its digest");
  }
  return std::size_t{0};
}

std::vector<std::uint8_t> chunk_buffer(std::uint64_t size) {
  constexpr std::uint64_t kPage = 4096;
  return std::vector<std::uint8_t>(
      static_cast<std::size_t>(std::clamp<std::uint64_t>(size + 1, kPage, kCopyChunkBytes)));
}

Status ArtifactReader::verify_whole() {
  Hasher h;
  std::vector<std::uint8_t> buf = chunk_buffer(size_);
  std::uint64_t off = 0;
  for (;;) {
    auto n = file_->read_at(off, buf);
    if (!n.is_ok()) return n.status();
    if (*n == 0) break;
    h.update(std::span(buf).subspan(0, *n));
    off += *n;
  }
  if (off != size_ || h.finish() != digest_) {
    return Status::corrupt("artifact " + digest_.hex() + ": content does not match its digest");
  }
  return Status::ok();
}

// ---------------------------------------------------------------------------------------
// Writer

class StoreWriter final : public ArtifactWriter {
 public:
  StoreWriter(ArtifactStore& store, ArtifactKind kind, const WriterOptions& options,
              std::string tmp, std::unique_ptr<WritableFile> file)
      : store_(store),
        kind_(kind),
        options_(options),
        tmp_(std::move(tmp)),
        file_(std::move(file)) {}
  ~StoreWriter() override {
    if (!installed_) {
      file_.reset();
      reader_.reset();
      (void)store_.env_.remove_file(tmp_);
    }
  }

  Status append(std::span<const std::uint8_t> data) override {
    if (installed_ || spent_) return Status::invalid("artifact writer: append after commit");
    if (kind_ == ArtifactKind::kTree) {
      if (tree_.size() + data.size() > kMaxTreeObjectBytes) {
        return Status::overloaded("tree object larger than " + std::to_string(kMaxTreeObjectBytes) +
                                  " bytes");
      }
    }
    VOW_RETURN_IF_ERROR(file_->append(data));
    if (kind_ == ArtifactKind::kTree)
      tree_.append(reinterpret_cast<const char*>(data.data()), data.size());
    if (options_.hash) hasher_.update(data);
    size_ += data.size();
    return Status::ok();
  }

  Status read_at(std::uint64_t offset, std::span<std::uint8_t> out) override {
    if (offset > size_ || out.size() > size_ - offset) {
      return Status::invalid("artifact writer: read past the " + std::to_string(size_) +
                             " bytes written");
    }
    if (!reader_) {
      auto r = store_.env_.open_readable(tmp_);
      if (!r.is_ok()) return r.status();
      reader_ = std::move(r).value();
    }
    while (!out.empty()) {
      auto n = reader_->read_at(offset, out);
      if (!n.is_ok()) return n.status();
      if (*n == 0) return Status::io("artifact writer: " + tmp_ + " is shorter than written");
      out = out.subspan(*n);
      offset += *n;
    }
    return Status::ok();
  }

  std::uint64_t size() const override { return size_; }

  Result<Digest> commit(std::optional<Digest> expected) override {
    if (installed_ || spent_) return Status::invalid("artifact writer: committed already");
    if (!options_.hash && !expected) {
      return Status::invalid("artifact writer without hashing needs the expected digest");
    }
    if (!digest_) digest_ = options_.hash ? hasher_.finish() : *expected;
    Digest d = *digest_;
    if (expected && *expected != d) {
      spent_ = true;
      return Status::corrupt("artifact " + expected->hex() + ": received content hashes to " +
                             d.hex());
    }
    if (kind_ == ArtifactKind::kTree) {
      auto entries = decode_tree(tree_);
      if (!entries.is_ok()) {
        spent_ = true;
        return Status::corrupt("artifact " + d.hex() + ": " + entries.status().message());
      }
      for (const auto& e : *entries) {
        auto has = store_.lookup(e.digest);
        if (!has.is_ok()) return has.status();
        if (!has->has_value()) {
          return Status::not_found("tree " + d.hex() + ": child '" + e.name + "' (" +
                                   e.digest.hex() + ") is not held");
        }
      }
    }
    if (!synced_) {
      VOW_RETURN_IF_ERROR(file_->sync());
      VOW_RETURN_IF_ERROR(file_->close());
      synced_ = true;
    }
    VOW_RETURN_IF_ERROR(store_.install(tmp_, d, kind_, size_));
    installed_ = true;
    VOW_RETURN_IF_ERROR(store_.flush_index());
    return d;
  }

 private:
  ArtifactStore& store_;
  ArtifactKind kind_;
  WriterOptions options_;
  std::string tmp_;
  std::unique_ptr<WritableFile> file_;
  std::unique_ptr<ReadableFile> reader_;  // opened on the first read_at
  Hasher hasher_;
  std::optional<Digest> digest_;
  std::uint64_t size_ = 0;
  std::string tree_;  // tree objects only, bounded by kMaxTreeObjectBytes
  bool synced_ = false;
  bool installed_ = false;
  bool spent_ = false;
};

Result<std::unique_ptr<ArtifactWriter>> ArtifactStore::new_writer(ArtifactKind kind,
                                                                  const WriterOptions& options) {
  std::string tmp = new_temp_path();
  // 0644 while open so read_at can read it back; install() makes it 0444.
  auto file = env_.new_writable(tmp, 0644);
  if (!file.is_ok()) return file.status();
  return std::unique_ptr<ArtifactWriter>(
      new StoreWriter(*this, kind, options, std::move(tmp), std::move(file).value()));
}

}  // namespace vow::store
