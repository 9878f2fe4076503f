// Baselines for the end-to-end agent benchmarks run by bench/run (BENCHMARKS.md).
// Each subcommand measures the bare cost a vow figure is compared with, in the same run,
// and prints one JSON object per line (bench/run parses them):
//
//   baselines rtt [--iterations N] [--bytes N]
//       Two ZeroMQ hops plus one signature and one verification: thread A signs a
//       statement-sized message (Ed25519), sends it over a CurveZMQ DEALER -> ROUTER link
//       on loopback TCP to thread B (each with its own ZeroMQ context, as two agents),
//       B verifies it and answers with a small ack; A times the round trip. The
//       hand-off latency baseline.
//   baselines spawn [--seconds S] -- PROGRAM [ARGS...]
//       posix_spawn of PROGRAM and waitpid, in a loop: spawns per second. The job
//       throughput baseline.
//   baselines start STAMP DIR [--iterations N]
//       posix_spawn of STAMP (bench/stamp) writing its start stamp to a log in DIR, and
//       waitpid, in a loop: from the wall clock read just before posix_spawn to the
//       clock the new process reads first thing, p50 and p99. What starting a process
//       costs this machine at least: the floor under the hand-off latency, whose end is
//       that same reading.
//   baselines blake2b FILE [--runs N]
//       BLAKE2b-256 (libsodium, through vow's Hasher, 256 KiB updates) of the file's
//       bytes already in memory, on one core: MB/s per run. The artifact hand-off
//       baseline.
//   baselines fsync DIR [--iterations N]
//       Appends 4 KiB to a file in DIR and fdatasyncs it (what a SQLite WAL commit
//       costs at least), and writes a new 4 KiB file, fsyncs it, renames it into a
//       subdirectory and fsyncs that (what installing a small object costs): p50 and
//       p99 of each. Not a target's baseline: it tells how much of a figure is the disk.
#include <fcntl.h>
#include <sodium.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "promises/digest.h"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "baselines: %s\n", what.c_str());
  std::exit(1);
}

void check_zmq(int rc, const char* what) {
  if (rc != 0) die(std::string(what) + ": " + zmq_strerror(zmq_errno()));
}

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  std::size_t i = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

// ---- rtt ----

int run_rtt(int iterations, std::size_t bytes) {
  unsigned char sign_pk[crypto_sign_PUBLICKEYBYTES], sign_sk[crypto_sign_SECRETKEYBYTES];
  crypto_sign_keypair(sign_pk, sign_sk);
  unsigned char a_pk[32], a_sk[32], b_pk[32], b_sk[32];
  crypto_box_keypair(a_pk, a_sk);
  crypto_box_keypair(b_pk, b_sk);

  void* ctx_b = zmq_ctx_new();
  void* router = zmq_socket(ctx_b, ZMQ_ROUTER);
  int one = 1;
  check_zmq(zmq_setsockopt(router, ZMQ_CURVE_SERVER, &one, sizeof(one)), "CURVE_SERVER");
  check_zmq(zmq_setsockopt(router, ZMQ_CURVE_SECRETKEY, b_sk, 32), "CURVE_SECRETKEY");
  check_zmq(zmq_bind(router, "tcp://127.0.0.1:*"), "bind");
  char endpoint[256];
  std::size_t len = sizeof(endpoint);
  check_zmq(zmq_getsockopt(router, ZMQ_LAST_ENDPOINT, endpoint, &len), "LAST_ENDPOINT");

  std::thread b([&] {
    // B: verify every message, ack it; a message of one byte ends the loop.
    std::vector<unsigned char> buf(bytes + crypto_sign_BYTES + 64);
    char peer[256];
    for (;;) {
      int pn = zmq_recv(router, peer, sizeof(peer), 0);
      int n = zmq_recv(router, buf.data(), buf.size(), 0);
      if (pn < 0 || n < 0) die("recv at B");
      if (n == 1) break;
      if (static_cast<std::size_t>(n) < crypto_sign_BYTES) die("short message");
      std::size_t body = static_cast<std::size_t>(n) - crypto_sign_BYTES;
      bool ok = crypto_sign_verify_detached(buf.data() + body, buf.data(), body, sign_pk) == 0;
      char ack = ok ? 'y' : 'n';
      zmq_send(router, peer, static_cast<std::size_t>(pn), ZMQ_SNDMORE);
      zmq_send(router, &ack, 1, 0);
    }
  });

  void* ctx_a = zmq_ctx_new();
  void* dealer = zmq_socket(ctx_a, ZMQ_DEALER);
  check_zmq(zmq_setsockopt(dealer, ZMQ_CURVE_SERVERKEY, b_pk, 32), "CURVE_SERVERKEY");
  check_zmq(zmq_setsockopt(dealer, ZMQ_CURVE_PUBLICKEY, a_pk, 32), "CURVE_PUBLICKEY");
  check_zmq(zmq_setsockopt(dealer, ZMQ_CURVE_SECRETKEY, a_sk, 32), "CURVE_SECRETKEY");
  check_zmq(zmq_connect(dealer, endpoint), "connect");

  std::vector<unsigned char> msg(bytes + crypto_sign_BYTES);
  randombytes_buf(msg.data(), bytes);
  std::vector<double> rtt_us;
  int warmup = std::max(10, iterations / 20);
  for (int i = 0; i < warmup + iterations; ++i) {
    std::memcpy(msg.data(), &i, sizeof(i));  // a new message each time
    auto t0 = Clock::now();
    crypto_sign_detached(msg.data() + bytes, nullptr, msg.data(), bytes, sign_sk);
    if (zmq_send(dealer, msg.data(), msg.size(), 0) < 0) die("send at A");
    char ack = 0;
    if (zmq_recv(dealer, &ack, 1, 0) != 1 || ack != 'y') die("bad ack");
    double us = seconds_since(t0) * 1e6;
    if (i >= warmup) rtt_us.push_back(us);
  }
  char end = 'x';
  zmq_send(dealer, &end, 1, 0);
  b.join();
  int linger = 0;
  zmq_setsockopt(dealer, ZMQ_LINGER, &linger, sizeof(linger));
  zmq_setsockopt(router, ZMQ_LINGER, &linger, sizeof(linger));
  zmq_close(dealer);
  zmq_close(router);
  zmq_ctx_term(ctx_a);
  zmq_ctx_term(ctx_b);
  std::printf(
      "{\"figure\": \"rtt\", \"bytes\": %zu, \"n\": %zu, \"p50_us\": %.1f, "
      "\"p99_us\": %.1f, \"min_us\": %.1f, \"max_us\": %.1f}\n",
      bytes, rtt_us.size(), percentile(rtt_us, 0.5), percentile(rtt_us, 0.99),
      percentile(rtt_us, 0.0), percentile(rtt_us, 1.0));
  return 0;
}

// ---- spawn ----

int run_spawn(double seconds, std::vector<char*> argv) {
  argv.push_back(nullptr);
  std::size_t n = 0;
  auto t0 = Clock::now();
  while (seconds_since(t0) < seconds) {
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ);
    if (rc != 0) die(std::string("posix_spawn: ") + std::strerror(rc));
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) die("waitpid");
    ++n;
  }
  double secs = seconds_since(t0);
  // CPU of this loop and of the children, per spawn: what one bare job costs.
  auto cpu_s = [](int who) {
    rusage ru{};
    getrusage(who, &ru);
    return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  };
  double cpu = cpu_s(RUSAGE_SELF) + cpu_s(RUSAGE_CHILDREN);
  std::printf(
      "{\"figure\": \"spawn\", \"n\": %zu, \"seconds\": %.3f, \"per_s\": %.1f, "
      "\"cpu_ms_per_spawn\": %.3f}\n",
      n, secs, static_cast<double>(n) / secs, 1000.0 * cpu / static_cast<double>(n));
  return 0;
}

// ---- start ----

int run_start(const std::string& stamp, const std::string& dir, int iterations) {
  std::string log = dir + "/vow-bench-start.stamps";
  (void)::unlink(log.c_str());
  std::vector<char*> argv = {const_cast<char*>(stamp.c_str()), const_cast<char*>(log.c_str()),
                             nullptr};
  std::vector<double> us;
  for (int i = 0; i < iterations; ++i) {
    timespec t0{};
    clock_gettime(CLOCK_REALTIME, &t0);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ);
    if (rc != 0) die(std::string("posix_spawn: ") + std::strerror(rc));
    int status = 0;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      die(stamp + " failed");
    }
    std::ifstream in(log);
    std::string line, last;
    while (std::getline(in, line)) last = line;
    long long ns = std::atoll(last.c_str());
    if (ns <= 0) die("no stamp in " + log);
    us.push_back(static_cast<double>(ns - (t0.tv_sec * 1000000000LL + t0.tv_nsec)) / 1000.0);
  }
  (void)::unlink(log.c_str());
  std::printf("{\"figure\": \"start\", \"n\": %zu, \"p50_us\": %.1f, \"p99_us\": %.1f}\n",
              us.size(), percentile(us, 0.5), percentile(us, 0.99));
  return 0;
}

// ---- blake2b ----

int run_blake2b(const std::string& path, int runs) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) die("cannot read " + path);
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(in.tellg()));
  in.seekg(0);
  if (!in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()))) {
    die("cannot read " + path);
  }
  constexpr std::size_t kChunk = 256 << 10;
  for (int r = 0; r < runs; ++r) {
    auto t0 = Clock::now();
    vow::Hasher h;
    for (std::size_t at = 0; at < bytes.size(); at += kChunk) {
      std::size_t n = std::min(kChunk, bytes.size() - at);
      h.update(std::span<const std::uint8_t>(bytes.data() + at, n));
    }
    vow::Digest d = h.finish();
    double secs = seconds_since(t0);
    std::printf(
        "{\"figure\": \"blake2b\", \"bytes\": %zu, \"seconds\": %.4f, \"mb_s\": %.1f, "
        "\"digest\": \"%s\"}\n",
        bytes.size(), secs, static_cast<double>(bytes.size()) / 1e6 / secs, d.hex().c_str());
  }
  return 0;
}

// ---- fsync ----

int run_fsync(const std::string& dir, int iterations) {
  std::string path = dir + "/vow-bench-fsync.tmp";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) die("cannot create " + path + ": " + std::strerror(errno));
  std::vector<char> block(4096, 'x');
  std::vector<double> us;
  for (int i = 0; i < iterations; ++i) {
    auto t0 = Clock::now();
    if (::write(fd, block.data(), block.size()) != static_cast<ssize_t>(block.size())) {
      die("write " + path);
    }
    if (::fdatasync(fd) != 0) die("fdatasync " + path);
    us.push_back(seconds_since(t0) * 1e6);
  }
  ::close(fd);
  ::unlink(path.c_str());
  std::string objects = dir + "/vow-bench-objects";
  ::mkdir(objects.c_str(), 0700);
  std::vector<double> install_us;
  for (int i = 0; i < iterations; ++i) {
    std::string tmp = dir + "/vow-bench-obj.tmp";
    std::string dest = objects + "/obj-" + std::to_string(i);
    auto t0 = Clock::now();
    int f = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
    if (f < 0 || ::write(f, block.data(), block.size()) != static_cast<ssize_t>(block.size()) ||
        ::fsync(f) != 0 || ::close(f) != 0 || ::rename(tmp.c_str(), dest.c_str()) != 0) {
      die("install " + dest + ": " + std::strerror(errno));
    }
    int d = ::open(objects.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d < 0 || ::fsync(d) != 0) die("fsync " + objects);
    ::close(d);
    install_us.push_back(seconds_since(t0) * 1e6);
  }
  for (int i = 0; i < iterations; ++i) ::unlink((objects + "/obj-" + std::to_string(i)).c_str());
  ::rmdir(objects.c_str());
  std::printf(
      "{\"figure\": \"fsync\", \"n\": %zu, \"p50_us\": %.1f, \"p99_us\": %.1f, "
      "\"install_p50_us\": %.1f, \"install_p99_us\": %.1f}\n",
      us.size(), percentile(us, 0.5), percentile(us, 0.99), percentile(install_us, 0.5),
      percentile(install_us, 0.99));
  return 0;
}

int usage() {
  std::fprintf(stderr,
               "usage: baselines rtt [--iterations N] [--bytes N]\n"
               "       baselines spawn [--seconds S] -- PROGRAM [ARGS...]\n"
               "       baselines start STAMP DIR [--iterations N]\n"
               "       baselines blake2b FILE [--runs N]\n"
               "       baselines fsync DIR [--iterations N]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (sodium_init() < 0) return 1;
  if (argc < 2) return usage();
  std::string cmd = argv[1];
  if (cmd == "rtt") {
    int iterations = 2000;
    std::size_t bytes = 552;  // a signed `result` statement (transport_bench)
    for (int i = 2; i + 1 < argc; i += 2) {
      std::string k = argv[i];
      if (k == "--iterations") {
        iterations = std::atoi(argv[i + 1]);
      } else if (k == "--bytes") {
        bytes = std::strtoull(argv[i + 1], nullptr, 10);
      } else {
        return usage();
      }
    }
    if (iterations < 1 || bytes < 8) return usage();
    return run_rtt(iterations, bytes);
  }
  if (cmd == "spawn") {
    double seconds = 5;
    int i = 2;
    for (; i < argc && std::strcmp(argv[i], "--") != 0; i += 2) {
      if (i + 1 >= argc || std::strcmp(argv[i], "--seconds") != 0) return usage();
      seconds = std::atof(argv[i + 1]);
    }
    if (i + 1 >= argc) return usage();
    return run_spawn(seconds, std::vector<char*>(argv + i + 1, argv + argc));
  }
  if (cmd == "start") {
    if (argc < 4) return usage();
    int iterations = 500;
    for (int i = 4; i + 1 < argc; i += 2) {
      if (std::strcmp(argv[i], "--iterations") != 0) return usage();
      iterations = std::atoi(argv[i + 1]);
    }
    if (iterations < 1) return usage();
    return run_start(argv[2], argv[3], iterations);
  }
  if (cmd == "blake2b") {
    if (argc < 3) return usage();
    int runs = 3;
    for (int i = 3; i + 1 < argc; i += 2) {
      if (std::strcmp(argv[i], "--runs") != 0) return usage();
      runs = std::atoi(argv[i + 1]);
    }
    return run_blake2b(argv[2], std::max(1, runs));
  }
  if (cmd == "fsync") {
    if (argc < 3) return usage();
    int iterations = 200;
    for (int i = 3; i + 1 < argc; i += 2) {
      if (std::strcmp(argv[i], "--iterations") != 0) return usage();
      iterations = std::atoi(argv[i + 1]);
    }
    return run_fsync(argv[2], std::max(1, iterations));
  }
  return usage();
}
