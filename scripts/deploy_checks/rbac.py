"""Derives the permissions the operator needs from operator/src and compares them with
the RBAC of the rendered chart: every verb the code uses must be granted, and nothing else.

What counts as a use (tests and `#[cfg(test)]` modules excluded):
- a call on a typed `Api<K>` binding (`let x: Api<K>`, a parameter `x: &Api<K>`, a struct
  field used as `self.x`): get/get_opt -> get, list -> list, create -> create,
  patch -> patch (plus create when it is a server-side `Patch::Apply`, which creates a
  missing object and then needs `create`), replace -> update, delete -> delete,
  patch_status / replace_status -> patch / update on `<resource>/status`;
- `Api<K>` with a generic K: the kinds of the turbofish call sites (`prune::<NetworkPolicy>`);
- `Api<DynamicObject>` (apply::ensure): the kinds that builders::children() builds;
- `Controller::new(api::<K>..)` and `.owns(api::<K>..)`: list and watch;
- `finalizer(&api, ..)`: patch (it adds and removes the finalizer with a JSON patch);
- `Recorder::new`: events.k8s.io events create and patch (kube-runtime patches a repeated
  event's series);
- `block_owner_deletion: Some(true)` in an owner reference: update on `stores/finalizers`.

Usage: rbac.py OPERATOR_SRC CRD RENDERED_CHART RELEASE_NAMESPACE
"""

import os
import re
import sys

import yaml

# Kind -> (API group, resource). Store comes from the CRD.
RESOURCES = {
    "Secret": ("", "secrets"),
    "Service": ("", "services"),
    "ServiceAccount": ("", "serviceaccounts"),
    "PersistentVolumeClaim": ("", "persistentvolumeclaims"),
    "ConfigMap": ("", "configmaps"),
    "Pod": ("", "pods"),
    "Namespace": ("", "namespaces"),
    "Deployment": ("apps", "deployments"),
    "StatefulSet": ("apps", "statefulsets"),
    "PodDisruptionBudget": ("policy", "poddisruptionbudgets"),
    "NetworkPolicy": ("networking.k8s.io", "networkpolicies"),
    "Lease": ("coordination.k8s.io", "leases"),
    "Event": ("events.k8s.io", "events"),
    "Job": ("batch", "jobs"),
    "Ingress": ("networking.k8s.io", "ingresses"),
    "HorizontalPodAutoscaler": ("autoscaling", "horizontalpodautoscalers"),
}
VERBS = {
    "get": ["get"],
    "get_opt": ["get"],
    "get_metadata": ["get"],
    "list": ["list"],
    "list_metadata": ["list"],
    "watch": ["watch"],
    "create": ["create"],
    "patch": ["patch"],
    "replace": ["update"],
    "delete": ["delete"],
    "delete_collection": ["deletecollection"],
    "patch_status": ["patch"],
    "replace_status": ["update"],
    "get_status": ["get"],
}
CALL = re.compile(r"(?<![\w.])(self\.)?(\w+)\.(" + "|".join(VERBS) + r")\(")


def strip(src):
    """Source without comments, test modules or line breaks inside method chains."""
    src = re.sub(r"/\*.*?\*/", "", src, flags=re.S)
    src = re.sub(r"//[^\n]*", "", src)
    while True:
        m = re.search(r"#\[cfg\(test\)\]\s*(pub\s+)?mod\s+\w+\s*\{", src)
        if not m:
            break
        end = block_end(src, m.end() - 1)
        src = src[: m.start()] + src[end:]
    return re.sub(r"\s*\.\s*(?=[A-Za-z_])", ".", src)


def block_end(src, open_brace):
    depth = 0
    for i in range(open_brace, len(src)):
        if src[i] == "{":
            depth += 1
        elif src[i] == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    raise ValueError("unbalanced braces")


def call_args(src, open_paren):
    depth = 0
    for i in range(open_paren, len(src)):
        if src[i] == "(":
            depth += 1
        elif src[i] == ")":
            depth -= 1
            if depth == 0:
                return src[open_paren + 1 : i]
    return ""


FN = re.compile(r"\bfn\s+(\w+)\s*(<[^{;]*?>)?\s*\(")


def functions(src):
    """(name, generics, params, body) of every fn with a body."""
    out = []
    for m in FN.finditer(src):
        params = call_args(src, m.end() - 1)
        brace = src.find("{", m.end() + len(params))
        semi = src.find(";", m.end() + len(params))
        if brace < 0 or (0 <= semi < brace):
            continue
        out.append((m.group(1), m.group(2) or "", params, src[brace : block_end(src, brace)]))
    return out


def derive(src_dir, store_kind, store_resource):
    resources = dict(RESOURCES, **{store_kind: store_resource})
    files = {}
    for root, dirs, names in os.walk(src_dir):
        dirs[:] = [d for d in dirs if d != "tests"]
        for n in names:
            if n.endswith(".rs"):
                with open(os.path.join(root, n)) as f:
                    files[os.path.relpath(os.path.join(root, n), src_dir)] = strip(f.read())
    all_src = "\n".join(files.values())
    needs = {}  # (group, resource, verb) -> set of evidence strings

    def need(kind, verbs, where, sub=""):
        if kind not in resources:
            raise SystemExit(f"rbac.py: {where} uses kind {kind!r}, which RESOURCES does not map to an API resource; add it")
        group, res = resources[kind]
        for v in verbs:
            needs.setdefault((group, res + sub, v), set()).add(where)

    # The kinds builders::children() returns, for Api<DynamicObject>.
    child_kinds = set()
    children = next(f for f in functions(files["builders/mod.rs"]) if f[0] == "children")
    for module, fn in set(re.findall(r"\b(\w+)::(\w+)\(", children[3])):
        path = f"builders/{module}.rs"
        if path not in files:
            continue
        for name, _, _, _ in functions(files[path]):
            if name == fn:
                m = re.search(r"\bfn\s+" + fn + r"\s*\([^{]*?\)\s*->\s*(?:Option<)?(\w+)", files[path], re.S)
                if m and m.group(1) in resources:
                    child_kinds.add(m.group(1))

    for path, src in files.items():
        fields = dict(re.findall(r"^\s*(?:pub\s+)?(\w+)\s*:\s*Api<(\w+)>\s*,", src, re.M))
        for name, generics, params, body in functions(src):
            where = f"{path}:{name}"
            binds = dict(re.findall(r"(\w+)\s*:\s*&?\s*(?:mut\s+)?Api<(\w+)>", params))
            binds.update(re.findall(r"\blet\s+(?:mut\s+)?(\w+)\s*:\s*Api<(\w+)>", body))
            type_params = set(re.findall(r"\b([A-Z]\w*)\s*[:,>]", generics))

            def kinds_of(ty):
                if ty == "DynamicObject":
                    return sorted(child_kinds)
                if ty in type_params:
                    return sorted(set(re.findall(r"\b" + name + r"::<(\w+)>", all_src)))
                return [ty]

            for m in CALL.finditer(body):
                is_self, var, method = m.groups()
                ty = fields.get(var) if is_self else binds.get(var)
                if not ty:
                    continue
                verbs = list(VERBS[method])
                args = call_args(body, m.end() - 1)
                if method == "patch" and "Patch::Apply" in args:
                    verbs.append("create")
                sub = "/status" if method.endswith("_status") else ""
                for kind in kinds_of(ty):
                    need(kind, verbs, where, sub)
            for m in re.finditer(r"finalizer\(\s*&(\w+)", body):
                for kind in kinds_of(binds.get(m.group(1), "")) if binds.get(m.group(1)) else []:
                    need(kind, ["patch"], where + " (finalizer)")
            for m in re.finditer(r"(?:Controller::new|\.owns)\(\s*(?:\w+::)?api::<(\w+)>", body):
                need(m.group(1), ["list", "watch"], where + " (watch)")
            if re.search(r"\bRecorder::new\(", body):
                need("Event", ["create", "patch"], where + " (events)")
            # Owner references that block the owner's deletion need `update` on the owner's
            # finalizers subresource where OwnerReferencesPermissionEnforcement is enabled.
            if re.search(r"block_owner_deletion\s*:\s*Some\(\s*true", body):
                need(store_kind, ["update"], where + " (blockOwnerDeletion)", "/finalizers")
    return needs


def granted(rendered, namespace):
    """(group, resource, verb) -> where, from the ClusterRoles and Roles of the chart."""
    out, leases = {}, []
    for doc in rendered:
        if doc.get("kind") not in ("ClusterRole", "Role"):
            continue
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        for rule in doc.get("rules") or []:
            for g in rule.get("apiGroups", []):
                for r in rule.get("resources", []):
                    for v in rule.get("verbs", []):
                        out.setdefault((g, r, v), set()).add(where)
                        if r == "leases":
                            leases.append((doc, rule))
    return out, leases


def main():
    src_dir, crd_path, rendered_path, namespace = sys.argv[1:5]
    with open(crd_path) as f:
        crd = yaml.safe_load(f)
    store = (crd["spec"]["group"], crd["spec"]["names"]["plural"])
    needs = derive(src_dir, crd["spec"]["names"]["kind"], store)
    with open(rendered_path) as f:
        rendered = [d for d in yaml.safe_load_all(f) if d]
    grants, leases = granted(rendered, namespace)

    failed = False
    by_resource = {}
    for (group, res, verb) in sorted(needs):
        by_resource.setdefault((group, res), []).append(verb)
    for (group, res), verbs in sorted(by_resource.items()):
        missing = [v for v in verbs if (group, res, v) not in grants]
        where = sorted({w for v in verbs for w in needs[(group, res, v)]})
        if missing:
            failed = True
            for v in missing:
                print(f"FAIL {res} ({group or 'core'}): {v} is used by {', '.join(sorted(needs[(group, res, v)]))} but not granted")
        else:
            print(f"ok   {res:<23} {group or 'core':<20} {', '.join(verbs):<40} ({', '.join(where)})")
    for key in sorted(set(grants) - set(needs)):
        failed = True
        group, res, verb = key
        print(f"FAIL {verb:<6} {res:<24} {group or 'core':<20} granted by {', '.join(sorted(grants[key]))} but never used by the operator")

    # Leader election: a Role in the operator's namespace, naming the Lease the Deployment uses.
    deployment = next(d for d in rendered if d.get("kind") == "Deployment")
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0].get("env", [])}
    lease = env.get("LEASE_NAME")
    for doc, rule in leases:
        if doc["kind"] != "Role" or doc["metadata"].get("namespace") != namespace:
            failed = True
            print(f"FAIL leases are granted by {doc['kind']}/{doc['metadata']['name']}, not by a Role in {namespace}")
        names = rule.get("resourceNames")
        if names is not None and lease not in names:
            failed = True
            print(f"FAIL Role/{doc['metadata']['name']} limits leases to {names}, but the operator uses LEASE_NAME={lease}")

    # Every binding must reach the Deployment's ServiceAccount.
    sa = deployment["spec"]["template"]["spec"].get("serviceAccountName")
    for doc in rendered:
        if doc.get("kind") in ("ClusterRoleBinding", "RoleBinding"):
            subjects = [(s.get("name"), s.get("namespace")) for s in doc.get("subjects", [])]
            if (sa, namespace) not in subjects:
                failed = True
                print(f"FAIL {doc['kind']}/{doc['metadata']['name']} does not bind ServiceAccount {namespace}/{sa}")

    print(f"{'FAIL' if failed else 'ok  '} RBAC: {len(needs)} permissions derived from {src_dir}, {len(grants)} granted")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
