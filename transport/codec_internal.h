// Not a public header: what the two halves of the codec share (statement_codec.cc:
// statements, signing, framing; message_codec.cc: envelopes), and the zero-copy frame
// encoding link.cc uses. It exposes Cap'n Proto types, which stay inside
// transport/*.cc.
//
// Decoding helpers throw BadInput for a field that decodes but makes no sense;
// guarded() catches it (and kj::Exception, std::bad_alloc) at the edge of every public
// decode function and turns it into a Status and a DecodeError.
//
// Free functions and small value types; thread-safe (no shared state).
#pragma once

#include <capnp/common.h>
#include <capnp/list.h>
#include <capnp/message.h>
#include <kj/array.h>
#include <kj/exception.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <new>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "promises/statement.h"
#include "promises/status.h"
#include "transport/codec.h"
#include "transport/message.h"

namespace vow::transport::internal {

// The frame of `message` as aligned words (standard framing), sized so that a large
// message (a chunk, a statement batch) is built in one segment and copied once.
Result<kj::Array<capnp::word>> encode_message_words(const Message& message);

// ---- Decoding failures ----

struct BadInput {
  DecodeError error;
  std::string what;
};

[[noreturn]] inline void bad(std::string what, DecodeError e = DecodeError::kMalformed) {
  throw BadInput{e, std::move(what)};
}

inline void set_error(DecodeError* out, DecodeError e) {
  if (out) *out = e;
}

// The Status for a decoding failure of kind `e` (`what` says where).
Status status_for(DecodeError e, const std::string& what);

// Runs `fn` and converts every failure into a Status with its DecodeError.
template <typename T, typename Fn>
Result<T> guarded(DecodeError* error, Fn&& fn) {
  try {
    return fn();
  } catch (const BadInput& e) {
    set_error(error, e.error);
    return status_for(e.error, e.what);
  } catch (const kj::Exception& e) {
    set_error(error, DecodeError::kMalformed);
    return status_for(DecodeError::kMalformed, e.getDescription().cStr());
  } catch (const std::bad_alloc&) {
    set_error(error, DecodeError::kMalformed);
    return status_for(DecodeError::kMalformed, "out of memory while decoding");
  }
}

// ---- Framing (statement_codec.cc) ----

// Checks the standard Cap'n Proto framing (segment table) before Cap'n Proto reads it,
// so that a short or lying frame is classified and never over-read.
DecodeError check_framing(std::span<const std::uint8_t> b, std::size_t max_bytes);

// Traversal and nesting limits for reading `bytes` bytes of hostile input.
capnp::ReaderOptions reader_options(std::size_t bytes);

// Holds the frame as aligned words (copied only if the caller's buffer is not aligned).
// Borrows the caller's buffer when aligned: it must outlive this object.
class AlignedWords {
 public:
  explicit AlignedWords(std::span<const std::uint8_t> b);
  kj::ArrayPtr<const capnp::word> words() const { return words_; }

 private:
  kj::Array<capnp::word> copy_;
  kj::ArrayPtr<const capnp::word> words_;
};

// ---- Values <-> Cap'n Proto fields ----

inline std::span<const std::uint8_t> as_span(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}
inline capnp::Data::Reader data_of(std::span<const std::uint8_t> b) {
  return capnp::Data::Reader(reinterpret_cast<const kj::byte*>(b.data()), b.size());
}
inline capnp::Text::Reader text_of(const std::string& s) {
  return capnp::Text::Reader(s.data(), s.size());
}
inline std::string str(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }
inline std::string str(capnp::Data::Reader d) {
  return std::string(reinterpret_cast<const char*>(d.begin()), d.size());
}

template <std::size_t N>
std::array<std::uint8_t, N> fixed(capnp::Data::Reader d, const char* field) {
  if (d.size() != N) {
    bad(std::string(field) + " has " + std::to_string(d.size()) + " bytes, want " +
        std::to_string(N));
  }
  std::array<std::uint8_t, N> out;
  std::memcpy(out.data(), d.begin(), N);
  return out;
}
inline AgentKey key_of(capnp::Data::Reader d, const char* field) {
  return AgentKey{fixed<AgentKey::kSize>(d, field)};
}
inline Digest digest_of(capnp::Data::Reader d, const char* field) {
  return Digest{fixed<Digest::kSize>(d, field)};
}
template <typename List>
void check_list(const List& l, const char* field) {
  if (l.size() > kMaxListItems) bad(std::string(field) + ": too many items");
}

inline void put_texts(capnp::List<capnp::Text>::Builder l, const std::vector<std::string>& v) {
  for (unsigned i = 0; i < l.size(); ++i) l.set(i, text_of(v[i]));
}
inline std::vector<std::string> get_texts(capnp::List<capnp::Text>::Reader l, const char* field) {
  check_list(l, field);
  std::vector<std::string> v;
  v.reserve(l.size());
  for (auto t : l) v.push_back(str(t));
  return v;
}

}  // namespace vow::transport::internal
