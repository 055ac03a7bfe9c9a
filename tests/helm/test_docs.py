"""docs/kubernetes.md as tests: what the install guide shows, the chart accepts.

* Every YAML block that is chart values (no ``apiVersion``) passes the chart's
  values schema, renders, and every rendered object passes strict Kubernetes
  validation (custom resources: their CRDs, in tests/helm/test_chart.py).
* Every Secret key the chart, rendered with those values, reads from a Secret
  (``secretKeyRef``, ``existingSecret`` keys of the tokens Secret) is named in the guide.
* Every ``sh`` block is valid shell (``bash -n``), and each ``helm install`` in it
  names a values file the guide shows.
"""

from __future__ import annotations

import re
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.helm.test_chart import DOCS, KUBE_VERSION, render, validate_custom_resource

TEXT = DOCS.read_text()
YAML_BLOCKS = re.findall(r"```yaml\n(.*?)```", TEXT, flags=re.S)
SHELL_BLOCKS = re.findall(r"```sh\n(.*?)```", TEXT, flags=re.S)


def value_examples() -> list[dict[str, Any]]:
    """The YAML blocks that are chart values files."""
    out = []
    for block in YAML_BLOCKS:
        for doc in yaml.safe_load_all(block):
            if isinstance(doc, dict) and "apiVersion" not in doc:
                out.append(doc)
    return out


def test_the_guide_shows_values_and_shell() -> None:
    assert value_examples() and SHELL_BLOCKS


@pytest.mark.parametrize("index", range(len(value_examples())))
def test_documented_values_render_and_validate(index: int) -> None:
    docs = render(value_examples()[index])
    assert any(d["kind"] == "Deployment" for d in docs)
    for doc in docs:
        if str(doc["apiVersion"]).startswith("tally.dev/"):
            validate_custom_resource(doc)
        else:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def _secret_keys(node: Any) -> set[str]:
    keys: set[str] = set()
    if isinstance(node, dict):
        if "secretKeyRef" in node and isinstance(node["secretKeyRef"], dict):
            keys.add(str(node["secretKeyRef"]["key"]))
        for key, value in node.items():
            if key == "secret" and isinstance(value, dict):  # volumes: the keys mounted
                keys.update(str(item["key"]) for item in value.get("items", []))
            keys |= _secret_keys(value)
    elif isinstance(node, list):
        for value in node:
            keys |= _secret_keys(value)
    return keys


@pytest.mark.parametrize("index", range(len(value_examples())))
def test_every_secret_key_the_chart_reads_is_documented(index: int) -> None:
    docs = render(value_examples()[index])
    generated = {
        key
        for d in docs
        if d["kind"] == "Secret"
        for key in [*d.get("data", {}), *d.get("stringData", {})]
    }
    referenced = _secret_keys(docs) - generated  # keys of Secrets the chart makes itself
    assert referenced, "the documented values read no Secret key"
    missing = sorted(key for key in referenced if f"`{key}`" not in TEXT)
    assert not missing, f"docs/kubernetes.md never names these Secret keys: {missing}"


@pytest.mark.parametrize("index", range(len(SHELL_BLOCKS)))
def test_documented_shell_is_valid(index: int) -> None:
    block = SHELL_BLOCKS[index]
    checked = subprocess.run(["bash", "-n"], input=block, text=True, capture_output=True)
    assert checked.returncode == 0, checked.stderr
    for values_file in re.findall(r"helm (?:install|upgrade)[^\n]*-f (\S+)", block):
        assert f"`{values_file}`" in TEXT, f"the guide never shows {values_file}"
