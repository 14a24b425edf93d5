"""The GRES / RIS metrics against every reference case set produced by the official code."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from deris_core.metrics import GresAccumulator, MetricError, RisAccumulator, gres_metrics
from tests.conftest import REFERENCE, require_reference

ERRORS = {"ZeroDivisionError": ZeroDivisionError, "RuntimeError": MetricError}


def _case_sets() -> list[str]:
    names = sorted(p.name[: -len("_cases.npz")] for p in (REFERENCE / "metrics").glob("*_cases.npz"))
    return names or ["<missing>"]


def _load(name: str):
    npz = np.load(require_reference("metrics", f"{name}_cases.npz"))
    expected = json.loads(require_reference("metrics", f"{name}_expected.json").read_text())
    cases = []
    for i in range(len(npz["gt"])):
        h, w = int(npz["heights"][i]), int(npz["widths"][i])
        case = {"gt": npz["gt"][i, :h, :w], "pred": npz["pred"][i, :h, :w]}
        if "gt_nt" in npz:
            case["gt_nt"], case["pred_nt"] = bool(npz["gt_nt"][i]), bool(npz["pred_nt"][i])
        cases.append(case)
    return cases, expected, "gt_nt" in npz


def _compute(cases, indices, gres: bool, impl: str):
    if gres:
        acc = GresAccumulator()
        for i in indices:
            acc.add(cases[i]["pred"], cases[i]["gt"], cases[i]["gt_nt"], cases[i]["pred_nt"])
        return acc.result(fractions=(impl == "rela"))
    acc = RisAccumulator()
    for i in indices:
        acc.add(cases[i]["pred"], cases[i]["gt"])
    return acc.result()


def _compare(got: dict, want: dict, rel: float) -> None:
    for key, value in want.items():
        if value == "nan":
            assert math.isnan(got[key]), key
        else:
            assert got[key] == pytest.approx(value, rel=rel, abs=1e-9), key


@pytest.mark.parametrize("name", _case_sets())
def test_reference_case_set(name: str) -> None:
    if name == "<missing>":
        require_reference("metrics", "gres-public_cases.npz")
    cases, expected, gres = _load(name)
    impls = ["deris", "rela"] if gres else ["deris"]
    rel = 1e-12 if gres else 1e-6
    # Per-sample I, U and IoU.
    for row in expected["per_case"]:
        c = cases[row["case"]]
        if gres:
            acc = GresAccumulator()
            iou = acc.add(c["pred"], c["gt"], c["gt_nt"], c["pred_nt"])
            assert (acc.per_sample[0]["I"], acc.per_sample[0]["U"]) == (row["I"], row["U"])
        else:
            iou = RisAccumulator().add(c["pred"], c["gt"])
        assert iou == pytest.approx(row["iou"], rel=1e-6, abs=1e-12)
    checked = 0
    for subset in [{"name": "aggregate", "indices": list(range(len(cases))), **expected["aggregate"]}] + expected["subsets"]:
        for impl in impls:
            want = subset[impl]
            if "error" in want:
                with pytest.raises(ERRORS[want["error"]]):
                    _compute(cases, subset["indices"], gres, impl)
            else:
                _compare(_compute(cases, subset["indices"], gres, impl), want, rel)
            checked += 1
    assert checked >= len(expected["subsets"])


def test_gres_hand_case() -> None:
    gt = np.zeros((4, 4), np.uint8)
    gt[:2, :2] = 1
    pred = np.zeros((4, 4), np.uint8)
    pred[:2, :] = 1
    samples = [(pred, gt, False, False), (pred, np.zeros_like(gt), True, True), (pred, np.zeros_like(gt), True, False)]
    res = gres_metrics(samples)
    assert res["gIoU"] == pytest.approx(100 * (0.5 + 1 + 0) / 3)
    assert res["cIoU"] == pytest.approx(100 * 4 / (8 + 8))
    assert res["N_acc"] == pytest.approx(50.0) and res["T_acc"] == pytest.approx(100.0)
