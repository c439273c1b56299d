#!/usr/bin/env python3
"""Folds `perf script` output (stdin) into one line per stack ("a;b;c count"), and draws the
folded stacks as a flamegraph SVG. usage: perf script | flame.py OUT.folded OUT.svg"""

import html
import sys
from collections import Counter

WIDTH, ROW = 1200, 16


def fold(lines):
    """perf script prints a header line per sample (thread name first), then its frames from
    the leaf down to the root, then a blank line."""
    stacks, thread, frames = Counter(), None, []

    def flush():
        if thread is not None:
            stacks[";".join([thread] + list(reversed(frames)))] += 1

    for line in lines:
        line = line.rstrip()
        if not line:
            flush()
            thread, frames = None, []
        elif line.startswith((" ", "\t")):
            parts = line.split(None, 1)
            name = parts[1] if len(parts) > 1 else parts[0]
            frames.append(name.split(" (")[0].split("+0x")[0])
        else:
            thread, frames = line.split()[0], []
    flush()
    return stacks


def tree(stacks):
    root = {"n": 0, "c": {}}
    for stack, count in stacks.items():
        node = root
        node["n"] += count
        for frame in stack.split(";"):
            node = node["c"].setdefault(frame, {"n": 0, "c": {}})
            node["n"] += count
    return root


def draw(root):
    total = max(1, root["n"])
    rects = []

    def walk(node, name, x, depth):
        w = node["n"] / total * WIDTH
        if w < 0.3:
            return
        y = depth * ROW
        hue = 20 + (hash(name) % 40)
        label = html.escape(name if w > 40 else "")
        title = html.escape(f"{name} ({node['n']} samples, {100 * node['n'] / total:.1f}%)")
        rects.append(f'<g><title>{title}</title><rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{ROW - 1}" '
                     f'fill="hsl({hue},80%,60%)"/><text x="{x + 2:.1f}" y="{y + 12}" font-size="10">{label[: int(w / 6)]}</text></g>')
        for child_name, child in sorted(node["c"].items()):
            walk(child, child_name, x, depth + 1)
            x += child["n"] / total * WIDTH

    x = 0.0
    for name, child in sorted(root["c"].items()):
        walk(child, name, x, 0)
        x += child["n"] / total * WIDTH
    height = (max_depth(root) + 1) * ROW
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="monospace">'
            + "".join(rects) + "</svg>\n")


def max_depth(node, d=0):
    return max([d] + [max_depth(c, d + 1) for c in node["c"].values()])


def main():
    stacks = fold(sys.stdin)
    with open(sys.argv[1], "w") as f:
        for stack, count in stacks.most_common():
            f.write(f"{stack} {count}\n")
    with open(sys.argv[2], "w") as f:
        f.write(draw(tree(stacks)))


if __name__ == "__main__":
    main()
