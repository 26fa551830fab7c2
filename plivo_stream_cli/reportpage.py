"""The `pstream report` page: one self-contained HTML file (inline CSS, SVG and a little script).

Pure: takes a `timeline.CallTimeline` (one call) or a `simulate --json` summary (a run) and
returns the page as a string. Nothing is fetched: no fonts, no CDN, no network; the page opens
offline in any browser. Every text that came from a capture or a result file (ids, checkpoint
names, digits, error messages) is hostile input: it goes through `_esc` and is cut to a length.

The call view draws the caller's and the bot's levels on one time axis, the caller's utterances
(barge-ins marked), every event, and the metrics as spans labelled with their values. Wide
calls scroll; the +/- buttons zoom the time axis (the script moves x coordinates only, so text
keeps its size; `page.html#zoom=3` opens zoomed in). The run view draws each metric as a strip
plot with its percentiles and
thresholds, lists the calls that failed a threshold, and embeds their timelines when given.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from plivo_stream_cli.metrics import METRICS, PERCENTILES, stats
from plivo_stream_cli.timeline import FLOOR_DBFS, CallTimeline, Envelope, Mark, Span

LEFT = 104  # px: lane labels
RIGHT = 170  # px: room for the last labels
FIT_WIDTH = 1100  # px of time axis a short call is fitted into
MIN_PPS = 60.0  # px per second at least: longer calls scroll
MAX_LABEL = 40  # characters of a name shown in a label
MAX_WIDTH = 120_000  # px of time axis at most: 33 minutes at MIN_PPS, coarser beyond

METRIC_TITLES = {
    "first_audio_ms": "time to first audio",
    "reply_gaps_ms": "reply gaps",
    "checkpoint_ms": "checkpoint round trip",
    "clear_ms": "barge-in to clearAudio",
    "barge_in_audio_ms": "audio sent over the caller",
}
_COLORS = {
    "first_audio_ms": "#1f77b4",
    "reply_gaps_ms": "#d62728",
    "checkpoint_ms": "#2ca02c",
    "clear_ms": "#ff7f0e",
    "barge_in_audio_ms": "#9467bd",
}
_ROW_TITLES = {
    "first_audio_ms": "first audio",
    "reply_gaps_ms": "reply gaps",
    "checkpoint_ms": "checkpoints",
    "clear_ms": "barge-in→clear",
    "barge_in_audio_ms": "over caller",
}
_SPAN_ROWS = ("first_audio_ms", "reply_gaps_ms", "clear_ms", "barge_in_audio_ms", "checkpoint_ms")

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#222}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
.facts{color:#555;margin:0 0 12px}.bad{color:#b00020;font-weight:600}.ok{color:#18794e}
table{border-collapse:collapse;margin:4px 0 12px}
td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}
th{background:#f5f5f5}td.n{text-align:right;font-variant-numeric:tabular-nums}
.scroll{overflow-x:auto;border:1px solid #ddd;border-radius:4px;background:#fff}
.tools{margin:6px 0}.tools button{font:inherit;padding:1px 10px;margin-right:4px}
svg text{font:12px system-ui,sans-serif;fill:#333}svg .lane{font-weight:600;fill:#444}
svg .small{font-size:11px;fill:#555}svg .val{font-size:11px;font-weight:600}
.legend span{display:inline-block;margin-right:14px}.sw{display:inline-block;width:12px;height:12px;
vertical-align:-1px;margin-right:4px;border-radius:2px}
section.call{border-top:2px solid #eee;margin-top:28px;padding-top:8px}
"""

# Zoom: every element drawn at a time carries data-t (and data-t2 for an interval); the script
# recomputes x from them, and scales the level paths, so text stays readable at any zoom.
_SCRIPT = """
document.querySelectorAll('svg.timeline').forEach(function(svg){
  var d=svg.dataset,pps=parseFloat(d.pps),left=parseFloat(d.left),dur=parseFloat(d.dur),
      right=parseFloat(d.right),k=1;
  function x(t){return left+t*pps*k;}
  function draw(){
    svg.setAttribute('width',Math.ceil(x(dur)+right));
    svg.querySelectorAll('[data-t]').forEach(function(el){
      var a=x(parseFloat(el.dataset.t));
      if(el.dataset.t2!==undefined){
        var b=x(parseFloat(el.dataset.t2));
        if(el.tagName==='rect'){el.setAttribute('x',a);el.setAttribute('width',Math.max(b-a,1));}
        else if(el.tagName==='line'){el.setAttribute('x1',a);el.setAttribute('x2',b);}
        else{el.setAttribute('x',(a+b)/2);}
      }else if(el.tagName==='line'){el.setAttribute('x1',a);el.setAttribute('x2',a);}
      else if(el.tagName==='g'){el.setAttribute('transform','translate('+a+',0)');}
      else{el.setAttribute('x',a);}
    });
    svg.querySelectorAll('.env').forEach(function(p){
      p.setAttribute('transform','translate('+left+',0) scale('+k+',1)');});
  }
  var tools=svg.parentNode.previousElementSibling;
  tools.querySelector('.zin').onclick=function(){k*=1.5;draw();};
  tools.querySelector('.zout').onclick=function(){k/=1.5;draw();};
  tools.querySelector('.zfit').onclick=function(){
    k=(svg.parentNode.clientWidth-left-right)/(dur*pps||1);draw();};
  var asked=/zoom=([0-9.]+)/.exec(location.hash);  // page.html#zoom=3 opens zoomed in
  if(asked&&parseFloat(asked[1])>0){k=parseFloat(asked[1]);draw();}
});
"""


def call_page(tl: CallTimeline, *, source: str = "") -> str:
    """The page of one call."""
    title = f"pstream report: call {_cut(tl.call_id)}"
    return _document(title, _call_section(tl, source=source, heading="h1"))


def run_page(
    summary: Mapping[str, Any],
    *,
    source: str = "",
    timelines: Mapping[int, CallTimeline] | None = None,
    missing_note: str = "",
) -> str:
    """The page of a run (a `simulate --json` summary): distributions, checks, failed calls.

    `timelines` maps a call's index in `summary["calls"]` to its capture's timeline; those
    calls link to their timeline, embedded below.
    """
    timelines = timelines or {}
    calls = [c for c in _list(summary, "calls") if isinstance(c, dict)]
    checks = [c for c in _list(summary, "checks") if isinstance(c, dict)]
    failed = failed_calls(summary)
    passed = bool(summary.get("passed")) and not failed
    parts = [
        f"<h1>pstream report: {len(calls)} call{'s' if len(calls) != 1 else ''}</h1>",
        f'<p class="facts">{_esc(source)} &middot; '
        + (
            '<span class="ok">every threshold held</span>'
            if passed and checks
            else ('<span class="bad">failed</span>' if not passed else "no thresholds were given")
        )
        + "</p>",
    ]
    if checks:
        parts.append(_checks_table(checks))
    parts.append("<h2>Metrics</h2>")
    parts.append(_metrics_section(calls, checks))
    parts.append(_failed_section(calls, failed, timelines, missing_note))
    for index in sorted(timelines):
        tl = timelines[index]
        parts.append(f'<section class="call" id="call-{index + 1}">')
        parts.append(_call_section(tl, source=f"call {index + 1}", heading="h2"))
        parts.append("</section>")
    return _document(f"pstream report: {len(calls)} calls", "\n".join(parts))


def failed_calls(summary: Mapping[str, Any]) -> dict[int, list[str]]:
    """Calls that failed a threshold of the run: index -> why (one line per check failed)."""
    out: dict[int, list[str]] = {}
    calls = _list(summary, "calls")
    for check in _list(summary, "checks"):
        if not isinstance(check, dict) or not isinstance(check.get("metric"), str):
            continue
        metric, limit = check["metric"], _number(check.get("max"))
        for index, call in enumerate(calls):
            values = list(_values([call], metric)) if isinstance(call, dict) else []
            if not values:
                out.setdefault(index, []).append(f"{metric}: not measured")
            elif limit is not None and max(values) > limit:
                out.setdefault(index, []).append(f"{metric}: {max(values):g} ms > {limit:g} ms")
    return out


# ---------------------------------------------------------------- one call


def _call_section(tl: CallTimeline, *, source: str, heading: str) -> str:
    started = datetime.fromtimestamp(tl.started_at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    facts = [
        _esc(source),
        f"stream {_esc(_cut(tl.stream_id))}",
        _esc(tl.media_format.content_type),
        f"{tl.duration:.2f} s",
        started,
    ]
    if tl.errors:
        facts.append(f'<span class="bad">{tl.errors} bad messages</span>')
    if tl.checkpoints_unconfirmed:
        facts.append(f"{tl.checkpoints_unconfirmed} checkpoints never confirmed")
    return "\n".join(
        [
            f"<{heading}>call {_esc(_cut(tl.call_id))}</{heading}>",
            f'<p class="facts">{" &middot; ".join(f for f in facts if f)}</p>',
            _call_metrics_table(tl),
            '<div class="tools"><button class="zout" title="zoom out">&minus;</button>'
            '<button class="zin" title="zoom in">+</button>'
            '<button class="zfit" title="fit the call in the window">fit</button> '
            '<span class="small">scroll sideways on long calls</span></div>',
            f'<div class="scroll">{timeline_svg(tl)}</div>',
            _legend(),
        ]
    )


def _call_metrics_table(tl: CallTimeline) -> str:
    rows = []
    for metric in _SPAN_ROWS:
        values = tl.values(metric)
        if not values:
            continue
        shown = ", ".join(f"{v:g}" for v in values[:12]) + (" …" if len(values) > 12 else "")
        rows.append(
            f"<tr><td>{METRIC_TITLES[metric]}</td><td><code>{metric}</code></td>"
            f'<td class="n">{len(values)}</td><td>{shown}</td></tr>'
        )
    if not rows:
        return '<p class="facts">no metric could be measured (no reply, no checkpoint)</p>'
    head = "<tr><th>metric</th><th>name</th><th>count</th><th>values (ms)</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def timeline_svg(tl: CallTimeline) -> str:
    """The call's timeline: axis, both tracks, utterances, events, metric spans."""
    dur = max(tl.duration, 0.1)
    pps = min(max(MIN_PPS, FIT_WIDTH / dur), MAX_WIDTH / dur)
    width = math.ceil(LEFT + dur * pps + RIGHT)
    d = _Draw(pps, dur * pps)
    y = 22
    d.axis(dur, y)
    caller_top, lane = y + 12, 84
    d.lane_label("caller", caller_top + lane / 2)
    for start, end in tl.segments:
        barge = (start, end) in tl.barge_ins
        d.rect(start, end, caller_top + lane + 2, 6, "#f28e2b" if barge else "#9ecae9")
        if barge:
            d.text_at(start, caller_top + lane + 18, "barge-in", "small", anchor="start")
    d.envelope(tl.caller, caller_top, lane, "#4e79a7")
    marks_y = caller_top + lane + 34
    d.marks([m for m in tl.marks if m.side == "caller"], marks_y, caller_top)
    bot_top = marks_y + 40
    d.lane_label("bot", bot_top + lane / 2)
    d.envelope(tl.bot, bot_top, lane, "#59a14f")
    bot_marks_y = bot_top + lane + 16
    d.marks([m for m in tl.marks if m.side == "bot"], bot_marks_y, bot_top)
    rows_top = bot_marks_y + 44
    rows = [m for m in _SPAN_ROWS if tl.values(m)]
    for i, metric in enumerate(rows):
        row_y = rows_top + i * 30
        d.lane_label(_ROW_TITLES[metric], row_y + 2, 11)
        for span in (s for s in tl.spans if s.metric == metric):
            d.span(span, row_y)
    height = rows_top + len(rows) * 30 + 8
    body = "".join(d.parts)
    return (
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" data-pps="{pps:.3f}" data-left="{LEFT}" data-right="{RIGHT}" '
        f'data-dur="{dur:.3f}" role="img" aria-label="call timeline">{body}</svg>'
    )


class _Draw:
    """SVG elements positioned in time (x from seconds, with the zoom script's data-t)."""

    def __init__(self, pps: float, width: float) -> None:
        self.pps = pps
        self.width = width  # px of time axis
        self.parts: list[str] = []
        self._rows: dict[float, list[float]] = {}  # label row -> right edge of its last label

    def x(self, t: float) -> float:
        return round(LEFT + t * self.pps, 1)

    def axis(self, dur: float, y: float) -> None:
        steps = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600)
        step = next((s for s in steps if s * self.pps >= 64), 7200)
        self.parts.append(
            f'<line x1="{LEFT}" y1="{y}" x2="{self.x(dur)}" y2="{y}" stroke="#999" data-t="0" '
            f'data-t2="{dur:.3f}"/>'
        )
        n = 0
        while n * step <= dur + 1e-9:
            t = n * step
            label = f"{t:g} s" if step >= 1 else f"{t:.1f}"
            self.parts.append(
                f'<line x1="{self.x(t)}" y1="{y}" x2="{self.x(t)}" y2="{y + 4}" stroke="#999" '
                f'data-t="{t:.3f}"/><text x="{self.x(t)}" y="{y - 6}" class="small" '
                f'text-anchor="middle" data-t="{t:.3f}">{label}</text>'
            )
            n += 1

    def lane_label(self, text: str, y: float, size: int = 12) -> None:
        self.parts.append(
            f'<text x="6" y="{y + 4}" class="lane" style="font-size:{size}px">{_esc(text)}</text>'
        )

    def rect(
        self, start: float, end: float, y: float, h: float, fill: str, title: str = ""
    ) -> None:
        w = max(self.x(end) - self.x(start), 1)
        tip = f"<title>{_esc(title)}</title>" if title else ""
        self.parts.append(
            f'<rect x="{self.x(start)}" y="{y}" width="{w:.1f}" height="{h}" fill="{fill}" '
            f'data-t="{start:.3f}" data-t2="{end:.3f}">{tip}</rect>'
        )

    def text_at(self, t: float, y: float, text: str, cls: str, *, anchor: str = "middle") -> None:
        self.parts.append(
            f'<text x="{self.x(t)}" y="{y}" class="{cls}" text-anchor="{anchor}" '
            f'data-t="{t:.3f}">{_esc(text)}</text>'
        )

    def envelope(self, env: Envelope, top: float, height: float, color: str) -> None:
        """The level, mirrored around the lane's middle; x in seconds*pps, scaled by the zoom."""
        mid, half = top + height / 2, height / 2 - 2
        self.parts.append(
            f'<line x1="{LEFT}" y1="{mid}" x2="{self.x(len(env.levels) * env.step)}" y2="{mid}" '
            f'stroke="#ccc" data-t="0" data-t2="{len(env.levels) * env.step:.3f}"/>'
        )
        if not any(v > FLOOR_DBFS for v in env.levels):
            return
        step = env.step * self.pps
        top_edge, prev = [f"M0 {mid:.1f}"], None
        heights = [round(half * _loudness(v), 1) for v in env.levels]
        for i, h in enumerate(heights):
            if h != prev:
                top_edge.append(f"H{i * step:.1f}V{mid - h:.1f}")
                prev = h
        top_edge.append(f"H{len(heights) * step:.1f}V{mid:.1f}")
        bottom, prev = [], None
        for i in range(len(heights) - 1, -1, -1):
            h = heights[i]
            if h != prev:
                bottom.append(f"H{(i + 1) * step:.1f}V{mid + h:.1f}")
                prev = h
        bottom.append("H0Z")
        self.parts.append(
            f'<path class="env" d="{"".join(top_edge)}{"".join(bottom)}" fill="{color}" '
            f'transform="translate({LEFT},0)"/>'
        )

    def marks(self, marks: Sequence[Mark], y: float, lane_top: float) -> None:
        for mark in marks:
            style = _MARK_STYLE.get(mark.kind, ("#777", mark.kind))
            color, word = style
            title = f"{mark.t:.3f} s  {word} {mark.label}".rstrip()
            if mark.kind == "play":  # many: a tick each, no label
                self.parts.append(
                    f'<line class="mark mark-play" x1="{self.x(mark.t)}" y1="{y - 14}" '
                    f'x2="{self.x(mark.t)}" y2="{y - 6}" stroke="{color}" data-t="{mark.t:.3f}">'
                    f"<title>{_esc(title)}</title></line>"
                )
                continue
            full = mark.kind in ("clear", "cleared", "dtmf", "start", "stop", "error")
            self.parts.append(
                f'<line class="mark mark-{mark.kind}" x1="{self.x(mark.t)}" '
                f'y1="{lane_top if full else y - 14}" '
                f'x2="{self.x(mark.t)}" y2="{y - 4}" stroke="{color}" stroke-width="1.5" '
                f'stroke-dasharray="{"3 2" if full else "none"}" data-t="{mark.t:.3f}">'
                f"<title>{_esc(title)}</title></line>"
            )
            label = word if not mark.label else f"{word} {_cut(mark.label, 24)}"
            if mark.kind == "dtmf":
                label = f"DTMF {_cut(mark.label, 4)}"
            row = self._row(y, mark.t, len(label))
            # A label near the end of the call goes to the left of its mark, inside the page.
            end = mark.t * self.pps + len(label) * 6.2 > self.width
            place = 'x="-2" text-anchor="end"' if end else 'x="2"'
            self.parts.append(
                f'<g data-t="{mark.t:.3f}" transform="translate({self.x(mark.t)},0)">'
                f'<text {place} y="{row}" class="small" style="fill:{color}">{_esc(label)}'
                f"<title>{_esc(title)}</title></text></g>"
            )

    def _row(self, y: float, t: float, chars: int) -> float:
        """A label row under `y` where a label at `t` does not overlap the one before it."""
        x, w = self.x(t), chars * 6.2 + 6
        for level in range(3):
            row = y + level * 12
            ends = self._rows.setdefault(row, [])
            if not ends or ends[-1] <= x:
                ends.append(x + w)
                return row
        row = y + 2 * 12
        self._rows[row].append(x + w)
        return row

    def span(self, span: Span, y: float) -> None:
        color = _COLORS.get(span.metric, "#555")
        label = f"{span.value_ms:g} ms"
        if span.metric == "checkpoint_ms" and span.label:
            label = f"{_cut(span.label, 20)}: {label}"
        title = f"{METRIC_TITLES.get(span.metric, span.metric)}: {span.value_ms:g} ms"
        if span.label:
            title += f" ({span.label})"
        t1 = span.end if span.end > span.start else span.start + 0.001
        self.parts.append(
            f'<line class="span span-{span.metric}" x1="{self.x(span.start)}" y1="{y}" '
            f'x2="{self.x(t1)}" y2="{y}" stroke="{color}" '
            f'stroke-width="6" data-t="{span.start:.3f}" data-t2="{t1:.3f}" '
            f'data-ms="{span.value_ms:g}">'
            f"<title>{_esc(title)}</title></line>"
        )
        self.parts.append(
            f'<text x="{(self.x(span.start) + self.x(t1)) / 2:.1f}" y="{y - 6}" class="val" '
            f'text-anchor="middle" style="fill:{color}" data-t="{span.start:.3f}" '
            f'data-t2="{t1:.3f}">{_esc(label)}</text>'
        )


_MARK_STYLE = {
    "start": ("#555", "start"),
    "dtmf": ("#6a3d9a", "DTMF"),
    "play": ("#59a14f", "playAudio"),
    "checkpoint": ("#2ca02c", "checkpoint"),
    "played": ("#2ca02c", "playedStream"),
    "clear": ("#d62728", "clearAudio"),
    "cleared": ("#d62728", "clearedAudio"),
    "senddtmf": ("#6a3d9a", "sendDTMF"),
    "stop": ("#555", "stop"),
    "unknown": ("#777", "unknown event"),
    "error": ("#b00020", "bad message"),
}


def _legend() -> str:
    items = [("#4e79a7", "caller's level"), ("#59a14f", "bot's level (as played)")]
    items += [("#9ecae9", "caller speaking"), ("#f28e2b", "barge-in")]
    items += [(_COLORS[m], METRIC_TITLES[m]) for m in _SPAN_ROWS]
    cells = "".join(
        f'<span><i class="sw" style="background:{c}"></i>{_esc(t)}</span>' for c, t in items
    )
    return f'<p class="legend small">{cells}</p>'


def _loudness(dbfs: float) -> float:
    """0 for the floor, 1 for full scale, linear in dB (speech sits around the middle)."""
    return min(1.0, max(0.0, (dbfs - FLOOR_DBFS) / -FLOOR_DBFS))


# ---------------------------------------------------------------- a run


def _checks_table(checks: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for c in checks:
        ok = bool(c.get("passed"))
        worst = _number(c.get("worst"))
        missing = _number(c.get("missing")) or 0
        rows.append(
            f"<tr><td><code>{_esc(_cut(str(c.get('metric'))))}</code></td>"
            f'<td class="n">{_fmt(_number(c.get("max")))}</td><td class="n">{_fmt(worst)}</td>'
            f'<td class="n">{missing:g}</td>'
            f'<td class="{"ok" if ok else "bad"}">{"pass" if ok else "FAIL"}</td></tr>'
        )
    head = (
        "<tr><th>threshold</th><th>max ms</th><th>worst ms</th><th>not measured</th><th></th></tr>"
    )
    return f"<h2>Thresholds</h2><table>{head}{''.join(rows)}</table>"


def _metrics_section(
    calls: Sequence[Mapping[str, Any]], checks: Sequence[Mapping[str, Any]]
) -> str:
    limits = {c.get("metric"): _number(c.get("max")) for c in checks}
    out = []
    for metric in METRICS:
        values = list(_values(calls, metric))
        if not values:
            continue
        row = stats(values)
        cells = "".join(
            f'<td class="n">{_fmt(_number(row.get(k)))}</td>'
            for k in [*(f"p{p}" for p in PERCENTILES), "max"]
        )
        table = (
            "<table><tr><th>count</th>"
            + "".join(f"<th>p{p}</th>" for p in PERCENTILES)
            + f'<th>max</th></tr><tr><td class="n">{len(values)}</td>{cells}</tr></table>'
        )
        out.append(
            f"<h3>{METRIC_TITLES.get(metric, metric)} <code>{metric}</code></h3>"
            + strip_svg(values, row, limits.get(metric), _COLORS.get(metric, "#555"))
            + table
        )
    return "\n".join(out) or '<p class="facts">no metric was measured in any call</p>'


def strip_svg(
    values: Sequence[float], row: Mapping[str, Any], limit: float | None, color: str
) -> str:
    """A strip plot: one dot per value on a ms axis, the percentiles and the threshold marked."""
    width, height, left, right = 900, 92, 16, 40
    top = max([*values, limit or 0.0]) or 1.0
    scale = (width - left - right) / (top * 1.05)

    def x(v: float) -> float:
        return round(left + v * scale, 1)

    parts = [f'<line x1="{left}" y1="60" x2="{width - right}" y2="60" stroke="#999"/>']
    step = _nice_step(top * 1.05 / 8)
    tick = 0.0
    while tick <= top * 1.05:
        label = f"{tick:g}" if x(tick) < width - right - 16 else ""  # "ms" goes there
        parts.append(
            f'<line x1="{x(tick)}" y1="60" x2="{x(tick)}" y2="64" stroke="#999"/>'
            f'<text x="{x(tick)}" y="78" class="small" text-anchor="middle">{label}</text>'
        )
        tick += step
    parts.append(f'<text x="{width - right + 4}" y="78" class="small">ms</text>')
    for i, v in enumerate(values[:5000]):
        jitter = 14 + (i * 7919 % 37)  # deterministic spread so equal values stay visible
        parts.append(
            f'<circle cx="{x(v)}" cy="{jitter}" r="3" fill="{color}" fill-opacity="0.6">'
            f"<title>{v:g} ms</title></circle>"
        )
    for level, p in enumerate(PERCENTILES):
        cut = _number(row.get(f"p{p}"))
        if cut is not None:  # labels on three heights: close percentiles stay readable
            parts.append(
                f'<line x1="{x(cut)}" y1="{8 + 9 * level}" x2="{x(cut)}" y2="58" stroke="#333" '
                f'stroke-dasharray="2 2"/><text x="{x(cut) + 2}" y="{8 + 9 * level}" '
                f'class="small">p{p}</text>'
            )
    if limit is not None:
        parts.append(
            f'<line x1="{x(limit)}" y1="2" x2="{x(limit)}" y2="60" stroke="#b00020" '
            f'stroke-width="2"/><text x="{x(limit) + 3}" y="56" class="small" '
            f'style="fill:#b00020">limit {limit:g}</text>'
        )
    return (
        f'<svg class="strip" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="distribution">{"".join(parts)}</svg>'
    )


def _failed_section(
    calls: Sequence[Mapping[str, Any]],
    failed: Mapping[int, list[str]],
    timelines: Mapping[int, CallTimeline],
    missing_note: str,
) -> str:
    if not failed:
        return ""
    rows = []
    for index, why in sorted(failed.items()):
        call = calls[index] if index < len(calls) else {}
        cid = _esc(_cut(str(call.get("call_id", "?"))))
        if index in timelines:
            link = f'<a href="#call-{index + 1}">timeline</a>'
        else:
            link = '<span class="small">no capture</span>'
        rows.append(
            f'<tr><td class="n">{index + 1}</td><td><code>{cid}</code></td>'
            f'<td class="bad">{"<br>".join(_esc(w) for w in why)}</td><td>{link}</td></tr>'
        )
    head = "<tr><th>#</th><th>call</th><th>failed</th><th></th></tr>"
    note = f'<p class="facts">{_esc(missing_note)}</p>' if missing_note else ""
    return f"<h2>Calls that failed ({len(failed)})</h2><table>{head}{''.join(rows)}</table>{note}"


# ---------------------------------------------------------------- shared


def _document(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_CSS}</style></head>\n<body>\n{body}\n"
        f'<p class="small facts">made by pstream report</p>\n<script>{_SCRIPT}</script>\n'
        "</body></html>\n"
    )


def _values(calls: Iterable[Mapping[str, Any]], metric: str) -> Iterable[float]:
    for call in calls:
        value = (
            call.get("metrics", {}).get(metric) if isinstance(call.get("metrics"), dict) else None
        )
        for v in value if isinstance(value, list) else [value]:
            number = _number(v)
            if number is not None:
                yield number


def _list(document: Mapping[str, Any], key: str) -> list[Any]:
    value = document.get(key)
    return value if isinstance(value, list) else []


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _nice_step(raw: float) -> float:
    if raw <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1.0, 2.0, 5.0, 10.0) if m * power >= raw)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _cut(text: str, limit: int = MAX_LABEL) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _esc(text: str) -> str:
    """Text from a capture, safe in HTML and SVG: escaped, no control characters, encodable."""
    clean = _CONTROL.sub("\ufffd", text).encode("utf-8", "backslashreplace").decode("utf-8")
    return html.escape(clean, quote=True)
