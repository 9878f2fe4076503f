// The web view: a read-only page of the mesh (pipelines as graphs, a stage's jobs, a
// job's log tail, a result's lineage and its verification, the agents), served by the
// agent's HTTP listener ([agent] http, agent/http.h) from assets compiled into the
// binary (agent/web/), and the JSON it reads under /api/ (docs/cli.md, "The web view").
//
// The HTTP threads never touch the daemon: each /api/ request is one control request
// (web_pipelines, web_stage, job, lineage, web_verify, web_mesh) sent over the agent's own
// control socket, answered by the loop thread like any `vow` command (control.cc,
// web_queries.cc).
//
// Access: when the listener is bound to a loopback address and no token is set, anyone on
// the host may look. With [agent] http_token_file every path but /metrics, /healthz and
// /readyz asks for the token: `Authorization: Bearer TOKEN`, the cookie it sets, or
// `?token=TOKEN` (answered with the cookie and a redirect to the same page without it).
// Bound beyond loopback without a token, the web view and its API are refused (403) and
// /metrics, /api/status and the probes are served as before.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "promises/pipeline.h"
#include "promises/status.h"

namespace httplib {
class Server;
}

namespace vow::agent {

// A file of the page, compiled in (web_assets.cc, generated from agent/web/).
struct WebAsset {
  std::string_view path;  // "/", "/app.js", ...
  std::string_view content_type;
  std::string_view body;
};
const WebAsset* web_asset(std::string_view path);            // "/" is "/index.html"
const WebAsset* web_asset_generated(std::string_view path);  // by file name only

struct WebOptions {
  std::string control_endpoint;  // where the loop answers control requests
  std::string token;             // empty: no token asked (loopback only)
  bool beyond_loopback = false;  // the listener is reachable from other hosts
  int answer_timeout_ms = 10'000;
};

// The name of the cookie holding the token.
inline constexpr std::string_view kWebTokenCookie = "vow_token";
// Page size of a stage's jobs, and its ceiling.
inline constexpr int kWebPageJobs = 100;
inline constexpr int kWebMaxPageJobs = 1000;

// Whether HOST:PORT binds to loopback only (127.0.0.0/8, ::1, localhost).
bool is_loopback_http(std::string_view address);

// Reads the token of [agent] http_token_file (`path` already resolved): one line of
// 16-4096 characters from A-Z a-z 0-9 . _ ~ + / = -. Errors name `where` (the key's
// FILE:LINE:COLUMN) and the file.
Result<std::string> read_http_token(const std::string& path, const promises::Location& where);

// Adds the page, its assets, the /api/ routes and the token check to `server`.
void add_web_routes(httplib::Server& server, const WebOptions& options);

}  // namespace vow::agent
