"""The fusion head: a small MLP that turns the evidence scores of a pair into P(aligned).

The architecture is the original study's, layer for layer (3 -> 64 -> 64 -> 1, 4,481
parameters with three inputs). What changes is what it is fed: ``FEATURE_SETS`` names the
input columns of ``features.parquet`` (the study's three scores, or those plus the
informativeness flags and extra evidence), and ``feature_matrix`` builds the input array
from the table for any such list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.preprocessing import StandardScaler
from torch import nn

__all__ = [
    "STUDY_FEATURES",
    "FEATURE_SETS",
    "FeatureTableError",
    "FusionMLP",
    "count_parameters",
    "resolve_features",
    "feature_matrix",
    "complete_rows",
    "TrainedHead",
    "response_grid",
    "input_effects",
    "plot_response",
]

#: The three scores the original study fused, in its order.
STUDY_FEATURES: tuple[str, ...] = ("object_score", "clip_score", "spatial_score")

#: Named input sets for the head. "extended" adds whether the object and spatial scores
#: rest on any evidence at all (when the text names nothing to look for, or states no
#: relation the boxes can check, the score is a placeholder, not a measurement), CLIP's
#: mean over the sentences next to its maximum, and how many relations the text stated
#: that the boxes could check, and how many of those held.
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "study": STUDY_FEATURES,
    "extended": STUDY_FEATURES
    + ("object_informative", "spatial_informative", "clip_score_mean", "relations_checked", "relations_held"),
}


class FeatureTableError(ValueError):
    """The feature table cannot feed the head: a column is absent, not numeric, or has holes."""


class FusionMLP(nn.Module):
    """Linear(d, h) -> ReLU -> Dropout(p) -> Linear(h, h) -> ReLU -> Linear(h, 1) -> Sigmoid.

    ``forward`` returns probabilities of shape ``(n,)``. Training uses ``logits`` with
    ``BCEWithLogitsLoss``: the same binary cross-entropy as ``BCELoss`` on the sigmoid's
    output, computed without its rounding trouble near 0 and 1.
    """

    def __init__(self, input_dim: int = 3, hidden_dim: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        if input_dim < 1 or hidden_dim < 1:
            raise ValueError(f"input_dim and hidden_dim must be positive, got {input_dim} and {hidden_dim}")
        self.network = nn.Sequential(
            nn.Linear(input_dim, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, 1),
            nn.Sigmoid(),
        )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid outputs, shape ``(n,)``."""
        return self.network[:-1](x).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """P(aligned) for each row of ``x``, shape ``(n,)``."""
        return self.network(x).squeeze(-1)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def resolve_features(features: str | Sequence[str]) -> tuple[str, ...]:
    """A feature-set name of ``FEATURE_SETS`` or an explicit list of columns, as a tuple of columns."""
    if isinstance(features, str):
        if features not in FEATURE_SETS:
            raise ValueError(f"unknown feature set {features!r}: expected one of {sorted(FEATURE_SETS)} or a list of columns")
        return FEATURE_SETS[features]
    columns = tuple(features)
    if not columns or len(set(columns)) != len(columns):
        raise ValueError(f"a feature list must be non-empty and without repeats, got {list(columns)}")
    return columns


def _present(table: pd.DataFrame, features: str | Sequence[str]) -> tuple[str, ...]:
    """The columns of ``features``, after checking that ``table`` has them all."""
    columns = resolve_features(features)
    absent = [c for c in columns if c not in table.columns]
    if absent:
        raise FeatureTableError(
            f"the feature table lacks column(s) {absent} (it has {sorted(table.columns)}): "
            "rerun the chapter that computes them, or choose another feature set"
        )
    return columns


def feature_matrix(table: pd.DataFrame, features: str | Sequence[str]) -> np.ndarray:
    """The ``(n, len(features))`` float32 input array of ``features`` (booleans become 0.0/1.0).

    Raises ``FeatureTableError`` naming the absent, non-numeric or incomplete columns: the
    head has no way to fill a hole, and guessing one would bias it.
    """
    columns = _present(table, features)
    try:
        values = table.loc[:, list(columns)].astype("float64")
    except (TypeError, ValueError) as err:
        raise FeatureTableError(f"feature columns {list(columns)} must be numeric or boolean: {err}") from None
    holes = values.isna().sum()
    if holes.any():
        raise FeatureTableError(f"missing values in feature column(s) {holes[holes > 0].to_dict()}")
    return values.to_numpy(dtype=np.float32)


def complete_rows(table: pd.DataFrame, features: str | Sequence[str]) -> tuple[pd.DataFrame, dict[str, int]]:
    """The rows of ``table`` with a value in every feature column, and the holes counted per column.

    A pair whose frame did not decode has no CLIP score, for instance: no model can score
    it, so it is set aside (and counted) before training, for every model alike.
    """
    columns = list(_present(table, features))
    holes = table[columns].isna()
    return table[~holes.any(axis=1)], {c: int(n) for c, n in holes.sum().items() if n}


@dataclass(frozen=True)
class TrainedHead:
    """A trained fusion head as it is used: the network, its input standardisation, its
    input columns and the decision threshold tuned on the validation split."""

    model: FusionMLP
    scaler: StandardScaler
    features: tuple[str, ...]
    threshold: float

    def predict_proba(self, table: pd.DataFrame) -> np.ndarray:
        """P(aligned) for each row of ``table`` (which must hold ``self.features``)."""
        x = self.scaler.transform(feature_matrix(table, self.features)).astype(np.float32)
        self.model.eval()
        with torch.no_grad():
            return self.model(torch.from_numpy(x)).numpy().astype(np.float64)


def _medians(head: TrainedHead, reference: pd.DataFrame) -> pd.Series:
    """The median of each input of ``head`` over ``reference``."""
    return pd.DataFrame(feature_matrix(reference, head.features), columns=head.features).median()


def response_grid(
    head: TrainedHead, reference: pd.DataFrame, x: str, y: str, *, n: int = 41
) -> pd.DataFrame:
    """The head's P(aligned) over an ``n`` x ``n`` grid of two inputs spanning [0, 1].

    Every other input is held at its median over ``reference`` (use the training split).
    Returns one row per grid point: ``x``, ``y`` and ``probability``.
    """
    for column in (x, y):
        if column not in head.features:
            raise ValueError(f"{column!r} is not an input of this head ({list(head.features)})")
    medians = _medians(head, reference)
    xs, ys = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n))
    grid = pd.DataFrame({c: np.full(xs.size, medians[c]) for c in head.features})
    grid[x], grid[y] = xs.ravel(), ys.ravel()
    return grid[[x, y]].assign(probability=head.predict_proba(grid))


def input_effects(head: TrainedHead, reference: pd.DataFrame) -> pd.DataFrame:
    """How far each input alone moves P(aligned): the input at 0 and at 1, the others at their medians.

    One row per input: ``feature``, ``p_at_0``, ``p_at_1``, ``effect`` (``p_at_1 - p_at_0``),
    sorted by the size of the effect. The medians are taken over ``reference``.
    """
    medians = _medians(head, reference)
    rows = []
    for column in head.features:
        probe = pd.DataFrame([medians, medians]).assign(**{column: [0.0, 1.0]})
        low, high = head.predict_proba(probe)
        rows.append({"feature": column, "p_at_0": low, "p_at_1": high, "effect": high - low})
    return pd.DataFrame(rows).sort_values("effect", key=np.abs, ascending=False, ignore_index=True)


def plot_response(head: TrainedHead, reference: pd.DataFrame, pairs: Sequence[tuple[str, str]]) -> "matplotlib.figure.Figure":  # noqa: F821
    """One panel per pair of inputs: P(aligned) as colour, the decision threshold as a line."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 4.2), squeeze=False, layout="constrained")
    for ax, (x, y) in zip(axes[0], pairs):
        grid = response_grid(head, reference, x, y).pivot(index=y, columns=x, values="probability")
        image = ax.contourf(grid.columns, grid.index, grid.to_numpy(), levels=np.linspace(0, 1, 21), cmap="vlag")
        if grid.to_numpy().min() < head.threshold < grid.to_numpy().max():
            ax.contour(grid.columns, grid.index, grid.to_numpy(), levels=[head.threshold], colors="black", linewidths=2)
        others = [c for c in head.features if c not in (x, y)]
        ax.set(xlabel=x, ylabel=y, title="others at their median" if others else "")
    fig.colorbar(image, ax=axes[0].tolist(), label="P(aligned)  (black line: decision threshold)")
    return fig
