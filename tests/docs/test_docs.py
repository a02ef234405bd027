"""Docs that cannot rot: README.md and docs/*.md checked against the repository.

- Every relative link resolves to a file or folder, and every ``#anchor`` to a heading of its
  page (GitHub's slugs).
- Every repository path and ``mlflow_stack.…`` module named in inline code exists, every
  ``make`` target exists in the Makefile, every ``mlflow==`` pin is the server image's.
- Every fenced shell block carries exactly one marker comment (see tests/docs/markdown.py), and
  the marker is acted on: ``run`` blocks are run, ``run: stack`` blocks are run against the
  session's live stack, ``covered-by`` tests must exist, ``not-run`` must say why.
- README.md stays a newcomer's page: at most 200 lines, set up with `make up` and `make test`.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.conftest import LiveStack
from tests.docs.markdown import Block, Page, slug

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"

#: Paths the docs name that only exist at run time (gitignored output).
RUNTIME_PATHS = {"examples/data"}
#: Top-level entries a `run` block's working directory does not link: local state and secrets.
NOT_LINKED = {".git", ".env", ".data"}
#: Folders the documented commands write into: their files are copied (the example scripts
#: resolve their own path to find examples/data), so that what a block writes stays in its
#: temporary directory.
WRITTEN_INTO = {"examples"}
#: Inline code naming a repository path: these prefixes, or these top-level files.
PATH_PREFIXES = (
    "src/",
    "tests/",
    "bench/",
    "examples/",
    "terraform/",
    "mlflow-server/",
    "postgres/",
    "docs/",
    ".ci/",
)
TOP_LEVEL_FILES = {
    "Makefile",
    "docker-compose.yml",
    ".env.example",
    "pyproject.toml",
    "requirements-dev.txt",
    "requirements-dev.in",
}
README_MAX_LINES = 200
SET_UP_COMMANDS = ["make up", "make test"]
RUN_TIMEOUT = 120
STACK_RUN_TIMEOUT = 300
BASH = shutil.which("bash") or "/bin/bash"
_COMMENT = re.compile(r"^\s*<!--.*-->\s*$")
#: The environment a block runs without: a reader's shell has no settings of ours exported.
UNSET_PREFIXES = ("MLFLOW_", "POSTGRES_", "PG", "AWS_")


def pages() -> list[Page]:
    paths = [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]
    return [Page(path, REPO) for path in paths]


PAGES = pages()
Anchors = dict[Path, set[str]]
SHELL_BLOCKS = [block for page in PAGES for block in page.blocks if block.is_shell]


def _marked(kind: str, where: str = "") -> list[Block]:
    return [
        block
        for block in SHELL_BLOCKS
        if block.marker and block.marker.kind == kind and block.marker.where == where
    ]


def _in_repo(relative: str) -> bool:
    path = REPO / relative
    return path.exists() or relative.rstrip("/") in RUNTIME_PATHS


# --- links and anchors ---


def _is_external(target: str) -> bool:
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target)) or target.startswith("//")


def _anchor_problem(target: str, destination: Path, anchor: str, anchors: Anchors) -> str | None:
    if destination.suffix != ".md":
        return f"{target}: an anchor into a file that is not Markdown"
    if destination not in anchors:
        anchors[destination] = Page(destination, REPO).anchors
    if unquote(anchor) not in anchors[destination]:
        relative = destination.relative_to(REPO).as_posix()
        return f"{target}: {relative} has no heading with the anchor #{anchor}"
    return None


def _link_problem(page: Page, target: str, anchors: Anchors) -> str | None:
    path_part, _, anchor = target.partition("#")
    destination = (page.path.parent / unquote(path_part)).resolve() if path_part else page.path
    if destination != REPO and REPO not in destination.parents:
        return f"{target} leaves the repository"
    relative = destination.relative_to(REPO).as_posix()
    if relative.split("/")[0] in NOT_LINKED:
        return f"{target} points at local state, not at the repository"
    if destination.exists():
        return _anchor_problem(target, destination, anchor, anchors) if anchor else None
    return f"{target}: no such file"


def test_every_relative_link_and_anchor_resolves() -> None:
    anchors: Anchors = {page.path: page.anchors for page in PAGES}
    problems = [
        f"{page.name}:{line}: {problem}"
        for page in PAGES
        for line, target in page.links()
        if not _is_external(target) and (problem := _link_problem(page, target, anchors))
    ]
    assert not problems, "\n".join(problems)


def test_the_slugs_follow_githubs_rules() -> None:
    assert slug("What the server refuses, and how") == "what-the-server-refuses-and-how"
    assert slug("What `serve` does".replace("`", "")) == "what-serve-does"
    assert slug("Upgrade: a new image") == "upgrade-a-new-image"
    assert slug("3a. Restore from a snapshot (the pre-migration or the final one)") == (
        "3a-restore-from-a-snapshot-the-pre-migration-or-the-final-one"
    )
    assert slug("What a registered model's permission grants") == (
        "what-a-registered-models-permission-grants"
    )
    assert slug("snake_case and [a link](x.md)") == "snake_case-and-a-link"


def test_repeated_headings_get_numbered_anchors(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## Native\n\n```bash\n# Native\n```\n\n## Native\n\n## Native\n")
    assert Page(page, tmp_path).anchors == {"title", "native", "native-1", "native-2"}


# --- what the prose names ---


def _named_paths(code: str) -> list[str]:
    if code in TOP_LEVEL_FILES:
        return [code]
    if code.startswith(PATH_PREFIXES) and re.fullmatch(r"[\w./-]+", code):
        return [code]
    return []


def _module_path(module: str) -> bool:
    parts = module.split(".")
    base = REPO / "src" / Path(*parts)
    return base.with_suffix(".py").exists() or (base.is_dir() and any(base.glob("*.py")))


def test_every_path_and_module_the_docs_name_exists() -> None:
    problems = []
    for page in PAGES:
        for line, code in page.inline_code():
            problems.extend(
                f"{page.name}:{line}: {path} does not exist"
                for path in _named_paths(code)
                if not _in_repo(path)
            )
            problems.extend(
                f"{page.name}:{line}: module {module} is not in src/"
                for module in re.findall(r"\bmlflow_stack(?:\.\w+)+", code)
                if not _module_path(module)
            )
    assert not problems, "\n".join(problems)


def _make_targets() -> set[str]:
    makefile = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([a-z][\w-]*):(?!=)", makefile, re.MULTILINE))


def test_every_make_target_the_docs_name_exists() -> None:
    targets = _make_targets()
    assert {"up", "test"} <= targets
    problems = []
    for page in PAGES:
        named = [(line, code) for line, code in page.inline_code()]
        for block in page.blocks:
            named.extend((block.line, line) for line in block.script().splitlines())
        for line, code in named:
            for target in re.findall(r"(?:^|[;&|(]\s*)make\s+([a-z][\w-]*)", code.strip()):
                if target not in targets:
                    problems.append(f"{page.name}:{line}: `make {target}` is not a Makefile target")
    assert not problems, "\n".join(problems)


def test_every_mlflow_pin_is_the_server_images() -> None:
    lock = (REPO / "mlflow-server" / "requirements.txt").read_text()
    (pinned,) = re.findall(r"^mlflow==(\S+)", lock, re.MULTILINE)
    problems = [
        f"{page.name}:{number}: mlflow=={version}, but the server runs {pinned}"
        for page in PAGES
        for number, line in enumerate(page.lines, start=1)
        for version in re.findall(r"\bmlflow==([\w.]+)", line)
        if version != pinned
    ]
    assert not problems, "\n".join(problems)


# --- the shell blocks' markers ---


def _marker_problems(block: Block) -> list[str]:
    problems = [
        f"{block.page}:{line}: a comment that is no marker" for line in block.stray_comments
    ]
    if not block.markers:
        return [
            *problems,
            f"{block.where}: ```{block.language} block without a marker "
            "(<!-- run -->, <!-- run: stack -->, <!-- covered-by: tests/...::test_... -->, "
            "<!-- not-run: reason -->)",
        ]
    if len(block.markers) > 1:
        return [*problems, f"{block.where}: {len(block.markers)} markers; one only"]
    marker = block.markers[0]
    if marker.kind == "run" and marker.where not in ("", "stack"):
        problems.append(f"{block.where}: <!-- run: {marker.where} -->: only `run: stack`")
    if marker.kind == "not-run" and not marker.reason:
        problems.append(f"{block.where}: <!-- not-run: --> needs a reason")
    if marker.kind == "covered-by" and not marker.tests:
        problems.append(f"{block.where}: <!-- covered-by: --> names no test")
    return problems


def test_every_shell_block_has_exactly_one_marker() -> None:
    assert SHELL_BLOCKS, "no shell blocks found: is the parser broken?"
    problems = [problem for block in SHELL_BLOCKS for problem in _marker_problems(block)]
    problems += [
        f"{page.name}:{line}: {text} is not directly followed by a shell block"
        for page in PAGES
        for line, text in page.dangling
    ]
    assert not problems, "\n".join(problems)


def _defines_test(path: Path, name: str) -> bool:
    *classes, function = name.split("::")
    function = function.split("[")[0]  # a parametrized id names its function
    scope: list[ast.stmt] = ast.parse(path.read_text(), filename=str(path)).body
    for cls in classes:
        found = [node for node in scope if isinstance(node, ast.ClassDef) and node.name == cls]
        if not found:
            return False
        scope = found[0].body
    return any(
        isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == function
        for node in scope
    )


def _covered_by_problem(block: Block, test: str) -> str | None:
    file, separator, name = test.partition("::")
    if not separator or not name:
        return f"{block.where}: {test!r} is not tests/path/test_file.py::test_name"
    path = REPO / file
    if not file.startswith("tests/") or path.suffix != ".py" or not path.is_file():
        return f"{block.where}: {file} is not a test file of this repository"
    if not _defines_test(path, name):
        return f"{block.where}: {file} defines no test {name}"
    return None


def test_every_covering_test_exists() -> None:
    covered = _marked("covered-by")
    assert covered, "no covered-by blocks found"
    problems = [
        problem
        for block in covered
        for test in (block.marker.tests if block.marker else ())
        if (problem := _covered_by_problem(block, test))
    ]
    assert not problems, "\n".join(problems)


def test_a_block_without_a_marker_is_reported_with_its_place(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# T\n\nText.\n\n```bash\necho one\n```\n\n<!-- run -->\n<!-- not-run: twice -->\n\n"
        "```sh\necho two\n```\n\n<!-- run -->\n\n```python\nprint()\n```\n"
    )
    parsed = Page(page, tmp_path)
    blocks = [block for block in parsed.blocks if block.is_shell]
    assert [(block.line, len(block.markers)) for block in blocks] == [(5, 0), (12, 2)]
    assert "page.md:5: ```bash block without a marker" in _marker_problems(blocks[0])[0]
    assert parsed.dangling == [(16, "<!-- run -->")]


# --- running the blocks ---


def _checkout(directory: Path) -> Path:
    """A working directory that looks like the checkout's root, without its local state."""
    directory.mkdir()
    for entry in REPO.iterdir():
        if entry.name in NOT_LINKED:
            continue
        if entry.name in WRITTEN_INTO and entry.is_dir():
            (directory / entry.name).mkdir()
            for inner in entry.iterdir():
                if inner.is_file():
                    shutil.copy2(inner, directory / entry.name / inner.name)
        else:
            (directory / entry.name).symlink_to(entry)
    return directory


def _environment(home: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith(UNSET_PREFIXES)}
    path = [str(Path(sys.executable).parent), str(REPO / ".venv" / "bin"), env.get("PATH", "")]
    env.update(HOME=str(home), PATH=os.pathsep.join(path), **extra)
    return env


def run_block(
    block: Block, tmp_path: Path, *, extra: dict[str, str], env_file: Path | None, timeout: float
) -> None:
    workdir = _checkout(tmp_path / "checkout")
    if env_file is not None:
        (workdir / ".env").symlink_to(env_file)
    home = tmp_path / "home"
    home.mkdir()
    try:
        result = subprocess.run(
            [BASH, "-euo", "pipefail", "-c", block.script()],
            cwd=workdir,
            env=_environment(home, extra),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.where}: still running after {timeout:g} s:\n{block.script()}")
    assert result.returncode == 0, (
        f"{block.where}: exit {result.returncode}\n{block.script()}\n"
        f"--- stdout ---\n{result.stdout[-3000:]}\n--- stderr ---\n{result.stderr[-3000:]}"
    )


@pytest.mark.parametrize("block", _marked("run"), ids=lambda block: block.where)
def test_run_block_succeeds(block: Block, tmp_path: Path) -> None:
    run_block(block, tmp_path, extra={}, env_file=None, timeout=RUN_TIMEOUT)


@pytest.mark.stack
@pytest.mark.parametrize("block", _marked("run", "stack"), ids=lambda block: block.where)
def test_stack_block_succeeds(block: Block, stack: LiveStack, tmp_path: Path) -> None:
    username, password = stack.admin
    client = {
        "MLFLOW_TRACKING_URI": stack.tracking_uri,
        "MLFLOW_TRACKING_USERNAME": username,
        "MLFLOW_TRACKING_PASSWORD": password,
    }
    run_block(block, tmp_path, extra=client, env_file=stack.env_file, timeout=STACK_RUN_TIMEOUT)


# --- the README and the pages ---


def readme() -> Page:
    return next(page for page in PAGES if page.name == "README.md")


def test_the_readme_is_a_page_of_at_most_200_lines() -> None:
    assert len(readme().lines) <= README_MAX_LINES, (
        f"README.md has {len(readme().lines)} lines; move detail into docs/"
    )


def _commands(code: str) -> list[str]:
    lines = (line.split("#")[0].strip() for line in code.splitlines())
    return [line for line in lines if line]


def test_the_readme_sets_up_with_make_up_and_make_test_only() -> None:
    page = readme()
    first, last = page.section("Set up")
    blocks = [block for block in page.blocks if block.is_shell and first < block.line <= last]
    commands = [command for block in blocks for command in _commands(block.script())]
    assert commands == SET_UP_COMMANDS


def test_every_docs_page_has_a_title_and_a_summary_and_is_in_the_index() -> None:
    problems = []
    docs = [page for page in PAGES if page.name.startswith("docs/")]
    index = next(page for page in docs if page.name == "docs/README.md")
    listed = {(DOCS / unquote(target.partition("#")[0])).resolve() for _, target in index.links()}
    for page in docs:
        # blank lines and whole-line comments (a generated page says so in one) are not text
        text = [line for line in page.lines if line.strip() and not _COMMENT.match(line)]
        if not text or not re.match(r"# \S", text[0]):
            problems.append(f"{page.name}:1: does not start with a `# Title`")
        elif len(text) < 2 or re.match(r"\s*(#|\||[-*] |\d+\. |```|~~~|<!--)", text[1]):
            problems.append(f"{page.name}: the title is not followed by a summary paragraph")
        if page is not index and page.path not in listed:
            problems.append(f"{page.name} is not listed in docs/README.md")
    readme_links = {target.partition("#")[0] for _, target in readme().links()}
    if "docs/README.md" not in readme_links:
        problems.append("README.md does not link to docs/README.md")
    assert not problems, "\n".join(problems)
