#!/usr/bin/env python3
"""The code-shape figures quoted in issue notes, for a checkout at DIR (default: this one).

- the largest production files (lines, `#[cfg(test)]` modules cut);
- the longest functions (brace matching, strings and comments blanked) and how many are over
  80 lines;
- the public items of a library crate: `pub` items and fields in the modules reachable from
  its lib.rs through `pub mod`.

Text heuristics, not a parser: good enough to compare two commits measured the same way.

    contrib/code-figures.py [DIR]
    git worktree add /tmp/old REV && contrib/code-figures.py /tmp/old
"""

import os
import re
import sys

PRODUCTION = ["storage/src", "transport/src", "cli/src"]
LIBRARIES = ["transport/src/lib.rs", "storage/src/lib.rs"]


def production_lines(path):
    lines = open(path, encoding="utf-8").read().split("\n")
    for i, line in enumerate(lines):
        if line.startswith("#[cfg(test)]"):
            return lines[:i]
    return lines


def rust_files(root):
    for dirpath, _, names in os.walk(root):
        for name in names:
            if name.endswith(".rs"):
                yield os.path.join(dirpath, name)


def functions(path):
    lines = production_lines(path)
    for start, line in enumerate(lines):
        match = re.match(r"\s*(pub(\([a-z]+\))? )?(async )?fn (\w+)", line)
        if not match:
            continue
        depth, opened = 0, False
        for end in range(start, len(lines)):
            text = re.sub(r'"([^"\\]|\\.)*"', '""', lines[end])
            text = re.sub(r"'.'", "''", text).split("//")[0]
            depth += text.count("{") - text.count("}")
            opened = opened or "{" in text
            if opened and depth <= 0:
                break
            if not opened and text.rstrip().endswith(";"):
                break
        if opened:
            yield end - start + 1, match.group(4)


def module_file(directory, name):
    for candidate in (os.path.join(directory, name + ".rs"), os.path.join(directory, name, "mod.rs")):
        if os.path.exists(candidate):
            return candidate
    return None


def public_items(path):
    count, children = 0, []
    for line in production_lines(path):
        child = re.match(r"\s*pub mod (\w+);", line)
        if child:
            children.append(child.group(1))
        if re.match(r"\s*pub (async fn|unsafe fn|fn|struct|enum|trait|const|static|type|use|mod)\b", line) \
                or re.match(r"\s*pub \w+:", line):
            count += 1
    directory = os.path.dirname(path)
    if not path.endswith(("mod.rs", "lib.rs")):
        directory = os.path.join(directory, os.path.basename(path)[:-3])
    for child in children:
        found = module_file(directory, child)
        if found:
            count += public_items(found)
    return count


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    files, funcs = [], []
    for part in PRODUCTION:
        for path in rust_files(os.path.join(root, part)):
            rel = os.path.relpath(path, root)
            files.append((len(production_lines(path)), rel))
            funcs.extend((n, f"{rel} {name}") for n, name in functions(path))
    files.sort(reverse=True)
    funcs.sort(reverse=True)
    print("largest production files:", ", ".join(f"{rel} {n}" for n, rel in files[:3]))
    print("longest functions:", ", ".join(f"{what} {n}" for n, what in funcs[:3]))
    print("functions over 80 lines:", sum(1 for n, _ in funcs if n > 80))
    for lib in LIBRARIES:
        path = os.path.join(root, lib)
        if os.path.exists(path):
            print(f"public items of {lib.split('/')[0]}:", public_items(path))


if __name__ == "__main__":
    main()
