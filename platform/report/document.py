"""The report's document model (sections, tables, figures) and its two renderings: HTML and Markdown."""
from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field

import numpy as np

from platform.report.stats import MIN_RUNS_IQM, iqm_ci, sample_std

MINUS = "\u2212"             # typographic minus for signed differences ("\u221212.3")


# ============================================================================ document model

# A report is a list of blocks rendered twice: to HTML (figures embedded) and to Markdown.


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Figure:
    name: str                # figures/<name>.png and .svg
    caption: str
    png: bytes = b""


@dataclass
class Video:
    file: str                # relative to the report directory: videos/<name>.gif
    caption: str


@dataclass
class Doc:
    title: str
    blocks: list[tuple] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def ul(self, items: list[str]) -> None:
        if items:
            self.blocks.append(("ul", items))

    def table(self, t: Table) -> None:
        self.blocks.append(("table", t))

    def fig(self, f: Figure) -> None:
        self.blocks.append(("fig", f))

    def pre(self, text: str) -> None:
        self.blocks.append(("pre", text))

    def videos(self, videos: list[Video]) -> None:
        """A row of animated GIFs beside the report (linked, not embedded as data: they are made once)."""
        if videos:
            self.blocks.append(("videos", videos))


def _inline_html(text: str) -> str:
    """Escape, then turn `code` spans into <code> (the only inline markup the report uses)."""
    parts = html.escape(text, quote=False).split("`")
    return "".join(f"<code>{s}</code>" if i % 2 else s for i, s in enumerate(parts))


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "x"


CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #ccc;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:14px}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
caption{caption-side:top;text-align:left;font-weight:600;padding:.3em 0}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:13px;color:#555}
.videos{display:flex;flex-wrap:wrap;gap:1em}.videos figure{margin:0;max-width:260px}
.videos img{width:240px;image-rendering:auto}
pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:12px}code{background:#f3f3f3;padding:0 .2em}
nav ul{columns:2}
""".strip()

_NUM = re.compile(r"^[\u2212+\-]?\d[\d.,]*(\s|$|%| \u00b1| \[)")


def render_html(doc: Doc) -> str:
    body, toc = [], []
    for b in doc.blocks:
        kind = b[0]
        if kind == "h":
            anchor = slug(b[2])
            if b[1] == 2:
                toc.append(f'<li><a href="#{anchor}">{html.escape(b[2])}</a></li>')
            body.append(f'<h{b[1]} id="{anchor}">{_inline_html(b[2])}</h{b[1]}>')
        elif kind == "p":
            body.append(f"<p>{_inline_html(b[1])}</p>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in b[1]) + "</ul>")
        elif kind == "pre":
            body.append(f"<pre>{html.escape(b[1], quote=False)}</pre>")
        elif kind == "table":
            t: Table = b[1]
            rows = []
            for r in t.rows:
                cells = "".join(f'<td class="num">{_inline_html(c)}</td>' if _NUM.match(c) else
                                f"<td>{_inline_html(c)}</td>" for c in r)
                rows.append(f"<tr>{cells}</tr>")
            cap = f"<caption>{_inline_html(t.caption)}</caption>" if t.caption else ""
            head = "".join(f"<th>{_inline_html(h)}</th>" for h in t.headers)
            body.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
        elif kind == "fig":
            f: Figure = b[1]
            data = base64.b64encode(f.png).decode("ascii")
            body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(f.caption)}">'
                        f"<figcaption>{_inline_html(f.caption)} (also as <code>figures/{html.escape(f.name)}.svg"
                        f"</code>)</figcaption></figure>")
        elif kind == "videos":
            figs = "".join(f'<figure><a href="{html.escape(v.file)}"><img src="{html.escape(v.file)}" '
                           f'alt="{html.escape(v.caption)}"></a><figcaption>{_inline_html(v.caption)}</figcaption>'
                           f"</figure>" for v in b[1])
            body.append(f'<div class="videos">{figs}</div>')
    nav = f'<nav><ul>{"".join(toc)}</ul></nav>' if toc else ""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(doc.title)}</title>\n<style>\n{CSS}\n</style>\n</head>\n<body>\n"
            f"<h1>{html.escape(doc.title)}</h1>\n{nav}\n" + "\n".join(body) + "\n</body>\n</html>\n")


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(doc: Doc) -> str:
    out = [f"# {doc.title}", ""]
    for b in doc.blocks:
        kind = b[0]
        if kind == "h":
            out += ["#" * b[1] + " " + b[2], ""]
        elif kind == "p":
            out += [b[1], ""]
        elif kind == "ul":
            out += [f"- {i}" for i in b[1]] + [""]
        elif kind == "pre":
            out += ["```", b[1], "```", ""]
        elif kind == "table":
            t: Table = b[1]
            if t.caption:
                out += [f"**{t.caption}**", ""]
            out.append("| " + " | ".join(_md_cell(h) for h in t.headers) + " |")
            out.append("|" + "|".join("---" for _ in t.headers) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in t.rows]
            out.append("")
        elif kind == "fig":
            f: Figure = b[1]
            out += [f"![{f.caption}](figures/{f.name}.png)", "", f"*{f.caption}* ([SVG](figures/{f.name}.svg))", ""]
        elif kind == "videos":
            for v in b[1]:
                alt = v.caption.replace("[", "(").replace("]", ")").replace("`", "")
                out += [f"[![{alt}]({v.file})]({v.file})", "", f"*{v.caption}*", ""]
    return "\n".join(out).rstrip() + "\n"


# ============================================================================ formatting


def fnum(x: float, digits: int = 1) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{x:.{digits}f}".replace("-", MINUS)


def fsigned(x: float, digits: int = 1) -> str:
    if x is None or not np.isfinite(x):
        return ""
    return (MINUS if x < 0 else "+") + f"{abs(x):.{digits}f}"


def fmean_std(x: np.ndarray) -> str:
    if not len(x):
        return "—"
    return f"{fnum(float(np.mean(x)))} ± {fnum(sample_std(x))}" if len(x) > 1 else f"{fnum(float(x[0]))} (1 seed)"


def fiqm(tasks: list[np.ndarray]) -> str:
    allx = np.concatenate(tasks) if tasks else np.array([])
    if not allx.size:
        return "—"
    if allx.size < MIN_RUNS_IQM:  # a "CI" of one or two runs says nothing: say what it would need
        return f"— ({allx.size} run{'s' * (allx.size != 1)}; needs ≥ {MIN_RUNS_IQM})"
    point, lo, hi = iqm_ci(tasks)
    return f"{fnum(point)} [{fnum(lo)}, {fnum(hi)}]"


def fduration(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "—"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


