"""Validates manifests against the Kubernetes OpenAPI schemas of given versions, strictly
(unknown fields are errors), with kubernetes-validate.

Kinds kubernetes-validate has no schema for are not passed over silently: the Store is
validated against its CRD by crd_validate.py (listed with --crd-kinds), anything else
fails unless named with --no-schema KIND (printed as not validated).

Usage: k8s_validate.py --versions 1.33.0,1.37.0 [--crd-kinds Store] [--no-schema KIND] FILE...
"""

import argparse
import os
import sys

import yaml
from kubernetes_validate import utils


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--versions", required=True)
    ap.add_argument("--crd-kinds", default="")
    ap.add_argument("--no-schema", action="append", default=[])
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    versions = args.versions.split(",")
    crd_kinds = set(filter(None, args.crd_kinds.split(",")))
    failed = False
    for path in args.files:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        if not docs:
            print(f"FAIL {path}: no objects")
            failed = True
            continue
        checked, elsewhere, unchecked = 0, [], []
        for doc in docs:
            kind = doc.get("kind")
            name = f"{kind}/{(doc.get('metadata') or {}).get('name')}"
            if kind in crd_kinds:
                elsewhere.append(name)
                continue
            for version in versions:
                try:
                    utils.validate(doc, version, strict=True)
                except utils.ValidationError as e:
                    where = ".".join(str(p) for p in e.path)
                    print(f"FAIL {path}: {name} against Kubernetes {e.version}: {where}: {e.message}")
                    failed = True
                except utils.SchemaNotFoundError:
                    if kind in args.no_schema:
                        unchecked.append(name)
                    else:
                        print(f"FAIL {path}: {name}: no schema for {doc.get('apiVersion')} {kind} in Kubernetes {version}")
                        failed = True
                    break
            else:
                checked += 1
        line = f"{os.path.basename(path)}: {checked} objects valid against Kubernetes {', '.join(versions)}"
        if elsewhere:
            line += f"; {', '.join(elsewhere)} checked against the CRD instead"
        if unchecked:
            line += f"; not validated (no schema offline): {', '.join(sorted(set(unchecked)))}"
        print(("ok   " if not failed else "     ") + line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
