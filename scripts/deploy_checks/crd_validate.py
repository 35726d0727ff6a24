"""Validates Store manifests against the Store CRD the way the API server would.

kubernetes-validate knows only built-in kinds, so this does for the Store what the API
server does on create: apply the schema's defaults, check the structural schema (types,
ranges, enums, patterns; unknown fields are errors, as with `kubectl apply`'s strict field
validation) and evaluate the `x-kubernetes-validations` CEL rules (transition rules, which
need `oldSelf`, only apply to updates and are skipped).

Before trusting itself it checks that invalid Stores are rejected, and with --full it checks
that a manifest (examples/store-full.yaml) sets every field of the spec.

Usage: crd_validate.py CRD [--full FILE] FILE...   (each FILE: YAML documents; Stores are
checked, other kinds ignored; --require-store fails a FILE without any Store)
"""

import argparse
import copy
import logging
import sys

import celpy
from celpy import celtypes
import jsonschema
import yaml

logging.getLogger("celpy").setLevel(logging.ERROR)
logging.getLogger("lark").setLevel(logging.ERROR)

K8S_ONLY_KEYS = {
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-embedded-resource",
    "nullable",
    "default",
    "description",
    "title",
}


def to_json_schema(node):
    """An OpenAPI v3 structural schema node as JSON Schema, closed to unknown fields."""
    out = {k: v for k, v in node.items() if k not in K8S_ONLY_KEYS}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    for key in ("properties", "patternProperties"):
        if key in node:
            out[key] = {k: to_json_schema(v) for k, v in node[key].items()}
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = to_json_schema(node["additionalProperties"])
    if "items" in node:
        out["items"] = to_json_schema(node["items"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in node and key in out and not node.get("x-kubernetes-int-or-string"):
            out[key] = [to_json_schema(v) for v in node[key]]
    if (
        node.get("type") == "object"
        and "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def root_schema(crd_schema, group_version, kind):
    schema = to_json_schema(crd_schema)
    schema.setdefault("properties", {})
    schema["properties"].update(
        {
            "apiVersion": {"const": group_version},
            "kind": {"const": kind},
            "metadata": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string", "minLength": 1}},
            },
        }
    )
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
    schema["additionalProperties"] = False
    return schema


def apply_defaults(node, value):
    """Structural defaulting, as the API server does it before validation."""
    if isinstance(value, dict):
        for name, prop in (node.get("properties") or {}).items():
            if name not in value and "default" in prop:
                value[name] = copy.deepcopy(prop["default"])
            if name in value:
                apply_defaults(prop, value[name])
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            for name in value:
                if name not in (node.get("properties") or {}):
                    apply_defaults(extra, value[name])
    elif isinstance(value, list) and "items" in node:
        for item in value:
            apply_defaults(node["items"], item)


CEL = celpy.Environment()


def cel_errors(node, value, path):
    """Failed `x-kubernetes-validations` rules (not transition rules) at and below `path`."""
    errors = []
    for rule in node.get("x-kubernetes-validations") or []:
        if "oldSelf" in rule["rule"]:
            continue
        message = rule.get("message", rule["rule"])
        try:
            program = CEL.program(CEL.compile(rule["rule"]))
            result = program.evaluate({"self": celpy.json_to_cel(value)})
        except Exception as e:  # a rule that cannot be evaluated fails, as on the server
            result, message = None, f"{message} (rule {rule['rule']!r} failed: {e})"
        # celpy returns evaluation errors as values; only a boolean true passes.
        if not (isinstance(result, (bool, celtypes.BoolType)) and bool(result)):
            errors.append(f"{path or '<root>'}: {message}")
    if isinstance(value, dict):
        for name, prop in (node.get("properties") or {}).items():
            if name in value:
                errors += cel_errors(prop, value[name], f"{path}.{name}" if path else name)
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            for name in value:
                if name not in (node.get("properties") or {}):
                    errors += cel_errors(extra, value[name], f"{path}.{name}")
    elif isinstance(value, list) and "items" in node:
        for i, item in enumerate(value):
            errors += cel_errors(node["items"], item, f"{path}[{i}]")
    return errors


class StoreValidator:
    def __init__(self, crd):
        self.kind = crd["spec"]["names"]["kind"]
        self.group = crd["spec"]["group"]
        versions = [v for v in crd["spec"]["versions"] if v.get("served")] or crd["spec"]["versions"]
        self.versions = {}
        for v in versions:
            gv = f"{self.group}/{v['name']}"
            crd_schema = v["schema"]["openAPIV3Schema"]
            validator = jsonschema.Draft202012Validator(root_schema(crd_schema, gv, self.kind))
            self.versions[gv] = (crd_schema, validator)

    def errors(self, obj):
        gv = obj.get("apiVersion")
        if gv not in self.versions:
            return [f"apiVersion {gv!r} is not served by the CRD (served: {', '.join(self.versions)})"]
        crd_schema, validator = self.versions[gv]
        obj = copy.deepcopy(obj)
        apply_defaults(crd_schema, obj)
        errors = [
            f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
            for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
        ]
        if not errors:  # CEL assumes a structurally valid object
            errors = cel_errors(crd_schema, obj, "")
        return errors

    def spec_schema(self):
        crd_schema, _ = next(iter(self.versions.values()))
        return crd_schema["properties"]["spec"]


def field_paths(node, prefix):
    """Every field path of the spec schema, down to scalars, lists and free-form maps."""
    props = node.get("properties")
    if not props:
        return [prefix]
    out = []
    for name, prop in props.items():
        out += field_paths(prop, f"{prefix}.{name}")
    return out


def has_path(obj, path):
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return False
        obj = obj[part]
    return True


def self_test(validator):
    """The validator must reject what the API server rejects, or its passes mean nothing."""
    base = {"apiVersion": "mercato.dev/v1alpha1", "kind": "Store", "metadata": {"name": "demo"}}

    def store(spec=None, name="demo"):
        s = copy.deepcopy(base)
        s["metadata"]["name"] = name
        if spec is not None:
            s["spec"] = spec
        return s

    cases = {
        "a misspelt field": store({"auth": {"replica": 2}}),
        "replicas above the maximum": store({"auth": {"replicas": 51}}),
        "a deletion policy that is not in the enum": store({"deletionPolicy": "Destroy"}),
        "a storage size in the wrong unit": store({"order": {"database": {"storageSize": "1GB"}}}),
        "a name longer than 40 characters (CEL)": store(name="a" * 41),
        "a name with capitals (CEL)": store(name="Demo"),
        "a refresh token shorter than the access token (CEL)": store(
            {"tokens": {"accessTokenTtlSeconds": 3600, "refreshTokenTtlSeconds": 600}}
        ),
        "a node port on a ClusterIP gateway (CEL)": store({"gateway": {"service": {"nodePort": 30080}}}),
    }
    failures = [what for what, s in cases.items() if not validator.errors(s)]
    if validator.errors(store()):
        failures.append(f"the minimal Store is rejected: {validator.errors(store())}")
    return len(cases), failures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("crd")
    ap.add_argument("files", nargs="+")
    ap.add_argument("--full", action="append", default=[],
                    help="Store manifests that between them must set every spec field (repeatable:"
                         " some fields exclude each other, e.g. database.external and restoreFrom)")
    ap.add_argument("--require-store", action="store_true")
    args = ap.parse_args()

    with open(args.crd) as f:
        crd = yaml.safe_load(f)
    validator = StoreValidator(crd)
    failed = False

    n, failures = self_test(validator)
    if failures:
        failed = True
        for what in failures:
            print(f"FAIL validator self-test: {what} was not rejected")
    else:
        print(f"ok   validator self-test: {n} invalid Stores rejected, the minimal Store accepted")

    for path in args.files:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        stores = [d for d in docs if d.get("kind") == validator.kind and str(d.get("apiVersion", "")).startswith(validator.group + "/")]
        if not stores and args.require_store:
            print(f"FAIL {path}: no {validator.kind} in the file")
            failed = True
        for s in stores:
            name = (s.get("metadata") or {}).get("name")
            errors = validator.errors(s)
            if errors:
                failed = True
                for e in errors:
                    print(f"FAIL {path}: {validator.kind}/{name}: {e}")
            else:
                print(f"ok   {path}: {validator.kind}/{name} is valid")

    if args.full:
        stores = []
        for path in args.full:
            with open(path) as f:
                stores.append(next(d for d in yaml.safe_load_all(f) if d))
        names = " and ".join(args.full)
        paths = field_paths(validator.spec_schema(), "spec")
        missing = [p for p in paths if not any(has_path(s, p) for s in stores)]
        if missing:
            failed = True
            print(f"FAIL {names} do not show these fields of the CRD: {', '.join(missing)}")
        else:
            print(f"ok   {names} set every one of the {len(paths)} spec fields")

    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
