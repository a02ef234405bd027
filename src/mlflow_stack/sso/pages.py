"""The pages a person sees when a sign-in cannot go on: short, saying what happened and what
to do, with a link to try again. Nothing from the request is shown unescaped."""

from __future__ import annotations

from html import escape

from mlflow_stack.sso.config import LOGIN_PATH

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} - MLflow</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;
color:#1f2328}}h1{{font-size:1.4rem}}p.detail{{color:#57606a}}</style></head>
<body><h1 id="title">{title}</h1><p id="message">{message}</p>{detail}
<p><a id="again" href="{again}">{again_text}</a></p></body></html>
"""


def page(
    title: str,
    message: str,
    detail: str = "",
    again: str = LOGIN_PATH,
    again_text: str = "Sign in again",
) -> bytes:
    detail_html = f'<p class="detail" id="detail">{escape(detail)}</p>' if detail else ""
    return _PAGE.format(
        title=escape(title),
        message=escape(message),
        detail=detail_html,
        again=escape(again, quote=True),
        again_text=escape(again_text),
    ).encode()
