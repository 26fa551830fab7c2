"""`serve --app`: point a Plivo Application at serve's public /answer, and put it back after.

I/O over `restapi.PlivoClient` (GET and POST `/v1/Account/{auth_id}/Application/{app_id}/`) and
`statefile`. The Application's original `answer_url`/`answer_method` are saved in the per-user
state directory (`app-<APP_ID>.json`, mode 0600, with the serve's pid) *before* it is changed, so
no crash can lose them. A serve that dies without restoring leaves that file behind with a dead
pid: the next serve finds it and offers the restore (or, for the same --app, keeps the saved
original as the one to put back). `--restore-app` restores without serving.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from plivo_stream_cli.adapters import statefile
from plivo_stream_cli.adapters.restapi import DEFAULT_API_URL, Credentials, PlivoClient
from plivo_stream_cli.console import output
from plivo_stream_cli.errors import ApiFailedError, PstreamError, UsageError

STATE_PREFIX = "app-"
_APP_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NOT_FOUND = "no such application"

Ask = Callable[[str], bool]


def check_app_id(app_id: str) -> str:
    """The id unchanged, or UsageError (it names a state file and an API path)."""
    if not _APP_ID.fullmatch(app_id):
        raise UsageError(
            f"--app must be a Plivo Application id such as 12345678901234567, got {app_id!r}"
        )
    return app_id


def restore_command(app_id: str) -> str:
    return f"pstream serve --app {app_id} --restore-app"


class Connection:
    """A PlivoClient made on first use, so a serve without --app never needs Plivo credentials."""

    def __init__(
        self,
        auth_id: str | None,
        auth_token: str | None,
        api_url: str | None,
        timeout: float = 10.0,
    ) -> None:
        self._args = (auth_id, auth_token, api_url or DEFAULT_API_URL, timeout)
        self._client: PlivoClient | None = None

    def __call__(self) -> PlivoClient:
        if self._client is None:
            auth_id, auth_token, api_url, timeout = self._args
            credentials = Credentials.resolve(auth_id, auth_token)
            self._client = PlivoClient(credentials, api_url=api_url, timeout=timeout)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


@dataclass(frozen=True)
class Saved:
    """An Application's original answer settings, and which serve pointed it elsewhere."""

    app_id: str
    answer_url: str
    answer_method: str
    pointed_to: str
    pid: int

    @property
    def original(self) -> str:
        return f"{self.answer_url or '(empty)'} ({self.answer_method})"

    @property
    def owner_alive(self) -> bool:
        return statefile.pid_alive(self.pid)

    def save(self) -> None:
        statefile.write(STATE_PREFIX + self.app_id, {"kind": "app", **asdict(self)})

    def forget(self) -> None:
        statefile.remove(STATE_PREFIX + self.app_id)


def load(app_id: str) -> Saved | None:
    """The saved original of `app_id`, if a serve rewired it and has not put it back."""
    return _parse(statefile.read(STATE_PREFIX + app_id))


def _parse(data: dict[str, Any] | None) -> Saved | None:
    if not data or data.get("kind") != "app":
        return None
    try:
        return Saved(
            app_id=check_app_id(str(data["app_id"])),
            answer_url=str(data["answer_url"]),
            answer_method=str(data.get("answer_method") or "POST"),
            pointed_to=str(data.get("pointed_to", "")),
            pid=int(data["pid"]),
        )
    except (KeyError, TypeError, ValueError, UsageError):
        return None


def stale_saves() -> list[Saved]:
    """Saved originals whose serve is gone: Applications still pointing at a dead serve."""
    directory = statefile.state_dir()
    if not directory.is_dir():
        return []
    found = (
        load(path.stem[len(STATE_PREFIX) :]) for path in directory.glob(f"{STATE_PREFIX}*.json")
    )
    return [saved for saved in found if saved is not None and not saved.owner_alive]


def read_application(client: PlivoClient, app_id: str) -> dict[str, Any]:
    doc = client.request("GET", "Application", app_id, not_found=_NOT_FOUND).json()
    if not isinstance(doc, dict) or not isinstance(doc.get("answer_url"), str):
        raise ApiFailedError(f"the Plivo API sent application {app_id} without an answer_url")
    return doc


def update_answer(client: PlivoClient, app_id: str, url: str, method: str) -> None:
    # Setting a value twice is harmless, so this POST is retried like a GET.
    body = {"answer_url": url, "answer_method": method}
    client.request("POST", "Application", app_id, json=body, not_found=_NOT_FOUND, retry=True)


def put_back(client: PlivoClient, saved: Saved) -> None:
    """Restore a saved original, then forget it."""
    update_answer(client, saved.app_id, saved.answer_url, saved.answer_method)
    saved.forget()
    output.status(_escape(f"application {saved.app_id}: answer_url restored to {saved.original}"))


def restore_stale(connect: Callable[[], PlivoClient], app_id: str | None) -> int:
    """`--restore-app`: put back every Application a dead serve left rewired (or only `app_id`)."""
    if app_id is not None:
        saved = load(app_id)
        if saved is not None and saved.owner_alive:
            raise UsageError(
                f"application {app_id} belongs to pstream serve pid {saved.pid}, still running: "
                "stopping it restores the application"
            )
    todo = [s for s in stale_saves() if app_id is None or s.app_id == app_id]
    if not todo:
        which = f"application {app_id}" if app_id else "no application"
        output.status(f"nothing to restore: {which} was left rewired by a pstream serve")
    for saved in todo:
        put_back(connect(), saved)
    return len(todo)


def offer_restores(connect: Callable[[], PlivoClient], ask: Ask | None, skip: str | None) -> None:
    """At serve start: ask (on a terminal) to restore what a dead serve left; else say how."""
    for saved in stale_saves():
        if saved.app_id == skip:
            continue  # this serve rewires it again and puts the saved original back at exit
        left = (
            f"application {saved.app_id} still points at {saved.pointed_to or 'a dead serve'}: "
            f"pstream serve pid {saved.pid} died before putting back {saved.original}"
        )
        if ask is None:
            output.warn(f"{left}; restore it with `{restore_command(saved.app_id)}`")
        elif ask(f"{left}.\nRestore it now?"):
            try:
                put_back(connect(), saved)
            except PstreamError as exc:
                output.warn(
                    f"could not restore application {saved.app_id}: {exc.message}; "
                    f"try again with `{restore_command(saved.app_id)}`"
                )
        else:
            output.status(_escape(f"left as is; `{restore_command(saved.app_id)}` restores it"))


class AppRewire:
    """One serve's hold on one Application: `claim()`, `apply(public_url)`, then `restore()`."""

    def __init__(self, connect: Connection, app_id: str, *, keep: bool = False) -> None:
        self.connect = connect
        self.app_id = check_app_id(app_id)
        self.keep = keep
        self.saved: Saved | None = None  # set once the Application points at this serve
        self._inherited: Saved | None = None

    def claim(self) -> None:
        """Before serving: credentials set, no live serve holds the app; adopt a dead one's save."""
        self.connect()
        previous = load(self.app_id)
        if previous is None:
            return
        if previous.owner_alive and previous.pid != os.getpid():
            raise UsageError(
                f"application {self.app_id} is already pointed at {previous.pointed_to} by "
                f"pstream serve pid {previous.pid}, still running: stop that serve first"
            )
        self._inherited = previous
        output.status(
            _escape(
                f"application {self.app_id} was left pointing at {previous.pointed_to} by "
                f"pstream serve pid {previous.pid}, which died: its original {previous.original} "
                "is the one this serve puts back"
            )
        )

    def apply(self, public_url: str) -> None:
        """Save the original answer settings, then point the Application at `public_url`/answer."""
        from plivo_stream_cli.adapters.tunnel import public_urls

        target = public_urls(public_url, "/")["answer"]
        client = self.connect()
        app = read_application(client, self.app_id)
        base = self._inherited or Saved(
            self.app_id, app["answer_url"], str(app.get("answer_method") or "POST"), "", 0
        )
        saved = Saved(self.app_id, base.answer_url, base.answer_method, target, os.getpid())
        if self.keep:
            saved.forget()
        else:
            saved.save()
        try:
            update_answer(client, self.app_id, target, "POST")
        except PstreamError:
            # Unchanged: the state on disk goes back to what it was before this serve.
            if self._inherited is not None:
                self._inherited.save()
            else:
                saved.forget()
            raise
        self.saved = saved
        name = f" ({app['app_name']})" if app.get("app_name") else ""
        after = "left so after exit (--keep-app)" if self.keep else "put back when serve exits"
        output.status(
            _escape(
                f"application {self.app_id}{name}: answer_url {saved.original} -> {target} (POST); "
                f"{after}"
            )
        )

    def restore(self) -> None:
        """Put the original back (never raises: serve is exiting; failures say how to retry)."""
        saved, self.saved = self.saved, None
        try:
            if saved is None:
                return
            if self.keep:
                output.status(
                    _escape(
                        f"application {self.app_id} still points at {saved.pointed_to} "
                        f"(--keep-app); it was {saved.original}"
                    )
                )
                return
            put_back(self.connect(), saved)
        except PstreamError as exc:
            assert saved is not None
            output.warn(
                f"could not restore application {self.app_id} to {saved.original}: {exc.message}; "
                f"the original is saved: run `{restore_command(self.app_id)}`"
            )
        finally:
            with contextlib.suppress(Exception):
                self.connect.close()


def for_serve(
    connect: Connection, app_id: str | None, *, keep: bool, ask: Ask | None
) -> AppRewire | None:
    """At serve start: offer to restore what dead serves left, then claim `app_id` if given."""
    offer_restores(connect, ask, skip=app_id)
    if app_id is None:
        connect.close()
        return None
    rewire = AppRewire(connect, app_id, keep=keep)
    rewire.claim()
    return rewire


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
