"""The bake-off recommendation ranks classifiers by their accuracy on the held-out rows."""

from __future__ import annotations

import json

from app.models import Adapter, Job
from app.services.artifacts import get_artifact_store
from app.services.bakeoff import GroupState, recommend
from app.services.evaluations import evaluation_key


def test_classifiers_are_ranked_by_accuracy(settings):
    store = get_artifact_store()
    right = [1.0] * 36 + [0.0] * 4
    scores = {910001: right, 910002: [1.0] * 16 + [0.0] * 24, 910003: right[1:] + [0.0]}
    jobs, adapters = [], {}
    for job_id, (adapter_id, technique) in enumerate(zip(scores, ("lora", "ia3", "loha")), start=1):
        tmp = store.temp_path(".json")
        tmp.write_text(json.dumps({"scores": {"adapter": {"accuracy": scores[adapter_id]}, "base": {}}}))
        store.put_file(evaluation_key(adapter_id), tmp)
        jobs.append(Job(id=job_id, technique=technique, status="succeeded", result={}))
        adapters[job_id] = Adapter(id=adapter_id, technique=technique, size_bytes={"lora": 4000, "ia3": 100, "loha": 1000}[technique])
    words = recommend(store, GroupState("g", jobs, adapters))
    assert words == "LoRA scored best on accuracy; IA³ (adapter) was clearly behind; LoHa came within noise at 1/4 of the size."
