"""Every shell command the README and the chart's NOTES.txt show a user, checked without a
cluster, Docker or cargo (scripts/check-docs.sh, run by `make test`).

Blocks: the README's fenced blocks (sh, bash, shell, console; every fenced block must say
its language, so none escapes), and the indented command lines of NOTES.txt as
`helm install` prints it for the default values, with store.create=true, with
watchNamespaces or watchAllNamespaces set, and with both a Store and watchNamespaces. Each block, as a user would paste it:

- its heredocs end: the end marker alone on a line at column 0 (an indented one leaves
  the pasted shell waiting for more input);
- `bash -n` parses it;
- it runs in bash with every external command replaced by a recorder (nothing reaches
  a cluster, Docker, cargo or the network): once with the variables the document sets
  elsewhere (REGISTRY=... in an earlier block), once in a fresh shell where they are
  unset, as in a branch that never set them; a variable a command cannot do without
  must be written ${NAME:?why}, which stops the command instead;
- what it would have run is checked: `helm install/upgrade/template` rendered with
  `helm template` (its --set/-f arguments as given) and every image of the output a valid
  reference (not `/operator:0.1.0`), the Stores in it valid against the CRD; `docker build`
  tags and `kind load docker-image` images valid references, loaded images built by the
  document, `--name` the cluster of kind-config.yaml, BIN a workspace binary; files given
  to kubectl -f, kind --config and helm exist, and Stores among them (or piped to
  `kubectl apply -f -`) are valid; `make` targets are listed by `make help` (which is run);
  `cargo run -p P --bin B` names a workspace package and binary.

Usage: doc_commands.py --helm HELM MARKDOWN... [--chart CHART]
"""

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from build_context import binaries, packages  # noqa: E402
from crd_validate import StoreValidator  # noqa: E402

CHART = "charts/mercato-operator"
CRD = "crds/store.yaml"
KIND_CONFIG = "kind-config.yaml"
RELEASE, RELEASE_NS = "mercato-operator", "mercato-system"
NOTES_VALUES = [[], ["store.create=true"], ["watchNamespaces={shop}"], ["store.create=true", "watchNamespaces={shop}"], ["watchAllNamespaces=true"]]
LANGUAGES = {"sh", "bash", "shell", "console"}
# Variables of the shell itself, never a document's input.
SHELL_VARIABLES = {"RANDOM", "HOME", "PWD", "PATH", "USER", "SHELL", "UID", "LINENO", "SECONDS", "OLDPWD", "IFS"}

# distribution/reference's grammar: [domain/]path[:tag][@digest].
_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
IMAGE_REF = re.compile(rf"(?:{_DOMAIN}/)?{_PATH}(?:/{_PATH})*(?::[\w][\w.-]{{0,127}})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{{32,}})?")

# The recorder: every command not found (PATH is an empty directory) is logged, with what
# it reads from a pipe when it is `kubectl ... -f -`, in one write (the commands of a
# pipeline run at once).
RECORDER = r'''
command_not_found_handle() {
  local a rec=""
  for a in "$@"; do rec+="$a"$'\037'; done
  if [[ " $* " == *" -f - "* || " $* " == *" --filename - "* || " $* " == *" -f=- "* ]]; then
    rec+=$'\002'
    while IFS= read -r a || [[ -n $a ]]; do rec+="$a"$'\n'; done
    rec+=$'\037'
  fi
  printf '%s\036' "$rec" >>"$RECORD"
  return 0
}
'''


class Block:
    def __init__(self, where, text, doc):
        self.where, self.text, self.doc = where, text, doc


def markdown_blocks(path, errors):
    blocks, lines = [], open(path).read().split("\n")
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)(`{3,}|~{3,})\s*([\w-]*)", lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.groups()
        start, body = i + 1, []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        i += 1
        where = f"{path}:{start}"
        if not lang:
            errors.append(f"{where}: a fenced block without a language; say ```sh, ```console or ```text")
        elif lang == "console":
            commands, follows = [], False
            for line in body:
                if line.startswith("$ ") or follows:
                    commands.append(line[2:] if line.startswith("$ ") and not follows else line)
                    follows = line.endswith("\\")
            blocks.append(Block(where, "\n".join(commands) + "\n", path))
        elif lang in LANGUAGES:
            blocks.append(Block(where, "\n".join(body) + "\n", path))
    return blocks


def heredoc_words(line):
    """(word, strips_tabs) of each heredoc a command line opens."""
    return [(m.group(3), m.group(1) == "-")
            for m in re.finditer(r"(?<!<)<<(-?)\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\2", line)]


def notes_blocks(helm, sets, errors):
    """The command lines of NOTES.txt as `helm install` prints them: runs of lines indented
    by two or more spaces, each running on through the heredocs it opens, as a user copies."""
    cmd = [helm, "install", RELEASE, CHART, "-n", RELEASE_NS, "--dry-run=client"]
    for s in sets:
        cmd += ["--set", s]
    out = subprocess.run(cmd, capture_output=True, text=True)
    label = f"NOTES.txt ({', '.join(sets) or 'default values'})"
    if out.returncode != 0 or "\nNOTES:\n" not in out.stdout:
        errors.append(f"{label}: helm install --dry-run=client fails: {out.stderr.strip()}")
        return []
    lines = out.stdout.split("\nNOTES:\n", 1)[1].split("\n")
    blocks, i = [], 0
    while i < len(lines):
        if not re.match(r"^  +\S", lines[i]):
            i += 1
            continue
        start, body, pending = i, [], []
        while i < len(lines) and (pending or re.match(r"^  +\S", lines[i])):
            line = lines[i]
            body.append(line)
            if pending and line == pending[0][0] or pending and pending[0][1] and line.lstrip("\t") == pending[0][0]:
                pending.pop(0)
            elif not pending:
                pending += heredoc_words(line)
            i += 1
        blocks.append(Block(f"{label} line {start + 1}", "\n".join(body) + "\n", "NOTES.txt"))
    return blocks


def check_heredocs(block):
    errors, lines = [], block.text.split("\n")
    i = 0
    while i < len(lines):
        for word, strips_tabs in heredoc_words(lines[i]):
            j = i + 1
            while j < len(lines) and (lines[j].lstrip("\t") if strips_tabs else lines[j]) != word:
                j += 1
            if j == len(lines):
                indented = [l for l in lines[i + 1:] if l.strip() == word]
                errors.append(f"{block.where}: the heredoc <<{word} never ends: its end marker must be alone at "
                              f"column 0{' (it is indented: ' + repr(indented[0]) + ')' if indented else ''}; "
                              "pasted, this leaves the shell waiting")
            i = max(i, j)
        i += 1
    return errors


def document_variables(blocks):
    """Sample values for a document's variables: its literal assignments (REGISTRY=...),
    and a sample value (sample-<name>) for each it requires with ${NAME:?...}."""
    values = {}
    for b in blocks:
        for m in re.finditer(r"^\s*([A-Z][A-Z0-9_]*)=([^\s$`\"']+|\"[^\"$`]*\"|'[^']*')(?=\s|$)", b.text, re.M):
            values[m.group(1)] = m.group(2).strip("\"'")
        for m in re.finditer(r"\$\{([A-Z][A-Z0-9_]*):\?", b.text):
            values.setdefault(m.group(1), f"sample-{m.group(1).lower()}")
    return {k: v for k, v in values.items() if k not in SHELL_VARIABLES}


def run_recorded(block, env_vars, workdir):
    """Runs the block with every external command recorded instead; returns (argv, stdin) pairs."""
    record = os.path.join(workdir, "record")
    open(record, "w").close()
    stubs = os.path.join(workdir, "bin")
    os.makedirs(stubs, exist_ok=True)
    env = {"PATH": stubs, "HOME": workdir, "RECORD": record, "LANG": "C.UTF-8", **env_vars}
    script = RECORDER + block.text + "\nwait\n"
    try:
        subprocess.run([shutil.which("bash"), "--noprofile", "--norc", "-c", script], cwd=workdir, env=env,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=20)
    except subprocess.TimeoutExpired:
        return None
    commands = []
    for rec in open(record, encoding="utf-8", errors="replace").read().split("\036"):
        fields = rec.split("\037")[:-1]
        if fields:
            stdin = [f[1:] for f in fields if f.startswith("\002")]
            commands.append(([f for f in fields if not f.startswith("\002")], stdin[0] if stdin else None))
    return commands


def option_values(argv, *names):
    out = []
    for i, a in enumerate(argv):
        for n in names:
            if a == n and i + 1 < len(argv):
                out.append(argv[i + 1])
            elif a.startswith(n + "="):
                out.append(a[len(n) + 1:])
    return out


# helm install/upgrade/template flags that take no value; every other flag written
# without `=` takes the next argument.
HELM_SWITCHES = {
    "--create-namespace", "--wait", "--wait-for-jobs", "--atomic", "--rollback-on-failure", "--debug",
    "--devel", "--include-crds", "--skip-crds", "--force", "--install", "-i", "--reuse-values",
    "--reset-values", "--reset-then-reuse-values", "--dry-run", "--generate-name", "-g",
    "--dependency-update", "--skip-tests", "--validate", "--verify", "--no-hooks", "--replace",
    "--render-subchart-notes", "--is-upgrade", "--disable-openapi-validation", "--cleanup-on-fail",
    "--take-ownership", "--hide-notes", "--enable-dns", "--insecure-skip-tls-verify", "--plain-http",
    "--pass-credentials", "--skip-schema-validation", "--hide-secret",
}


def helm_positional(args):
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a.startswith("-"):
            skip = "=" not in a and a not in HELM_SWITCHES
        else:
            out.append(a)
    return out


def images_in(obj):
    if isinstance(obj, dict):
        for key in ("containers", "initContainers"):
            for c in obj.get(key) or []:
                if isinstance(c, dict) and "image" in c:
                    yield c["image"]
        for c in obj.get("containers") or []:
            env = {e.get("name"): e.get("value") for e in (c.get("env") or []) if isinstance(e, dict)}
            if "MERCATO_IMAGE_REGISTRY" in env:
                yield f"{env['MERCATO_IMAGE_REGISTRY']}/auth:{env.get('MERCATO_IMAGE_TAG')}"
        for v in obj.values():
            yield from images_in(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from images_in(v)


class Checker:
    def __init__(self, helm):
        self.helm = helm
        with open(CRD) as f:
            self.stores = StoreValidator(yaml.safe_load(f))
        with open(KIND_CONFIG) as f:
            self.kind_cluster = yaml.safe_load(f).get("name") or "kind"
        self.packages = set(packages())
        self.binaries = binaries()
        out = subprocess.run(["make", "help"], capture_output=True, text=True)
        self.make_targets = set(re.findall(r"^\s*make (\S+)", out.stdout, re.M))
        self.rendered = 0

    def stores_in(self, text, where):
        errors = []
        try:
            docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
        except yaml.YAMLError as e:
            return [f"{where}: not YAML: {e}"]
        for d in docs:
            if d.get("kind") == "Store":
                errors += [f"{where}: Store {d.get('metadata', {}).get('name')!r} is invalid: {e}"
                           for e in self.stores.errors(d)]
        return errors

    def helm_render(self, argv, where):
        sub, rest = argv[1], argv[2:]
        drop = {"--install", "-i", "--reuse-values", "--reset-values", "--reset-then-reuse-values"}
        args = [a for a in rest if a not in drop]
        out = subprocess.run([self.helm, "template", *args], capture_output=True, text=True)
        self.rendered += 1
        shown = "helm " + " ".join(shlex.quote(a) for a in argv[1:])
        if out.returncode != 0:
            return [f"{where}: `{shown}` does not render: {out.stderr.strip()}"]
        errors = []
        docs = [d for d in yaml.safe_load_all(out.stdout) if isinstance(d, dict)]
        for image in sorted(set(images_in(docs))):
            if not IMAGE_REF.fullmatch(image or ""):
                errors.append(f"{where}: `{shown}` renders the invalid image {image!r}")
        return errors + self.stores_in(out.stdout, f"{where}: `{shown}`")

    def command(self, argv, stdin, where, built, loaded):
        errors = []
        tool, args = argv[0], argv[1:]
        if tool == "helm" and args and args[0] in ("install", "upgrade", "template"):
            errors += self.helm_render(argv, where)
        if tool in ("helm", "kubectl", "kind"):
            for f in option_values(args, "-f", "--filename", "--values", "--config"):
                if f == "-":
                    errors += self.stores_in(stdin or "", f"{where}: what `{tool} {' '.join(args)}` reads")
                elif not re.match(r"https?://", f) and not os.path.exists(f):
                    errors.append(f"{where}: `{tool}` is given {f}, which does not exist")
                elif os.path.isfile(f) and f.endswith((".yaml", ".yml")):
                    errors += self.stores_in(open(f).read(), f"{where}: {f}")
        if tool == "helm" and args and args[0] in ("install", "upgrade", "template"):
            positional = helm_positional(args[1:])
            chart = positional[0] if "--generate-name" in args or "-g" in args or len(positional) < 2 else positional[1]
            if "/" in chart and not chart.startswith(("oci://", "http")) and not os.path.isdir(chart):
                errors.append(f"{where}: helm is given the chart {chart}, which does not exist")
        if tool == "docker" and args[:1] == ["build"]:
            for ref in option_values(args, "-t", "--tag"):
                built.add(ref)
                if not IMAGE_REF.fullmatch(ref):
                    errors.append(f"{where}: `docker build -t {ref}`: not a valid image reference")
            for b in option_values(args, "--build-arg"):
                if b.startswith("BIN=") and b[4:] not in self.binaries:
                    errors.append(f"{where}: `docker build --build-arg {b}`: no such binary in the workspace")
        if tool == "kind" and args[:2] == ["load", "docker-image"]:
            for ref in [a for a in args[2:] if not a.startswith("-") and a not in option_values(args, "--name")]:
                loaded.append((ref, where))
                if not IMAGE_REF.fullmatch(ref):
                    errors.append(f"{where}: `kind load docker-image {ref}`: not a valid image reference")
        if tool == "kind" and args[:1] in (["load"], ["delete"], ["get"]):
            for name in option_values(args, "--name"):
                if name != self.kind_cluster:
                    errors.append(f"{where}: `kind ... --name {name}`: kind-config.yaml's cluster is {self.kind_cluster!r}")
        if tool == "make":
            for target in [a for a in args if not a.startswith("-") and "=" not in a]:
                if target not in self.make_targets:
                    errors.append(f"{where}: `make {target}`: `make help` lists no such target")
        if tool == "cargo" and args[:1] == ["run"]:
            opts = args[:args.index("--")] if "--" in args else args
            for p in option_values(opts, "-p", "--package"):
                if p not in self.packages:
                    errors.append(f"{where}: `cargo run -p {p}`: no such workspace package")
            for b in option_values(opts, "--bin"):
                if b not in self.binaries:
                    errors.append(f"{where}: `cargo run --bin {b}`: no such binary")
        return errors


def check_blocks(blocks, checker, errors):
    by_doc = {}
    for b in blocks:
        by_doc.setdefault(b.doc, []).append(b)
    bash = shutil.which("bash")
    for doc, doc_blocks in by_doc.items():
        variables = document_variables(doc_blocks)
        built, loaded = set(), []
        with tempfile.TemporaryDirectory() as work:
            for b in doc_blocks:
                errors += check_heredocs(b)
                parsed = subprocess.run([bash, "-n"], input=b.text, capture_output=True, text=True)
                if parsed.returncode != 0 or parsed.stderr.strip():
                    errors.append(f"{b.where}: bash -n: {parsed.stderr.strip()}")
                    continue
                for scenario, env in (("with the document's variables", variables), ("in a fresh shell", {})):
                    commands = run_recorded(b, env, work)
                    if commands is None:
                        errors.append(f"{b.where}: still running after 20 s {scenario}")
                        continue
                    for argv, stdin in commands:
                        for e in checker.command(argv, stdin, b.where, built, loaded):
                            e = e if scenario == "with the document's variables" else f"{e} ({scenario})"
                            if e not in errors:
                                errors.append(e)
        for ref, where in sorted(set(loaded), key=loaded.index):
            if ref not in built:
                errors.append(f"{where}: `kind load docker-image {ref}`: the document never builds {ref}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--helm", required=True)
    ap.add_argument("markdown", nargs="+")
    args = ap.parse_args()

    errors, blocks = [], []
    for path in args.markdown:
        blocks += markdown_blocks(path, errors)
    notes = []
    for sets in NOTES_VALUES:
        notes += notes_blocks(args.helm, sets, errors)
    blocks += notes
    checker = Checker(args.helm)
    check_blocks(blocks, checker, errors)

    for e in errors:
        print(f"FAIL {e}")
    if not errors:
        print(f"ok   {len(blocks) - len(notes)} command blocks of {', '.join(args.markdown)} and {len(notes)} of NOTES.txt "
              f"({len(NOTES_VALUES)} renderings): heredocs end at column 0, bash -n parses them, they run with every "
              f"command recorded, with and without their variables, and what they would run checks out "
              f"({checker.rendered} helm renders, images valid, files, targets, packages exist)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
