#!/usr/bin/env python3
"""Fails when modules inside a crate depend on each other in a cycle.

A module (a file under `src/`, binaries aside) depends on another when its code, outside
comments and its `#[cfg(test)] mod tests`, names a `crate::` or `super::` path into it. A
module's own ancestors and descendants do not count: a parent declares its children, and
children use their parent's items. Every strongly connected group of two or more modules is
printed; the exit code is 1 when there is one.

Cargo has no such check, and the graph is small enough that reading `use` paths is exact for
this code base (it does not glob-import sibling modules).
"""

import os
import re
import sys

CRATES = ["idns-core", "idns-probe", "idns-dns", "idns-replication", "examples"]
PATH = re.compile(r"\b((?:crate|super)(?:::\w+)+)")


def module_of(src, path):
    parts = os.path.relpath(path, src)[:-3].split(os.sep)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return tuple(parts)


def related(a, b):
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def graph(src):
    files = []
    for d, _, names in os.walk(src):
        if os.sep + "bin" in d:
            continue
        files += [os.path.join(d, n) for n in names if n.endswith(".rs")]
    mods = {module_of(src, f): f for f in files}
    edges = {m: set() for m in mods}
    for m, f in mods.items():
        text = open(f, encoding="utf-8").read()
        text = re.split(r"#\[cfg\(test\)\]\s*mod tests", text)[0]
        text = "\n".join(l for l in text.split("\n") if not l.strip().startswith("//"))
        own_dir = f.endswith(("mod.rs", "lib.rs"))
        for p in PATH.findall(text):
            parts = p.split("::")
            if parts[0] == "crate":
                target = parts[1:]
            else:
                base = list(m) if own_dir else list(m[:-1])
                rest = parts[1:]
                while rest and rest[0] == "super":
                    base, rest = base[:-1], rest[1:]
                target = base + rest
            while target and tuple(target) not in mods:
                target = target[:-1]
            t = tuple(target)
            if t in mods and not related(t, m):
                edges[m].add(t)
    return edges


def cycles(edges):
    """Tarjan's strongly connected components of two or more nodes."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10_000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    found = False
    for crate in CRATES:
        for comp in cycles(graph(os.path.join(root, crate, "src"))):
            found = True
            names = ", ".join("::".join(m) or "lib" for m in comp)
            print(f"{crate}: modules in a cycle: {names}")
    if not found:
        print(f"ok: no module cycle in {', '.join(CRATES)}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
