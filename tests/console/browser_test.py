"""The web console in headless Chromium, driven as a person uses it.

Run by `tests/it/console.rs` against `segments serve --demo` (300 demo users, mandator
`demo-bank`), with the Python of `.venv` that `tests/run.sh` fills (Selenium) and Debian's
Chromium and chromedriver. The environment names everything:

- CONSOLE_URL: the console, `http://127.0.0.1:PORT/console/` (the API is the same origin);
- CONSOLE_TOKEN: a token of `segments serve` with every scope;
- CONSOLE_SCREENSHOTS: a directory for a screenshot of every page visited, and on a failure the
  screenshot, the page's HTML and the browser's console log at that moment;
- CHROMIUM, CHROMEDRIVER: the browser and its driver.

Elements are found by what a person reads: label texts, button texts, headings, table captions
and roles, as the console's UI contract names them. The API is called directly (urllib, with the
same token) only to prepare data and to know the expected answers.

Plain `unittest`: `python tests/console/browser_test.py [-k PATTERN]`.
"""

import base64
import datetime
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request
import uuid

from selenium import webdriver
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    ElementNotInteractableException,
    JavascriptException,
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

CONSOLE_URL = os.environ["CONSOLE_URL"]
if not CONSOLE_URL.rstrip("/").endswith("/console"):
    CONSOLE_URL = CONSOLE_URL.rstrip("/") + "/console/"
CONSOLE_URL = CONSOLE_URL.rstrip("/") + "/"
API = CONSOLE_URL[: CONSOLE_URL.rindex("/console/")]
TOKEN = os.environ["CONSOLE_TOKEN"]
SCREENSHOTS = os.environ.get("CONSOLE_SCREENSHOTS") or os.path.join(tempfile.gettempdir(), "console-screenshots")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
MANDATOR = "demo-bank"
ORG_API = f"/v1/organizations/{MANDATOR}"

# How long the page may take to show what an action leads to (generous: CI runs other tests beside
# it on two cores); jobs on 300 users take seconds.
UI_TIMEOUT = 30
JOB_TIMEOUT = 180
DOWNLOAD_TIMEOUT = 60

# One run's names, so the data this run creates is told apart from any other's.
RUN = uuid.uuid4().hex[:8]

SEGMENT_TYPES = ["highBalance", "lowBalance", "incomeSpendingSummary", "insuranceSpending", "financialBreakdown"]
TYPE_TEXTS = {
    "highBalance": "High balance",
    "lowBalance": "Low balance",
    "incomeSpendingSummary": "Income and spending",
    "insuranceSpending": "Insurance spending",
    "financialBreakdown": "Financial breakdown",
}
STATUSES = ["ACTIVE", "INACTIVE", "PENDING", "SUSPENDED"]


def today_utc():
    return datetime.datetime.now(datetime.timezone.utc).date()


# --- the API, for preparing data and for the expected answers ----------------------------------


def api(method, path, body=None, token=TOKEN):
    """(status, parsed JSON or text, headers) of one API call."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(API + path, data=data, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw, headers = response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        status, raw, headers = error.code, error.read(), error.headers
    text = raw.decode("utf-8", "replace")
    try:
        return status, json.loads(text) if text else None, headers
    except ValueError:
        return status, text, headers


def api_ok(method, path, body=None, expected=(200, 201, 202, 204)):
    status, answer, _ = api(method, path, body)
    if status not in expected:
        raise AssertionError(f"{method} {path} answered {status}: {answer}")
    return answer


def demo_accounts(count):
    """`count` account ids of the demo data, read from the first users' data."""
    accounts = []
    for n in range(1, 50):
        status, user, _ = api("GET", f"/data/users/user-{n:07d}")
        if status != 200:
            continue
        accounts.extend(a["accountId"] for a in user["accounts"])
        if len(accounts) >= count:
            return accounts[:count]
    raise AssertionError(f"the demo data has fewer than {count} accounts among its first users")


def jobs_of(segment_type):
    """The live jobs of a type, newest first, as the API lists them."""
    jobs, cursor = [], None
    while True:
        query = "limit=100" + (f"&cursor={urllib.parse.quote(cursor)}" if cursor else "")
        page = api_ok("GET", f"/segments/{segment_type}?{query}")
        jobs.extend(page["jobs"])
        cursor = page.get("nextCursor")
        if not cursor:
            return jobs


def month_of(iso_timestamp):
    return iso_timestamp[:7]


# --- the browser ---------------------------------------------------------------------------------

DRIVER = None
DOWNLOADS = None


def start_browser():
    global DRIVER, DOWNLOADS
    DOWNLOADS = tempfile.mkdtemp(prefix="console-downloads-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        "--lang=en-US",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-search-engine-choice-screen",
    ):
        options.add_argument(argument)
    options.add_experimental_option(
        "prefs",
        {
            "download.default_directory": DOWNLOADS,
            "download.prompt_for_download": False,
            "download.directory_upgrade": True,
            "safebrowsing.enabled": False,
            "intl.accept_languages": "en-US",
        },
    )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    DRIVER = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    DRIVER.set_window_size(1280, 900)
    DRIVER.set_page_load_timeout(60)
    # Headless Chromium drops downloads unless told where to put them.
    try:
        DRIVER.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": DOWNLOADS})
    except WebDriverException:
        DRIVER.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": DOWNLOADS})


def setUpModule():
    os.makedirs(SCREENSHOTS, exist_ok=True)
    start_browser()


def tearDownModule():
    if DRIVER is not None:
        DRIVER.quit()
    if DOWNLOADS:
        shutil.rmtree(DOWNLOADS, ignore_errors=True)


# Finds the visible table whose caption reads `caption` and reports its header and rows (cell
# texts and the links in each row).
TABLE_JS = """
const visible = e => !!(e && e.getClientRects().length);
const t = [...document.querySelectorAll('table')].find(t =>
  t.caption && t.caption.textContent.trim() === arguments[0] && visible(t));
if (!t) return null;
const headRow = t.tHead && t.tHead.rows[0];
const headers = headRow ? [...headRow.cells].map(c => c.innerText.trim()) : [];
const rows = [...t.tBodies].flatMap(b => [...b.rows]).map(r => ({
  cells: [...r.cells].map(c => c.innerText.trim()),
  links: [...r.querySelectorAll('a')].map(a => ({text: a.innerText.trim(), href: a.getAttribute('href') || ''})),
}));
return {headers, rows};
"""

# The pager belonging to the visible table captioned `caption`: the nearest ancestor of the table
# that holds a "Page X of Y" text; answers that text and its two buttons.
PAGER_JS = """
const visible = e => !!(e && e.getClientRects().length);
const t = [...document.querySelectorAll('table')].find(t =>
  t.caption && t.caption.textContent.trim() === arguments[0] && visible(t));
if (!t) return null;
const re = /^Page \\d+ of \\d+$/;
for (let scope = t.parentElement; scope; scope = scope.parentElement) {
  const text = [...scope.querySelectorAll('*')].find(e =>
    visible(e) && re.test(e.textContent.trim()) && ![...e.children].some(c => re.test(c.textContent.trim())));
  if (!text) continue;
  const button = name =>
    [...scope.querySelectorAll('button')].find(b => b.textContent.trim() === name && visible(b)) || null;
  return {text: text.textContent.trim(), previous: button('Previous page'), next: button('Next page')};
}
return null;
"""

# Visible texts that are a program's values leaking onto the page: `null`, `undefined`, `NaN`,
# `[object Object]` (with the text around them, to find them).
# What a person with a screen reader or low vision needs from every page: each visible control
# has a label, each button a name, each chart a text alternative, and text contrasts with its
# background at 4.5:1 at least (WCAG 2.1 AA, normal text). Answers the problems found.
ACCESSIBILITY_JS = r"""
const problems = [];
const visible = (e) => e.offsetParent !== null || e.getClientRects().length > 0;
const describe = (e) => `${e.tagName.toLowerCase()}${e.id ? "#" + e.id : ""} "${(e.textContent || "").trim().slice(0, 30)}"`;
for (const control of document.querySelectorAll("input, select, textarea")) {
  if (!visible(control) || control.type === "hidden") continue;
  const labelled = (control.id && document.querySelector(`label[for="${CSS.escape(control.id)}"]`)) || control.getAttribute("aria-label") || control.closest("label");
  if (!labelled) problems.push(`no label: ${describe(control)}`);
}
for (const button of document.querySelectorAll("button, a[href]")) {
  if (visible(button) && !(button.textContent.trim() || button.getAttribute("aria-label"))) problems.push(`no name: ${describe(button)}`);
}
for (const chart of document.querySelectorAll("svg")) {
  if (visible(chart) && !(chart.getAttribute("role") === "img" && chart.getAttribute("aria-label"))) problems.push(`chart without text: ${describe(chart)}`);
}
const rgb = (text) => (text.match(/[\d.]+/g) || []).map(Number);
const luminance = ([r, g, b]) => {
  const channel = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
  return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
};
const background = (e) => {
  for (let n = e; n; n = n.parentElement) {
    const c = rgb(getComputedStyle(n).backgroundColor);
    if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) return c.slice(0, 3);
  }
  return [255, 255, 255];
};
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
const seen = new Set();
while (walker.nextNode()) {
  const element = walker.currentNode.parentElement;
  if (!walker.currentNode.textContent.trim() || !element || seen.has(element) || !visible(element)) continue;
  if (element.closest("svg, option, dialog:not([open])")) continue;
  seen.add(element);
  const style = getComputedStyle(element);
  if (Number(style.opacity) < 1 || element.closest("button:disabled")) continue;
  const [a, b] = [luminance(rgb(style.color).slice(0, 3)), luminance(background(element))];
  const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  if (ratio < 4.5) problems.push(`contrast ${ratio.toFixed(2)}:1: ${describe(element)}`);
}
return problems;
"""

LEFTOVERS_JS = """
const bad = /^(null|undefined|NaN)$|\\bundefined\\b|\\bNaN\\b|\\[object Object\\]/;
const found = [];
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
for (let n = walker.nextNode(); n; n = walker.nextNode()) {
  const text = n.textContent.trim();
  const parent = n.parentElement;
  if (!text || !parent || !parent.getClientRects().length) continue;
  if (['SCRIPT', 'STYLE', 'TEXTAREA', 'NOSCRIPT'].includes(parent.tagName)) continue;
  if (!bad.test(text)) continue;
  const around = parent.parentElement ? parent.parentElement.innerText.slice(0, 80).replace(/\\s+/g, ' ') : '';
  found.push(`${text} (in ${parent.tagName.toLowerCase()} ${around})`);
}
return found;
"""

# Labels of a chart that print over one another (unrotated texts whose boxes intersect).
OVERLAPS_JS = """
const texts = [...arguments[0].querySelectorAll('text')]
  .filter(t => !t.closest('[transform*="rotate"]') && t.textContent.trim());
const boxes = texts.map(t => [t.textContent.trim(), t.getBoundingClientRect()]);
const overlaps = [];
for (let i = 0; i < boxes.length; i++)
  for (let j = i + 1; j < boxes.length; j++) {
    const [a, r] = boxes[i], [b, q] = boxes[j];
    const apart = r.right - 1 <= q.left || q.right - 1 <= r.left || r.bottom - 1 <= q.top || q.bottom - 1 <= r.top;
    if (r.width && q.width && !apart)
      overlaps.push(`${a} / ${b}`);
  }
return overlaps;
"""

# Whether an svg holds marks that were drawn with a size: bars, points, lines, areas.
SVG_MARKS_JS = """
const svg = arguments[0];
let marks = 0;
for (const e of svg.querySelectorAll('rect, circle, ellipse, path, line, polyline, polygon')) {
  try {
    const b = e.getBBox();
    if (b.width > 0 || b.height > 0) marks++;
  } catch (_) {}
}
return marks;
"""


class ConsoleTest(unittest.TestCase):
    """Finders and waits shared by the scenarios; a failure leaves its evidence behind."""

    maxDiff = None

    def run(self, result=None):
        failures_before = len(result.failures) + len(result.errors) if result is not None else 0
        outcome = super().run(result)
        result = result or outcome
        if result is not None and len(result.failures) + len(result.errors) > failures_before:
            self.save_evidence(self.id().rsplit(".", 1)[-1])
        return outcome

    def setUp(self):
        self.drain_browser_log()

    # --- evidence ---------------------------------------------------------------------------------

    def screenshot(self, name):
        """Saves the whole page (not only the window's part of it) as `name`."""
        path = os.path.join(SCREENSHOTS, name)
        try:
            metrics = DRIVER.execute_cdp_cmd("Page.getLayoutMetrics", {})
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 8000), "scale": 1}
            shot = DRIVER.execute_cdp_cmd(
                "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
            )
            with open(path, "wb") as f:
                f.write(base64.b64decode(shot["data"]))
        except (WebDriverException, KeyError):
            try:
                DRIVER.save_screenshot(path)
            except WebDriverException as error:
                print(f"could not save {name}: {error}", file=sys.stderr)

    def page(self, name):
        """A page a person looks at: saved as `name`, and free of leftovers of the code behind it."""
        self.screenshot(name)
        leftovers = DRIVER.execute_script(LEFTOVERS_JS)
        self.assertEqual(leftovers, [], f"{name}: the page shows program values as text")
        self.assertEqual(DRIVER.execute_script(ACCESSIBILITY_JS), [], f"{name}: accessibility")

    def drain_browser_log(self):
        try:
            return DRIVER.get_log("browser")
        except WebDriverException:
            return []

    def save_evidence(self, name):
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name)
        self.screenshot(f"FAILED-{safe}.png")
        try:
            with open(os.path.join(SCREENSHOTS, f"FAILED-{safe}.html"), "w", encoding="utf-8") as f:
                f.write(DRIVER.page_source)
            with open(os.path.join(SCREENSHOTS, f"FAILED-{safe}.log"), "w", encoding="utf-8") as f:
                f.write(f"url: {DRIVER.current_url}\n\n")
                for entry in self.drain_browser_log():
                    f.write(f"{entry.get('level')} {entry.get('source', '')} {entry.get('message')}\n")
        except WebDriverException as error:
            print(f"could not save the evidence of {name}: {error}", file=sys.stderr)
        print(f"evidence of the failure of {name} in {SCREENSHOTS}/FAILED-{safe}.*", file=sys.stderr)

    def assert_no_script_errors(self):
        """The page threw no uncaught exception (401s and 404s the test provokes are fine)."""
        errors = [
            e["message"]
            for e in self.drain_browser_log()
            if e.get("level") == "SEVERE" and ("Uncaught" in e["message"] or e.get("source") == "javascript")
        ]
        self.assertEqual(errors, [], "the console threw in the browser")

    # --- waiting ----------------------------------------------------------------------------------

    def wait(self, condition, message, timeout=UI_TIMEOUT):
        """Polls `condition(driver)` until it answers something truthy; re-reads after a re-render."""
        try:
            return WebDriverWait(
                DRIVER,
                timeout,
                poll_frequency=0.2,
                ignored_exceptions=(
                    NoSuchElementException,
                    StaleElementReferenceException,
                    ElementNotInteractableException,
                    ElementClickInterceptedException,
                    JavascriptException,
                ),
            ).until(condition)
        except TimeoutException:
            self.fail(f"after {timeout} s: {message} (at {DRIVER.current_url})")

    def click(self, element):
        """Scrolls the element to the middle of the window and clicks it, once nothing covers it."""

        def clicked(d):
            d.execute_script("arguments[0].scrollIntoView({block: 'center', inline: 'nearest'});", element)
            element.click()
            return True

        self.wait(clicked, f"cannot click {element.text.strip()!r}")

    # --- finding things as a person does ----------------------------------------------------------

    @staticmethod
    def literal(text):
        """`text` as an XPath string literal."""
        if "'" not in text:
            return f"'{text}'"
        if '"' not in text:
            return f'"{text}"'
        return "concat(" + ', "\'", '.join(f"'{part}'" for part in text.split("'")) + ")"

    def visible(self, xpath, root=None):
        """The displayed elements at `xpath` now; those the page replaced meanwhile are left out."""
        found = []
        for element in (root or DRIVER).find_elements(By.XPATH, xpath):
            try:
                if element.is_displayed():
                    found.append(element)
            except StaleElementReferenceException:
                pass
        return found

    def find_visible(self, xpath, what, timeout=UI_TIMEOUT):
        return self.wait(lambda d: (self.visible(xpath) or [None])[0], f"no visible {what}", timeout)

    def heading(self, text, timeout=UI_TIMEOUT):
        lit = self.literal(text)
        return self.find_visible(
            f"//*[self::h1 or self::h2 or self::h3 or self::h4][normalize-space()={lit}]", f"heading {text!r}", timeout
        )

    def heading_starting(self, prefix):
        lit = self.literal(prefix)
        return self.find_visible(
            f"//*[self::h1 or self::h2 or self::h3][starts-with(normalize-space(), {lit})]", f"heading {prefix!r}…"
        )

    def button(self, text, within="", timeout=UI_TIMEOUT):
        lit = self.literal(text)
        return self.find_visible(
            f"{within}//button[normalize-space()={lit}] | {within}//input[@type='submit' and @value={lit}]",
            f"button {text!r}",
            timeout,
        )

    def link(self, text, within=""):
        return self.find_visible(f"{within}//a[normalize-space()={self.literal(text)}]", f"link {text!r}")

    def peek_field(self, label):
        """The control a visible `<label for>` reading exactly `label` names, or None."""
        lit = self.literal(label)
        for element in self.visible(f"//label[normalize-space()={lit}]"):
            target = element.get_attribute("for")
            if target:
                found = DRIVER.find_elements(By.ID, target)
                if found:
                    return found[0]
        return None

    def field(self, label, timeout=UI_TIMEOUT):
        return self.wait(
            lambda d: self.peek_field(label), f"no visible label {label!r} with a `for` naming its control", timeout
        )

    def fill(self, label, value):
        """Types `value` into the control labelled `label`; dates and months are set whole, selects
        chosen. Starts again when the page re-renders the control meanwhile."""

        def fill_now(d):
            control = self.peek_field(label)
            if control is None:
                return None
            kind = (control.get_attribute("type") or "").lower()
            if control.tag_name == "select":
                self.select_now(control, value)
            elif kind in ("date", "month", "datetime-local", "time"):
                d.execute_script(
                    "arguments[0].value = arguments[1];"
                    "arguments[0].dispatchEvent(new Event('input', {bubbles: true}));"
                    "arguments[0].dispatchEvent(new Event('change', {bubbles: true}));",
                    control,
                    value,
                )
                if control.get_attribute("value") != value:
                    return None
            else:
                control.clear()
                if value:
                    control.send_keys(value)
            return control

        return self.wait(fill_now, f"cannot fill {label!r} with {value!r}")

    @staticmethod
    def select_now(control, option):
        select = Select(control)
        if option in [o.get_attribute("value") for o in select.options]:
            select.select_by_value(option)
        else:
            select.select_by_visible_text(option)
        return True

    def choose(self, label, option):
        """Selects the option of the select labelled `label` whose value or visible text is `option`."""
        self.wait(
            lambda d: (control := self.peek_field(label)) is not None and self.select_now(control, option),
            f"cannot choose {option!r} in {label!r}",
        )

    def chosen(self, label):
        """The value of the selected option of the select labelled `label`, or None."""
        control = self.peek_field(label)
        return Select(control).first_selected_option.get_attribute("value") if control is not None else None

    def option_texts(self, label):
        return self.wait(
            lambda d: (control := self.peek_field(label)) is not None
            and [o.text.strip() for o in Select(control).options],
            f"no options in {label!r}",
        )

    def assert_refused_beside(self, label, button, what):
        """Submits with `button`: the value of `label` is refused beside its control, by the page
        (the API's problem) or by the browser's own check of the control."""
        self.click(self.button(button))
        control = self.field(label)
        if DRIVER.execute_script("return arguments[0].validity.valid;", control):
            print(f"{what}: {self.field_error(label)!r} beside the field")
        else:
            print(f"{what}: the browser's own message {control.get_attribute('validationMessage')!r}")
            self.assertTrue(control.get_attribute("validationMessage"))

    def field_error(self, label):
        """The text of the `.field-error` right after the control labelled `label`, once shown."""

        def shown(d):
            control = self.peek_field(label)
            if control is None:
                return None
            text = d.execute_script(
                "const n = arguments[0].nextElementSibling;"
                "return n && n.classList.contains('field-error') && n.getClientRects().length"
                "  ? n.textContent.trim() : null;",
                control,
            )
            return text or None

        text = self.wait(shown, f"no .field-error right after the control labelled {label!r}")
        self.assertEqual(self.field(label).get_attribute("aria-invalid"), "true", f"{label} is not marked aria-invalid")
        return text

    def peek_table(self, caption):
        return DRIVER.execute_script(TABLE_JS, caption)

    def table(self, caption, timeout=UI_TIMEOUT):
        return self.wait(lambda d: self.peek_table(caption), f"no visible table captioned {caption!r}", timeout)

    def peek_column(self, caption, name):
        """The texts of a column of the visible table `caption`, or None."""
        table = self.peek_table(caption)
        if table is None or name not in table["headers"]:
            return None
        i = table["headers"].index(name)
        return [row["cells"][i] for row in table["rows"] if len(row["cells"]) > i]

    def column(self, caption, name):
        table = self.table(caption)
        self.assertIn(name, table["headers"], f"table {caption!r} has no column {name!r}")
        return self.peek_column(caption, name)

    def pager(self, caption):
        return self.wait(lambda d: d.execute_script(PAGER_JS, caption), f"no 'Page X of Y' beside table {caption!r}")

    def peek_page_of(self, caption):
        """(X, Y) of the "Page X of Y" beside the table `caption`, or None."""
        pager = DRIVER.execute_script(PAGER_JS, caption)
        match = pager and re.fullmatch(r"Page (\d+) of (\d+)", pager["text"])
        return (int(match.group(1)), int(match.group(2))) if match else None

    def page_of(self, caption):
        return self.wait(lambda d: self.peek_page_of(caption), f"no 'Page X of Y' beside table {caption!r}")

    def peek_user_ids(self):
        """The user ids the visible result table lists, in order, each once (a user may take
        several rows, one per account)."""
        table = self.peek_table("Users")
        if table is None:
            return None
        ids = []
        for row in table["rows"]:
            user = next((c for c in row["cells"] if re.fullmatch(r"user-\d+", c)), None)
            if user and (not ids or ids[-1] != user):
                ids.append(user)
        return ids

    def body_text(self):
        return DRIVER.find_element(By.TAG_NAME, "body").text

    def peek_definition(self, term):
        """The text of the `<dd>` after the visible `<dt>` reading `term`, or None."""
        found = self.visible(f"//dt[normalize-space()={self.literal(term)}]/following-sibling::dd[1]")
        return found[0].text.strip() if found else None

    def definition(self, term):
        return self.wait(lambda d: self.peek_definition(term), f"no definition of {term!r}")

    # --- signing in -------------------------------------------------------------------------------

    def open_fresh(self, fragment=""):
        """Loads the console anew, without any stored token."""
        DRIVER.get("about:blank")
        DRIVER.get(CONSOLE_URL)
        DRIVER.execute_script("sessionStorage.clear(); localStorage.clear();")
        DRIVER.get("about:blank")
        DRIVER.get(CONSOLE_URL + fragment)

    def sign_in(self):
        self.open_fresh(f"#token={TOKEN}")
        self.heading("Segments")
        self.wait(lambda d: "token=" not in d.current_url, "the token stays in the address bar")

    def go(self, nav_link):
        self.click(self.link(nav_link, within="//nav[@aria-label='Main']"))

    def mark_page(self):
        """Marks the loaded document: the mark survives anything but a reload."""
        DRIVER.execute_script("window.__consoleTestMark = 'still here';")

    def assert_not_reloaded(self):
        self.assertEqual(
            DRIVER.execute_script("return window.__consoleTestMark || null;"), "still here", "the page reloaded"
        )


class T1SignIn(ConsoleTest):
    def test_1_without_a_token_the_sign_in_screen_is_shown(self):
        self.open_fresh()
        self.heading("Sign in")
        self.assertEqual(self.field("Access token").tag_name, "textarea")
        self.button("Sign in")
        self.assertEqual(self.visible("//nav[@aria-label='Main']"), [], "the navigation is shown signed out")
        self.page("sign-in.png")
        self.assert_no_script_errors()

    def test_2_a_refused_token_is_said_so(self):
        # Pasted into the form.
        self.open_fresh()
        self.fill("Access token", "not-a-token")
        self.click(self.button("Sign in"))
        self.wait(
            lambda d: any(
                e.text.strip().startswith("The token was refused") for e in self.visible("//*[@role='alert']")
            ),
            "no role=alert starting 'The token was refused'",
        )
        self.heading("Sign in")
        self.field("Access token")
        self.page("sign-in-refused.png")

        # In the address, as `segments serve` hands it out.
        self.open_fresh("#token=not-a-token")
        self.wait(
            lambda d: any(
                e.text.strip().startswith("The token was refused") for e in self.visible("//*[@role='alert']")
            ),
            "no role=alert starting 'The token was refused' for a token in the address",
        )
        self.heading("Sign in")
        self.assertNotIn("not-a-token", DRIVER.current_url)
        self.assertTrue(self.body_text().strip(), "a blank page")

    def test_3_a_token_in_the_address_signs_in_and_leaves_the_address(self):
        self.sign_in()
        self.assertNotIn(TOKEN, DRIVER.current_url)
        nav = self.find_visible("//nav[@aria-label='Main']", "navigation 'Main'")
        links = [a.text.strip() for a in nav.find_elements(By.TAG_NAME, "a")]
        for name in ("Segments", "Financial segments", "Usage"):
            self.assertIn(name, links)
        self.wait(lambda d: "Mandator: demo-bank" in self.body_text(), "no 'Mandator: demo-bank'")
        self.button("Sign out")
        self.assertTrue(DRIVER.find_elements(By.CSS_SELECTOR, "#status[role='status']"), "no #status role=status")

        # Pasting the token works as well, and a reload keeps the sign-in.
        self.open_fresh()
        self.fill("Access token", TOKEN)
        self.click(self.button("Sign in"))
        self.heading("Segments")
        DRIVER.refresh()
        self.heading("Segments")
        self.wait(lambda d: "Mandator: demo-bank" in self.body_text(), "signed out by a reload")
        self.assert_no_script_errors()


class T2Segments(ConsoleTest):
    def open_new_segment_form(self):
        self.go("Segments")
        self.heading("Segments")
        self.click(self.button("New segment"))
        self.heading("New segment")

    def test_1_a_segment_from_creation_to_deletion(self):
        name = f"Premium {RUN}"
        accounts = demo_accounts(3)
        # A name that is already taken.
        taken = api_ok("POST", f"{ORG_API}/segments", {"name": f"Taken {RUN}"})
        self.sign_in()

        self.open_new_segment_form()
        self.assertEqual(self.option_texts("Status"), STATUSES)
        rule_types = self.option_texts("Rule type")
        self.assertEqual(rule_types[0], "No rule")
        self.assertEqual(len(rule_types), 5, rule_types)
        self.field("Rule parameters (JSON)")

        # An empty name is refused beside the field (or by the browser's own check of `required`).
        self.fill("Name", "")
        self.assert_refused_beside("Name", "Create segment", "empty name")
        self.heading("New segment")

        # A taken name: the API's 409 names the field.
        self.fill("Name", taken["name"])
        self.click(self.button("Create segment"))
        error = self.field_error("Name")
        self.assertTrue(error)
        self.page("new-segment.png")

        self.fill("Name", name)
        self.choose("Status", "ACTIVE")
        self.fill("Status description", "premium tier")
        self.fill("Metadata (JSON)", json.dumps({"tier": "gold", "priority": 1, "case": RUN}))
        self.choose("Rule type", "No rule")
        self.click(self.button("Create segment"))

        # The segment's page.
        self.heading(name)
        self.assertIn("ACTIVE", self.definition("Status"))
        metadata = self.definition("Metadata")
        for text in ("tier", "gold", "priority", RUN):
            self.assertIn(text, metadata)
        self.definition("Rule")
        self.definition("Created")
        self.definition("Last refresh")
        self.assertIn("0", self.definition("Members"))
        self.assertEqual(self.visible("//button[normalize-space()='Refresh now']"), [], "'Refresh now' without a rule")
        segment_id = self.wait(
            lambda d: re.search(r"segments/([^/?#]+)$", d.current_url), "the address does not name the segment"
        ).group(1)
        stored = api_ok("GET", f"{ORG_API}/segments/{segment_id}")
        self.assertEqual(stored["name"], name)
        self.assertEqual(stored["status"], {"code": "ACTIVE", "description": "premium tier"})
        self.assertEqual(stored["metadata"], {"tier": "gold", "priority": 1, "case": RUN})

        # Edit: prefilled, without the rule fields; a taken name is refused there too.
        self.click(self.button("Edit"))
        self.button("Save changes")
        self.assertEqual(self.field("Name").get_attribute("value"), name)
        self.assertEqual(Select(self.field("Status")).first_selected_option.get_attribute("value"), "ACTIVE")
        self.assertEqual(self.field("Status description").get_attribute("value"), "premium tier")
        self.assertEqual(json.loads(self.field("Metadata (JSON)").get_attribute("value")), stored["metadata"])
        self.assertEqual(self.visible("//label[normalize-space()='Rule type']"), [], "the edit form offers a rule")
        self.fill("Name", taken["name"])
        self.click(self.button("Save changes"))
        self.field_error("Name")

        renamed = f"Premium {RUN} renamed"
        self.fill("Name", renamed)
        self.choose("Status", "PENDING")
        self.fill("Status description", "under review")
        self.fill("Metadata (JSON)", json.dumps({"tier": "silver", "region": "EU", "case": RUN}))
        self.click(self.button("Save changes"))
        self.heading(renamed)
        self.wait(lambda d: "PENDING" in (self.peek_definition("Status") or ""), "the status did not change to PENDING")
        metadata = self.definition("Metadata")
        for text in ("silver", "region", "EU"):
            self.assertIn(text, metadata)
        stored = api_ok("GET", f"{ORG_API}/segments/{segment_id}")
        self.assertEqual(stored["name"], renamed)
        self.assertEqual(stored["status"], {"code": "PENDING", "description": "under review"})
        self.assertEqual(
            stored["metadata"],
            {"tier": "silver", "region": "EU", "case": RUN},
            "a key removed in the form stays stored",
        )

        # Tag three accounts, see them as members, remove one.
        self.fill("Accounts to add (one per line)", "\n".join(accounts))
        self.click(self.button("Apply membership changes"))
        self.wait(
            lambda d: sorted(self.peek_column("Members", "Account") or []) == sorted(accounts),
            f"the members are not {accounts}",
        )
        users = self.column("Members", "User")
        self.assertTrue(all(u.startswith("user-") for u in users), users)
        self.wait(lambda d: "3" in (self.peek_definition("Members") or ""), "the member count is not 3")
        self.page("segment.png")

        self.fill("Accounts to add (one per line)", "")
        self.fill("Accounts to remove (one per line)", accounts[0])
        self.click(self.button("Apply membership changes"))
        self.wait(
            lambda d: sorted(self.peek_column("Members", "Account") or []) == sorted(accounts[1:]),
            f"the members are not {accounts[1:]} after removing {accounts[0]}",
        )
        members = api_ok("GET", f"{ORG_API}/segments/{segment_id}/accounts?limit=100")
        self.assertEqual(sorted(m["accountId"] for m in members["items"]), sorted(accounts[1:]))

        # An account that is not the bank's is refused, and nothing changes.
        self.fill("Accounts to remove (one per line)", "")
        self.fill("Accounts to add (one per line)", f"acc-nobody-{RUN}")
        self.click(self.button("Apply membership changes"))
        self.wait(lambda d: f"acc-nobody-{RUN}" in self.body_text(), "the unknown account is not named")
        self.assertEqual(sorted(self.column("Members", "Account")), sorted(accounts[1:]))

        # Delete, confirmed in a dialog.
        self.click(self.button("Delete"))
        dialog = self.find_visible("//dialog[@open]", "confirmation dialog")
        self.assertIn(f"Delete segment {renamed}?", dialog.text)
        self.click(self.button("Cancel", within="//dialog[@open]"))
        self.wait(lambda d: not self.visible("//dialog[@open]"), "the dialog stays open after Cancel")
        self.heading(renamed)
        self.click(self.button("Delete"))
        self.click(self.button("Delete segment", within="//dialog[@open]"))
        self.heading("Segments")
        self.assertEqual(api("GET", f"{ORG_API}/segments/{segment_id}")[0], 404)

        # Gone from the list, also when filtered to this run's metadata.
        self.fill("Metadata key", "case")
        self.fill("Metadata value", RUN)
        self.click(self.button("Apply filters"))
        self.wait(lambda d: self.peek_total() == 0, "the deleted segment is still counted")
        self.assertNotIn(renamed, self.column("Segments", "Name"))
        api_ok("DELETE", f"{ORG_API}/segments/{taken['id']}")
        self.assert_no_script_errors()

    def peek_total(self):
        """N of the visible "N segments in total", or None."""
        found = [e for e in DRIVER.find_elements(By.ID, "segments-total") if e.is_displayed()]
        match = found and re.fullmatch(r"(\d+) segments? in total", found[0].text.strip())
        return int(match.group(1)) if match else None

    def test_2_filters_and_paging_of_the_list(self):
        batch = f"batch-{RUN}"
        created = []
        for i in range(25):
            status = "PENDING" if i % 3 == 0 else "ACTIVE"
            segment = api_ok(
                "POST",
                f"{ORG_API}/segments",
                {"name": f"Batch {RUN} {i:02d}", "status": {"code": status}, "metadata": {"batch": batch}},
            )
            created.append(segment)
        pending = sum(1 for s in created if s["status"]["code"] == "PENDING")
        ledger = f"ledger-{RUN}"
        on_ledger = api_ok("POST", f"{ORG_API}/ledgers/{ledger}/segments", {"name": f"Ledger {RUN}"})
        self.sign_in()
        self.heading("Segments")
        self.table("Segments")
        self.assertEqual(self.table("Segments")["headers"][:4], ["Name", "Status", "Members", "Created"])
        self.assertEqual(self.option_texts("Level"), ["Organization", "Ledger"])
        self.assertEqual(self.option_texts("Status filter"), ["Any"] + STATUSES)

        # By metadata: every segment of the batch, over several pages.
        self.fill("Metadata key", "batch")
        self.fill("Metadata value", batch)
        self.click(self.button("Apply filters"))
        self.wait(lambda d: self.peek_total() == 25, "the batch is not 25 segments in total")
        self.wait(lambda d: (self.peek_page_of("Segments") or (0, 0))[0] == 1, "not on page 1")
        first = self.column("Segments", "Name")
        pages = self.page_of("Segments")[1]
        self.assertGreater(pages, 1, "25 segments on one page")
        self.assertEqual(pages, math.ceil(25 / len(first)), f"{len(first)} rows a page")
        self.assertTrue(all(n.startswith(f"Batch {RUN} ") for n in first), first)
        self.page("segments.png")

        self.click(self.pager("Segments")["next"])
        self.wait(lambda d: self.peek_page_of("Segments") == (2, pages), f"Next page does not show 'Page 2 of {pages}'")
        second = self.wait(
            lambda d: (names := self.peek_column("Segments", "Name")) and names != first and names,
            "page 2 shows page 1's rows",
        )
        self.assertFalse(set(first) & set(second), "a segment on two pages")
        self.click(self.pager("Segments")["previous"])
        self.wait(lambda d: self.peek_page_of("Segments") == (1, pages), "Previous page does not go back to page 1")
        self.wait(lambda d: self.peek_column("Segments", "Name") == first, "page 1 changed")

        # By status, with the metadata filter still on.
        self.choose("Status filter", "PENDING")
        self.click(self.button("Apply filters"))
        self.wait(lambda d: self.peek_total() == pending, f"not {pending} PENDING segments of the batch")
        self.assertTrue(all(s == "PENDING" for s in self.column("Segments", "Status")))
        self.choose("Status filter", "Any")

        # By creation date: today holds the batch, yesterday nothing.
        today = today_utc()
        self.fill("Created from", today.isoformat())
        self.fill("Created to", today.isoformat())
        self.click(self.button("Apply filters"))
        self.wait(lambda d: self.peek_total() == 25, "today's segments of the batch are not 25")
        yesterday = (today - datetime.timedelta(days=1)).isoformat()
        self.fill("Created from", yesterday)
        self.fill("Created to", yesterday)
        self.click(self.button("Apply filters"))
        self.wait(lambda d: self.peek_total() == 0, "yesterday holds segments of the batch")

        # A ledger's segments.
        self.fill("Created from", "")
        self.fill("Created to", "")
        self.fill("Metadata key", "")
        self.fill("Metadata value", "")
        self.choose("Level", "Ledger")
        self.fill("Ledger id", ledger)
        self.click(self.button("Apply filters"))
        self.wait(lambda d: self.peek_total() == 1, f"ledger {ledger} does not hold 1 segment")
        self.assertEqual(self.column("Segments", "Name"), [on_ledger["name"]])
        self.click(self.link(on_ledger["name"], within="//table"))
        self.heading(on_ledger["name"])
        self.assertIn(f"ledgers/{ledger}/segments/{on_ledger['id']}", DRIVER.current_url)

        for segment in created:
            api_ok("DELETE", f"{ORG_API}/segments/{segment['id']}")
        api_ok("DELETE", f"{ORG_API}/ledgers/{ledger}/segments/{on_ledger['id']}")
        self.assert_no_script_errors()

    def test_3_a_segment_with_a_rule_refreshes_its_members(self):
        name = f"Rich {RUN}"
        parameters = {"accountType": "checking", "threshold": 50000}
        self.sign_in()
        self.open_new_segment_form()
        self.fill("Name", name)
        self.choose("Rule type", "highBalance")
        self.fill("Rule parameters (JSON)", json.dumps(parameters))
        self.click(self.button("Create segment"))
        self.heading(name)
        self.assertIn("Never", self.definition("Last refresh"))
        segment_id = self.wait(
            lambda d: re.search(r"segments/([^/?#]+)$", d.current_url), "the address does not name the segment"
        ).group(1)
        stored = api_ok("GET", f"{ORG_API}/segments/{segment_id}")
        self.assertEqual(stored["rule"]["segmentType"], "highBalance")

        # The refresh runs a job; the page follows it until its accounts are the members.
        self.click(self.button("Refresh now"))
        self.wait(
            lambda d: "APPLIED" in (self.peek_definition("Last refresh") or ""),
            "the refresh is not APPLIED on the page",
            JOB_TIMEOUT,
        )
        stored = api_ok("GET", f"{ORG_API}/segments/{segment_id}")
        self.assertEqual(stored["lastRefresh"]["status"], "APPLIED")
        count = stored["memberCount"]
        self.assertGreater(count, 0, "nobody above the threshold: choose another")
        self.wait(lambda d: self.peek_definition("Members") == str(count), f"the page does not count {count} members")
        first_page = self.wait(lambda d: self.peek_column("Members", "Account"), "no members listed")
        pages = self.page_of("Members")[1]
        self.assertEqual(pages, math.ceil(count / len(first_page)))
        members = api_ok("GET", f"{ORG_API}/segments/{segment_id}/accounts?limit=100")["items"]
        self.assertTrue(set(first_page) <= {m["accountId"] for m in members} or count > 100)
        self.page("segment-with-rule.png")
        api_ok("DELETE", f"{ORG_API}/segments/{segment_id}")
        self.assert_no_script_errors()


# What the job stores from each form above (the API's canonical form of the request): the form
# sends what the person typed, label groups in the API's long form.
EXPECTED_PARAMETERS = {
    "highBalance": {"accountType": "checking", "threshold": 1000, "currency": "EUR"},
    "lowBalance": {"threshold": 2000, "durationInMonth": 3, "accountType": "checking"},
    "insuranceSpending": {"durationInMonth": 12},
    "financialBreakdown": {
        "labelGroups": [
            {"alias": "GROCERIES", "includeLabels": ["GROCERIES"], "excludeLabels": []},
            {"alias": "Fun", "includeLabels": ["ENTERTAINMENT", "RESTAURANT"], "excludeLabels": ["COFFEE"]},
        ],
        "durationInMonth": 6,
    },
}


# Valid parameters for each type, as a person types them into the start form, with what the
# result page shows as charts.
def job_forms():
    today = today_utc()
    return {
        "highBalance": (
            [("Account type", "checking"), ("Threshold", "1000"), ("Currency", "EUR")],
            ["Distribution of balances"],
        ),
        "lowBalance": (
            [("Threshold", "2000"), ("Duration in months", "3"), ("Account type", "checking")],
            ["Distribution of balances"],
        ),
        "incomeSpendingSummary": (
            [
                ("Date from", (today - datetime.timedelta(days=180)).isoformat()),
                ("Date to", today.isoformat()),
                ("Account type", "Any account"),
            ],
            ["Income and spending per user"],
        ),
        "insuranceSpending": ([("Duration in months", "12")], ["Insurance types", "Payment frequencies"]),
        "financialBreakdown": (
            [
                ("Label groups (one per line)", "GROCERIES\nFun: ENTERTAINMENT, RESTAURANT -COFFEE"),
                ("Duration in months", "6"),
            ],
            ["Monthly totals of GROCERIES"],
        ),
    }


class T3Jobs(ConsoleTest):
    # The jobs this run completed through the console, by type, for the usage page.
    completed = {}

    def open_jobs(self, segment_type):
        self.go("Financial segments")
        self.heading("Financial segments")
        self.choose("Segment type", segment_type)
        self.heading("Start a job")
        self.wait(
            lambda d: self.chosen("Segment type") == segment_type,
            f"the type is not {segment_type}",
        )

    def new_job(self, segment_type, known):
        """The id of the job of `segment_type` that the API lists and `known` does not hold."""
        deadline = time.monotonic() + UI_TIMEOUT
        while time.monotonic() < deadline:
            fresh = [j for j in jobs_of(segment_type) if j["jobId"] not in known]
            if fresh:
                self.assertEqual(len(fresh), 1, f"one click started {len(fresh)} jobs")
                return fresh[0]["jobId"]
            time.sleep(0.2)
        self.fail(f"no {segment_type} job was started")

    def peek_job_row(self, job_id):
        """The row of the Jobs table that links to the job or names its id (or a prefix), or None."""
        table = self.peek_table("Jobs")
        for r in table["rows"] if table else []:
            if any(job_id in link["href"] for link in r["links"]):
                return r
            job_cell = r["cells"][0].rstrip("…").rstrip(".").strip() if r["cells"] else ""
            if len(job_cell) >= 8 and job_id.startswith(job_cell):
                return r
        return None

    def job_row(self, job_id):
        return self.wait(lambda d: self.peek_job_row(job_id), f"job {job_id} is not in the Jobs table")

    def status_of(self, row):
        if row is None:
            return None
        statuses = [c for c in row["cells"] if c in ("QUEUED", "RUNNING", "COMPLETED", "FAILED")]
        return statuses[0] if statuses else None

    def test_1_the_start_form_checks_its_fields(self):
        self.sign_in()
        self.open_jobs("highBalance")
        self.assertEqual(
            self.option_texts("Segment type"), [TYPE_TEXTS[t] for t in SEGMENT_TYPES], "the segment type options"
        )
        known = {j["jobId"] for j in jobs_of("highBalance")}

        # Three decimals: refused beside Threshold (by the page, the API or the browser's own check).
        self.choose("Account type", "checking")
        self.fill("Threshold", "100.123")
        self.assert_refused_beside("Threshold", "Start job", "threshold 100.123")

        # A callback to a private address: the API refuses it, naming the field.
        self.fill("Threshold", "1000")
        self.fill("Callback URL", "https://127.0.0.1/segments-done")
        self.click(self.button("Start job"))
        self.assertTrue(self.field_error("Callback URL"))
        self.page("start-job-error.png")
        self.assertEqual({j["jobId"] for j in jobs_of("highBalance")}, known, "a refused form started a job")
        self.assert_no_script_errors()

    def test_2_a_job_of_every_type_from_start_to_export(self):
        self.sign_in()
        for segment_type, (fields, charts) in job_forms().items():
            with self.subTest(segment_type=segment_type):
                try:
                    self.run_job(segment_type, fields, charts)
                except BaseException:
                    self.save_evidence(f"job-{segment_type}")
                    raise
        self.assert_no_script_errors()

    def run_job(self, segment_type, fields, charts):
        self.open_jobs(segment_type)
        known = {j["jobId"] for j in jobs_of(segment_type)}
        for label, value in fields:
            self.fill(label, value)
        self.field("As of")
        self.field("Callback URL")
        self.mark_page()
        self.click(self.button("Start job"))
        job_id = self.new_job(segment_type, known)

        # The jobs table follows the job to COMPLETED by itself.
        if not self.visible("//table[caption[normalize-space()='Jobs']]"):
            self.open_jobs(segment_type)
        table = self.table("Jobs")
        self.assertEqual(table["headers"][:5], ["Job", "Created", "Status", "Progress", "Users"])
        self.wait(
            lambda d: self.status_of(self.peek_job_row(job_id)) == "COMPLETED",
            f"{segment_type} job {job_id} does not reach COMPLETED in the table",
            JOB_TIMEOUT,
        )
        self.assert_not_reloaded()
        self.page("jobs.png")

        first = api_ok("GET", f"/segments/{segment_type}/{job_id}?page=1&perPage=20")
        total = first["totalElements"]
        self.assertGreater(total, 0, f"the {segment_type} parameters select nobody; choose others")
        for key, value in EXPECTED_PARAMETERS.get(segment_type, {}).items():
            self.assertEqual(first["parameters"].get(key), value, f"{segment_type}: the form sent {key}")
        row = self.job_row(job_id)
        users_column = table["headers"].index("Users")
        self.assertEqual(re.sub(r"\D", "", row["cells"][users_column]), str(total), "the Users cell")
        self.completed[segment_type] = self.completed.get(segment_type, 0) + 1

        # The result.
        view = [l for l in row["links"] if l["text"] == "View"]
        self.assertTrue(view, f"no View link in the row of {job_id}")
        self.click(
            self.find_visible(
                f"//table[caption[normalize-space()='Jobs']]//a[normalize-space()='View'][contains(@href, '{job_id}')]",
                "View link",
            )
        )
        self.heading_starting("Result")
        self.wait(lambda d: job_id in d.current_url, "the result's address does not name the job")
        self.wait(lambda d: "COMPLETED" in self.body_text(), "the result page does not say COMPLETED")
        self.table("Users")
        self.assertEqual(self.option_texts("Users per page"), ["20", "50", "100"])
        per_page = int(self.wait(lambda d: self.chosen("Users per page"), "no choice of users per page"))

        def api_page(page, per_page):
            answer = api_ok("GET", f"/segments/{segment_type}/{job_id}?page={page}&perPage={per_page}")
            return [u["userId"] for u in answer["users"]]

        pages = math.ceil(total / per_page)
        print(f"{segment_type}: job {job_id}, {total} users, {pages} pages of {per_page}")
        self.wait(lambda d: self.peek_page_of("Users") == (1, pages), f"the result is not 'Page 1 of {pages}'")
        page_one = api_page(1, per_page)
        self.wait(lambda d: self.peek_user_ids() == page_one, f"page 1 does not list the API's page 1: {page_one}")
        if pages > 1:
            self.click(self.pager("Users")["next"])
            self.wait(
                lambda d: self.peek_page_of("Users") == (2, pages), f"Next page does not show 'Page 2 of {pages}'"
            )
            page_two = api_page(2, per_page)
            self.assertNotEqual(page_one, page_two)
            self.wait(lambda d: self.peek_user_ids() == page_two, f"page 2 does not list the API's page 2: {page_two}")
            self.click(self.pager("Users")["previous"])
            self.wait(lambda d: self.peek_page_of("Users") == (1, pages), "Previous page does not go back")
            self.wait(lambda d: self.peek_user_ids() == page_one, "Previous page does not list page 1 again")
        if total > 20:
            self.choose("Users per page", "50")
            fifty = api_page(1, 50)
            self.wait(lambda d: self.peek_user_ids() == fifty, "50 users per page do not list the API's first 50")
            self.wait(
                lambda d: self.peek_page_of("Users") == (1, math.ceil(total / 50)), "the page count ignores 50 a page"
            )

        # Charts with drawn marks.
        for caption in charts:
            figure = self.find_visible(
                f"//figure[figcaption[normalize-space()={self.literal(caption)}]]", f"figure {caption!r}"
            )
            svg = self.wait(
                lambda d: (figure.find_elements(By.CSS_SELECTOR, "svg[role='img']") or [None])[0],
                f"no svg[role=img] in {caption!r}",
            )
            self.assertTrue(svg.get_attribute("aria-label"), f"the chart {caption!r} has no aria-label")
            self.wait(lambda d: d.execute_script(SVG_MARKS_JS, svg) > 0, f"the chart {caption!r} draws nothing")
            self.assertEqual(
                DRIVER.execute_script(OVERLAPS_JS, svg), [], f"labels of the chart {caption!r} print over one another"
            )
        if segment_type == "financialBreakdown":
            self.assertEqual(self.option_texts("Label group"), ["GROCERIES", "Fun"])
            self.choose("Label group", "Fun")
            figure = self.find_visible("//figure[figcaption[normalize-space()='Monthly totals of Fun']]", "Fun's chart")
            self.wait(
                lambda d: d.execute_script(SVG_MARKS_JS, figure.find_element(By.CSS_SELECTOR, "svg[role='img']")) > 0,
                "the chart of Fun draws nothing",
            )
        self.page(f"result-{segment_type}.png")

        # The export: one line per user of the result.
        expected_name = f"{segment_type}-{job_id}.ndjson"
        target = os.path.join(DOWNLOADS, expected_name)
        if os.path.exists(target):
            os.remove(target)
        self.click(self.button("Download export"))

        def downloaded(d):
            names = os.listdir(DOWNLOADS)
            if expected_name in names and not any(n.endswith(".crdownload") for n in names):
                return target
            return None

        try:
            path = self.wait(downloaded, f"{expected_name} is not downloaded", DOWNLOAD_TIMEOUT)
        except AssertionError:
            raise AssertionError(
                f"{expected_name} is not downloaded; the download directory holds {os.listdir(DOWNLOADS)}"
            )
        with open(path, encoding="utf-8") as f:
            lines = [line for line in f.read().split("\n") if line.strip()]
        self.assertEqual(len(lines), total, f"{expected_name} has {len(lines)} lines, the result {total} users")
        self.assertEqual(
            json.loads(lines[0])["userId"],
            api_ok("GET", f"/segments/{segment_type}/{job_id}?perPage=1")["users"][0]["userId"],
        )


class T4Usage(ConsoleTest):
    def test_1_usage_shows_the_months_completed_jobs(self):
        month = today_utc().strftime("%Y-%m")
        # Counted once every job has ended (a job counts when it completes).
        deadline = time.monotonic() + JOB_TIMEOUT
        while any(j["status"] in ("QUEUED", "RUNNING") for t in SEGMENT_TYPES for j in jobs_of(t)):
            self.assertLess(time.monotonic(), deadline, "jobs still running")
            time.sleep(0.5)
        expected = {u["segmentType"]: u["jobs"] for u in api_ok("GET", f"/usage?month={month}")["usage"]}
        # What the API reports is what ran: the completed jobs of this month.
        for segment_type in SEGMENT_TYPES:
            ran = sum(
                1 for j in jobs_of(segment_type) if j["status"] == "COMPLETED" and month_of(j["creationDate"]) == month
            )
            self.assertEqual(expected.get(segment_type), ran, f"usage of {segment_type}")
            self.assertGreaterEqual(ran, T3Jobs.completed.get(segment_type, 0))

        self.sign_in()
        self.go("Usage")
        self.heading("Usage")
        self.fill("Month", month)
        self.click(self.button("Show usage"))
        by_text = {**{t: t for t in SEGMENT_TYPES}, **{v: k for k, v in TYPE_TEXTS.items()}}

        def shown(d):
            table = self.table("Jobs per segment type")
            counts = {}
            for row in table["rows"]:
                if len(row["cells"]) >= 2 and row["cells"][0] in by_text:
                    counts[by_text[row["cells"][0]]] = int(row["cells"][-1].replace(",", ""))
            return counts if counts == expected else None

        self.wait(shown, f"the usage table does not show {expected}")
        figure = self.find_visible("//figure[figcaption[normalize-space()='Jobs per segment type']]", "usage chart")
        svg = figure.find_element(By.CSS_SELECTOR, "svg[role='img']")
        if any(expected.values()):
            self.wait(lambda d: d.execute_script(SVG_MARKS_JS, svg) > 0, "the usage chart draws nothing")
        self.assertEqual(
            DRIVER.execute_script(OVERLAPS_JS, svg), [], "labels of the usage chart print over one another"
        )
        self.page("usage.png")
        self.assert_no_script_errors()


class T5SignOut(ConsoleTest):
    def test_1_sign_out_returns_to_the_sign_in_screen(self):
        self.sign_in()
        self.click(self.button("Sign out"))
        self.heading("Sign in")
        self.field("Access token")
        self.assertEqual(self.visible("//nav[@aria-label='Main']"), [])
        # The token is forgotten: a reload or a deep link stays signed out.
        DRIVER.get(CONSOLE_URL + "#/usage")
        DRIVER.refresh()
        self.heading("Sign in")
        self.assertNotIn(
            TOKEN, DRIVER.execute_script("return JSON.stringify(sessionStorage) + JSON.stringify(localStorage);")
        )
        self.assert_no_script_errors()


if __name__ == "__main__":
    started = time.monotonic()
    program = unittest.main(verbosity=2, exit=False)
    print(f"browser test: {time.monotonic() - started:.0f} s, screenshots in {SCREENSHOTS}", file=sys.stderr)
    sys.exit(0 if program.result.wasSuccessful() else 1)
