"""Build the demo ranking model: deterministic from a seed, no downloads, no torch.

Generates users and items with hidden tastes, samples click interactions from them,
trains a small MLP on (user features ++ item features) with numpy, and writes into the
demo folder (see artifacts_dir: $SWITCHYARD_DEMO_DIR, else ~/.cache/switchyard/demo; never
into the installed package):

  ranker.onnx   input `features` FP32 [-1, 16]; outputs `logit`, `score` FP32 [-1, 1]
  users.csv     user_id + the 8 user feature columns
  items.csv     item_id + the 8 item feature columns

The CSVs are the demo's feature files (the online store serves them), and the model is
trained on rows built from them by the serving code's own function, under the feature
definitions of the served config (`features:` of demo/config.yaml), so training and
serving cannot transform features differently.

Run: `python -m switchyard.demo.build_model [--out DIR] [--seed N]`.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

from switchyard.demo.paths import DEMO_CONFIG_PATH, artifacts_dir
from switchyard.server.drift_profile import build_profile, default_profile_path
from switchyard.server.features.config import parse_features
from switchyard.server.features.definitions import EntityTable, FeatureDefinitions
from switchyard.server.features.definitions import training_matrix as rows_to_training_matrix
from switchyard.server.features.files import read_table

log = logging.getLogger(__name__)

MODEL_NAME = "ranker"
MODEL_FILE_NAME = "ranker.onnx"
# The quality-rollout demo's versions 2 and 3: a worse ranker (trained on shuffled labels:
# healthy latency and errors, ranking no better than chance) and a retrained one.
WORSE_MODEL_FILE_NAME = "ranker_v2_worse.onnx"
RETRAINED_MODEL_FILE_NAME = "ranker_v3.onnx"
USER_FEATURES = ("activity", "tenure", "pref_0", "pref_1", "pref_2", "pref_3", "pref_4", "pref_5")
ITEM_FEATURES = ("popularity", "price", "emb_0", "emb_1", "emb_2", "emb_3", "emb_4", "emb_5")
HIDDEN_UNITS = (32, 16)
TASTE_DIMS = 4


@dataclass(frozen=True)
class DemoData:
    user_features: np.ndarray  # [n_users, 8] float32
    item_features: np.ndarray  # [n_items, 8] float32
    pairs: np.ndarray  # [n, 2] int (user index, item index)
    clicks: np.ndarray  # [n] float32 in {0, 1}
    # The hidden tastes clicks are drawn from (loadtests/replay_clicks.py draws more).
    user_taste: np.ndarray  # [n_users, TASTE_DIMS]
    item_taste: np.ndarray  # [n_items, TASTE_DIMS]
    popularity: np.ndarray  # [n_items]

    def click_probability(self, user: int, items: np.ndarray) -> np.ndarray:
        """P(click) of user index `user` on item indices `items`, from the hidden tastes."""
        affinity = self.item_taste[items] @ self.user_taste[user]
        return np.asarray(
            1.0 / (1.0 + np.exp(-(1.2 * affinity + 0.8 * self.popularity[items] - 1.0)))
        )


def generate_data(
    rng: np.random.Generator, n_users: int = 1000, n_items: int = 500, n_pairs: int = 60_000
) -> DemoData:
    """Users and items with hidden tastes; clicks more likely where tastes align."""
    user_taste = rng.normal(size=(n_users, TASTE_DIMS))
    item_taste = rng.normal(size=(n_items, TASTE_DIMS))
    popularity = rng.normal(size=n_items)
    n_pref = len(USER_FEATURES) - 2
    # Observed features are noisy linear views of the hidden tastes.
    user_features = np.column_stack(
        [
            rng.gamma(2.0, 1.0, n_users),
            np.log1p(rng.integers(1, 2000, n_users)),
            user_taste @ rng.normal(size=(TASTE_DIMS, n_pref))
            + 0.3 * rng.normal(size=(n_users, n_pref)),
        ]
    ).astype(np.float32)
    item_features = np.column_stack(
        [
            popularity + 0.2 * rng.normal(size=n_items),
            np.log1p(rng.gamma(2.0, 20.0, n_items)),
            item_taste @ rng.normal(size=(TASTE_DIMS, n_pref))
            + 0.3 * rng.normal(size=(n_items, n_pref)),
        ]
    ).astype(np.float32)
    pairs = np.column_stack([rng.integers(0, n_users, n_pairs), rng.integers(0, n_items, n_pairs)])
    affinity = np.einsum("ij,ij->i", user_taste[pairs[:, 0]], item_taste[pairs[:, 1]])
    logit = 1.2 * affinity + 0.8 * popularity[pairs[:, 1]] - 1.0
    clicks = (rng.random(n_pairs) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
    return DemoData(user_features, item_features, pairs, clicks, user_taste, item_taste, popularity)


def feature_definitions() -> FeatureDefinitions:
    """The demo's feature definitions: those of the served config."""
    raw = yaml.safe_load(DEMO_CONFIG_PATH.read_text())["features"]
    config = parse_features(raw, artifacts_dir(), str(DEMO_CONFIG_PATH))
    return FeatureDefinitions.from_config(config)


def entity_ids(id_column: str, n: int) -> list[str]:
    """The ids the feature files give the demo's users (u0, u1, ...) and items (i0, ...)."""
    return [f"{id_column[0]}{index}" for index in range(n)]


def training_matrix(data: DemoData, tables: Mapping[str, EntityTable] | None = None) -> np.ndarray:
    """Model input rows for data.pairs, built as serving builds them: the user's features
    followed by the item's. tables: the feature files as read back (default: data's own)."""
    definitions = feature_definitions()
    user_ids = entity_ids("user_id", len(data.user_features))
    item_ids = entity_ids("item_id", len(data.item_features))
    if tables is None:
        for name, names in (("user", USER_FEATURES), ("item", ITEM_FEATURES)):
            declared = tuple(f.name for f in definitions.entity(name).fields)
            if declared != names:
                raise ValueError(f"the demo's {name} columns {names} are not {declared}")
        tables = {
            "user": EntityTable.from_arrays(
                definitions.entity("user"), user_ids, data.user_features
            ),
            "item": EntityTable.from_arrays(
                definitions.entity("item"), item_ids, data.item_features
            ),
        }
    ids = {
        "user": [user_ids[i] for i in data.pairs[:, 0]],
        "item": [item_ids[i] for i in data.pairs[:, 1]],
    }
    return rows_to_training_matrix(definitions.layout(MODEL_NAME), tables, ids)


def init_params(rng: np.random.Generator, n_inputs: int) -> list[np.ndarray]:
    sizes = (n_inputs, *HIDDEN_UNITS, 1)
    params = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        params.append(rng.normal(0.0, np.sqrt(2.0 / fan_in), (fan_in, fan_out)).astype(np.float32))
        params.append(np.zeros(fan_out, dtype=np.float32))
    return params


def forward(params: list[np.ndarray], x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The MLP's logits and each layer's input (kept for backpropagation)."""
    activations = [x]
    h = x
    n_layers = len(params) // 2
    for layer in range(n_layers):
        h = h @ params[2 * layer] + params[2 * layer + 1]
        if layer < n_layers - 1:
            h = np.maximum(h, 0.0)
            activations.append(h)
    return h[:, 0], activations


def train(
    rng: np.random.Generator, x: np.ndarray, y: np.ndarray, epochs: int = 15, batch: int = 256
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Adam on binary cross-entropy; returns params and the feature mean and std used."""
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    xn = (x - mean) / std
    params = init_params(rng, x.shape[1])
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    lr, beta1, beta2, step = 3e-3, 0.9, 0.999, 0
    for _ in range(epochs):
        order = rng.permutation(len(xn))
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            logits, acts = forward(params, xn[idx])
            grad = (1.0 / (1.0 + np.exp(-logits)) - y[idx])[:, None] / len(idx)
            grads: list[np.ndarray] = [np.empty(0)] * len(params)
            for layer in range(len(params) // 2 - 1, -1, -1):
                grads[2 * layer] = acts[layer].T @ grad
                grads[2 * layer + 1] = grad.sum(axis=0)
                if layer > 0:
                    grad = (grad @ params[2 * layer].T) * (acts[layer] > 0)
            step += 1
            for i, g in enumerate(grads):
                m[i] = beta1 * m[i] + (1 - beta1) * g
                v[i] = beta2 * v[i] + (1 - beta2) * g * g
                m_hat = m[i] / (1 - beta1**step)
                v_hat = v[i] / (1 - beta2**step)
                params[i] -= (lr * m_hat / (np.sqrt(v_hat) + 1e-8)).astype(np.float32)
    return params, mean.astype(np.float32), std.astype(np.float32)


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum formula."""
    ranks = np.empty(len(scores))
    ranks[np.argsort(scores)] = np.arange(1, len(scores) + 1)
    n_pos = labels.sum()
    n_neg = len(labels) - n_pos
    return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def to_onnx(params: list[np.ndarray], mean: np.ndarray, std: np.ndarray) -> onnx.ModelProto:
    """The trained MLP as an ONNX graph, feature normalisation folded in as its first op."""
    n_features = params[0].shape[0]
    initializers = [
        numpy_helper.from_array(mean, "feature_mean"),
        numpy_helper.from_array(std, "feature_std"),
    ]
    nodes = [
        helper.make_node("Sub", ["features", "feature_mean"], ["centered"]),
        helper.make_node("Div", ["centered", "feature_std"], ["h0"]),
    ]
    n_layers = len(params) // 2
    for layer in range(n_layers):
        w, b = f"w{layer}", f"b{layer}"
        initializers += [numpy_helper.from_array(params[2 * layer], w)]
        initializers += [numpy_helper.from_array(params[2 * layer + 1], b)]
        out = "logit" if layer == n_layers - 1 else f"z{layer + 1}"
        nodes.append(helper.make_node("Gemm", [f"h{layer}", w, b], [out]))
        if layer < n_layers - 1:
            nodes.append(helper.make_node("Relu", [out], [f"h{layer + 1}"]))
    nodes.append(helper.make_node("Sigmoid", ["logit"], ["score"]))
    graph = helper.make_graph(
        nodes,
        "switchyard_demo_ranker",
        inputs=[
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", n_features])
        ],
        outputs=[
            helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["batch", 1]),
            helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1]),
        ],
        initializer=initializers,
    )
    # IR 9 / opset 17 load on every onnxruntime this project supports (>= 1.17).
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="switchyard-demo"
    )
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def write_feature_table(
    path: Path, id_column: str, names: tuple[str, ...], rows: np.ndarray
) -> None:
    tmp_path = path.with_suffix(".tmp")
    with tmp_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([id_column, *names])
        # str() of a float32 is its shortest exact text: the file holds the trained values.
        for entity_id, row in zip(entity_ids(id_column, len(rows)), rows, strict=True):
            writer.writerow([entity_id, *(str(value) for value in row.astype(np.float32))])
    tmp_path.replace(path)


def save_onnx(model: onnx.ModelProto, path: Path) -> None:
    # Written to a temporary name first so a concurrent reader never sees half a file.
    tmp_path = path.with_suffix(".tmp")
    onnx.save(model, tmp_path)
    tmp_path.replace(path)


def build(out_dir: Path | None = None, seed: int = 7) -> Path:
    """Generate, train and export into out_dir (default: artifacts_dir()); returns the path of
    the ONNX model."""
    out_dir = artifacts_dir() if out_dir is None else out_dir
    rng = np.random.default_rng(seed)
    data = generate_data(rng)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The feature files first: the model is trained on the rows they give.
    users_path, items_path = out_dir / "users.csv", out_dir / "items.csv"
    write_feature_table(users_path, "user_id", USER_FEATURES, data.user_features)
    write_feature_table(items_path, "item_id", ITEM_FEATURES, data.item_features)
    definitions = feature_definitions()
    tables = {
        "user": read_table(users_path, definitions.entity("user")),
        "item": read_table(items_path, definitions.entity("item")),
    }
    x, y = training_matrix(data, tables), data.clicks
    n_train = int(0.8 * len(x))
    params, mean, std = train(rng, x[:n_train], y[:n_train])
    held_out_logits, _ = forward(params, (x[n_train:] - mean) / std)
    model_path = out_dir / MODEL_FILE_NAME
    save_onnx(to_onnx(params, mean, std), model_path)
    write_profile(model_path, x[:n_train])
    log.info(
        "demo ranker written to %s (held-out AUC %.3f, click rate %.2f)",
        model_path,
        auc(held_out_logits, y[n_train:]),
        float(y.mean()),
    )
    # Written after ranker.onnx, with their own generators, so it stays what it was.
    variants = (
        (WORSE_MODEL_FILE_NAME, np.random.default_rng(seed + 1).permutation(y[:n_train])),
        (RETRAINED_MODEL_FILE_NAME, y[:n_train]),
    )
    for index, (file_name, labels) in enumerate(variants):
        variant_params, variant_mean, variant_std = train(
            np.random.default_rng(seed + 100 + index), x[:n_train], labels
        )
        logits, _ = forward(variant_params, (x[n_train:] - variant_mean) / variant_std)
        path = out_dir / file_name
        save_onnx(to_onnx(variant_params, variant_mean, variant_std), path)
        log.info("%s written (held-out AUC %.3f)", path, auc(logits, y[n_train:]))
    return model_path


def write_profile(model_path: Path, x: np.ndarray) -> Path:
    """The model's reference profile for drift (`ranker.profile.json` beside it): the
    training rows' features, named as the features config names them, and the outputs the
    exported model gives on them."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    outputs = dict(zip(names, session.run(names, {"features": x}), strict=True))
    layout = feature_definitions().layout(MODEL_NAME)
    profile = build_profile(
        MODEL_NAME,
        "1",
        {"features": x},
        outputs,
        input_names={"features": layout.feature_names},
    )
    path = default_profile_path(model_path)
    profile.save(path)
    return path


def ensure_built(out_dir: Path | None = None, seed: int = 7) -> Path:
    """The demo model's path, building it first when it is missing (and its profile, when
    only that is: a build from before profiles)."""
    out_dir = artifacts_dir() if out_dir is None else out_dir
    model_path = out_dir / MODEL_FILE_NAME
    names = (MODEL_FILE_NAME, WORSE_MODEL_FILE_NAME, RETRAINED_MODEL_FILE_NAME)
    if not all((out_dir / n).is_file() for n in names):
        return build(out_dir, seed)
    if not default_profile_path(model_path).is_file():
        # The build's data again (same seed, same draws), joined from the files written.
        data = generate_data(np.random.default_rng(seed))
        definitions = feature_definitions()
        tables = {
            "user": read_table(out_dir / "users.csv", definitions.entity("user")),
            "item": read_table(out_dir / "items.csv", definitions.entity("item")),
        }
        x = training_matrix(data, tables)
        write_profile(model_path, x[: int(0.8 * len(x))])
    return model_path


def main() -> None:
    parser = argparse.ArgumentParser(description="Build the Switchyard demo ranking model.")
    parser.add_argument(
        "--out", type=Path, default=None, help=f"output folder (default: {artifacts_dir()})"
    )
    parser.add_argument("--seed", type=int, default=7, help="random seed")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build(args.out, args.seed)


if __name__ == "__main__":
    main()
