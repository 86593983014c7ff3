from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from switchyard.demo.build_model import auc, build, generate_data, training_matrix


def test_build_is_deterministic_and_learns(tmp_path: Path) -> None:
    first = build(tmp_path / "a", seed=3)
    second = build(tmp_path / "b", seed=3)
    assert first.read_bytes() == second.read_bytes()
    assert (tmp_path / "a" / "users.csv").read_text() == (tmp_path / "b" / "users.csv").read_text()

    # The same seed regenerates the training world; its last 20% of pairs were held out.
    data = generate_data(np.random.default_rng(3))
    x, clicks = training_matrix(data), data.clicks
    held_out = slice(int(0.8 * len(x)), None)
    session = ort.InferenceSession(str(first), providers=["CPUExecutionProvider"])
    (scores,) = session.run(["score"], {"features": x[held_out]})
    assert np.all((scores > 0) & (scores < 1))
    assert auc(scores[:, 0], clicks[held_out]) > 0.8


def test_auc_by_hand() -> None:
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
