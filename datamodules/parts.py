"""Fixed, disjoint parts of a finite training set, and batches made of one share per part.

Hardy et al.'s MD-GAN (IPDPS 2019) trains each discriminator on a worker's local dataset: a
fixed part of the training set, never seen by the other workers. A datamodule with
`num_parts = P` makes that data layout:

- `partition(n, P, seed)`: a seeded permutation of range(n) cut into P near-equal parts,
  disjoint and covering the set; the same on every rank and every epoch.
- each batch is P_local contiguous shares (`share_bounds`), share c drawn from part
  `first_part + c` only; under DDP with W ranks, rank r holds parts [r P / W, (r + 1) P / W).
- within a part, share rows follow a stream of passes over the part, each pass a fresh
  permutation seeded by (seed, part, pass), so batch k of a part depends only on k: a run
  resumed at batch k continues the stream exactly.

With P = 1 it is plain sampling without replacement from a finite set, each rank with a
stream of its own.
"""

from __future__ import annotations

import functools

import numpy as np

_PARTITION_STREAM, _PASS_STREAM = 2, 3  # keys that keep these streams apart from the data's others


def share_bounds(batch_size: int, num_shares: int) -> np.ndarray:
    """Row boundaries (num_shares + 1,) splitting a batch into contiguous, near-equal shares."""
    if batch_size < num_shares:
        raise ValueError(f"a batch of {batch_size} cannot be split into {num_shares} non-empty shares; "
                         f"raise the batch size or lower the number of parts")
    return np.linspace(0, batch_size, num_shares + 1).round().astype(int)


def partition(num_items: int, num_parts: int, seed: int) -> list[np.ndarray]:
    """`num_parts` disjoint index arrays covering range(num_items), each of near-equal size."""
    if num_parts < 1 or num_items < num_parts:
        raise ValueError(f"cannot cut {num_items} items into {num_parts} non-empty parts")
    order = np.random.default_rng([seed, _PARTITION_STREAM]).permutation(num_items)
    bounds = share_bounds(num_items, num_parts)
    return [order[bounds[i] : bounds[i + 1]] for i in range(num_parts)]


def part_stream(part: np.ndarray, rows: int, batch: int, seed: int, stream: int) -> np.ndarray:
    """Rows [batch * rows, (batch + 1) * rows) of the endless stream of passes over `part`
    (each pass a permutation seeded by (seed, stream, pass)): the items of that batch's share."""
    n = len(part)
    start, stop = batch * rows, (batch + 1) * rows
    out = []
    for p in range(start // n, (stop - 1) // n + 1):
        perm = _pass_permutation(n, seed, stream, p)
        lo, hi = max(start - p * n, 0), min(stop - p * n, n)
        out.append(part[perm[lo:hi]])
    return np.concatenate(out)


@functools.lru_cache(maxsize=64)
def _pass_permutation(n: int, seed: int, stream: int, p: int) -> np.ndarray:
    # cached: consecutive batches of a part mostly fall in the same pass
    perm = np.random.default_rng([seed, _PASS_STREAM, stream, p]).permutation(n)
    perm.flags.writeable = False
    return perm


def local_parts(num_parts: int, world: int, rank: int) -> range:
    """The parts that live on rank `rank` of `world` (all of them when num_parts is 1)."""
    if num_parts == 1:
        return range(1)
    if num_parts % world:
        raise ValueError(f"{num_parts} data parts cannot be spread evenly over {world} processes: make num_parts "
                         f"a multiple of the number of processes (devices x nodes)")
    per_rank = num_parts // world
    return range(rank * per_rank, (rank + 1) * per_rank)


def batch_indices(parts: list[np.ndarray], batch: int, batch_size: int, seed: int, world: int = 1,
                  rank: int = 0) -> np.ndarray:
    """Indices of batch number `batch` on rank `rank`: one contiguous share per local part."""
    local = local_parts(len(parts), world, rank)
    bounds = share_bounds(batch_size, len(local))
    shares = []
    for c, p in enumerate(local):
        # one part: each rank its own stream; several: a part lives on one rank, its stream is the part's
        stream = p if len(parts) > 1 else rank
        shares.append(part_stream(parts[p], int(bounds[c + 1] - bounds[c]), batch, seed, stream))
    return np.concatenate(shares)


def check_num_parts(num_parts) -> None:
    """A datamodule's `num_parts` argument: None (the model's choice) or an integer >= 1."""
    if num_parts is not None and (not isinstance(num_parts, int) or num_parts < 1):
        raise ValueError(f"num_parts must be an integer >= 1, or null to take the model's data_parts; got {num_parts!r}")


def resolve_num_parts(num_parts, model, batch_size: int) -> int:
    """The parts to train on: the datamodule's `num_parts` if set, else the model's `data_parts`
    (1 for a model that does not say). A set value that differs from the model's is an error."""
    wanted = int(getattr(model, "data_parts", 1)) if model is not None else 1
    if num_parts is not None and model is not None and num_parts != wanted:
        raise ValueError(f"data.init_args.num_parts is {num_parts} but {type(model).__name__} trains on {wanted} "
                         f"part(s) of the data (its data_parts); set num_parts to {wanted} or leave it null")
    resolved = wanted if num_parts is None else num_parts
    if batch_size < resolved:
        raise ValueError(f"batch_size {batch_size} cannot hold one share for each of {resolved} data parts; raise it")
    return resolved
