// The subcommands of the `vow` command-line tool, one file each (agent/cli/<name>.cc).
// Each adds itself to the app; its callback does the work and ends a failed run by
// throwing CLI::RuntimeError(exit_code), which vow_main.cc turns into the exit status.
//
// Exit status (docs/cli.md): the same meaning for every command.
#pragma once

#include <CLI/CLI.hpp>

namespace vow::agent::cli {

inline constexpr int kExitOk = 0;
// The command ran and found a problem: the agent refused, a job failed, a check failed.
inline constexpr int kExitFailed = 1;
// Bad arguments: what is wrong and a usage line on stderr.
inline constexpr int kExitUsage = 2;
// What was named (pipeline, stage, job, artifact) does not exist.
inline constexpr int kExitNotFound = 3;
// A deadline passed first (`vow wait --timeout`, `vow get --timeout`).
inline constexpr int kExitTimeout = 4;

// vow check FILE... [--json]: validate pipeline and agent files together.
void add_check_command(CLI::App& app);
// vow graph FILE... [--dot]: draw the pipelines' DAGs as text or Graphviz DOT.
void add_graph_command(CLI::App& app);
// vow fsck --state-dir DIR: check a state directory's artifacts and ledger offline.
void add_fsck_command(CLI::App& app);
// vow keys gen|show: an agent's identity, or a client key.
void add_keys_command(CLI::App& app);
// vow status [--json]: agents, pipelines, jobs by state, rejected messages.
void add_status_command(CLI::App& app);
// vow wait PIPELINE[/STAGE] [--timeout D]: 0 done, 1 a job failed, 3 unknown, 4 timeout.
void add_wait_command(CLI::App& app);
// vow retry JOB|PIPELINE/STAGE: run failed jobs again (a signed Retry by the agent).
void add_retry_command(CLI::App& app);
// vow gc [--dry-run]: remove from the agent's store what its retention policy drops.
void add_gc_command(CLI::App& app);
// vow verify [--state-dir DIR]: every signature and lineage link, offline or live.
void add_verify_command(CLI::App& app);
// vow jobs, job, peers, promises, lineage, why: read-only queries (query.cc).
void add_query_commands(CLI::App& app);
// vow get ARTIFACT -o PATH: fetch, verify and materialize an artifact (-o -: stdout).
void add_get_command(CLI::App& app);
// vow attest ARTIFACT -o FILE: the in-toto bundle behind a result and its keys.
void add_attest_command(CLI::App& app);
// vow diff A B [--json|--dot]: what differs between the lineages of two results.
void add_diff_command(CLI::App& app);

}  // namespace vow::agent::cli
