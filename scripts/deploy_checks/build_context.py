"""Checks the Docker build contexts: the whole repository's (what `docker build .` sends,
after .dockerignore) and, through binary_context(), each binary's own (what the Tiltfile
sends with docker_build(only=...), checked by tilt_kind.py).

- .dockerignore keeps everything `cargo build --locked` needs for every workspace member,
  and leaves out build outputs, VCS data, local tools and deployment files.
- The Dockerfile's planner replaces every member's sources by an empty `src/lib.rs` and
  `src/main.rs` before `cargo chef prepare`, so the recipe (and the dependency layer) is
  the same for every binary whatever sources its context holds. That holds only while no
  member declares a target elsewhere or has a build script; this check says so if one does.

(The image build itself needs a Docker engine; this catches the usual ways it breaks
without one.)

Usage: build_context.py
"""

import glob
import os
import re
import sys
import tomllib

# What cargo reads besides the manifests and the sources, at the root or in a crate: a
# crate's migrations (sqlx::migrate!), its compile-time checked SQL, a build script, and the
# files its macros read at compile time (askama's templates and askama.toml, the assets a
# crate include_str!s: the storefront's).
ROOT_EXTRAS = [".cargo/config.toml", ".cargo/config", "rust-toolchain", "rust-toolchain.toml", ".sqlx"]
CRATE_EXTRAS = ["migrations", ".sqlx", "build.rs", "templates", "askama.toml", "assets"]


def load(path):
    with open(path, "rb") as f:
        return tomllib.load(f)


def members():
    return load("Cargo.toml")["workspace"]["members"]


def packages():
    """Package name -> (member directory, manifest), for every workspace member."""
    out = {}
    for m in members():
        path = os.path.join(m, "Cargo.toml")
        if os.path.exists(path):
            manifest = load(path)
            out[manifest["package"]["name"]] = (m, manifest)
    return out


def binaries():
    """Binary name -> package name: [[bin]] sections, src/main.rs and src/bin/*.rs."""
    bins = {}
    for name, (member, manifest) in packages().items():
        for b in manifest.get("bin", []):
            bins[b["name"]] = name
        if os.path.exists(os.path.join(member, "src", "main.rs")):
            bins.setdefault(name, name)
        for f in glob.glob(os.path.join(member, "src", "bin", "*.rs")):
            bins.setdefault(os.path.basename(f)[:-3], name)
    return bins


def build_dependencies(manifest):
    """Names of the dependencies a release build compiles (no dev-dependencies)."""
    tables = [manifest.get("dependencies", {}), manifest.get("build-dependencies", {})]
    for target in manifest.get("target", {}).values():
        tables += [target.get("dependencies", {}), target.get("build-dependencies", {})]
    return {(spec.get("package") if isinstance(spec, dict) else None) or name
            for table in tables for name, spec in table.items()}


def crates_of(binary):
    """Member directories whose sources `cargo build --bin binary` compiles: its package and
    the workspace packages it depends on, transitively."""
    pkgs = packages()
    todo, seen = [binaries()[binary]], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += [d for d in build_dependencies(pkgs[name][1]) if d in pkgs]
    return sorted(pkgs[n][0] for n in seen)


def binary_context(binary):
    """The paths (relative to the repository root) an image of `binary` must be built
    from, and nothing more: the lock file and every member's manifest (cargo loads the
    whole workspace), and the sources of the crates it compiles."""
    paths = {"Cargo.toml", "Cargo.lock"} | {f"{m}/Cargo.toml" for m in members()}
    paths |= {p for p in ROOT_EXTRAS if os.path.exists(p)}
    for crate in crates_of(binary):
        paths.add(f"{crate}/src")
        paths |= {f"{crate}/{p}" for p in CRATE_EXTRAS if os.path.exists(os.path.join(crate, p))}
    return paths


def stub_assumption_errors():
    """Where the Dockerfile planner's stand-in sources would not describe the workspace."""
    errors = []
    for name, (member, manifest) in packages().items():
        targets = [("lib", manifest["lib"])] if "lib" in manifest else []
        for kind in ("bin", "example", "test", "bench"):
            targets += [(kind, t) for t in manifest.get(kind, [])]
        for kind, t in targets:
            if t.get("path", "src/main.rs" if kind == "bin" else "src/lib.rs") not in ("src/main.rs", "src/lib.rs"):
                errors.append(f"{member}/Cargo.toml declares [{kind}] {t.get('name', name)} at {t.get('path')}: "
                              "the Dockerfile planner only stands in src/lib.rs and src/main.rs")
        if os.path.exists(os.path.join(member, "build.rs")) or "build" in manifest.get("package", {}):
            errors.append(f"{member} has a build script: the Dockerfile planner computes the recipe without it, "
                          "so images would not share the dependency layer")
    # The planner finds the members as the Cargo.toml files two or three levels down.
    found = {os.path.dirname(p) for p in glob.glob("*/Cargo.toml") + glob.glob("*/*/Cargo.toml")
             if not p.startswith(("target/", "."))}
    if found != set(members()):
        errors.append(f"the Cargo.toml files one or two directories down ({sorted(found)}) are not the "
                      f"workspace members ({sorted(members())}), which the Dockerfile planner assumes")
    return errors


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
    needed = ["Cargo.toml", "Cargo.lock"]
    for m in members():
        needed.append(f"{m}/Cargo.toml")
        for sub in ["src", "benches", "examples"] + CRATE_EXTRAS:
            if os.path.exists(os.path.join(m, sub)):
                needed.append(f"{m}/{sub}")
    kept_out = ["target", ".git", ".tools", ".state", "operator/target", "charts", "Tiltfile"]
    errors = [f".dockerignore excludes {p}, which the build needs" for p in needed if excluded(p, pats)]
    errors += [f".dockerignore lets {p} into the build context" for p in kept_out if not excluded(p, pats)]
    errors += stub_assumption_errors()
    for e in errors:
        print(f"FAIL {e}")
    if not errors:
        print(f"ok   .dockerignore keeps the {len(members())} workspace members' manifests, sources, "
              f"migrations, templates and assets and Cargo.lock, and leaves out {', '.join(kept_out)}")
        print("ok   every member's targets are src/lib.rs and src/main.rs (or auto-discovered) and none has a "
              "build script, as the Dockerfile planner's stand-in sources assume")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
