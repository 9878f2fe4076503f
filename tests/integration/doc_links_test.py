#!/usr/bin/python3
"""What `meson install` puts in DATADIR/doc/vow is a set of documents whose links all
resolve where they are installed: every relative Markdown link, and every mention of
a document by its repository path (`docs/agent.md`), names an installed file; and the
systemd unit's Documentation= names an installed document. Reads the build's install
plan (meson-info/intro-install_plan.json), so nothing is installed.

usage: doc_links_test.py BUILD_DIR
"""
import json
import os
import re
import sys

DOCDIR = "{datadir}/doc/vow/"
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")
MENTION = re.compile(r"(?<![\w/.])((?:docs/[A-Za-z0-9_-]+|README|BENCHMARKS)\.md)\b")


def main():
    build = sys.argv[1]
    with open(os.path.join(build, "meson-info", "intro-install_plan.json")) as f:
        plan = json.load(f)
    installed = {}  # path under DOCDIR -> source file
    destinations = set()
    for section in plan.values():
        for source, entry in section.items():
            dest = entry["destination"]
            destinations.add(dest)
            if dest.startswith(DOCDIR):
                installed[dest[len(DOCDIR):]] = source
    problems = []
    docs = [p for p in installed if p.endswith(".md")]
    for want in ("README.md", "docs/operations.md", "docs/cli.md", "docs/config.md"):
        if want not in installed:
            problems.append(f"{want} is not installed")
    for rel in sorted(docs):
        with open(installed[rel], encoding="utf-8") as f:
            text = f.read()
        here = os.path.dirname(rel)
        for m in LINK.finditer(text):
            target = m.group(1)
            if re.match(r"^[a-z]+:", target):
                continue  # http:, https:, mailto:
            resolved = os.path.normpath(os.path.join(here, target))
            if resolved not in installed:
                problems.append(f"{rel}: link to {target} ({resolved}) is not installed")
        for m in MENTION.finditer(text):
            if m.group(1) not in installed:
                problems.append(f"{rel}: mentions {m.group(1)}, which is not installed")
    unit = os.path.join(build, "agent", "vowd.service")
    with open(unit) as f:
        for line in f:
            if line.startswith("Documentation="):
                for ref in line.split("=", 1)[1].split():
                    if ref.startswith("file://"):
                        path = ref[len("file://"):]
                        if not any(path.endswith("/doc/vow/" + p) for p in installed):
                            problems.append(f"vowd.service: Documentation {ref} is not installed")
    for p in problems:
        print(f"FAIL: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"{len(docs)} installed documents, every link resolves")


if __name__ == "__main__":
    main()
