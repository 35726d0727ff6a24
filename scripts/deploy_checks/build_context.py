"""Checks the Docker build context that .dockerignore leaves: everything `cargo build
--locked` needs for every workspace member is in it, and build outputs, VCS data and the
local tools are not. (The image build itself needs a Docker engine; this catches the most
common way it breaks without one.)

Usage: build_context.py
"""

import os
import re
import sys
import tomllib


def patterns():
    with open(".dockerignore") as f:
        lines = [l.strip() for l in f if l.strip() and not l.lstrip().startswith("#")]
    return lines


def to_regex(pattern):
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regular expression."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def excluded(path, pats):
    """Docker's rule: the last matching pattern wins, `!` re-includes, and a pattern that
    matches a directory excludes everything below it."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for p in pats:
        neg = p.startswith("!")
        regex = to_regex(os.path.normpath((p[1:] if neg else p).strip("/")))
        if any(regex.match(pre) for pre in prefixes):
            result = not neg
    return result


def main():
    pats = patterns()
    with open("Cargo.toml", "rb") as f:
        members = tomllib.load(f)["workspace"]["members"]
    needed = ["Cargo.toml", "Cargo.lock"]
    for m in members:
        needed.append(f"{m}/Cargo.toml")
        for sub in ("src", "migrations", "build.rs", ".sqlx", "benches", "examples"):
            if os.path.exists(os.path.join(m, sub)):
                needed.append(f"{m}/{sub}")
    kept_out = ["target", ".git", ".tools", ".state", "operator/target", "charts", "Tiltfile"]
    errors = [f".dockerignore excludes {p}, which the build needs" for p in needed if excluded(p, pats)]
    errors += [f".dockerignore lets {p} into the build context" for p in kept_out if not excluded(p, pats)]
    for e in errors:
        print(f"FAIL {e}")
    if not errors:
        print(f"ok   .dockerignore keeps the {len(members)} workspace members' manifests, sources and "
              f"migrations and Cargo.lock, and leaves out {', '.join(kept_out)}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
