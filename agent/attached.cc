#include "agent/attached.h"

#include <utility>

namespace vow::agent {

void AttachedBytes::put(const Digest& digest, std::string bytes) {
  if (bytes.size() > max_bytes_ || max_items_ == 0) return;
  (void)take(digest);
  bytes_ += bytes.size();
  const std::uint64_t no = next_++;
  held_.emplace(digest, Held{std::move(bytes), no});
  order_.emplace_back(digest, no);
  while (held_.size() > max_items_ || bytes_ > max_bytes_) {
    auto [oldest, n] = order_.front();
    order_.pop_front();
    auto it = held_.find(oldest);
    if (it == held_.end() || it->second.no != n) continue;  // taken or replaced since
    bytes_ -= it->second.bytes.size();
    held_.erase(it);
  }
  // Entries of taken digests stay in order_ until they reach its front: past twice the
  // live ones, only the live are kept (amortized, each entry is copied once).
  if (order_.size() > 2 * held_.size() + 16) {
    std::deque<std::pair<Digest, std::uint64_t>> live;
    for (const auto& [d, n] : order_) {
      auto it = held_.find(d);
      if (it != held_.end() && it->second.no == n) live.emplace_back(d, n);
    }
    order_ = std::move(live);
  }
}

std::optional<std::string> AttachedBytes::take(const Digest& digest) {
  auto it = held_.find(digest);
  if (it == held_.end()) return std::nullopt;
  std::string out = std::move(it->second.bytes);
  bytes_ -= out.size();
  held_.erase(it);
  return out;
}

}  // namespace vow::agent
