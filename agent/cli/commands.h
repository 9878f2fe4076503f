// The subcommands of the `vow` command-line tool, one file each (agent/cli/<name>.cc).
// Each adds itself to the app; its callback does the work and ends a failed run by
// throwing CLI::RuntimeError(exit_code), which vow_main.cc turns into the exit status.
//
// Exit status: 0 success, 1 the command ran and found a problem (e.g. config errors),
// 2 bad arguments (usage printed).
#pragma once

#include <CLI/CLI.hpp>

namespace vow::agent::cli {

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
// vow wait PIPELINE[/STAGE] [--timeout D]: 0 done, 1 a job failed, 2 timeout, 3 unknown.
void add_wait_command(CLI::App& app);
// vow retry JOB|PIPELINE/STAGE: run failed jobs again (a signed Retry by the agent).
void add_retry_command(CLI::App& app);
// vow verify [--state-dir DIR]: every signature and lineage link, offline or live.
void add_verify_command(CLI::App& app);
// vow jobs, job, peers, promises, lineage, why: read-only queries (query.cc).
void add_query_commands(CLI::App& app);
// vow get ARTIFACT -o PATH: fetch, verify and materialize an artifact.
void add_get_command(CLI::App& app);
// vow attest ARTIFACT -o FILE: the in-toto bundle behind a result and its keys.
void add_attest_command(CLI::App& app);
// vow diff A B [--json|--dot]: what differs between the lineages of two results.
void add_diff_command(CLI::App& app);

}  // namespace vow::agent::cli
