"""Chart checks: `helm lint --strict` and `helm template` of the chart with its default values
and with every `ci/*-values.yaml`, through Helm's own Go SDK (`helm-python-sdk`); every
rendered manifest validated against the Kubernetes schemas with `kubernetes-validate
--strict`; and the values files under `.ci/chart/wrong-*` refused by values.schema.json.

Exit status 0 when everything passes, 1 otherwise; one line per check.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import helm_python
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "catapush-dispatcher"
WRONG = sorted((ROOT / ".ci" / "chart").glob("wrong-*.yaml"))
KUBERNETES_VERSION = "1.30.0"
RELEASE, NAMESPACE = "dispatcher", "push"
# Custom resources have no schema among Kubernetes' own: checked for shape here instead.
CUSTOM_KINDS = {
    "ScaledObject": "keda.sh/v1alpha1",
    "TriggerAuthentication": "keda.sh/v1alpha1",
    "ServiceMonitor": "monitoring.coreos.com/v1",
}
SEVERITY_INFO = 1


def load(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    loaded = yaml.safe_load(path.read_text())
    return loaded if isinstance(loaded, dict) else {}


def lint(values: dict[str, Any] | None) -> list[str]:
    report = helm_python.lint(
        CHART, values, strict=True, namespace=NAMESPACE, kube_version=KUBERNETES_VERSION
    )
    problems = [str(error) for error in report.get("errors") or []]
    problems += [
        f"{message['path']}: {message['error']}"
        for message in report.get("messages") or []
        if message["severity"] > SEVERITY_INFO
    ]
    return problems


def render(values: dict[str, Any] | None) -> list[dict[str, Any]]:
    chart = helm_python.Chart.load(CHART)
    chart.validate_schema(values)
    rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    documents = []
    for name, text in sorted(rendered.items()):
        if not name.endswith((".yaml", ".yml")):
            continue
        documents += [document for document in yaml.safe_load_all(text) if document]
    return documents


def custom_problems(document: dict[str, Any]) -> list[str]:
    kind = document["kind"]
    problems = []
    if document.get("apiVersion") != CUSTOM_KINDS[kind]:
        problems.append(f"{kind}: apiVersion {document.get('apiVersion')}")
    if not document.get("metadata", {}).get("name") or not isinstance(document.get("spec"), dict):
        problems.append(f"{kind}: no metadata.name or spec")
    if kind == "ScaledObject":
        for trigger in document["spec"].get("triggers", []):
            metadata = trigger.get("metadata", {})
            if not all(isinstance(value, str) for value in metadata.values()):
                problems.append(f"ScaledObject: trigger metadata must be strings: {metadata}")
    return problems


def validate(documents: list[dict[str, Any]], folder: Path) -> list[str]:
    problems: list[str] = []
    files = []
    for index, document in enumerate(documents):
        if document["kind"] in CUSTOM_KINDS:
            problems += custom_problems(document)
            continue
        path = folder / f"{index:02d}-{document['kind']}.yaml"
        path.write_text(yaml.safe_dump(document))
        files.append(str(path))
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("kubernetes-validate")),
            "--strict",
            "--quiet",
            "-k",
            KUBERNETES_VERSION,
            *files,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        problems.append((result.stdout + result.stderr).strip())
    return problems


def main() -> int:
    failed = 0
    cases: list[Path | None] = [None, *sorted((CHART / "ci").glob("*-values.yaml"))]
    for case in cases:
        label = "default values" if case is None else str(case.relative_to(ROOT))
        values = load(case)
        try:
            problems = lint(values)
            documents = render(values)
            with tempfile.TemporaryDirectory() as folder:
                problems += validate(documents, Path(folder))
        except helm_python.HelmError as exc:
            problems = [str(exc)]
            documents = []
        kinds = sorted({document["kind"] for document in documents})
        if problems:
            failed += 1
            print(f"FAIL {label}:")
            for problem in problems:
                print(f"  {problem}")
        else:
            shown = ", ".join(kinds)
            print(f"ok   {label}: lint --strict, {len(documents)} manifests valid ({shown})")
    for case in WRONG:
        label = str(case.relative_to(ROOT))
        try:
            helm_python.Chart.load(CHART).validate_schema(load(case))
        except helm_python.HelmError as exc:
            reason = " ".join(line.strip() for line in str(exc).splitlines()[1:])
            print(f"ok   {label}: refused by the schema: {reason}")
        else:
            failed += 1
            print(f"FAIL {label}: the schema accepted it")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
