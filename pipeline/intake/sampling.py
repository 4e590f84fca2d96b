"""Per-request sampling parameters and structured output: the one contract every entry shares.

A JSONL record, an OpenAI batch line's body and a :class:`pipeline.client.Client` record may
each carry these fields; they are validated here, stored on the prompt (``Prompt.sampling``)
and turned into one sampler chain per sequence by the worker's backend. Names and ranges
follow OpenAI's chat completions, plus llama.cpp's ``top_k`` and ``min_p``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

MAX_STOP_STRINGS = 16
MAX_STOP_CHARS = 200
MAX_SCHEMA_BYTES = 64 * 1024
SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "seed", "stop",
                   "presence_penalty", "frequency_penalty", "response_format")
JSON_OBJECT_SCHEMA: dict[str, Any] = {"type": "object"}

Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]


class JsonSchemaFormat(BaseModel):
    """OpenAI's ``response_format.json_schema``: a named JSON Schema the answer must match."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    schema_: Annotated[dict[str, JsonValue], Field(alias="schema")] = Field(
        default_factory=dict, alias="schema")
    description: str | None = None
    strict: bool | None = None

    @field_validator("schema_")
    @classmethod
    def _schema_converts(cls, value: dict[str, JsonValue]) -> dict[str, JsonValue]:
        text = json.dumps(value)
        if len(text.encode("utf-8")) > MAX_SCHEMA_BYTES:
            raise ValueError(f"schema is over {MAX_SCHEMA_BYTES:,} bytes")
        grammar_of(value)
        return value


class ResponseFormat(BaseModel):
    """What shape the answer takes: free ``text``, any JSON object, or a JSON Schema."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_iff_json_schema(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("'json_schema' is required with type json_schema, and only then")
        return self


class Sampling(BaseModel):
    """How one request is sampled; every field is optional (None: the default applies).

    Attributes:
        temperature: 0 is greedy (the default, ``ECOBATCH_TEMPERATURE``); above 0 samples.
        top_p: nucleus sampling mass (default 0.95 when sampling).
        top_k: keep the k most likely tokens, 0 keeps all (default 40 when sampling).
        min_p: drop tokens below this fraction of the most likely one's probability.
        seed: random seed of this request's sampler (default 0, so reruns repeat).
        stop: a string or up to 16 strings that end the answer (not included in it).
        presence_penalty: OpenAI's, -2 to 2, over the generated tokens.
        frequency_penalty: OpenAI's, -2 to 2, over the generated tokens.
        response_format: ``json_object`` or ``json_schema`` constrain the answer by grammar.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    min_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] | None = None
    stop: Annotated[list[str], Field(max_length=MAX_STOP_STRINGS)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    response_format: ResponseFormat | None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop_as_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("stop")
    @classmethod
    def _stops_usable(cls, value: list[str] | None) -> list[str] | None:
        for s in value or []:
            if not s or len(s) > MAX_STOP_CHARS or "\x00" in s:
                raise ValueError(f"each stop string needs 1 to {MAX_STOP_CHARS} characters")
        return value

    def stops(self) -> tuple[str, ...]:
        """The stop strings as a tuple (empty when none)."""
        return tuple(self.stop or ())

    def json_schema(self) -> dict[str, Any] | None:
        """The JSON Schema the answer must match, or None when it is free text."""
        fmt = self.response_format
        if fmt is None or fmt.type == "text":
            return None
        if fmt.json_schema is None:
            return dict(JSON_OBJECT_SCHEMA)
        return dict(fmt.json_schema.schema_)

    def stored(self) -> dict[str, Any] | None:
        """The JSON kept in ``Prompt.sampling`` (None when every field is the default)."""
        data = self.model_dump(mode="json", exclude_none=True, by_alias=True)
        return data or None


def sampling_of(stored: dict[str, Any] | None) -> Sampling:
    """The :class:`Sampling` kept in ``Prompt.sampling`` (defaults when None)."""
    return Sampling() if not stored else Sampling.model_validate(stored)


# llama-cpp-python's converter lets a JSON string hold raw control characters (a newline),
# which JSON forbids; llama.cpp's own converter leaves them out, and so does this rule.
_LOOSE_CHAR_RULE = r'char ::= [^"\\] | '
_JSON_CHAR_RULE = r'char ::= [^"\\\x7F\x00-\x1F] | '


def grammar_of(schema: dict[str, Any]) -> str:
    """The GBNF grammar llama.cpp's converter builds from a JSON Schema, its strings held to
    what JSON allows (no raw control characters).

    Raises:
        ValueError: the converter cannot express the schema (pydantic names the field).
    """
    from llama_cpp.llama_grammar import json_schema_to_gbnf  # loads libllama: only when needed

    try:
        gbnf = str(json_schema_to_gbnf(json.dumps(schema)))
    except Exception as e:  # the converter raises bare Exceptions, KeyErrors and the like
        raise ValueError(f"schema cannot be turned into a grammar: {e}") from e
    return gbnf.replace(_LOOSE_CHAR_RULE, _JSON_CHAR_RULE)
