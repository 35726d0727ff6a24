"""Checks kind-config.yaml and the Tiltfile without a cluster, Docker or Tilt.

kind-config.yaml must be a kind Cluster (kind.x-k8s.io/v1alpha4) that publishes a node
port on the host. The Tiltfile is parsed and evaluated as Starlark (starlark-rust, Tilt's
dialect: top-level statements, keyword-only arguments) with Tilt's builtins replaced by
recorders; `helm()` runs the real `helm template` as Tilt does. Then the recorded calls
must wire together:
- one docker_build per binary (the operator, and each service whose crate exists), from
  the Dockerfile's `runtime` stage with BIN naming a real workspace binary, under the
  image names the chart and the Store use by default;
- the operator installed from charts/mercato-operator, whose Deployment image Tilt's
  operator build replaces;
- exactly one Store, valid against the CRD, whose image fields and k8s_kind image JSON
  paths name the built images, with the gateway on the node port kind publishes;
- Tilt's grouping of the objects into resources (tilt_assembly.py, Tilt's own rules): every
  k8s_resource names a resource Tilt makes, every `objects` entry names one object that Tilt
  has not already grouped with a workload, resource_deps name resources, and links point
  at the published port;
- each image is built from only what its binary needs (docker_build `only`, against
  build_context.binary_context), so a change to one service rebuilds one image.

A self-test first runs the rules on small Tiltfiles that `tilt up` refuses.

Usage: tilt_kind.py TILTFILE KIND_CONFIG CRD HELM [KUBE_VERSION]
"""

import json
import os
import re
import subprocess
import sys
import tomllib

import starlark as sl
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from build_context import binaries, binary_context  # noqa: E402
from crd_validate import StoreValidator  # noqa: E402
from tilt_assembly import KindSelector, assemble  # noqa: E402

COMPONENTS = ["auth", "product", "order", "payment", "gateway", "storefront"]


class Fail(Exception):
    pass


class Recorder:
    """Stand-ins for the Tilt builtins the Tiltfile uses, recording every call."""

    def __init__(self, helm_bin, context, kube_version):
        self.helm_bin = helm_bin
        self.context = context
        self.kube_version = kube_version
        self.calls = []
        self.yaml_docs = []
        self.allow_duplicates = False
        self.printed = []

    def module(self):
        m = sl.Module()

        def record(name, ret=None):
            def f(*args, **kwargs):
                self.calls.append((name, args, kwargs))
                return ret(*args, **kwargs) if ret else None
            return f

        for name in ["version_settings", "allow_k8s_contexts", "update_settings", "docker_build",
                     "k8s_kind", "k8s_resource", "local_resource"]:
            m.add_callable(name, record(name))
        m.add_callable("k8s_context", lambda: self.context)
        m.add_callable("k8s_yaml", record("k8s_yaml", self.k8s_yaml))
        m.add_callable("helm", record("helm", self.helm))
        m.add_callable("link", lambda url, name="": {"url": url, "name": name})
        m.add_callable("port_forward", lambda local_port, container_port=None, name="", **kw:
                       {"local_port": local_port, "container_port": container_port, "name": name})
        m.add_callable("read_file", self.read_file)
        m.add_callable("local", record("local", self.local))
        m.add_callable("decode_json", lambda s: json.loads(s))
        m.add_callable("decode_yaml", lambda s: yaml.safe_load(s))
        m.add_callable("encode_yaml", lambda o: yaml.safe_dump(o, sort_keys=False))
        m.add_callable("warn", lambda msg: self.printed.append("warn: " + msg))
        m.add_callable("print", lambda *a, **_: self.printed.append(" ".join(str(x) for x in a)))
        m.add_callable("fail", self.fail)
        return m

    @staticmethod
    def fail(msg):
        raise Fail(f"the Tiltfile called fail(): {msg}")

    @staticmethod
    def read_file(path, default=Fail):
        try:
            with open(path) as f:
                return f.read()
        except FileNotFoundError:
            if default is Fail:
                raise
            return default

    def local(self, command, quiet=False, **_):
        # The only command the Tiltfile may run at load time: asking the cluster its version.
        if re.fullmatch(rf"kubectl --context {re.escape(self.context)} version -o json", command):
            return json.dumps({"serverVersion": {"gitVersion": f"v{self.kube_version}"}})
        raise Fail(f"the Tiltfile runs an unexpected command at load time: {command!r}")

    def k8s_yaml(self, content, allow_duplicates=False):
        self.allow_duplicates = self.allow_duplicates or allow_duplicates
        items = content if isinstance(content, list) else [content]
        for item in items:
            if not isinstance(item, str) or "\n" not in item:
                with open(item) as f:
                    item = f.read()
            self.yaml_docs += [d for d in yaml.safe_load_all(item) if d]

    def helm(self, path, name="", namespace="", values=None, set=None, kube_version="", skip_crds=False):
        # What Tilt runs (helm >= 3.1): helm template NAME PATH --include-crds ...
        cmd = [self.helm_bin, "template", name or "chart", path]
        if not skip_crds:
            cmd.append("--include-crds")
        if namespace:
            cmd += ["--namespace", namespace]
        if kube_version:
            cmd += ["--kube-version", kube_version]
        for v in values or []:
            cmd += ["--values", v]
        for s in set or []:
            cmd += ["--set", s]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            raise Fail(f"helm() as the Tiltfile calls it fails: {' '.join(cmd)}\n{out.stderr}")
        # As Tilt does: drop helm test hooks, and put every object (cluster-scoped ones too)
        # into the namespace, which `helm template` does not.
        docs = [d for d in yaml.safe_load_all(out.stdout) if d
                and "test" not in (((d.get("metadata") or {}).get("annotations") or {}).get("helm.sh/hook", ""))]
        if namespace:
            for d in docs:
                d.setdefault("metadata", {}).setdefault("namespace", namespace)
        return yaml.safe_dump_all(docs, sort_keys=False)


def check_kind_config(path, errors):
    with open(path) as f:
        cfg = yaml.safe_load(f)
    if cfg.get("kind") != "Cluster" or cfg.get("apiVersion") != "kind.x-k8s.io/v1alpha4":
        errors.append(f"{path}: kind/apiVersion are {cfg.get('kind')}/{cfg.get('apiVersion')}, not Cluster/kind.x-k8s.io/v1alpha4")
    mappings = [m for n in cfg.get("nodes") or [] if n.get("role") == "control-plane"
                for m in n.get("extraPortMappings") or []]
    node_ports = {m["containerPort"]: m for m in mappings if 30000 <= m.get("containerPort", 0) <= 32767}
    if not node_ports:
        errors.append(f"{path}: the control-plane node publishes no node port (extraPortMappings containerPort 30000-32767)")
    for m in mappings:
        unknown = set(m) - {"containerPort", "hostPort", "listenAddress", "protocol"}
        if unknown or not isinstance(m.get("hostPort"), int):
            errors.append(f"{path}: extraPortMappings entry {m} is not containerPort/hostPort/listenAddress/protocol")
    return cfg.get("name") or "kind", node_ports


def evaluate(name, src, rec):
    """Runs a Tiltfile's source against the recorder, in Tilt's Starlark dialect."""
    dialect = sl.Dialect.extended()
    dialect.enable_top_level_stmt = True
    dialect.enable_keyword_only_arguments = True
    dialect.enable_f_strings = False
    sl.eval(rec.module(), sl.parse(name, src, dialect), sl.Globals.standard())


def calls_of(rec, name):
    return [(a, k) for n, a, k in rec.calls if n == name]


def assemble_recorded(rec):
    """Tilt's resources for what the Tiltfile recorded: (resources, ungrouped, errors)."""
    kinds = [KindSelector(a[0] if a else k["kind"], k.get("api_version", "")) for a, k in calls_of(rec, "k8s_kind")]
    resource_calls = [{"workload": a[0] if a else k.get("workload"),
                       "new_name": a[1] if len(a) > 1 else k.get("new_name"),
                       "objects": k.get("objects") or []}
                      for a, k in calls_of(rec, "k8s_resource")]
    return assemble(rec.yaml_docs, kinds, resource_calls, rec.allow_duplicates)


SELF_TEST_YAML = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web, tier: front}}
    spec: {containers: [{name: web, image: example/web}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: shop}
spec: {selector: {app: other}, ports: [{port: 80}]}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: web-config, namespace: shop}
"""

# (objects of k8s_resource('web'), what the error must say; None: no error)
SELF_TEST_CASES = [
    (["web:service"], "is already in resource 'web'"),
    (["web-config", "missing:configmap"], "identifies no object"),
    (["web"], "matches 2 objects"),
    (["other:service", "web-config:configmap:shop"], None),
]


def self_test(helm_bin):
    """The grouping rules refuse what `tilt up` refuses (and accept what it accepts)."""
    failures = []
    for objects, expected in SELF_TEST_CASES:
        rec = Recorder(helm_bin, "kind-test", "1.33.0")
        src = f"k8s_yaml('''{SELF_TEST_YAML}''')\nk8s_resource('web', objects = {objects!r})\n"
        evaluate("self-test.Tiltfile", src, rec)
        resources, _, errors = assemble_recorded(rec)
        if expected is None and errors:
            failures.append(f"objects={objects}: unexpected errors {errors}")
        elif expected is not None and not any(expected in e for e in errors):
            failures.append(f"objects={objects}: expected an error saying {expected!r}, got {errors or 'none'}")
        elif expected is None and [o["kind"] for o in resources["web"]] != ["Deployment", "Service", "Service", "ConfigMap"]:
            failures.append(f"objects={objects}: resource web holds {[o['kind'] for o in resources['web']]}")
    return failures


def main():
    tiltfile, kind_config, crd_path, helm_bin = sys.argv[1:5]
    # The cluster version helm() is given at load time (the oldest the chart supports).
    kube_version = sys.argv[5] if len(sys.argv) > 5 else "1.33.0"
    errors, notes = [], []

    failures = self_test(helm_bin)
    for f in failures:
        print(f"FAIL self-test of Tilt's grouping rules: {f}")
    if failures:
        return 1

    cluster, node_ports = check_kind_config(kind_config, errors)
    context = f"kind-{cluster}"

    with open(tiltfile) as f:
        src = f.read()
    rec = Recorder(helm_bin, context, kube_version)
    try:
        evaluate(tiltfile, src, rec)
    except (sl.StarlarkError, Fail) as e:
        print(f"FAIL {tiltfile} does not evaluate: {e}")
        return 1

    def calls(name):
        return calls_of(rec, name)

    # The dev loop is pinned to the kind cluster of kind-config.yaml.
    allowed = [c for a, _ in calls("allow_k8s_contexts") for c in (a[0] if isinstance(a[0], list) else [a[0]])]
    if context not in allowed:
        errors.append(f"the Tiltfile allows contexts {allowed}, not {context} (kind-config.yaml's cluster)")

    # Images: one build per binary, from the Dockerfile's runtime stage, each sent only
    # what its binary is compiled from.
    with open("Dockerfile") as f:
        dockerfile = f.read()
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", dockerfile, re.M | re.I))
    bins = binaries()
    builds = {}
    for a, k in calls("docker_build"):
        ref = a[0]
        builds[ref] = k
        if k.get("dockerfile", "Dockerfile") != "Dockerfile" or (a[1] if len(a) > 1 else k.get("context")) != ".":
            errors.append(f"docker_build({ref}) does not build ./Dockerfile from the repository root")
        if k.get("target") not in stages:
            errors.append(f"docker_build({ref}) targets stage {k.get('target')!r}; the Dockerfile has {sorted(stages)}")
        binary = (k.get("build_args") or {}).get("BIN")
        if binary not in bins:
            errors.append(f"docker_build({ref}) builds BIN={binary!r}, which is no binary of the workspace ({sorted(bins)})")
            continue
        only = k.get("only") or []
        got = {os.path.normpath(p) for p in ([only] if isinstance(only, str) else only)}
        want = binary_context(binary)
        if not got:
            errors.append(f"docker_build({ref}) sends the whole repository: a change anywhere rebuilds it (give only=)")
            continue
        if want - got:
            errors.append(f"docker_build({ref}) leaves out {sorted(want - got)}, which {binary} is built from")
        if got - want:
            errors.append(f"docker_build({ref}) also sends {sorted(got - want)}, which {binary} does not need "
                          "(a change there would rebuild it)")
        for p in sorted(got):
            if not os.path.exists(p):
                errors.append(f"docker_build({ref}) only= names {p}, which does not exist")
    expected = {"mercato/operator": "mercato-operator"}
    for c in COMPONENTS:
        if os.path.exists(f"services/{c}/Cargo.toml"):
            expected[f"mercato/{c}"] = f"mercato-{c}"
        else:
            notes.append(f"services/{c} does not exist yet: the Tiltfile skips its image")
    for ref, binary in expected.items():
        if ref not in builds:
            errors.append(f"the Tiltfile does not build {ref}")
        elif (builds[ref].get("build_args") or {}).get("BIN") != binary:
            errors.append(f"{ref} is built with BIN={(builds[ref].get('build_args') or {}).get('BIN')}, not {binary}")

    # The images Tilt builds are the chart's defaults: the operator's, and those it gives
    # Stores that name none (<MERCATO_IMAGE_REGISTRY>/<component>:<MERCATO_IMAGE_TAG>,
    # the chart's appVersion, which is the operator crate's version).
    with open("operator/Cargo.toml", "rb") as f:
        operator_version = tomllib.load(f)["package"]["version"]
    with open("charts/mercato-operator/Chart.yaml") as f:
        chart = yaml.safe_load(f)
    if str(chart.get("appVersion")) != operator_version:
        errors.append(f"Chart.yaml appVersion {chart.get('appVersion')} != operator crate version {operator_version} (the images' default tag)")

    # What Tilt applies.
    docs = rec.yaml_docs
    if not calls("helm") or calls("helm")[0][0][0] != "charts/mercato-operator":
        errors.append("the Tiltfile does not install charts/mercato-operator with helm()")
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    for d in deployments:
        for c in d["spec"]["template"]["spec"]["containers"]:
            repo = re.sub(r"(@sha256:.*|:[^/:]+)$", "", c["image"])
            if repo not in builds:
                errors.append(f"Deployment/{d['metadata']['name']} runs {c['image']}, which Tilt does not build")
            env = {e["name"]: e.get("value") for e in c.get("env") or []}
            if "MERCATO_IMAGE_REGISTRY" in env:
                for ref in expected:
                    if ref != "mercato/operator" and ref != f"{env['MERCATO_IMAGE_REGISTRY']}/{ref.split('/')[-1]}":
                        errors.append(f"Tilt builds {ref}, but the operator's default for it is "
                                      f"{env['MERCATO_IMAGE_REGISTRY']}/{ref.split('/')[-1]} (MERCATO_IMAGE_REGISTRY)")
                if env.get("MERCATO_IMAGE_TAG") != operator_version:
                    errors.append(f"the operator's MERCATO_IMAGE_TAG is {env.get('MERCATO_IMAGE_TAG')!r}, not {operator_version}")
    if not any(d["kind"] == "CustomResourceDefinition" for d in docs):
        errors.append("the Store CRD is not among the applied objects (helm() without the chart's crds/?)")
    stores = [d for d in docs if d["kind"] == "Store"]
    if len(stores) != 1:
        errors.append(f"the Tiltfile applies {len(stores)} Stores, not 1")
    else:
        store = stores[0]
        with open(crd_path) as f:
            for e in StoreValidator(yaml.safe_load(f)).errors(store):
                errors.append(f"the Store Tilt applies is invalid: {e}")
        spec = store.get("spec") or {}
        kinds = calls("k8s_kind")
        paths = [p for a, k in kinds if a[0] == "Store" for p in (k.get("image_json_path") or [])]
        if not kinds or kinds[0][1].get("api_version") != store["apiVersion"]:
            errors.append("k8s_kind('Store', api_version=...) does not match the Store's apiVersion")
        for c in COMPONENTS:
            ref = f"mercato/{c}"
            if ref in builds:
                if (spec.get(c) or {}).get("image") != ref:
                    errors.append(f"the Store's spec.{c}.image is {(spec.get(c) or {}).get('image')!r}, not {ref} (Tilt could not inject its build)")
                if "{.spec.%s.image}" % c not in paths:
                    errors.append(f"k8s_kind('Store') has no image_json_path {{.spec.{c}.image}}")
        svc = (spec.get("gateway") or {}).get("service") or {}
        if svc.get("type") != "NodePort" or svc.get("nodePort") not in node_ports:
            errors.append(f"the Store's gateway service is {svc}, not a NodePort on one of kind's published ports {sorted(node_ports)}")
        else:
            host_port = node_ports[svc["nodePort"]]["hostPort"]
            urls = [l["url"] for _, k in calls("k8s_resource") + calls("local_resource") for l in k.get("links") or []]
            if not any(re.match(rf"http://(localhost|127\.0\.0\.1):{host_port}(/|$)", u) for u in urls):
                errors.append(f"no link points at the store on http://localhost:{host_port}")

    # Resources as Tilt groups them, and the dependencies between them.
    resources, ungrouped, assembly_errors = assemble_recorded(rec)
    errors += assembly_errors
    names = set(resources) | {a[0] for a, _ in calls("local_resource")}
    for kind, key in (("k8s_resource", "resource_deps"), ("local_resource", "resource_deps")):
        for a, k in calls(kind):
            for dep in k.get(key) or []:
                if dep not in names:
                    errors.append(f"{kind}({a[0] if a else k.get('workload')!r}) depends on unknown resource {dep!r} ({sorted(names)})")
    if ungrouped:
        notes.append("Tilt puts these into its `uncategorized` resource: "
                     + ", ".join(f"{d['metadata']['name']}:{d['kind']}" for d in ungrouped))

    for n in notes:
        print(f"note {n}")
    for e in errors:
        print(f"FAIL {e}")
    if not errors:
        print(f"ok   self-test: the grouping rules refuse {sum(1 for _, e in SELF_TEST_CASES if e)} Tiltfiles `tilt up` refuses")
        print(f"ok   {kind_config}: kind Cluster {cluster!r} publishing node port(s) "
              + ", ".join(f"{p}->localhost:{m['hostPort']}" for p, m in sorted(node_ports.items())))
        print(f"ok   {tiltfile}: evaluates; builds {', '.join(sorted(builds))}, each from its own crates only; "
              f"applies {len(docs)} objects (chart + Store/{stores[0]['metadata']['name']}) as resources "
              + ", ".join(f"{n} ({len(o)} objects)" for n, o in resources.items())
              + "; every object selector, dependency and image path resolves")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
