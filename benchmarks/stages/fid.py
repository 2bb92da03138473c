"""FID: the Frechet distance of two feature sets, ours (an eigendecomposition) against pytorch-fid's sqrtm."""

from __future__ import annotations

import numpy as np
import torch

from benchmarks import reference
from benchmarks.harness import compare
from benchmarks.stages.common import Context, table_row


def stage_fid(ctx: Context) -> list[dict]:
    from datadream_core.metrics.fid import frechet_distance

    rows = []
    for dim, reps in ctx.work.fid:
        rng = np.random.default_rng(dim)
        mixing = rng.standard_normal((dim, dim)) / np.sqrt(dim)
        a = rng.standard_normal((2 * dim, dim)) @ mixing
        b = rng.standard_normal((2 * dim, dim)) @ (mixing + 0.1 * rng.standard_normal((dim, dim)) / np.sqrt(dim)) + 0.05
        stats = [a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)]
        tensors = [torch.from_numpy(s) for s in stats]

        result = compare(lambda: frechet_distance(*tensors, device=ctx.device),
                         lambda: reference.reference_frechet_distance(*stats), reps, ctx.device, warmup=reps > 1)
        rel = abs(result.ours_out - result.reference_out) / abs(result.reference_out)
        equal = rel <= 1e-6
        rows.append(table_row(f"FID {dim}-d", result, "s/distance", equal,
                         f"{'yes' if equal else 'NO'} (rel {rel:.1e}; FID {result.reference_out:.2f})",
                         {"dim": dim, "samples_per_set": 2 * dim, "reference": "pytorch-fid (scipy.linalg.sqrtm)",
                          "ours": f"eigendecomposition on {ctx.device.type}"}, tolerance={"rel": 1e-6}))
    return rows

