"""The README's scikit-learn recipe, run as written (tests/test_readme_http.py says how): fit a small
MLPClassifier on iris, pickle it, `forwardpass build --from classifier.pkl`, and curl the server that
make run would be: it must answer what the README shows, which is what scikit-learn's predict_proba says."""

from __future__ import annotations

import json
import pickle
import re

import numpy as np
import pytest
from test_readme_http import group, run_group

pytest.importorskip("sklearn.neural_network", reason="scikit-learn is not installed (the interop extra; make test)")


def test_the_classifier_recipe_serves_predict_proba(tmp_path):
    blocks = run_group("classifier", tmp_path)
    assert [block.kind for block in blocks] == ["file", "run", "run"]
    assert "MLPClassifier" in blocks[0].code and "random_state" in blocks[0].code
    assert "--from classifier.pkl" in blocks[1].code
    curl = blocks[2]
    request = json.loads(re.search(r"-d '(.*?)'", curl.code, re.DOTALL)[1])["inputs"][0]
    x = np.array(request["data"], np.float32).reshape(request["shape"])
    served = np.array(json.loads(curl.prints)["outputs"][0]["data"]).reshape(len(x), -1)
    with open(tmp_path / "classifier.pkl", "rb") as f:
        model = pickle.load(f)  # noqa: S301 - made by this test a moment ago
    # float32 inference against scikit-learn's float64: a few float32 roundings of values below 1
    assert np.allclose(served, model.predict_proba(x.astype(np.float64)), atol=1e-6, rtol=0)
    assert group("classifier")[0].where.startswith("README.md")
