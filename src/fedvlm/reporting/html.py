"""A report as one self-contained HTML file: ``report.md`` (or a bench's ``results.md``)
rendered with its plots inline, so it opens in a browser and travels as one file.

The markdown is fedvlm's own (headings, bullets two levels deep, pipe tables, images,
``**bold**`` and ``code``), so this renders exactly that subset rather than depending on
a general markdown library for it.
"""

import base64
import html
import re
from pathlib import Path

from fedvlm.fileio import write_atomic

_STYLE = ("body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em;line-height:1.45}"
          "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}"
          "th{background:#f3f3f3}code{background:#f3f3f3;padding:0 .2em}img{max-width:100%}")


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"(?<![\w*])_([^_]+)_(?![\w*])", r"<em>\1</em>", out)


def _image(alt: str, src: str, base: Path) -> str:
    path = base / src
    if path.suffix.lower() == ".png" and path.is_file():
        data = base64.b64encode(path.read_bytes()).decode()
        return f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>'
    return f"<p><em>{html.escape(alt)}: missing plot {html.escape(src)}</em></p>"


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown_to_html(text: str, base: Path, title: str) -> str:
    """``text`` (fedvlm's report markdown) as a whole HTML page; images are read from
    paths relative to ``base`` and embedded."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        if m := re.match(r"^(#{1,4}) (.*)$", line):
            level = len(m.group(1))
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
        elif m := re.match(r"^!\[([^\]]*)\]\(([^)]+)\)$", line.strip()):
            out.append(_image(m.group(1), m.group(2), base))
        elif line.startswith("|") and i + 1 < len(lines) and re.match(r"^\|[\s|:-]+\|$", lines[i + 1].strip()):
            rows = [_cells(line)]
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            head = "".join(f"<th>{_inline(c)}</th>" for c in rows[0])
            body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            continue
        elif line.startswith("- "):
            items = []
            while i < len(lines) and (lines[i].startswith("- ") or lines[i].startswith("  - ")):
                if lines[i].startswith("  - "):
                    items.append(("sub", lines[i][4:]))
                else:
                    items.append(("item", lines[i][2:]))
                i += 1
            out.append(_list(items))
            continue
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    body = "\n".join(out)
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>\n{body}\n</body></html>\n")


def _list(items: list[tuple[str, str]]) -> str:
    parts, open_sub = ["<ul>"], False
    for kind, text in items:
        if kind == "sub" and not open_sub:
            parts.append("<ul>")
            open_sub = True
        elif kind == "item" and open_sub:
            parts.append("</ul></li>")
            open_sub = False
        elif kind == "item" and len(parts) > 1:
            parts.append("</li>")
        parts.append(f"<li>{_inline(text)}" + ("</li>" if kind == "sub" else ""))
    parts.append("</ul></li></ul>" if open_sub else "</li></ul>")
    return "".join(parts)


def write_html(markdown_path: Path) -> Path:
    """Write the HTML page of ``markdown_path`` beside it (``report.md`` -> ``report.html``)."""
    markdown_path = Path(markdown_path)
    text = markdown_path.read_text(encoding="utf-8")
    title = next((line[2:] for line in text.splitlines() if line.startswith("# ")), markdown_path.stem)
    out = markdown_path.with_suffix(".html")
    write_atomic(out, markdown_to_html(text, markdown_path.parent, title))
    return out
