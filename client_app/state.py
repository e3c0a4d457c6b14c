"""What a node keeps between the messages of a run, in Flower's ``context.state``.

The deployment engine moves a node's whole state with every message, one
object per Array, so the arrays (embeddings, teacher logits, the teacher's
adapters) are packed into one ArrayRecord of two arrays
(:func:`pack_arrays`): a flat float32 vector and its layout. Numbers go into
one MetricRecord, text into one ConfigRecord.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

_ARRAYS, _NUMBERS, _TEXT = "node-arrays", "node-numbers", "node-text"


def pack_arrays(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Many named float32 arrays as one ArrayRecord of two arrays (a flat vector, a layout)."""
    names = sorted(arrays)
    flat = [np.asarray(arrays[n], dtype=np.float32).reshape(-1) for n in names]
    layout = {"names": names, "shapes": [list(np.shape(arrays[n])) for n in names]}
    encoded = np.frombuffer(json.dumps(layout).encode(), dtype=np.uint8).copy()
    values = np.concatenate(flat) if flat else np.zeros(0, np.float32)
    return ArrayRecord({"values": Array(values), "layout": Array(encoded)})


def unpack_arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    """The inverse of :func:`pack_arrays`."""
    layout = json.loads(record["layout"].numpy().tobytes().decode())
    values = record["values"].numpy()
    out, start = {}, 0
    for name, shape in zip(layout["names"], layout["shapes"], strict=True):
        size = int(np.prod(shape))
        out[name] = values[start : start + size].reshape(shape).copy()
        start += size
    return out


class NodeState:
    """Named arrays, numbers and text a node keeps across a run's messages.

    Parameters
    ----------
    state : RecordDict
        Flower's ``context.state``: read once here, written back on every change.
    """

    def __init__(self, state: RecordDict) -> None:
        self._state = state
        self._arrays = (
            unpack_arrays(state.array_records[_ARRAYS]) if _ARRAYS in state.array_records else {}
        )

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """The arrays stored under ``prefix/``, by their names after it."""
        start = f"{prefix}/"
        return {k[len(start) :]: v for k, v in self._arrays.items() if k.startswith(start)}

    def put_arrays(self, prefix: str, arrays: Mapping[str, np.ndarray]) -> None:
        """Replace every array under ``prefix/`` with ``arrays``."""
        kept = {k: v for k, v in self._arrays.items() if not k.startswith(f"{prefix}/")}
        self._arrays = {**kept, **{f"{prefix}/{k}": np.asarray(v) for k, v in arrays.items()}}
        self._state[_ARRAYS] = pack_arrays(self._arrays)

    def numbers(self) -> dict[str, float]:
        """Every number stored."""
        if _NUMBERS not in self._state.metric_records:
            return {}
        record = self._state.metric_records[_NUMBERS]
        return {k: float(v) for k, v in record.items() if isinstance(v, int | float)}

    def put_numbers(self, **numbers: float) -> None:
        """Set these numbers (the others stay)."""
        self._state[_NUMBERS] = MetricRecord({**self.numbers(), **numbers})

    @property
    def text(self) -> ConfigRecord:
        """The node's text record (created empty on first use); writes persist."""
        if _TEXT not in self._state.config_records:
            self._state[_TEXT] = ConfigRecord({})
        return self._state.config_records[_TEXT]


@dataclass(frozen=True)
class TeacherView:
    """The teacher outputs and figures a round needs.

    Attributes
    ----------
    train_logits, val_logits : np.ndarray
        The teacher on the client's train and validation rows.
    val_loss, val_accuracy, untrained_val_loss : float
        Cross-entropy (nats) and accuracy on the validation rows, now and before
        any fine-tuning.
    seconds_this_round : float
        Fine-tuning seconds spent in this message (0 when nothing was trained).
    steps_this_round : int
        The optimizer steps of this message's new chunk, trained here or read
        from the cache: within the budget sent.
    restore_steps : int
        The optimizer steps run to rebuild a teacher this node had lost (the
        restore budget sent; 0 when it held its teacher).
    total_steps : int
        Optimizer steps the teacher it now holds has had.
    version : int
        Teacher federation: the teacher round behind the logits (0: a local teacher).
    """

    train_logits: np.ndarray
    val_logits: np.ndarray
    val_loss: float
    val_accuracy: float
    untrained_val_loss: float
    seconds_this_round: float
    steps_this_round: int
    restore_steps: int
    total_steps: int
    version: int = 0
