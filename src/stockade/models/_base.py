"""The two kinds of model: requests (strict) and results (tolerant)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Request(BaseModel):
    """What a caller asks for: frozen; an unknown field is refused with its name."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Result(BaseModel):
    """What the server answers: frozen; fields a newer server adds are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)
