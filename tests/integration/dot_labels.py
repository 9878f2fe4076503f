"""The label text a reader sees in a Graphviz drawing of DOT written by `vow graph --dot`
and `vow lineage --dot`.

labels(dot) reads every `label="..."` the way Graphviz does: the lexer turns \\" into a
quote, then the label renderer turns \\n, \\l and \\r into line breaks and \\\\ into one
backslash (\\N, \\G, \\E, \\T, \\H, \\L are names Graphviz substitutes: shown as <name>).
rendered_texts(dot) runs Graphviz itself (`dot -Tsvg`) when it is installed and
returns the lines of text in the drawing, else None.

usage as a script: dot_labels.py < DOT   prints one JSON list of labels (lists of lines).
"""
import json
import re
import shutil
import subprocess
import sys

LABEL = re.compile(r'label="((?:[^"\\]|\\.)*)"', re.S)


def render(quoted_body):
    text = []
    i = 0
    while i < len(quoted_body):
        c = quoted_body[i]
        if c == "\\" and i + 1 < len(quoted_body):
            e = quoted_body[i + 1]
            i += 2
            if e in "nlr":
                text.append("\n")
            elif e in "NGETHL":
                text.append("<name>")
            elif e == "\n":
                pass
            else:
                text.append(e)
            continue
        text.append(c)
        i += 1
    return "".join(text)


def labels(dot):
    return [render(m.group(1)).split("\n") for m in LABEL.finditer(dot)]


def rendered_texts(dot):
    exe = shutil.which("dot")
    if not exe:
        return None
    svg = subprocess.run([exe, "-Tsvg"], input=dot, capture_output=True, text=True,
                         check=True).stdout
    import html
    return [html.unescape(t) for t in re.findall(r"<text[^>]*>([^<]*)</text>", svg)]


if __name__ == "__main__":
    text = sys.stdin.read()
    print(json.dumps({"labels": labels(text), "rendered": rendered_texts(text)}))
