"""Checks the RBAC of the rendered chart against the operator's own table.

The operator declares every permission it needs in operator/src/rbac.rs; `make crds` writes
the ClusterRole's rules from it into charts/mercato-operator/files/operator-rules.yaml (a
Rust test fails when that file is stale), and the operator's tests answer 403 to any
request the table does not allow. What is left to check here is what only the rendered
chart shows:
- the ClusterRole grants exactly the generated rules (the template includes them whole);
- no other ClusterRole or Role grants anything but the leader-election Lease, which a Role
  in the operator's namespace grants, limited by name to the Lease the Deployment uses;
- every binding reaches the Deployment's ServiceAccount.

Usage: rbac.py RULES_FILE RENDERED_CHART RELEASE_NAMESPACE
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

    print(f"{'FAIL' if failed else 'ok  '} RBAC of the rendered chart")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
