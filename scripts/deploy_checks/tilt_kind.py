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
- k8s_resource / local_resource names, object selectors and resource_deps that all exist,
  and links to the published port.

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
from crd_validate import StoreValidator  # noqa: E402

COMPONENTS = ["auth", "product", "order", "payment", "gateway"]


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

    def k8s_yaml(self, content, **_):
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
        return out.stdout


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


def workspace_binaries():
    """Binary name -> crate directory, from the workspace manifests."""
    with open("Cargo.toml", "rb") as f:
        members = tomllib.load(f)["workspace"]["members"]
    bins = {}
    for member in members:
        path = os.path.join(member, "Cargo.toml")
        if not os.path.exists(path):
            continue
        with open(path, "rb") as f:
            manifest = tomllib.load(f)
        for b in manifest.get("bin", []):
            bins[b["name"]] = member
        if os.path.exists(os.path.join(member, "src", "main.rs")):
            bins.setdefault(manifest["package"]["name"], member)
    return bins


def selector_matches(selector, docs):
    parts = selector.split(":")
    name, kind = parts[0], parts[1] if len(parts) > 1 else None
    ns = parts[2] if len(parts) > 2 else None
    return [d for d in docs
            if d["metadata"]["name"] == name
            and (kind is None or d["kind"].lower() == kind.lower())
            and (ns is None or d["metadata"].get("namespace") == ns)]


def main():
    tiltfile, kind_config, crd_path, helm_bin = sys.argv[1:5]
    # The cluster version helm() is given at load time (the oldest the chart supports).
    kube_version = sys.argv[5] if len(sys.argv) > 5 else "1.33.0"
    errors, notes = [], []

    cluster, node_ports = check_kind_config(kind_config, errors)
    context = f"kind-{cluster}"

    with open(tiltfile) as f:
        src = f.read()
    dialect = sl.Dialect.extended()
    dialect.enable_top_level_stmt = True
    dialect.enable_keyword_only_arguments = True
    dialect.enable_f_strings = False
    rec = Recorder(helm_bin, context, kube_version)
    try:
        ast = sl.parse(tiltfile, src, dialect)
        sl.eval(rec.module(), ast, sl.Globals.standard())
    except (sl.StarlarkError, Fail) as e:
        print(f"FAIL {tiltfile} does not evaluate: {e}")
        return 1

    def calls(name):
        return [(a, k) for n, a, k in rec.calls if n == name]

    # The dev loop is pinned to the kind cluster of kind-config.yaml.
    allowed = [c for a, _ in calls("allow_k8s_contexts") for c in (a[0] if isinstance(a[0], list) else [a[0]])]
    if context not in allowed:
        errors.append(f"the Tiltfile allows contexts {allowed}, not {context} (kind-config.yaml's cluster)")

    # Images: one build per binary, from the Dockerfile's runtime stage.
    with open("Dockerfile") as f:
        dockerfile = f.read()
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", dockerfile, re.M | re.I))
    bins = workspace_binaries()
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

    # The chart's images and version match the operator's defaults (mercato/<c>:<version>).
    with open("operator/Cargo.toml", "rb") as f:
        operator_version = tomllib.load(f)["package"]["version"]
    with open("charts/mercato-operator/Chart.yaml") as f:
        chart = yaml.safe_load(f)
    with open("charts/mercato-operator/values.yaml") as f:
        values = yaml.safe_load(f)
    if str(chart.get("appVersion")) != operator_version:
        errors.append(f"Chart.yaml appVersion {chart.get('appVersion')} != operator crate version {operator_version} (the images' default tag)")
    if values["image"]["repository"] != "mercato/operator":
        errors.append(f"values.yaml image.repository is {values['image']['repository']}, not mercato/operator")
    with open("operator/src/crd.rs") as f:
        if 'format!("mercato/{}:{}", component.name(), env!("CARGO_PKG_VERSION"))' not in f.read():
            errors.append("operator/src/crd.rs no longer builds default images as mercato/<component>:<crate version>; update the chart, Tiltfile and this check")

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

    # Resources, selectors and dependencies.
    names = {d["metadata"]["name"] for d in docs if d["kind"] in ("Deployment", "Store")}
    names |= {a[0] for a, _ in calls("local_resource")}
    for a, k in calls("k8s_resource"):
        workload = a[0] if a else k.get("workload")
        if workload not in names:
            errors.append(f"k8s_resource({workload!r}) names no workload Tilt deploys ({sorted(names)})")
        for sel in k.get("objects") or []:
            if len(selector_matches(sel, docs)) != 1:
                errors.append(f"k8s_resource({workload!r}) object selector {sel!r} matches {len(selector_matches(sel, docs))} objects, not 1")
        for dep in k.get("resource_deps") or []:
            if dep not in names:
                errors.append(f"k8s_resource({workload!r}) depends on unknown resource {dep!r}")
    for a, k in calls("local_resource"):
        for dep in k.get("resource_deps") or []:
            if dep not in names:
                errors.append(f"local_resource({a[0]!r}) depends on unknown resource {dep!r}")

    for n in notes:
        print(f"note {n}")
    for e in errors:
        print(f"FAIL {e}")
    if not errors:
        print(f"ok   {kind_config}: kind Cluster {cluster!r} publishing node port(s) "
              + ", ".join(f"{p}->localhost:{m['hostPort']}" for p, m in sorted(node_ports.items())))
        print(f"ok   {tiltfile}: evaluates; builds {', '.join(sorted(builds))}; applies {len(docs)} objects "
              f"(chart + Store/{stores[0]['metadata']['name']}); every selector, dependency and image path resolves")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
