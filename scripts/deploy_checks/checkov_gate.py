"""Runs checkov and fails on any finding that checkov-skips.yaml does not explain.

Usage: checkov_gate.py SECTION FRAMEWORK FILE...
  SECTION    the list of accepted findings in checkov-skips.yaml (chart, operator, ...)
  FRAMEWORK  checkov framework (kubernetes, dockerfile)
"""

import fnmatch
import json
import os
import subprocess
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    section, framework, files = sys.argv[1], sys.argv[2], sys.argv[3:]
    with open(os.path.join(HERE, "checkov-skips.yaml")) as f:
        skips = yaml.safe_load(f).get(section) or []
    for s in skips:
        if not str(s.get("reason", "")).strip() or not s.get("check") or not s.get("resources"):
            print(f"FAIL checkov-skips.yaml [{section}]: every entry needs check, resources and a reason: {s}")
            return 1

    cmd = [os.path.join(os.path.dirname(sys.executable), "checkov"), "--framework", framework,
           "--skip-download", "-o", "json"]
    for path in files:
        cmd += ["-f", path]
    # checkov must never reach out to a platform from CI.
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE", CHECKOV_RUN_SCA_PACKAGE_SCAN_V2="false")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    try:
        reports = json.loads(proc.stdout)
    except json.JSONDecodeError:
        print(f"FAIL checkov did not report (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        return 1
    if isinstance(reports, dict):
        reports = [reports]

    passed = failed_total = explained = 0
    failures, used = [], set()
    for report in reports:
        summary = report.get("summary", {})
        if summary.get("parsing_errors"):
            print(f"FAIL checkov could not parse: {report.get('results', {}).get('parsing_errors')}")
            return 1
        passed += summary.get("passed", 0)
        for f in report.get("results", {}).get("failed_checks", []):
            failed_total += 1
            reason = None
            for i, s in enumerate(skips):
                if s["check"] == f["check_id"] and any(fnmatch.fnmatch(f["resource"], p) for p in s["resources"]):
                    reason, _ = s["reason"], used.add(i)
                    break
            if reason:
                explained += 1
            else:
                failures.append(f)
    if passed + failed_total == 0:
        print(f"FAIL checkov ran no check on {' '.join(files)}")
        return 1

    for f in failures:
        print(f"FAIL {f['check_id']} {f['check_name']}: {f['resource']} ({os.path.basename(f['file_path'])})")
    for i, s in enumerate(skips):
        if i not in used:
            print(f"note checkov-skips.yaml [{section}] {s['check']} {s['resources']} matched nothing this run")
    checks = sorted({s['check'] for i, s in enumerate(skips) if i in used})
    status = "FAIL" if failures else "ok  "
    print(f"{status} checkov [{section}]: {passed} passed, {len(failures)} failed, "
          f"{explained} accepted with a written reason ({', '.join(checks) or 'none'})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
