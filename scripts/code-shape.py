#!/usr/bin/env python3
"""Prints the shape of the crate's source: how many files, the largest,
the longest functions, and how many names lib.rs re-exports.

Usage: scripts/code-shape.py [REPO_DIR]   (default: the repository root)

Read as text: a function runs from its `fn` line to the closing brace at
the same indentation. Cycles and imports that run up a layer are checked
by tests/integration/layers.rs, not here.
"""
import os
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
src = os.path.join(root, "src")
files = []
for d, _, names in os.walk(src):
    files += [os.path.join(d, n) for n in names if n.endswith(".rs")]
sizes = sorted(((sum(1 for _ in open(f)), os.path.relpath(f, root)) for f in files), reverse=True)
top = [f for f in files if os.path.dirname(f) == src]
print(f"source files: {len(files)} ({len(top)} directly in src/, {len(files) - len(top)} in folders)")
print("largest files: " + ", ".join(f"{p} {n}" for n, p in sizes[:3]))

fns = []
fn_re = re.compile(r"^(\s*)(pub(\([a-z:]+\))? )?(const )?(async )?(unsafe )?fn (\w+)")
for f in files:
    lines = open(f).read().split("\n")
    for i, line in enumerate(lines):
        m = fn_re.match(line)
        if not m or line.rstrip().endswith(";"):
            continue
        indent = len(m.group(1))
        j = i
        while j < len(lines) and not lines[j].rstrip().endswith("{"):
            j += 1
        k = j + 1
        while k < len(lines) and not (
            lines[k].startswith(" " * indent + "}") and len(lines[k]) - len(lines[k].lstrip()) == indent
        ):
            k += 1
        fns.append((k - i + 1, f"{os.path.relpath(f, root)}:{i + 1} {m.group(7)}"))
fns.sort(reverse=True)
print("longest functions: " + ", ".join(f"{w} ({n} lines)" for n, w in fns[:5]))
print(f"functions over 120 lines: {sum(1 for n, _ in fns if n > 120)}")

lib = open(os.path.join(src, "lib.rs")).read()
names = 0
for m in re.finditer(r"^pub use [^;]*;", lib, re.M | re.S):
    body = m.group(0)
    inner = body[body.find("{") + 1 : body.rfind("}")] if "{" in body else body.split("::")[-1]
    names += sum(1 for item in inner.split(",") if item.strip().rstrip(";"))
print(f"names lib.rs re-exports: {names}")
