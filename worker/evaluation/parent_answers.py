"""A preference-tuned adapter that continued from a parent adapter is reviewed against that parent
on the same prompts: the parent is plugged into the loaded model beside the new adapter (PEFT's
load_adapter / set_adapter, no second model), answers the evaluation's prompts, and its answers go
into the evaluation rows under "parent" (app/services/reviews.py pairs the two blind)."""

from __future__ import annotations

PARENT = "parent"


def add_parent_answers(result: dict, model, tokenizer, parent_dir: str | None, parent_id: int | None, max_new_tokens: int) -> None:
    """Fill result["rows"][i]["parent"] and result["parent_adapter_id"]; nothing without a parent."""
    if not parent_dir or parent_id is None or not result.get("rows") or not hasattr(model, "load_adapter"):
        return
    from worker.evaluation.generate import generate_answers

    active = model.active_adapter
    model.load_adapter(parent_dir, adapter_name=PARENT)
    try:
        model.set_adapter(PARENT)
        answers = generate_answers(model.eval(), tokenizer, [row["prompt"] for row in result["rows"]], max_new_tokens=max_new_tokens)
    finally:
        model.set_adapter(active)
        model.delete_adapter(PARENT)
    for row, answer in zip(result["rows"], answers):
        row[PARENT] = answer
    result["parent_adapter_id"] = parent_id
