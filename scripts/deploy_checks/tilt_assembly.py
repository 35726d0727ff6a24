"""Tilt's rules for grouping Kubernetes objects into resources, so the Tiltfile check can
refuse at check time what `tilt up` refuses at load time.

Follows tilt-dev/tilt's internal/tiltfile (tiltfile_state.go: assembleK8s,
assembleK8sByWorkload, assembleK8sUnresourced) and internal/k8s (entity.go, names.go,
object_selector.go):

1. A workload is an object with containers (a built-in kind with a pod spec) or one that a
   k8s_kind() selector matches (api_version and kind are case-insensitive regular
   expressions searched anywhere in the value, as Tilt's partial-match selectors are).
   Each workload becomes a resource named by the shortest unique fragment
   (name, name:kind, name:kind:namespace, name:kind:namespace:group).
2. In workload order, each workload with pod templates takes every not-yet-grouped
   Service whose (non-empty) selector matches a template's labels, in the workload's
   namespace or with no namespace.
3. Remaining objects with pod templates become resources named after them, again taking
   matching Services.
4. Then each k8s_resource() call, in order: `workload` must name a resource (or, with no
   workload, `new_name` and `objects` make a new one); every `objects` fragment must
   identify exactly one object of the whole YAML, and that object must still be
   ungrouped: naming an object that a workload already took is an error.
5. Every resource must end up with at least one object; duplicate objects are an error
   (unless k8s_yaml(allow_duplicates=True)).
Whatever is left goes to Tilt's "uncategorized" resource.
"""

import re

# Built-in kinds Tilt decodes into typed objects with containers, and where their pod
# templates are. (Custom resources are unstructured: Tilt finds no containers in them.)
POD_TEMPLATE_PATHS = {
    ("apps", "Deployment"): ["spec", "template"],
    ("apps", "ReplicaSet"): ["spec", "template"],
    ("apps", "StatefulSet"): ["spec", "template"],
    ("apps", "DaemonSet"): ["spec", "template"],
    ("batch", "Job"): ["spec", "template"],
    ("batch", "CronJob"): ["spec", "jobTemplate", "spec", "template"],
    ("", "ReplicationController"): ["spec", "template"],
    ("", "PodTemplate"): ["template"],
}
CONTAINER_KINDS = set(POD_TEMPLATE_PATHS) | {("", "Pod")}
DEFAULT_NAMESPACE = "default"


def group_of(obj):
    api_version = obj.get("apiVersion", "")
    return api_version.split("/")[0] if "/" in api_version else ""


def namespace_of(obj):
    return (obj.get("metadata") or {}).get("namespace") or DEFAULT_NAMESPACE


def full_name(obj):
    return ":".join([obj["metadata"]["name"], obj["kind"], namespace_of(obj)]).lower()


def fragments(obj):
    """The strings a k8s_resource(objects=...) entry may use for obj, shortest first."""
    parts = [obj["metadata"]["name"], obj["kind"], namespace_of(obj), group_of(obj) or "core"]
    return [":".join(parts[: i + 1]).lower() for i in range(len(parts))]


def pod_templates(obj):
    path = POD_TEMPLATE_PATHS.get((group_of(obj), obj.get("kind")))
    node = obj
    for key in path or []:
        node = (node or {}).get(key)
    return [node] if path and isinstance(node, dict) else []


class KindSelector:
    """k8s_kind(kind, api_version=...): partial, case-insensitive matches."""

    def __init__(self, kind, api_version=""):
        self.kind = re.compile(kind, re.I) if kind else None
        self.api_version = re.compile(api_version, re.I) if api_version else None

    def matches(self, obj):
        return ((self.kind is None or self.kind.search(obj.get("kind", "")) is not None)
                and (self.api_version is None or self.api_version.search(obj.get("apiVersion", "")) is not None))


def is_workload(obj, kinds):
    return (group_of(obj), obj.get("kind")) in CONTAINER_KINDS or any(k.matches(obj) for k in kinds)


def service_matches(svc, workload):
    """Tilt groups a Service with a workload when its selector is a non-empty subset of a
    pod template's labels and it is in the workload's namespace (or has none)."""
    if svc.get("kind") != "Service" or group_of(svc) != "":
        return False
    selector = (svc.get("spec") or {}).get("selector") or {}
    if not selector:
        return False
    if namespace_of(svc) != DEFAULT_NAMESPACE and namespace_of(svc) != namespace_of(workload):
        return False
    for template in pod_templates(workload):
        labels = (template.get("metadata") or {}).get("labels") or {}
        if all(labels.get(k) == v for k, v in selector.items()):
            return True
    return False


def unique_names(objs):
    counts = {}
    for o in objs:
        for f in fragments(o):
            counts[f] = counts.get(f, 0) + 1
    names = []
    for i, o in enumerate(objs):
        name = next((f for f in fragments(o) if counts[f] == 1), None)
        names.append(name or f"{fragments(o)[-1]}:{i}")
    return names


def selector_matches(fragment, obj):
    parts = fragment.split(":")
    wanted = [obj["metadata"]["name"], obj["kind"], namespace_of(obj)]
    return len(parts) <= 3 and all(p.lower() == w.lower() for p, w in zip(parts, wanted))


def assemble(docs, kinds, resource_calls, allow_duplicates=False):
    """Groups docs as Tilt does. resource_calls are the k8s_resource() keyword arguments
    (with `workload` filled in from a positional argument), in call order.
    Returns ({resource name: [objects]}, ungrouped objects, errors)."""
    errors = []
    seen = {}
    for d in docs:
        key = (d["metadata"]["name"], d["kind"], namespace_of(d), group_of(d))
        if key in seen and not allow_duplicates:
            errors.append(f"duplicate YAML: {full_name(d)} is applied twice")
        seen[key] = d

    resources = {}
    workloads = [d for d in docs if is_workload(d, kinds)]
    rest = [d for d in docs if not is_workload(d, kinds)]
    for name, w in zip(unique_names(workloads), workloads):
        taken = [d for d in rest if service_matches(d, w)]
        rest = [d for d in rest if not any(d is t for t in taken)]
        resources[name] = [w] + taken
    for d in [d for d in rest if pod_templates(d)]:
        rest = [r for r in rest if r is not d]
        taken = [r for r in rest if service_matches(r, d)]
        rest = [r for r in rest if not any(r is t for t in taken)]
        resources.setdefault(d["metadata"]["name"], []).extend([d] + taken)

    by_fragment = {}
    for d in docs:
        for f in fragments(d):
            by_fragment.setdefault(f, []).append(d)

    def owner(obj):
        return next((n for n, objs in resources.items() if any(o is obj for o in objs)), None)

    for call in resource_calls:
        workload, new_name = call.get("workload") or "", call.get("new_name") or ""
        name = workload or new_name
        objects = list(call.get("objects") or [])
        if not name:
            errors.append("k8s_resource() names neither a workload nor a new_name")
            continue
        if not workload:
            if not objects:
                errors.append(f"k8s_resource(new_name={new_name!r}) groups no objects")
            resources[new_name] = []
        if name not in resources:
            errors.append(f"k8s_resource({name!r}): no such resource; Tilt made {sorted(resources)}")
            continue
        if workload and new_name and new_name != workload:
            resources[new_name] = resources.pop(workload)
            name = new_name
        for o in objects:
            matching = by_fragment.get(o.lower(), [])
            if not matching:
                errors.append(f"k8s_resource({name!r}) objects: {o!r} identifies no object in the YAML")
            elif len(matching) > 1:
                errors.append(f"k8s_resource({name!r}) objects: {o!r} matches {len(matching)} objects "
                              f"({', '.join(full_name(m) for m in matching)}); qualify it")
            elif not selector_matches(o, matching[0]):
                errors.append(f"k8s_resource({name!r}) objects: {o!r} is no name[:kind[:namespace]] selector")
            elif owner(matching[0]) is not None:
                errors.append(f"k8s_resource({name!r}) objects: {o!r} is already in resource "
                              f"{owner(matching[0])!r} (Tilt grouped it automatically); `tilt up` stops at this")
            else:
                resources[name].append(matching[0])
                rest = [r for r in rest if r is not matching[0]]
    for name, objs in resources.items():
        if not objs:
            errors.append(f"resource {name!r} has no objects")
    return resources, rest, errors
