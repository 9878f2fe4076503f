#include "agent/web.h"

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

namespace vow::agent {
namespace {

std::string temp_file(const std::string& content) {
  char path[] = "/tmp/vow-web-test-XXXXXX";
  int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  ::close(fd);
  std::ofstream(path, std::ios::binary) << content;
  return path;
}

promises::Location where() { return {"agent.toml", 7, 19}; }

}  // namespace

TEST_CASE("web: which addresses are loopback") {
  CHECK(is_loopback_http("127.0.0.1:9464"));
  CHECK(is_loopback_http("127.1.2.3:80"));
  CHECK(is_loopback_http("localhost:9464"));
  CHECK(is_loopback_http("[::1]:9464"));
  CHECK_FALSE(is_loopback_http("0.0.0.0:9464"));
  CHECK_FALSE(is_loopback_http("[::]:9464"));
  CHECK_FALSE(is_loopback_http("10.1.2.3:9464"));
  CHECK_FALSE(is_loopback_http("127example.org:80"));
  CHECK_FALSE(is_loopback_http("127.example.org:80"));
  CHECK_FALSE(is_loopback_http("node-a:9464"));
}

TEST_CASE("web: the token file") {
  std::string good = temp_file("c2VjcmV0LXRva2VuLWZvci10ZXN0cw==\n");
  auto t = read_http_token(good, where());
  REQUIRE(t.is_ok());
  CHECK(*t == "c2VjcmV0LXRva2VuLWZvci10ZXN0cw==");

  auto missing = read_http_token("/nonexistent/web.token", where());
  REQUIRE_FALSE(missing.is_ok());
  CHECK(missing.status().message() ==
        "agent.toml:7:19: http_token_file '/nonexistent/web.token': cannot read: No such file "
        "or directory");

  std::string short_token = temp_file("abc\n");
  auto s = read_http_token(short_token, where());
  REQUIRE_FALSE(s.is_ok());
  CHECK(s.status().message().find("agent.toml:7:19: http_token_file '" + short_token +
                                  "': the token must be 16-4096 characters, not 3") == 0);

  std::string spaced = temp_file("a token with spaces in it\n");
  auto sp = read_http_token(spaced, where());
  REQUIRE_FALSE(sp.is_ok());
  CHECK(sp.status().message().find("holds a character other than") != std::string::npos);

  std::string two = temp_file("0123456789abcdef\n0123456789abcdef\n");
  auto tw = read_http_token(two, where());
  REQUIRE_FALSE(tw.is_ok());
  CHECK(tw.status().message().find("more than one line") != std::string::npos);

  for (const auto& p : {good, short_token, spaced, two}) ::unlink(p.c_str());
}

TEST_CASE("web: the page's files are compiled in") {
  const WebAsset* index = web_asset("/");
  REQUIRE(index != nullptr);
  CHECK(index->content_type == "text/html; charset=utf-8");
  CHECK(index->body.find("app.js") != std::string_view::npos);
  CHECK(web_asset("/index.html") == index);
  const WebAsset* js = web_asset("/app.js");
  REQUIRE(js != nullptr);
  CHECK(js->content_type == "text/javascript; charset=utf-8");
  CHECK(js->body.find("api(\"pipelines\")") != std::string_view::npos);
  REQUIRE(web_asset("/app.css") != nullptr);
  CHECK(web_asset("/nope.js") == nullptr);
  CHECK(web_asset("/../meson.build") == nullptr);
}

}  // namespace vow::agent
