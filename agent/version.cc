#include "agent/version.h"

#include "agent/vow_version.h"
#include "store/sqlite_ledger.h"
#include "transport/message.h"

namespace vow::agent {

std::string version_text(std::string_view program) {
  return std::string(program) + " " + VOW_VERSION + " (protocol " +
         std::to_string(transport::kProtocolVersion) + ", ledger schema " +
         std::to_string(store::kSchemaVersion) + ")";
}

}  // namespace vow::agent
