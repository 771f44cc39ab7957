"""What the automatic evaluation after a job costs, for the estimates (app/domain/estimates.py).

The evaluation (worker/evaluation/runner.py imports these figures, so the two cannot drift):
greedy answers of the adapter and of the base model to at most EVAL_GENERATION_ROWS held-out
prompts (EVAL_GENERATION_ROWS_CPU on a CPU worker, where each answered row costs seconds:
bench/first_job.py measured 183 s for 22 rows, most of a first job's wait), EVAL_NEW_TOKENS new
tokens each (continuations for text jobs), in batches of EVAL_BATCH; the held-out loss and
perplexity of both on every held-out row up to EVAL_LOSS_ROWS (forward passes only: cheap, so not
cut on a CPU). The base model's side (its answers and losses) is cached per base model and held-out
rows, so only the first evaluated job of a dataset, split and base model pays for it: every later
adapter of that data (a comparison of techniques, a second try) pays for its own side only.
"""

from __future__ import annotations

import math

EVAL_GENERATION_ROWS = 40
EVAL_GENERATION_ROWS_CPU = 16
EVAL_NEW_TOKENS = 96
EVAL_CONTINUATION_TOKENS = 48
EVAL_LOSS_ROWS = 400
EVAL_BATCH = 8
EVALUATION_SETUP_SECONDS = 12.0  # load base + adapter and the similarity encoder, score, rewrite the card and zip
# A decode step moves every weight for a few tokens: far less useful work per second than a
# training step's large matrices. Useful FLOP/s of greedy decoding at EVAL_BATCH rows, as a share
# of the worker's training figure (CPU: fitted with bench/first_job.py on two 2-core VMs, with
# CALIBRATION_TO_JOB 0.6: the demo job's evaluation estimated +4% (87 s measured) and +16% (45 s);
# GPU: launch-bound, a guess until measured).
DECODE_EFFICIENCY = {"cpu": 0.3, "cuda": 0.02}


def generation_rows(worker_kind: str) -> int:
    """How many held-out prompts the automatic evaluation answers on this kind of worker."""
    return EVAL_GENERATION_ROWS_CPU if worker_kind == "cpu" else EVAL_GENERATION_ROWS


def answered_rows(n_validation: int, worker_kind: str) -> int:
    """How many prompts an evaluation of `n_validation` held-out rows answers on this kind of worker."""
    return min(n_validation, generation_rows(worker_kind))


def modelled_evaluation_seconds(
    parameters: int,
    kind,
    n_validation: int,
    row_tokens: float,
    worker_kind: str,
    flops: float,
    fixed: float,
    *,
    base_cached: bool = False,
) -> float:
    """Seconds of the evaluation on a worker with this training speed (useful FLOP/s), `fixed`
    being its load-and-score part. Generating tasks: answers, then held-out losses, of the adapter
    and (unless `base_cached`) of the base model; classification: one forward pass per row."""
    forward = 2 * parameters / flops  # seconds per token of a forward pass, at training efficiency
    loss_rows = min(n_validation, EVAL_LOSS_ROWS)
    if not kind.generative:
        return fixed + loss_rows * row_tokens * forward
    rows = answered_rows(n_validation, worker_kind)
    new_tokens = EVAL_NEW_TOKENS if kind.prompted else EVAL_CONTINUATION_TOKENS
    batches = math.ceil(rows / EVAL_BATCH)
    prompt = rows * row_tokens * 0.5 * forward
    decode = batches * new_tokens * EVAL_BATCH * forward / DECODE_EFFICIENCY.get(worker_kind, 0.25)
    sides = 1 if base_cached else 2
    return fixed + sides * (prompt + decode + loss_rows * row_tokens * forward)


def measured_evaluation_seconds(
    seconds: float,
    rows: int,
    base_seconds: float | None,
    answered: int,
    fixed: float,
    *,
    base_cached: bool = False,
    base_side: bool = True,
) -> float:
    """The evaluation's time from one this worker ran for the same base model: `seconds` for `rows`
    answered prompts, `base_seconds` of them on the base model's side (0 when that side came from
    the cache; None when it was not recorded). Only the per-row part scales to `answered` rows.
    `base_side` False: the task has none (classification compares with the majority class)."""
    scale = answered / rows
    if base_seconds is None or not base_side:  # not recorded (its whole time, as it was), or no base side
        return fixed + max(0.0, seconds - fixed) * scale
    adapter_side = max(0.0, seconds - base_seconds - fixed)
    if base_cached:
        base_part = 0.0
    elif base_seconds > 0:
        base_part = base_seconds
    else:  # that evaluation found the base side cached: it costs about what the adapter's own side did
        base_part = adapter_side
    return fixed + (adapter_side + base_part) * scale
