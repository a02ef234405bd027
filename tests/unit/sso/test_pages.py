"""The sign-in pages: what they say, escaped."""

from __future__ import annotations

from mlflow_stack.sso.pages import page


def test_a_page_says_what_happened_and_links_to_sign_in_again() -> None:
    body = page("The sign-in service cannot be reached", "Try again.", "ConnectionError").decode()
    assert body.startswith("<!doctype html>")
    assert '<h1 id="title">The sign-in service cannot be reached</h1>' in body
    assert '<p class="detail" id="detail">ConnectionError</p>' in body
    assert '<a id="again" href="/auth/login">Sign in again</a>' in body


def test_nothing_is_shown_unescaped() -> None:
    body = page("<b>t</b>", "<script>alert(1)</script>", 'x" onload="y').decode()
    assert "<script>" not in body
    assert "&lt;script&gt;" in body
    assert "x&quot; onload=&quot;y" in body
