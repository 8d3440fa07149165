"""The console in Firefox: a person's main path, driven over WebDriver BiDi.

Firefox speaks WebDriver BiDi itself (``--remote-debugging-port``), so no geckodriver is needed
(Debian does not package it and it cannot be downloaded here). Clicks and keys are real input
events (``input.performActions``) on elements found the way a person finds them: by label text,
button text, headings and captions.

Environment: CONSOLE_URL (the console's address, ``…/console/``) and CONSOLE_TOKEN of a running
``segments serve --demo``, FIREFOX (the browser), CONSOLE_SCREENSHOTS (where ``firefox-*.png``
are kept).
"""

import asyncio
import base64
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

import websockets

CONSOLE = os.environ["CONSOLE_URL"].rstrip("/") + "/"
TOKEN = os.environ["CONSOLE_TOKEN"]
FIREFOX = os.environ.get("FIREFOX", "/usr/bin/firefox-esr")
SHOTS = os.environ.get("CONSOLE_SCREENSHOTS", tempfile.mkdtemp())
TIMEOUT = 60

# Finds elements in the page as a person would. Each returns the element or null.
FINDERS = r"""
globalThis.__find = {
  label(text) {
    const label = [...document.querySelectorAll("label")].find((l) => l.textContent.trim() === text && l.offsetParent);
    return label ? document.getElementById(label.htmlFor) : null;
  },
  button(text) {
    return [...document.querySelectorAll("button")].find((b) => b.textContent.trim() === text && b.offsetParent && !b.disabled) || null;
  },
  link(text) {
    return [...document.querySelectorAll("a")].find((a) => a.textContent.trim() === text && a.offsetParent) || null;
  },
};
"""


class Browser:
    def __init__(self, socket_, context):
        self.ws = socket_
        self.context = context
        self.next_id = 0

    async def call(self, method, params):
        self.next_id += 1
        await self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(await self.ws.recv())
            if message.get("id") == self.next_id:
                if message.get("type") == "error":
                    raise RuntimeError(f"{method}: {message.get('error')}: {message.get('message')}")
                return message["result"]

    async def evaluate(self, expression):
        result = await self.call(
            "script.evaluate",
            {"expression": FINDERS + expression, "target": {"context": self.context}, "awaitPromise": True, "resultOwnership": "root"},
        )
        if result.get("type") == "exception":
            raise RuntimeError(f"{expression}: {result['exceptionDetails']['text']}")
        return result["result"]

    async def value(self, expression):
        return plain(await self.evaluate(expression))

    async def wait(self, expression, what):
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            remote = await self.evaluate(expression)
            if remote.get("type") not in ("null", "undefined") and remote.get("value") not in (False, "", 0):
                return remote
            await asyncio.sleep(0.25)
        await self.screenshot("firefox-failure")
        raise AssertionError(f"timed out waiting for {what}; the page says:\n{await self.value('document.body.innerText')}")

    async def click(self, expression, what):
        element = await self.wait(expression, what)
        origin = {"type": "element", "element": {"sharedId": element["sharedId"]}}
        await self.call(
            "input.performActions",
            {
                "context": self.context,
                "actions": [
                    {
                        "type": "pointer",
                        "id": "mouse",
                        "actions": [
                            {"type": "pointerMove", "x": 0, "y": 0, "origin": origin},
                            {"type": "pointerDown", "button": 0},
                            {"type": "pointerUp", "button": 0},
                        ],
                    }
                ],
            },
        )

    async def type(self, expression, text, what):
        await self.click(expression, what)
        keys = []
        for character in text:
            keys += [{"type": "keyDown", "value": character}, {"type": "keyUp", "value": character}]
        await self.call("input.performActions", {"context": self.context, "actions": [{"type": "key", "id": "keyboard", "actions": keys}]})

    async def screenshot(self, name):
        result = await self.call("browsingContext.captureScreenshot", {"context": self.context})
        with open(os.path.join(SHOTS, f"{name}.png"), "wb") as f:
            f.write(base64.b64decode(result["data"]))

    async def navigate(self, url):
        await self.call("browsingContext.navigate", {"context": self.context, "url": url, "wait": "complete"})


def plain(remote):
    """A BiDi remote value as Python: arrays and objects arrive as typed lists of their parts."""
    kind, value = remote.get("type"), remote.get("value")
    if kind == "array":
        return [plain(v) for v in value]
    if kind == "object":
        return {plain(k) if isinstance(k, dict) else k: plain(v) for k, v in value}
    return value


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def scenario(browser):
    b = browser
    # A wrong token: the sign-in screen says why, never an empty page.
    await b.navigate(f"{CONSOLE}#token=not-a-token")
    await b.wait("[...document.querySelectorAll('[role=alert]')].some((e) => e.textContent.startsWith('The token was refused'))", "the refusal")
    assert await b.value("location.hash") == "#/segments", "the token left the address bar"

    # Signed in through the address `segments serve` prints.
    await b.navigate(f"{CONSOLE}#token={TOKEN}")
    await b.wait("document.querySelector('h1')?.textContent === 'Segments'", "the segments page")
    assert "token" not in await b.value("location.href")
    assert await b.value("document.getElementById('mandator').textContent") == "Mandator: demo-bank"

    # A segment, created through the form.
    name = f"Firefox {int(time.time() * 1000)}"
    await b.click("__find.button('New segment')", "New segment")
    await b.type("__find.label('Name')", name, "the Name field")
    await b.type("__find.label('Metadata (JSON)')", '{"channel": "firefox"}', "the metadata field")
    await b.click("__find.button('Create segment')", "Create segment")
    await b.wait(f"document.querySelector('h1')?.textContent === {json.dumps(name)}", "the new segment's page")
    assert "channel: firefox" in await b.value("document.querySelector('dl').innerText")
    await b.screenshot("firefox-segment")

    # A highBalance job with an exact threshold, watched until it completes.
    await b.navigate(f"{CONSOLE}#/jobs/highBalance")
    await b.wait("document.querySelector('h1')?.textContent === 'Financial segments'", "the jobs page")
    await b.type("__find.label('Threshold')", "2500.50", "the Threshold field")
    await b.click("__find.button('Start job')", "Start job")
    started = await b.wait("document.getElementById('status').textContent.match(/Job (\\S+) started/)?.[1]", "the job's id")
    job = started["value"]
    row = f"document.querySelector('tr[data-job-id=\"{job}\"]')"
    await b.wait(f"{row}?.innerText.includes('COMPLETED')", "the job COMPLETED in the table, without a reload")
    await b.click(f"{row}.querySelector('a')", "the job's View link")
    await b.wait("document.querySelector('figure svg[role=img] rect.bar')", "a chart with bars")
    parameters = await b.value("[...document.querySelectorAll('dt')].find((d) => d.textContent === 'Parameters').nextElementSibling.textContent")
    assert "threshold: 2500.50" in parameters, parameters
    amounts = await b.value("[...document.querySelectorAll('table tbody td.number')].map((c) => c.textContent)")
    assert amounts and all(re.fullmatch(r"−?[0-9]{1,3}(,[0-9]{3})*\.[0-9]{2}", a) for a in amounts), amounts
    await b.screenshot("firefox-result")

    # Signing out forgets the token.
    await b.click("document.getElementById('sign-out')", "Sign out")
    await b.wait("document.querySelector('h1')?.textContent === 'Sign in'", "the sign-in screen")
    assert await b.value("sessionStorage.length") == 0


async def main():
    os.makedirs(SHOTS, exist_ok=True)
    port = free_port()
    profile = tempfile.mkdtemp(prefix="console-firefox-")
    firefox = subprocess.Popen(
        [FIREFOX, "--headless", "--no-remote", "--profile", profile, f"--remote-debugging-port={port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in firefox.stderr:
            if "WebDriver BiDi listening" in line:
                break
        else:
            raise RuntimeError("Firefox did not start its WebDriver BiDi server")
        async with websockets.connect(f"ws://127.0.0.1:{port}/session", max_size=None) as ws:
            browser = Browser(ws, None)
            await browser.call("session.new", {"capabilities": {"alwaysMatch": {"acceptInsecureCerts": False}}})
            await browser.call("browsingContext.setViewport", {"context": (await browser.call("browsingContext.getTree", {}))["contexts"][0]["context"], "viewport": {"width": 1280, "height": 900}})
            browser.context = (await browser.call("browsingContext.getTree", {}))["contexts"][0]["context"]
            await scenario(browser)
            await browser.call("session.end", {})
    finally:
        firefox.kill()
        firefox.wait()
    print("firefox: the main path works")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception as error:  # one line on stderr, the status for the caller
        print(f"firefox: {type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)
