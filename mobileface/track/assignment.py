"""The optimal assignment of tracks to detections (the Hungarian method), in numpy.

SORT pairs predictions and detections by the assignment with the largest total
IoU. scipy's ``linear_sum_assignment`` does that, but importing
``scipy.optimize`` takes about 0.6 s, which a tracker would pay at its first
match, in the second frame of a run. The matrices here are small (faces in a
frame), so the shortest-augmenting-path form of the Hungarian method (one row
at a time, with potentials; O(n^2 m)), vectorised over the columns, is as fast.
"""
from __future__ import annotations

import numpy as np


def linear_sum_assignment(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the assignment with the least total ``cost`` (an (N, M)
    matrix of finite numbers): min(N, M) pairs, rows ascending, as scipy returns them."""
    cost = np.asarray(cost, np.float64)
    if cost.ndim != 2:
        raise ValueError(f"the cost matrix must be 2-D, got shape {cost.shape}")
    if not np.isfinite(cost).all():
        raise ValueError("the cost matrix must hold finite numbers")
    transposed = cost.shape[0] > cost.shape[1]
    if transposed:
        cost = cost.T
    n, m = cost.shape
    if n == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty
    # Column 0 is a virtual start column; owner[j] is the row (1-based) holding column j.
    # Plain Python lists: for the few faces of a frame they beat numpy's per-call cost.
    rows_cost = cost.tolist()
    inf = float("inf")
    row_potential = [0.0] * (n + 1)
    column_potential = [0.0] * (m + 1)
    owner = [0] * (m + 1)
    for row in range(1, n + 1):
        owner[0] = row
        column = 0
        slack = [inf] * (m + 1)
        came_from = [0] * (m + 1)
        used = [False] * (m + 1)
        while owner[column] != 0:
            used[column] = True
            current = owner[column]
            costs, base = rows_cost[current - 1], row_potential[current]
            delta, nearest = inf, 0
            for j in range(1, m + 1):
                if used[j]:
                    continue
                reduced = costs[j - 1] - base - column_potential[j]
                if reduced < slack[j]:
                    slack[j], came_from[j] = reduced, column
                if slack[j] < delta:
                    delta, nearest = slack[j], j
            for j in range(m + 1):
                if used[j]:
                    row_potential[owner[j]] += delta
                    column_potential[j] -= delta
                else:
                    slack[j] -= delta
            column = nearest
        while column:                       # flip the augmenting path
            previous = came_from[column]
            owner[column] = owner[previous]
            column = previous
    owner = np.asarray(owner, np.int64)
    columns = np.flatnonzero(owner[1:]).astype(np.int64)
    rows = owner[1:][columns] - 1
    if transposed:
        rows, columns = columns, rows
    order = np.argsort(rows, kind="stable")
    return rows[order], columns[order]
