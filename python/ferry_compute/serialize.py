"""Globus Compute's serialization strategies, by name only: Ferry's codecs are fixed.

A Ferry function travels as its source (the worker runs it as a fresh module) and arguments and
results as pickles (protocol 4; JSON for node, shell and mpi functions). So a script that picks a
strategy (``Executor(serializer=ComputeSerializer(strategy_code=CombinedCode()))``) still runs:
these classes can be made and passed, and are ignored (the Executor warns). Calling
``ComputeSerializer.serialize`` / ``deserialize`` raises NotImplementedError.
"""

from __future__ import annotations

from typing import Any, Iterable, List, Optional

_FIXED = (
    "Ferry's serialization is fixed: functions travel as source, arguments and results as pickles "
    "(protocol 4), or JSON for node, shell and mpi functions; there is no strategy to choose or call"
)


class SerializationStrategy:
    """A Globus strategy's name; accepted and ignored by Ferry."""

    identifier = ""
    for_code = False

    def __init__(self, *args: Any, **kwargs: Any):
        self.args = args
        self.kwargs = kwargs

    def serialize(self, data: Any) -> str:
        raise NotImplementedError(_FIXED)

    def deserialize(self, payload: str) -> Any:
        raise NotImplementedError(_FIXED)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ComboSerializationStrategy(SerializationStrategy):
    pass


def _strategy(name: str, for_code: bool) -> type:
    return type(name, (SerializationStrategy,), {"for_code": for_code, "__doc__": f"Globus's {name}; accepted and ignored by Ferry."})


DillCode = _strategy("DillCode", True)
DillCodeSource = _strategy("DillCodeSource", True)
DillCodeTextInspect = _strategy("DillCodeTextInspect", True)
PureSourceDill = _strategy("PureSourceDill", True)
PureSourceTextInspect = _strategy("PureSourceTextInspect", True)
DillDataBase64 = _strategy("DillDataBase64", False)
JSONData = _strategy("JSONData", False)
CombinedCode = type("CombinedCode", (ComboSerializationStrategy,), {"for_code": True})
AllCodeStrategies = type("AllCodeStrategies", (ComboSerializationStrategy,), {"for_code": True})
AllDataStrategies = type("AllDataStrategies", (ComboSerializationStrategy,), {"for_code": False})

DEFAULT_STRATEGY_CODE = DillCode()
DEFAULT_STRATEGY_DATA = DillDataBase64()


class AllowlistWildcard:
    """Globus's wildcards for ``allowed_deserializer_types``; accepted and ignored."""

    CODE = "globus_compute_sdk.*Code"
    DATA = "globus_compute_sdk.*Data"


class ComputeSerializer:
    """Made and passed around like Globus's; Ferry ignores it (see the module's text)."""

    def __init__(self, strategy_code: Any = None, strategy_data: Any = None, *, allowed_deserializer_types: Optional[Iterable[Any]] = None):
        self.strategy_code = strategy_code or DEFAULT_STRATEGY_CODE
        self.strategy_data = strategy_data or DEFAULT_STRATEGY_DATA
        self.allowed_deserializer_types = list(allowed_deserializer_types or [])

    def serialize(self, data: Any) -> str:
        raise NotImplementedError(_FIXED)

    def deserialize(self, payload: str) -> Any:
        raise NotImplementedError(_FIXED)

    @staticmethod
    def pack_buffers(buffers: List[str]) -> str:
        raise NotImplementedError(_FIXED)

    @staticmethod
    def unpack_buffers(packed_buffer: str) -> List[str]:
        raise NotImplementedError(_FIXED)

    def unpack_and_deserialize(self, packed_buffer: str) -> List[Any]:
        raise NotImplementedError(_FIXED)

    def check_strategies(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(_FIXED)


__all__ = [
    "ComputeSerializer",
    "AllowlistWildcard",
    "ComboSerializationStrategy",
    "SerializationStrategy",
    "DEFAULT_STRATEGY_CODE",
    "DEFAULT_STRATEGY_DATA",
    "AllCodeStrategies",
    "AllDataStrategies",
    "CombinedCode",
    "DillCode",
    "DillCodeSource",
    "DillCodeTextInspect",
    "PureSourceDill",
    "PureSourceTextInspect",
    "DillDataBase64",
    "JSONData",
]
