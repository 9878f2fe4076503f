// What `vow --version` and `vowd --version` print: the release, and the versions a
// mixed mesh must agree on (the wire protocol, docs/protocol.md) or that an upgrade
// migrates (the SQLite ledger schema, docs/storage.md).
#pragma once

#include <string>
#include <string_view>

namespace vow::agent {

// "vow 0.1.0 (protocol 1, ledger schema 1)".
std::string version_text(std::string_view program);

}  // namespace vow::agent
