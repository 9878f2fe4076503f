#!/usr/bin/env python3
"""Recomputes the stage and pipeline digests of a pipeline file from docs/identity.md
alone (Python's own TOML parser and BLAKE2b), and checks that `vow check --json` agrees:
the encodings are specified precisely enough for another implementation.

    identity_check.py VOW_BINARY PIPELINE_FILE...
"""
import hashlib
import json
import struct
import subprocess
import sys
import tomllib


def field(data):
    if isinstance(data, str):
        data = data.encode()
    return struct.pack('<Q', len(data)) + data


def count(n):
    return field(str(n))


def digest(data):
    return hashlib.blake2b(data, digest_size=32).hexdigest()


def canonical_stage(s):
    out = field('vow-stage-v1') + field(s['name'])
    run = s['run']
    form, argv = ('shell', ['/bin/sh', '-c', run]) if isinstance(run, str) else ('argv', run)
    out += field(form) + count(len(argv)) + b''.join(field(a) for a in argv)
    inputs = sorted(x.encode() for x in s.get('inputs', []))
    out += count(len(inputs)) + b''.join(field(x) for x in inputs)
    outputs = sorted(x.encode() for x in s['outputs'])
    out += count(len(outputs)) + b''.join(field(x) for x in outputs)
    env = sorted((k.encode(), v.encode()) for k, v in s.get('env', {}).items())
    out += count(len(env)) + b''.join(field(k) + field(v) for k, v in env)
    return out + field(s.get('foreach', ''))


def canonical_pipeline(doc):
    sources = sorted(x['name'].encode() for x in doc.get('source', []))
    out = field('vow-pipeline-v1') + field(doc['pipeline']['name'])
    out += count(len(sources)) + b''.join(field(x) for x in sources)
    stages = sorted(doc['stage'], key=lambda s: s['name'].encode())
    return out + count(len(stages)) + b''.join(field(canonical_stage(s)) for s in stages)


def main():
    vow, files = sys.argv[1], sys.argv[2:]
    failures = 0
    for path in files:
        with open(path, 'rb') as f:
            doc = tomllib.load(f)
        out = subprocess.run([vow, 'check', '--json', path], capture_output=True, check=True)
        (pipeline,) = json.loads(out.stdout)['pipelines']
        want = {s['name']: digest(canonical_stage(s)) for s in doc['stage']}
        for s in pipeline['stages']:
            if want[s['name']] != s['digest']:
                print(f'{path}: stage {s["name"]}: vow says {s["digest"]}, '
                      f'docs/identity.md gives {want[s["name"]]}')
                failures += 1
        if digest(canonical_pipeline(doc)) != pipeline['digest']:
            print(f'{path}: pipeline digest differs')
            failures += 1
        print(f'{path}: {len(want)} stage digests and the pipeline digest checked')
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
