#!/usr/bin/env python3
"""Top-level module dependencies of the sluice crate, and any cycles among them.

Usage: python3 scripts/module-deps.py [--graph]
Exits 1 if two top-level modules depend on each other (directly or through others).
A dependency is any `crate::<module>` path in a module's files (tests included:
a test may only use what its module could).
"""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def top_module(rel):
    parts = rel.split(os.sep)
    name = parts[0][:-3] if parts[0].endswith(".rs") else parts[0]
    return None if name in ("lib", "main") else name


def uses(text):
    # Strip comments so prose mentioning `crate::x` does not count.
    text = re.sub(r"//[^\n]*", "", text)
    found = set(re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", text))
    # Grouped imports: `use crate::{a, b::c, d::{e}}`.
    for group in re.findall(r"\bcrate::\{([^;]*)\}\s*;", text):
        depth = 0
        item = ""
        for ch in group:
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                found.add(item.strip().split("::")[0])
                item = ""
                continue
            item += ch if depth == 0 else ""
        if item.strip():
            found.add(item.strip().split("::")[0])
    return {f for f in found if f}


def graph():
    deps = {}
    for root, _, files in os.walk(SRC):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(root, f)
            module = top_module(os.path.relpath(path, SRC))
            if module is None:
                continue
            with open(path, encoding="utf-8") as fh:
                deps.setdefault(module, set()).update(uses(fh.read()) - {module})
    return deps


def cycles(deps):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(deps.get(v, ())):
            if w not in deps:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(deps):
        if v not in index:
            visit(v)
    return out


def main():
    deps = graph()
    if "--graph" in sys.argv:
        for m in sorted(deps):
            print(f"{m} -> {', '.join(sorted(d for d in deps[m] if d in deps))}")
    found = cycles(deps)
    for comp in found:
        print("cycle:", " ".join(comp))
        for m in comp:
            inside = sorted(d for d in deps[m] if d in comp)
            print(f"  {m} -> {', '.join(inside)}")
    if found:
        sys.exit(1)
    print(f"no cycles among {len(deps)} top-level modules")


if __name__ == "__main__":
    main()
