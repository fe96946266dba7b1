"""The ranking protocol written plainly, one query at a time: the specification of CMC/mAP/mINP.

This is the Market-1501 evaluation (``eval_market1501`` of the open-reid / torchreid /
fast-reid code bases) as a textbook states it, restated without any optimisation so a reader
can check it line by line. :func:`rvsl.metrics.rank.evaluate_rank` is the vectorised
implementation that evaluation and training use; ``tests/test_metrics_reference.py`` checks
that it gives the same numbers as this function. Nothing on a hot path calls this one: it
sorts every gallery row in full, one query after the other.

For each query:

1. rank the whole gallery by distance, smallest first; equal distances keep gallery order
   (a stable sort);
2. remove the "junk": gallery images with the query's identity AND the query's camera (the
   same vehicle seen by the same camera is not a re-identification);
3. over the remaining ranking, mark the true matches (same identity, another camera); a
   query without any is skipped, it counts in no average;
4. CMC: ``cmc[k] = 1`` when a true match is among the first ``k + 1`` kept images;
5. AP: the mean, over the true matches, of the precision at each one's rank;
6. INP: the precision at the rank of the hardest (last) true match (Ye et al., TPAMI 2021).

CMC, mAP and mINP are the averages over the queries kept. The CMC curve has ``max_rank``
entries; once a query's kept ranking is shorter than that, its curve stays at 1 (it found its
match within the ranking), so ``max_rank`` may exceed the gallery size.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def reference_evaluate_rank(
    distmat: Any, q_pids: Any, g_pids: Any, q_camids: Any, g_camids: Any, max_rank: int = 50
) -> dict[str, Any]:
    """CMC, mAP and mINP of a (num_query, num_gallery) distance matrix, query by query.

    Same inputs and result as :func:`rvsl.metrics.rank.evaluate_rank` (numpy arrays or CPU
    tensors; ``cmc`` a float64 array of length ``max_rank``; ``mAP`` and ``mINP`` fractions in
    [0, 1]; ``num_valid_queries``). Raises ``ValueError`` when no query has a true match.
    """
    distmat = np.asarray(distmat)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)

    all_cmc, all_ap, all_inp = [], [], []
    for q in range(distmat.shape[0]):
        # 1. the gallery, nearest first; ties stay in gallery order
        order = np.argsort(distmat[q], kind="stable")
        same_id = g_pids[order] == q_pids[q]
        same_camera = g_camids[order] == q_camids[q]

        # 2. junk removed: the query's own identity seen by its own camera
        keep = ~(same_id & same_camera)

        # 3. true matches over the kept ranking
        matches = same_id[keep]
        if not matches.any():
            continue  # nothing to find: this query is not evaluated

        # 4. CMC: from the first true match on, the query counts as found
        found_so_far = matches.cumsum()  # true matches among the first k kept, k = 1, 2, ...
        cmc = np.ones(max_rank)
        shown = min(max_rank, len(matches))
        cmc[:shown] = np.minimum(found_so_far[:shown], 1)
        all_cmc.append(cmc)

        # 5. AP: precision at k = found_so_far[k - 1] / k, averaged over the true matches' k
        precision = found_so_far / np.arange(1, len(matches) + 1)
        all_ap.append(precision[matches].mean())

        # 6. INP: precision at the last true match
        last = np.flatnonzero(matches)[-1]
        all_inp.append(found_so_far[last] / (last + 1))

    if not all_ap:
        raise ValueError("no query has a matching identity in the gallery")
    return {
        "cmc": np.mean(all_cmc, axis=0),
        "mAP": float(np.mean(all_ap)),
        "mINP": float(np.mean(all_inp)),
        "num_valid_queries": len(all_ap),
    }
