"""The search space of a registration pipeline, derived from its parameter dataclasses.

A benchmark method (``workbench.registration.bench.METHODS``, e.g. ``"bone-icp"`` or
``"bone-icp+piecewise"``) runs :func:`~workbench.registration.pipeline.run_registration_pipeline`
with :func:`~workbench.registration.bench.method_settings`. Each refinement it runs has a frozen
parameter dataclass in :class:`~workbench.registration.pipeline.RegistrationSettings`
(``icp``, ``lc2``, ``lc2_frames``, ``mattes``, ``piecewise``); every scalar field of it whose type
is ``int``, ``float`` or ``bool`` (nested dataclasses included, e.g. ``lc2_frames.bone.shadow_ratio``)
is a tunable parameter, named ``"<settings field>.<field>"``. Ranges: the declared ones
(``workbench.registration.params.TUNING_RANGES``), else :func:`derived_range` of the default.
A new method or a new field is therefore tunable without new code here.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass

from workbench.errors import WorkbenchError

__all__ = ["Parameter", "TuningError", "derived_range", "method_parameters", "parse_range", "settings_for", "STEP_FIELDS"]

#: Pipeline step -> the RegistrationSettings field holding its parameters.
STEP_FIELDS = {
    "bone-icp": "icp", "bone-robust": "robust", "lc2": "lc2", "lc2-frames": "lc2_frames", "mattes-mi": "mattes",
    "piecewise": "piecewise",
}


class TuningError(WorkbenchError):
    """Bad tuning input: unknown method or parameter, empty range, storage or study mismatch, no scheduler."""


@dataclass(frozen=True)
class Parameter:
    """One tunable parameter.

    Attributes
    ----------
    name : str
        ``"<settings field>.<field>[.<field>]"``, e.g. ``"icp.trim_fraction"``.
    kind : {"float", "int", "bool"}
    low, high : float
        Inclusive range (unused for bool), in the field's unit (its name says it: ``_mm``, ``_deg``).
    log : bool
        Sampled on a log scale (positive ranges spanning more than a factor 10... see derived_range).
    default : float, int or bool
        The dataclass default.
    """

    name: str
    kind: str
    low: float
    high: float
    log: bool
    default: object

    def distribution(self):
        """The optuna distribution of this parameter."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "bool":
            return CategoricalDistribution((False, True))
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return FloatDistribution(float(self.low), float(self.high), log=self.log)

    def with_range(self, low: float, high: float) -> Parameter:
        """This parameter over another range (checked: non-empty, finite; positive when log-scaled)."""
        if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
            raise TuningError(f"empty range for {self.name}: {low:g}..{high:g} (need low < high)")
        if self.kind == "int" and int(math.floor(high)) <= int(math.ceil(low)):
            raise TuningError(f"empty range for integer {self.name}: {low:g}..{high:g} holds fewer than 2 integers")
        log = self.log and low > 0
        if self.kind == "int":
            low, high = math.ceil(low), math.floor(high)
        return dataclasses.replace(self, low=low, high=high, log=log)


def derived_range(default, kind: str) -> tuple[float, float, bool]:
    """A search range around an undeclared field's default.

    float > 0: default / 4 .. default * 4, log scale; float == 0: 0 .. 10, linear;
    int >= 1: max(1, default // 2) .. max(default * 2, default + 2), log scale when default >= 4.
    A float field named ``*fraction`` with a default in (0, 1] is searched up to 1 (linear).

    Returns
    -------
    low, high : float
    log : bool
    """
    if kind == "int":
        low, high = max(1, int(default) // 2), max(int(default) * 2, int(default) + 2)
        return low, high, int(default) >= 4
    if default > 0:
        return default / 4.0, default * 4.0, True
    return 0.0, 10.0, False


def _kind(annotation) -> str | None:
    if annotation in (bool, "bool"):
        return "bool"
    if annotation in (int, "int"):
        return "int"
    if annotation in (float, "float"):
        return "float"
    return None


def _fields(owner, prefix: str) -> list[Parameter]:
    from workbench.registration.params import NOT_TUNABLE, TUNING_RANGES

    hints = typing.get_type_hints(type(owner))
    out = []
    for field in dataclasses.fields(owner):
        value = getattr(owner, field.name)
        key = f"{type(owner).__name__}.{field.name}"
        name = f"{prefix}.{field.name}"
        if key in NOT_TUNABLE:
            continue
        if dataclasses.is_dataclass(value):
            out.extend(_fields(value, name))
            continue
        kind = _kind(hints.get(field.name))
        if kind is None or (kind != "bool" and isinstance(value, bool)):
            continue
        if kind == "bool":
            out.append(Parameter(name, "bool", 0.0, 1.0, False, bool(value)))
            continue
        declared = field.metadata.get("range") or TUNING_RANGES.get(key)
        if declared is not None:
            low, high = declared
            log = low > 0 and high / low >= 10
        else:
            low, high, log = derived_range(value, kind)
            if field.name.endswith("fraction") and 0 < value <= 1:
                low, high, log = min(low, value), 1.0, False  # a fraction stays within (0, 1]
        out.append(Parameter(name, kind, low, high, log, value))
    return out


def method_parameters(method: str) -> dict[str, Parameter]:
    """Every tunable parameter of a benchmark method, by name (see the module docstring).

    Parameters
    ----------
    method : str
        A key of ``workbench.registration.bench.METHODS``.

    Raises
    ------
    TuningError
        For an unknown method.
    """
    from workbench.registration.bench import METHODS

    if method not in METHODS:
        raise TuningError(f"unknown method {method!r}; choose from {', '.join(sorted(METHODS))}")
    settings = base_settings(method)
    out: dict[str, Parameter] = {}
    for step in settings.refinements:
        field = STEP_FIELDS.get(step, step.replace("-", "_"))
        if not dataclasses.is_dataclass(getattr(settings, field, None)):
            continue  # a step without parameters
        for parameter in _fields(getattr(settings, field), field):
            out[parameter.name] = parameter
    return out


def base_settings(method: str):
    """The RegistrationSettings benchmark method ``method`` runs (``bench.method_settings`` or the robust methods')."""
    from workbench.registration import robust_bench
    from workbench.registration.bench import method_settings

    if method in getattr(robust_bench, "ROBUST_METHOD_NAMES", {}):
        return robust_bench.robust_settings(method)
    return method_settings(method)


def parse_range(text: str) -> tuple[str, float | None, float | None]:
    """``"NAME"`` or ``"NAME=LOW:HIGH"`` -> (name, low, high); low/high None when not given."""
    name, sep, span = text.partition("=")
    name = name.strip()
    if not sep:
        return name, None, None
    low_text, colon, high_text = span.partition(":")
    try:
        if not colon:
            raise ValueError
        return name, float(low_text), float(high_text)
    except ValueError:
        raise TuningError(f"parameter range {text!r} is not NAME=LOW:HIGH (e.g. icp.trim_fraction=0.5:1.0)") from None


def select_parameters(method: str, requested=None) -> dict[str, Parameter]:
    """The parameters a study tunes: all of ``method``'s, or those requested, with their ranges.

    Parameters
    ----------
    requested : iterable of str or of (name, low, high), optional
        Names (``"icp.trim_fraction"``) or ``"NAME=LOW:HIGH"`` texts or tuples (low/high None: the
        declared range).

    Raises
    ------
    TuningError
        Unknown parameter name, empty range.
    """
    available = method_parameters(method)
    if not requested:
        return available
    out = {}
    for item in requested:
        name, low, high = parse_range(item) if isinstance(item, str) else item
        if name not in available:
            raise TuningError(
                f"unknown parameter {name!r} of method {method}; choose from {', '.join(sorted(available))}"
            )
        parameter = available[name]
        if low is not None and parameter.kind != "bool":
            parameter = parameter.with_range(float(low), float(high))
        out[name] = parameter
    return out


def settings_for(method: str, values: dict):
    """The method's RegistrationSettings with ``values`` (``{"icp.trim_fraction": 0.7, ...}``) set.

    Raises
    ------
    RegistrationError
        Where the values break a dataclass's own checks (e.g. a trim fraction above 1).
    """
    settings = base_settings(method)
    grouped: dict[tuple[str, ...], dict] = {}
    for name, value in values.items():
        *path, field = name.split(".")
        grouped.setdefault(tuple(path), {})[field] = value
    # deepest first, so a nested dataclass is rebuilt before its owner
    for path in sorted(grouped, key=len, reverse=True):
        owner = settings
        for part in path:
            owner = getattr(owner, part)
        updated = dataclasses.replace(owner, **grouped[path])
        settings = _replace_at(settings, path, updated)
    return settings


def _replace_at(root, path: tuple[str, ...], value):
    if not path:
        return value
    head, *rest = path
    return dataclasses.replace(root, **{head: _replace_at(getattr(root, head), tuple(rest), value)})
