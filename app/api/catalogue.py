"""The catalogues in the API: techniques and base models."""

from __future__ import annotations

from dataclasses import asdict

from app.api.common import api_router
from app.base_models import list_base_models
from app.domain.techniques import CATALOGUE
from app.http.deps import AppSettings
from app.schemas import BaseModelPublic, TechniquePublic

router = api_router()


@router.get("/techniques", response_model=list[TechniquePublic])
def list_techniques():
    return [
        TechniquePublic(
            **{k: v for k, v in asdict(t).items() if k != "params"},
            params=[{**asdict(p), "choices": list(p.choices)} for p in t.all_params],
        )
        for t in CATALOGUE.values()
    ]


@router.get("/base-models", response_model=list[BaseModelPublic])
def list_models(settings: AppSettings):
    return [BaseModelPublic(**{**asdict(m), "available": m.available}) for m in list_base_models(settings)]
