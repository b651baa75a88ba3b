"""A small document model rendered twice: Markdown (``report.md``) and self-contained HTML (``report.html``,
images embedded, so the file can be mailed or attached on its own).

Text blocks take a tiny subset of Markdown inline markup: ``code`` and **bold**. Everything else is
escaped in HTML, so text taken from the data cannot inject markup.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #1d1d1f; line-height: 1.45; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { margin-top: 2em; border-bottom: 1px solid #eee; padding-bottom: .2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 4px 10px; vertical-align: top; }
th { background: #f5f5f7; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fafafa; }
code { background: #f2f2f2; padding: 0 3px; border-radius: 3px; }
pre { background: #f6f8fa; padding: .8em; overflow-x: auto; font-size: 0.85em; }
img { max-width: 100%; border: 1px solid #eee; }
details summary { cursor: pointer; color: #0366d6; }
.note { color: #555; }
"""

NUMERIC = re.compile(r"^[+\-−]?[\d.,]+( ?(%|s|MB|GB|x|min))?( ± [\d.]+)?$")


@dataclass
class Doc:
    title: str
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", level, text))

    def text(self, text: str) -> None:
        self.blocks.append(("text", text))

    def bullets(self, items: list[str]) -> None:
        if items:
            self.blocks.append(("bullets", list(items)))

    def table(self, headers: list[str], rows: list[list]) -> None:
        if rows:
            self.blocks.append(("table", list(headers), [[_cell(c) for c in row] for row in rows]))

    def image(self, path: Path, alt: str) -> None:
        """``path``: a PNG file; Markdown links it relative to the report, HTML embeds it."""
        if Path(path).is_file():
            self.blocks.append(("image", Path(path), alt))

    def code(self, text: str, summary: str | None = None) -> None:
        """A preformatted block; with ``summary`` it is folded (HTML ``<details>``)."""
        self.blocks.append(("code", text, summary))

    def to_markdown(self, base: Path) -> str:
        out = [f"# {self.title}", ""]
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                out += ["#" * block[1] + " " + block[2], ""]
            elif kind == "text":
                out += [block[1], ""]
            elif kind == "bullets":
                out += [f"- {item}" for item in block[1]] + [""]
            elif kind == "table":
                headers, rows = block[1], block[2]
                out.append("| " + " | ".join(headers) + " |")
                out.append("|" + "|".join("---:" if _numeric_column(rows, i) else "---" for i in range(len(headers))) + "|")
                out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
                out.append("")
            elif kind == "image":
                out += [f"![{block[2]}]({_relative(block[1], base)})", ""]
            elif kind == "code":
                if block[2]:
                    out += [f"<details><summary>{html.escape(block[2])}</summary>", ""]
                out += ["```", block[1].rstrip("\n"), "```", ""]
                if block[2]:
                    out += ["</details>", ""]
        return "\n".join(out)

    def to_html(self) -> str:
        out = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
               "<meta name='viewport' content='width=device-width, initial-scale=1'>",
               f"<title>{html.escape(self.title)}</title><style>{STYLE}</style></head><body>",
               f"<h1>{html.escape(self.title)}</h1>"]
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                anchor = re.sub(r"[^a-z0-9]+", "-", block[2].lower()).strip("-")
                out.append(f"<h{block[1]} id='{anchor}'>{_inline(block[2])}</h{block[1]}>")
            elif kind == "text":
                out.append(f"<p>{_inline(block[1])}</p>")
            elif kind == "bullets":
                out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block[1]) + "</ul>")
            elif kind == "table":
                headers, rows = block[1], block[2]
                numeric = [_numeric_column(rows, i) for i in range(len(headers))]
                out.append("<table><thead><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in headers) + "</tr></thead><tbody>")
                for row in rows:
                    cells = "".join(f"<td class='num'>{_inline(c)}</td>" if numeric[i] else f"<td>{_inline(c)}</td>"
                                    for i, c in enumerate(row))
                    out.append(f"<tr>{cells}</tr>")
                out.append("</tbody></table>")
            elif kind == "image":
                data = base64.b64encode(block[1].read_bytes()).decode()
                out.append(f"<p><img alt='{html.escape(block[2])}' src='data:image/png;base64,{data}'></p>")
            elif kind == "code":
                pre = f"<pre>{html.escape(block[1])}</pre>"
                out.append(f"<details><summary>{html.escape(block[2])}</summary>{pre}</details>" if block[2] else pre)
        out.append("</body></html>")
        return "\n".join(out)

    def write(self, folder: Path, stem: str = "report") -> tuple[Path, Path]:
        """``folder/stem.md`` and ``folder/stem.html``, each through a temporary file and a rename."""
        from ..atomic import write_text

        md, html = folder / f"{stem}.md", folder / f"{stem}.html"
        write_text(md, self.to_markdown(folder))
        write_text(html, self.to_html())
        return md, html


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _numeric_column(rows: list[list[str]], i: int) -> bool:
    values = [r[i].strip("*") for r in rows if r[i] not in ("–", "")]
    return bool(values) and all(NUMERIC.match(v) for v in values)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")


def _inline(text: str) -> str:
    """Escape, then turn `code` and **bold** into tags; newlines into <br>."""
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) >= 2:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
        else:
            escaped = html.escape(part)
            out.append(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped).replace("\n", "<br>"))
    return "".join(out)


def _relative(path: Path, base: Path) -> str:
    import os

    return os.path.relpath(Path(path).resolve(), Path(base).resolve()).replace(os.sep, "/")
