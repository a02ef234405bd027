"""Headless Chromium for the SSO tests: Debian's ``chromium`` and ``chromium-driver`` driven
by selenium, and a person's sign-in through the test OpenID provider (tests/sso/idp.py).

Chromium is installed with apt-get when it is missing and we are root (a clean CI machine
has neither package); elsewhere its absence fails with what to install. The browser uses no
proxy (every page of the tests is on loopback) and a fresh profile in a temporary folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PACKAGES = ("chromium", "chromium-driver")
WINDOW_SIZE = (1280, 900)
#: The provider's sign-in form (tests/sso/provider/server.mjs).
USERNAME_FIELD, PASSWORD_FIELD, SUBMIT_BUTTON = "username", "password", "sign-in"
LOGIN_ERROR, PROVIDER_ERROR = "login-error", "op-error"

log = logging.getLogger(__name__)


class BrowserError(RuntimeError):
    """Chromium could not be installed or started; the message says what is missing."""


class SignInRefused(AssertionError):  # noqa: N818 - it reads as what happened
    """The provider refused the sign-in (wrong password) or showed an error page; the browser
    is left on that page."""


#: apt-get waits for the package database while another install holds it: the compose tests
#: install docker.io and the SSO tests chromium, on a fresh machine at the same time.
WAIT_FOR_DPKG = ("-o", "DPkg::Lock::Timeout=900")


def install_chromium() -> None:
    """Debian's chromium and chromium-driver, when either binary is missing (as root)."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    if os.geteuid() != 0:
        raise BrowserError(
            f"{CHROMIUM} or {CHROMEDRIVER} missing and not root: install Debian's "
            f"{' and '.join(PACKAGES)} (apt-get install chromium chromium-driver)"
        )
    apt = shutil.which("apt-get")
    if apt is None:
        raise BrowserError("apt-get not found: install Debian's chromium and chromium-driver")
    command = [apt, *WAIT_FOR_DPKG, "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

    def install() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=900, check=False
        )

    log.info("installing %s with apt-get", ", ".join(PACKAGES))
    done = install()
    if done.returncode != 0:  # stale package lists: refresh once
        subprocess.run(
            [apt, *WAIT_FOR_DPKG, "update", "-q"],
            env=env,
            capture_output=True,
            timeout=600,
            check=False,
        )
        done = install()
    if done.returncode != 0 or not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        raise BrowserError(
            f"apt-get install {' '.join(PACKAGES)} failed:\n{(done.stderr or done.stdout)[-3000:]}"
        )


def chromium_options(profile: Path) -> webdriver.ChromeOptions:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root has no user namespace sandbox
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW_SIZE[0]},{WINDOW_SIZE[1]}",
        "--no-proxy-server",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-sync",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-client-side-phishing-detection",
        "--password-store=basic",
        "--disable-features=Translate,OptimizationHints,MediaRouter,PasswordLeakDetection",
    ):
        options.add_argument(argument)
    return options


@contextlib.contextmanager
def chromium(log_dir: Path | None = None) -> Iterator[WebDriver]:
    """A headless Chromium WebDriver with a fresh profile; quit and removed on exit.
    chromedriver's log goes to ``log_dir/chromedriver.log`` when given."""
    install_chromium()
    profile = Path(tempfile.mkdtemp(prefix="mlflow-stack-chromium-"))
    service = ChromeService(
        executable_path=str(CHROMEDRIVER),
        log_output=str(log_dir / "chromedriver.log") if log_dir else subprocess.DEVNULL,
    )
    began = time.monotonic()
    try:
        driver = webdriver.Chrome(options=chromium_options(profile), service=service)
    except WebDriverException as error:
        shutil.rmtree(profile, ignore_errors=True)
        raise BrowserError(f"Chromium did not start: {error.msg}") from error
    log.info("Chromium up in %.2f s", time.monotonic() - began)
    try:
        yield driver
    finally:
        with contextlib.suppress(WebDriverException):
            driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _visible_text(driver: WebDriver, element_id: str) -> str | None:
    found = driver.find_elements(By.ID, element_id)
    return found[0].text if found else None


def _wait(driver: WebDriver, timeout: float, what: str, done: Callable[[], object]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(WebDriverException):
            if done():
                return
        time.sleep(0.05)
    raise TimeoutError(
        f"{what} within {timeout:g} s; the browser is on {driver.current_url}:\n"
        f"{driver.page_source[:2000]}"
    )


def _authorization_response(url: str) -> bool:
    """Whether ``url`` carries the provider's answer (``code`` or ``error``, with ``state``)."""
    query = parse_qs(urlsplit(url).query)
    return "state" in query and ("code" in query or "error" in query)


def _landed(driver: WebDriver, home: str, login: str, timeout: float) -> None:
    """Once back on ``home``: a relying party that took the sign-in has moved on from its
    callback (the URL with the code); one that stays there refused it."""
    _wait(
        driver,
        timeout,
        f"the page of {home} did not load",
        lambda: driver.execute_script("return document.readyState") == "complete",
    )
    if _authorization_response(driver.current_url):
        text = driver.find_element(By.TAG_NAME, "body").text[:1000]
        raise SignInRefused(
            f"{home} did not take the sign-in of {login}: it stayed on its callback "
            f"{driver.current_url}:\n{text}"
        )


def sign_in(driver: WebDriver, url: str, login: str, password: str, timeout: float = 20) -> None:
    """Open ``url`` (a page that redirects to the provider), sign in as ``login`` on the
    provider's form and wait until the browser is back on ``url``'s origin, past the callback.

    Consent needs no step: the provider grants it. If the provider already has a session for
    this browser, no form is shown and the browser comes straight back. :class:`SignInRefused`
    is raised, with the browser left on the page, when the provider refuses (a wrong password:
    its form again, with ``#login-error``; or its error page, ``#op-error``) and when the
    relying party stays on its callback URL (the one with ``code`` and ``state``) instead of
    redirecting onwards, as a server refusing the person does. The redirect to the provider
    must be an HTTP one (it is done when ``driver.get`` returns).
    """
    home = origin(url)
    driver.get(url)
    _wait(
        driver,
        timeout,
        f"no sign-in form after opening {url}",
        lambda: (
            driver.find_elements(By.ID, USERNAME_FIELD)
            or driver.find_elements(By.ID, PROVIDER_ERROR)
            or origin(driver.current_url) == home
        ),
    )
    error = _visible_text(driver, PROVIDER_ERROR)
    if error is not None:
        raise SignInRefused(f"the provider showed an error at {driver.current_url}: {error}")
    if not driver.find_elements(By.ID, USERNAME_FIELD):
        _landed(driver, home, login, timeout)  # signed in already at the provider
        return
    provider = origin(driver.current_url)
    driver.find_element(By.ID, USERNAME_FIELD).send_keys(login)
    driver.find_element(By.ID, PASSWORD_FIELD).send_keys(password)
    driver.find_element(By.ID, SUBMIT_BUTTON).click()
    _wait(
        driver,
        timeout,
        f"not back on {home} after signing in as {login}",
        lambda: (
            origin(driver.current_url) == home
            or (
                origin(driver.current_url) == provider
                and (
                    driver.find_elements(By.ID, LOGIN_ERROR)
                    or driver.find_elements(By.ID, PROVIDER_ERROR)
                )
            )
        ),
    )
    if origin(driver.current_url) != home:
        message = _visible_text(driver, LOGIN_ERROR) or _visible_text(driver, PROVIDER_ERROR)
        raise SignInRefused(f"the provider refused {login} at {driver.current_url}: {message}")
    _landed(driver, home, login, timeout)


def sign_out(driver: WebDriver, url: str, timeout: float = 20) -> None:
    """Open ``url`` (a logout page that sends the browser to the provider's end-session
    endpoint) and wait until the browser has left the provider for ``url``'s origin, or for
    the provider's sign-in form (where a post-logout page that wants a sign-in sends it). The
    provider signs out without asking: its confirmation form submits itself."""
    home = origin(url)
    driver.get(url)
    _wait(
        driver,
        timeout,
        f"not back on {home} after signing out",
        lambda: (
            driver.execute_script("return document.readyState") == "complete"
            and (origin(driver.current_url) == home or driver.find_elements(By.ID, USERNAME_FIELD))
        ),
    )
