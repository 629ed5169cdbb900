#!/usr/bin/env python3
"""Summarise a dhat-rs heap profile (dhat-heap.json): the allocation sites live at the moment of
the peak heap size (t-gmax), largest first, each with its first frames outside the allocator and
the standard library.

    python3 scripts/heap-top.py dhat-heap.json [N]
"""
import json
import sys

SKIP = ("alloc::", "core::", "std::", "dhat::", "<alloc::", "<core::", "<std::", "__rust",
        "hashbrown::raw", "<hashbrown", "[root]", "<dhat")


def frames(profile, pp):
    names = []
    for index in pp["fs"]:
        frame = profile["ftbl"][index]
        # "0x55…: function (path:line:col)"
        text = frame.split(": ", 1)[-1]
        if text.startswith(SKIP):
            continue
        names.append(text.split(" (")[0][:110])
    return names


def main():
    profile = json.load(open(sys.argv[1]))
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    pps = profile["pps"]
    peak = sum(pp["gb"] for pp in pps)
    print(f"heap at its peak: {peak / 2**20:.1f} MiB in {sum(pp['gbk'] for pp in pps)} blocks; "
          f"total allocated over the run: {sum(pp['tb'] for pp in pps) / 2**20:.1f} MiB")
    by_site = {}
    for pp in pps:
        names = frames(profile, pp)
        key = " <- ".join(names[:4]) or "(allocator only)"
        by_site[key] = by_site.get(key, 0) + pp["gb"]
    for key, size in sorted(by_site.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{size / 2**20:7.2f} MiB  {100 * size / max(peak, 1):5.1f}%  {key}")


if __name__ == "__main__":
    main()
