// Writing forged frames for the chaos tests' hostile peers (forge.cc, bind_forge.cc):
// one file per frame, DIR/<name>.frame, each exactly the bytes of one ZeroMQ frame.
#pragma once

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <system_error>

namespace vow::chaos {

// Writes every frame; returns an error sentence, or "" when all were written.
inline std::string write_frames(const std::string& dir,
                                const std::map<std::string, std::string>& frames) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return "create " + dir + ": " + ec.message();
  for (const auto& [name, bytes] : frames) {
    std::string path = dir + "/" + name + ".frame";
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) return "write " + path;
  }
  return "";
}

}  // namespace vow::chaos
