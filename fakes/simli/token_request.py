"""Validating a ``POST /compose/token`` body the way Simli's FastAPI service does, into a session's parameters.

Errors come back as FastAPI / pydantic v2 validation errors (``{"type", "loc", "msg", "input"}``), which the fake
returns as ``422 {"detail": [...]}``; simli-ai puts ``json.dumps(detail)`` into ``SimliAPIError.detail``.

Lengths (``maxSessionLength``, ``maxIdleTime``) may be ints or floats: ``SimliConfig`` types them ``int`` but a test
can pass fractions of a second and the JSON carries them as they are.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["SessionParams", "ValidationError", "parse_token_body", "validate_token_body"]

ValidationError = dict[str, Any]

MODELS: Final = ("fasttalk", "artalk")
MIN_STREAMING_SIZE: Final = 512
# providers.mock.face.FaceRenderer's limits (even sizes, at most 1920 x 1080).
MAX_WIDTH: Final = 1920
MAX_HEIGHT: Final = 1080
_STRING_FIELDS: Final = ("sessionAggregator", "audioInputFormat", "background_id", "foreground_id")
_NUMBER_FIELDS: Final = ("avatar_position_x", "avatar_position_y")
_CAMERA_FIELDS: Final = ("pos_x_off", "pos_y_off", "pos_z_off", "rot_x_off", "rot_y_off", "rot_z_off", "zoom",
                         "orbit_x_off", "orbit_y_off")


@dataclass(frozen=True)
class SessionParams:
    """What a fake session takes from the token body (the rest is kept as is in ``FakeSimliSession.config``)."""

    face_id: str
    handle_silence: bool
    max_session_length: float
    max_idle_time: float
    model: str
    width: int
    height: int


def _error(kind: str, loc: tuple[str | int, ...], msg: str, value: Any, **ctx: Any) -> ValidationError:
    error: ValidationError = {"type": kind, "loc": ["body", *loc], "msg": msg, "input": value}
    if ctx:
        error["ctx"] = ctx
    return error


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return _is_number(value) and float(value).is_integer()


def parse_token_body(raw: bytes) -> tuple[Any, list[ValidationError]]:
    """The JSON of a request body, or the ``json_invalid`` error FastAPI answers for unparseable JSON."""
    try:
        return json.loads(raw), []
    except (ValueError, UnicodeDecodeError) as exc:
        position = exc.pos if isinstance(exc, json.JSONDecodeError) else 0
        return None, [_error("json_invalid", (position,), "JSON decode error", {}, error=str(exc))]


def validate_token_body(body: Any, *, default_width: int, default_height: int) -> SessionParams | list[
        ValidationError]:
    """The parameters of a valid body, else the list of its validation errors (all of them, as pydantic does)."""
    if not isinstance(body, dict):
        return [_error("model_attributes_type", (), "Input should be a valid dictionary or object to extract fields "
                                                    "from", body)]
    errors: list[ValidationError] = []

    face_id = body.get("faceId")
    if "faceId" not in body:
        errors.append(_error("missing", ("faceId",), "Field required", body))
    elif not isinstance(face_id, str):
        errors.append(_error("string_type", ("faceId",), "Input should be a valid string", face_id))

    handle_silence = body.get("handleSilence", True)
    if not isinstance(handle_silence, bool):
        errors.append(_error("bool_type", ("handleSilence",), "Input should be a valid boolean", handle_silence))

    lengths: dict[str, float] = {}
    for name, default in (("maxSessionLength", 600.0), ("maxIdleTime", 30.0)):
        value = body.get(name, default)
        if not _is_number(value):
            errors.append(_error("float_type", (name,), "Input should be a valid number", value))
        elif value <= 0:
            errors.append(_error("greater_than", (name,), "Input should be greater than 0", value, gt=0))
        else:
            lengths[name] = float(value)

    model = body.get("model", MODELS[0])
    if model not in MODELS:
        errors.append(_error("enum", ("model",), "Input should be 'fasttalk' or 'artalk'", model,
                             expected="'fasttalk' or 'artalk'"))

    for name in _STRING_FIELDS:
        if name in body and body[name] is not None and not isinstance(body[name], str):
            errors.append(_error("string_type", (name,), "Input should be a valid string", body[name]))
    for name in _NUMBER_FIELDS:
        if name in body and body[name] is not None and not _is_number(body[name]):
            errors.append(_error("float_type", (name,), "Input should be a valid number", body[name]))
    if "startFrame" in body and body["startFrame"] is not None and not _is_int(body["startFrame"]):
        errors.append(_error("int_type", ("startFrame",), "Input should be a valid integer", body["startFrame"]))
    camera = body.get("camera")
    if camera is not None:
        if not isinstance(camera, dict):
            errors.append(_error("model_type", ("camera",), "Input should be a valid dictionary", camera))
        else:
            for name in _CAMERA_FIELDS:
                if name in camera and not _is_number(camera[name]):
                    errors.append(_error("float_type", ("camera", name), "Input should be a valid number",
                                         camera[name]))

    size: dict[str, int] = {}
    for name, default, limit in (("streaming_width", default_width, MAX_WIDTH),
                                 ("streaming_height", default_height, MAX_HEIGHT)):
        value = body.get(name)
        if value is None:
            size[name] = default
        elif not _is_int(value):
            errors.append(_error("int_type", (name,), "Input should be a valid integer", value))
        elif value < MIN_STREAMING_SIZE:
            errors.append(_error("greater_than_equal", (name,), f"Input should be greater than or equal to "
                                 f"{MIN_STREAMING_SIZE}", value, ge=MIN_STREAMING_SIZE))
        elif value > limit or int(value) % 2:
            errors.append(_error("value_error", (name,), f"Value error, the fake renders even sizes up to "
                                 f"{MAX_WIDTH}x{MAX_HEIGHT}", value))
        else:
            size[name] = int(value)

    if errors:
        return errors
    assert isinstance(face_id, str)
    return SessionParams(face_id=face_id, handle_silence=handle_silence,
                         max_session_length=lengths["maxSessionLength"], max_idle_time=lengths["maxIdleTime"],
                         model=str(model), width=size["streaming_width"], height=size["streaming_height"])
