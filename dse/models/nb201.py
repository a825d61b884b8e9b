"""The NAS-Bench-201 cell space (Dong & Yang, ICLR 2020): 6 edges x 5 operations.

A candidate of this space is ``{"arch": "nb201", "cell": "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|"}``.
Its published robustness is looked up (``objectives`` ``nb201_*``); the cell is never built or
trained here, so :func:`build_nb201` refuses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from dse.errors import SpecError

__all__ = ["EDGE_SOURCES", "OPS", "NB201Config", "build_nb201", "make_cell", "nb201_params", "parse_cell"]

#: The five operations of a NAS-Bench-201 edge.
OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

#: Source node of each of the six edges, in cell-string order: node1<-0; node2<-0,1; node3<-0,1,2.
EDGE_SOURCES: tuple[int, ...] = (0, 0, 1, 0, 1, 2)


def parse_cell(cell: Any) -> tuple[str, ...]:
    """Splits a cell string into its six ops, checking the format.

    Args:
        cell: ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``.

    Returns:
        The six ops in edge order (node1<-0, node2<-0, node2<-1, node3<-0, node3<-1, node3<-2).

    Raises:
        ValueError: One line saying what is wrong.
    """
    if not isinstance(cell, str):
        raise ValueError(f"expected a cell string, got {type(cell).__name__}")
    nodes = cell.split("+")
    if len(nodes) != 3:
        raise ValueError(f"expected 3 nodes joined by '+' (|op~0|+|op~0|op~1|+|op~0|op~1|op~2|), got {cell!r}")
    ops: list[str] = []
    for node, text in enumerate(nodes, start=1):
        if len(text) < 2 or not (text.startswith("|") and text.endswith("|")):
            raise ValueError(f"node {node} must be written |op~k|...|, got {text!r}")
        edges = text[1:-1].split("|")
        if len(edges) != node:
            raise ValueError(f"node {node} needs {node} edge(s), got {len(edges)} in {text!r}")
        for source, edge in enumerate(edges):
            op, _, index = edge.partition("~")
            if op not in OPS:
                raise ValueError(f"unknown op {op!r} in {text!r} (known: {', '.join(OPS)})")
            if index != str(source):
                raise ValueError(f"edge {edge!r} of node {node} must read '{op}~{source}'")
            ops.append(op)
    return tuple(ops)


def make_cell(ops: Sequence[str]) -> str:
    """Writes six ops (edge order of :func:`parse_cell`) as a cell string.

    Raises:
        SpecError: Not six known ops.
    """
    ops = tuple(ops)
    if len(ops) != len(EDGE_SOURCES) or any(op not in OPS for op in ops):
        raise SpecError(f"NB201 cell: expected 6 ops from {', '.join(OPS)}, got {list(ops)}")
    return "|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|".format(*ops)


#: Channels of the three stages of the NAS-Bench-201 network (5 cells each, a residual reduction block between).
STAGE_CHANNELS: tuple[int, ...] = (16, 32, 64)
CELLS_PER_STAGE = 5


def _edge_params(op: str, channels: int) -> int:
    """ReLU-conv-BN edges: the conv weights (no bias) plus BatchNorm's weight and bias."""
    if op == "nor_conv_3x3":
        return 9 * channels * channels + 2 * channels
    if op == "nor_conv_1x1":
        return channels * channels + 2 * channels
    return 0  # none, skip_connect, avg_pool_3x3


def _reduction_params(c_in: int, c_out: int) -> int:
    """ResNet basic block with stride 2: two 3x3 ReLU-conv-BN, shortcut avg-pool + 1x1 conv (no BN)."""
    return 9 * c_in * c_out + 2 * c_out + 9 * c_out * c_out + 2 * c_out + c_in * c_out


def nb201_params(cell: str, *, num_classes: int = 10) -> int:
    """Trainable parameters of the NAS-Bench-201 network built from ``cell`` (Dong & Yang 2020):
    a 3x3 stem (3 -> 16) with BatchNorm, three stages of five cells at 16/32/64 channels with a
    residual reduction block between stages, a final BatchNorm and a linear classifier.

    Checked against the published extremes for CIFAR-10: 73,306 (no parametric edge) and 1,531,546
    (every edge a 3x3 convolution), i.e. 0.07 and 1.53 MB of fp32 weights.

    Raises:
        ValueError: A malformed cell.
    """
    ops = parse_cell(cell)
    total = 9 * 3 * STAGE_CHANNELS[0] + 2 * STAGE_CHANNELS[0]  # stem conv + BN
    for c_in, c_out in zip(STAGE_CHANNELS, STAGE_CHANNELS[1:]):
        total += _reduction_params(c_in, c_out)
    for channels in STAGE_CHANNELS:
        total += CELLS_PER_STAGE * sum(_edge_params(op, channels) for op in ops)
    last = STAGE_CHANNELS[-1]
    return total + 2 * last + last * num_classes + num_classes  # final BN, classifier


class NB201Config(BaseModel):
    """The candidate keys of a NAS-Bench-201 cell: looked up in published tables, not trained.

    Args:
        arch: ``nb201``.
        cell: The cell string, six edges over :data:`OPS`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: Literal["nb201"] = "nb201"
    cell: str

    @field_validator("cell", mode="before")
    @classmethod
    def _check_cell(cls, value: Any) -> Any:
        parse_cell(value)
        return value


def build_nb201(config: NB201Config, **_: Any) -> Any:
    """Model-registry builder for ``nb201``: always refuses, the candidates are looked up.

    Raises:
        SpecError: Always, one line.
    """
    raise SpecError(
        f"arch nb201: cell {config.cell} is a lookup-table architecture (nb201_* objectives); it is not built or trained"
    )
