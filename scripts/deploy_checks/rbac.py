"""Checks the RBAC of the rendered chart against the operator's own table.

The operator declares every permission it needs in operator/src/rbac.rs; `make crds` writes
the ClusterRole's rules from it into charts/mercato-operator/files/operator-rules.yaml (a
Rust test fails when that file is stale), and the operator's tests answer 403 to any
request the table does not allow. What is left to check here is what only the rendered
chart shows:
- the ClusterRole grants exactly the generated rules (the template includes them whole);
- no other ClusterRole or Role grants anything but the leader-election Lease, which a Role
  in the operator's namespace grants, limited by name to the Lease the Deployment uses;
- every binding reaches the Deployment's ServiceAccount;
- scope: the ClusterRole is bound by a RoleBinding in each namespace the operator watches
  (its WATCH_NAMESPACES) and nowhere else, or, only when it watches every namespace, by one
  ClusterRoleBinding. `--scoped` also requires the first (the chart's default: watching
  every namespace, and so reading every Secret, is an explicit opt-in); `--cluster-wide`
  requires the second.

Usage: rbac.py RULES_FILE RENDERED_CHART RELEASE_NAMESPACE [--scoped | --cluster-wide]
"""

import sys

import yaml


def triples(rules):
    """(group, resource, verb) of every rule."""
    out = set()
    for rule in rules or []:
        for g in rule.get("apiGroups", []):
            for r in rule.get("resources", []):
                for v in rule.get("verbs", []):
                    out.add((g, r, v))
    return out


def main():
    rules_path, rendered_path, namespace = sys.argv[1:4]
    expect = sys.argv[4] if len(sys.argv) > 4 else None
    with open(rules_path) as f:
        table = triples(yaml.safe_load(f))
    with open(rendered_path) as f:
        rendered = [d for d in yaml.safe_load_all(f) if d]
    failed = False

    def fail(message):
        nonlocal failed
        failed = True
        print(f"FAIL {message}")

    roles = [d for d in rendered if d.get("kind") in ("ClusterRole", "Role")]
    cluster_roles = [d for d in roles if d["kind"] == "ClusterRole"]
    if len(cluster_roles) != 1:
        fail(f"expected one ClusterRole, found {len(cluster_roles)}")
    for role in cluster_roles:
        granted = triples(role.get("rules"))
        for g, r, v in sorted(table - granted):
            fail(f"ClusterRole/{role['metadata']['name']} lacks {v} on {r} ({g or 'core'}) from operator/src/rbac.rs")
        for g, r, v in sorted(granted - table):
            fail(f"ClusterRole/{role['metadata']['name']} grants {v} on {r} ({g or 'core'}), which operator/src/rbac.rs does not list")
        if granted == table:
            print(f"ok   ClusterRole/{role['metadata']['name']}: the {len(table)} permissions of operator/src/rbac.rs, nothing else")

    deployment = next(d for d in rendered if d.get("kind") == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0].get("env", [])}
    lease = env.get("LEASE_NAME")
    for role in (d for d in roles if d["kind"] == "Role"):
        where = f"Role/{role['metadata']['name']}"
        if role["metadata"].get("namespace") != namespace:
            fail(f"{where} is not in the operator's namespace {namespace}")
        for rule in role.get("rules") or []:
            if rule.get("apiGroups") != ["coordination.k8s.io"] or rule.get("resources") != ["leases"]:
                fail(f"{where} grants {rule}: only the leader-election Lease belongs in a Role")
                continue
            names = rule.get("resourceNames")
            if names is not None and names != [lease]:
                fail(f"{where} limits leases to {names}, but the operator uses LEASE_NAME={lease}")
            if names is None and set(rule.get("verbs", [])) - {"create"}:
                fail(f"{where} grants {rule['verbs']} on every Lease; only create cannot be limited by name")
        if not failed:
            print(f"ok   {where}: leader election on Lease {lease} only")

    sa = pod.get("serviceAccountName")
    for doc in rendered:
        if doc.get("kind") in ("ClusterRoleBinding", "RoleBinding"):
            subjects = [(s.get("name"), s.get("namespace")) for s in doc.get("subjects", [])]
            if (sa, namespace) not in subjects:
                fail(f"{doc['kind']}/{doc['metadata']['name']} does not bind ServiceAccount {namespace}/{sa}")
            else:
                print(f"ok   {doc['kind']}/{doc['metadata']['name']} binds ServiceAccount {namespace}/{sa}")

    cluster_role = cluster_roles[0]["metadata"]["name"] if cluster_roles else None
    bindings = [d for d in rendered if d.get("kind") in ("ClusterRoleBinding", "RoleBinding")
                and d.get("roleRef", {}).get("kind") == "ClusterRole"
                and d["roleRef"].get("name") == cluster_role]
    watched = [n for n in (env.get("WATCH_NAMESPACES") or "").split(",") if n]
    cluster_bindings = [b for b in bindings if b["kind"] == "ClusterRoleBinding"]
    bound_in = sorted(b["metadata"].get("namespace") for b in bindings if b["kind"] == "RoleBinding")
    if watched:
        if cluster_bindings:
            fail(f"the operator watches {watched} but a ClusterRoleBinding grants its rules in every namespace")
        if bound_in != sorted(watched):
            fail(f"the operator watches {sorted(watched)} but its rules are bound in {bound_in}")
        if not cluster_bindings and bound_in == sorted(watched):
            print(f"ok   scope: the rules are bound in the watched namespaces {watched} only")
    else:
        if len(cluster_bindings) != 1 or bound_in:
            fail(f"the operator watches every namespace: expected one ClusterRoleBinding, found {len(cluster_bindings)} and RoleBindings in {bound_in}")
        else:
            print("ok   scope: every namespace (one ClusterRoleBinding), as watchAllNamespaces asks")
    if expect == "--scoped" and not watched:
        fail("by default the operator must watch (and be bound in) named namespaces only")
    if expect == "--cluster-wide" and watched:
        fail(f"watchAllNamespaces is set but the operator watches only {watched}")

    print(f"{'FAIL' if failed else 'ok  '} RBAC of the rendered chart")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
