// Not a public header: the codec's zero-copy frame encoding, for link.cc only (it
// exposes Cap'n Proto types, which stay inside transport/*.cc).
#pragma once

#include <capnp/common.h>
#include <kj/array.h>

#include "promises/status.h"
#include "transport/message.h"

namespace vow::transport::internal {

// The frame of `message` as aligned words (standard framing), sized so that a large
// message (a chunk, a ledger batch) is built in one segment and copied once.
Result<kj::Array<capnp::word>> encode_message_words(const Message& message);

}  // namespace vow::transport::internal
