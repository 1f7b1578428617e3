"""A small metrics registry rendered in the Prometheus text exposition format (0.0.4).

Gauges, counters and histograms with labels; ``render()`` gives the text,
``write_textfile()`` writes it atomically for node_exporter's textfile collector.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MetricError(ValueError):
    """A bad metric or label name, a wrong label set, or a counter going down."""


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels_text(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    pairs = ",".join(f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + pairs + "}"


class _Metric:
    kind = ""

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        if not _METRIC_NAME.match(name):
            raise MetricError(f"bad metric name {name!r}")
        for label in labels:
            if not _LABEL_NAME.match(label) or label.startswith("__"):
                raise MetricError(f"{name}: bad label name {label!r}")
        if len(set(labels)) != len(labels):
            raise MetricError(f"{name}: duplicate label names {list(labels)}")
        self.name = name
        self.help = help
        self.label_names = tuple(labels)

    def _key(self, labels: dict[str, object]) -> tuple[str, ...]:
        if set(labels) != set(self.label_names):
            raise MetricError(
                f"{self.name}: labels {sorted(labels)} given, {sorted(self.label_names)} expected"
            )
        return tuple(str(labels[n]) for n in self.label_names)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]

    def lines(self) -> Iterator[str]:
        raise NotImplementedError


class _Scalar(_Metric):
    """One number per label set (gauge, counter)."""

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help, labels)
        self._values: dict[tuple[str, ...], float] = {}
        if not self.label_names:
            self._values[()] = 0.0  # an unlabelled metric always exists

    def value(self, **labels: object) -> float:
        return self._values.get(self._key(labels), 0.0)

    def remove(self, **labels: object) -> None:
        """Forget one label set (a domain that is gone)."""
        self._values.pop(self._key(labels), None)

    def lines(self) -> Iterator[str]:
        for key in sorted(self._values):
            text = _labels_text(self.label_names, key)
            yield f"{self.name}{text} {format_value(self._values[key])}"


class Gauge(_Scalar):
    kind = "gauge"

    def set(self, value: float, /, **labels: object) -> None:
        self._values[self._key(labels)] = float(value)

    def inc(self, amount: float = 1.0, /, **labels: object) -> None:
        key = self._key(labels)
        self._values[key] = self._values.get(key, 0.0) + amount


class Counter(_Scalar):
    kind = "counter"

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        if not name.endswith("_total"):
            raise MetricError(f"counter {name!r} must end in _total")
        super().__init__(name, help, labels)

    def inc(self, amount: float = 1.0, /, **labels: object) -> None:
        if amount < 0:
            raise MetricError(f"{self.name}: a counter cannot go down ({amount})")
        key = self._key(labels)
        self._values[key] = self._values.get(key, 0.0) + amount


class Histogram(_Metric):
    kind = "histogram"

    def __init__(
        self, name: str, help: str, buckets: Sequence[float], labels: Sequence[str] = ()
    ) -> None:
        if "le" in labels:
            raise MetricError(f"{name}: 'le' is reserved for histogram buckets")
        super().__init__(name, help, labels)
        bounds = sorted(float(b) for b in buckets if not math.isinf(b))
        if not bounds or len(set(bounds)) != len(bounds):
            raise MetricError(f"{name}: buckets must be distinct and not empty")
        self.bounds = (*bounds, math.inf)
        # label set -> (per-bucket counts, sum)
        self._series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}
        if not self.label_names:
            self._series[()] = ([0] * len(self.bounds), [0.0])

    def observe(self, value: float, /, **labels: object) -> None:
        counts, total = self._series.setdefault(self._key(labels), ([0] * len(self.bounds), [0.0]))
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                counts[i] += 1
                break
        total[0] += value

    def count(self, **labels: object) -> int:
        series = self._series.get(self._key(labels))
        return sum(series[0]) if series else 0

    def lines(self) -> Iterator[str]:
        names = (*self.label_names, "le")
        for key in sorted(self._series):
            counts, total = self._series[key]
            running = 0
            for bound, n in zip(self.bounds, counts, strict=True):
                running += n
                text = _labels_text(names, (*key, format_value(bound)))
                yield f"{self.name}_bucket{text} {running}"
            plain = _labels_text(self.label_names, key)
            yield f"{self.name}_sum{plain} {format_value(total[0])}"
            yield f"{self.name}_count{plain} {running}"


class Registry:
    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}

    def _add(self, metric: _Metric) -> None:
        if metric.name in self._metrics:
            raise MetricError(f"metric {metric.name!r} is already registered")
        self._metrics[metric.name] = metric

    def gauge(self, name: str, help: str, labels: Sequence[str] = ()) -> Gauge:
        metric = Gauge(name, help, labels)
        self._add(metric)
        return metric

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> Counter:
        metric = Counter(name, help, labels)
        self._add(metric)
        return metric

    def histogram(
        self, name: str, help: str, buckets: Sequence[float], labels: Sequence[str] = ()
    ) -> Histogram:
        metric = Histogram(name, help, buckets, labels)
        self._add(metric)
        return metric

    def render(self) -> str:
        out: list[str] = []
        for metric in self._metrics.values():
            out += metric.header()
            out += metric.lines()
        return "\n".join(out) + "\n"


def write_textfile(registry: Registry, path: Path | str) -> None:
    """Write for node_exporter's textfile collector: a temp file, then an atomic rename.

    node_exporter reads only ``*.prom``; the temp name does not match, so it
    never sees a half-written file.
    """
    path = Path(path)
    if path.suffix != ".prom":
        raise ValueError(f"{path}: node_exporter's textfile collector reads only *.prom files")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, registry.render().encode())
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
