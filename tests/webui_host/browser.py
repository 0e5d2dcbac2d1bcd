"""The webui page in a headless Chromium: Debian's `chromium` and `chromium-driver`, driven by selenium.

Only a browser shows what the panel really does: the order in which the webui builds its rows (and so
which controls exist when `ui()` runs), which gradio events fire, what gradio 3.41 makes of a control
listed twice as a paste output, and the webui's own JavaScript (InputAccordion, img2img's source image).
Nothing here sleeps: every step waits for the element, value or event it needs.
"""
import json
import os
import shutil
import urllib.request
from pathlib import Path

SCRIPT = "hidiffusion"
TIMEOUT = 60            # seconds for a page, a generation or a checkpoint load on two busy cores


class BrowserUnavailable(RuntimeError):
    pass


def chrome():
    """A headless Chromium from the system's packages (no browser downloads here or in CI)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        raise BrowserUnavailable(f"selenium is not installed: {e}") from None
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        raise BrowserUnavailable("chromium and chromium-driver are not installed (apt-get install chromium "
                                 "chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", "--force-device-scale-factor=1", "--hide-scrollbars"):
        options.add_argument(argument)
    # an explicit driver keeps selenium from looking for (downloading) one
    return webdriver.Chrome(options=options, service=Service(driver, env=dict(os.environ, SE_AVOID_STATS="true")))


class Page:
    """The webui page and its gradio 3.41 controls, addressed by elem_id."""

    def __init__(self, driver, url):
        self.driver, self.url = driver, url

    # --- waiting and finding ---

    def wait(self, condition, message, timeout=TIMEOUT):
        """The first truthy value of `condition()`; elements that are replaced meanwhile are looked up again.
        `message` (or `message()`, what the page shows at that moment) is the failure's."""
        from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.1,
                                 ignored_exceptions=[StaleElementReferenceException]).until(lambda _: condition())
        except TimeoutException:
            raise AssertionError(message() if callable(message) else message) from None

    def find(self, css, within=None):
        from selenium.webdriver.common.by import By
        return (within or self.driver).find_element(By.CSS_SELECTOR, css)

    def find_all(self, css, within=None):
        from selenium.webdriver.common.by import By
        return (within or self.driver).find_elements(By.CSS_SELECTOR, css)

    def open(self):
        """A fresh page: every control at its default. Ready once the webui's onUiLoaded ran (it adds the
        accordions' header checkboxes)."""
        self.driver.get(self.url)
        for tab in ("txt2img", "img2img"):
            self.wait(lambda: self.find_all(f"#{ours(tab, 'enable')}-visible-checkbox"), "the page did not load")
        return self

    def tab(self, name):
        """Switch to a top tab: txt2img, img2img, pnginfo."""
        label = {"txt2img": "txt2img", "img2img": "img2img", "pnginfo": "PNG Info"}[name]
        button = next(b for b in self.find_all("#tabs > .tab-nav > button") if b.text.strip() == label)
        button.click()
        self.wait(lambda: self.find(f"#tab_{name}").is_displayed(), f"tab {name} did not show")

    def script(self, code, *args):
        return self.driver.execute_script(code, *args)

    def show(self, element):
        self.script("arguments[0].scrollIntoView({block: 'center'})", element)
        return element

    # --- controls ---

    def kind(self, elem_id):
        classes = self.find(f"#{elem_id}").get_attribute("class").split()
        return next(k for k in ("input-accordion", "gradio-checkbox", "gradio-slider", "gradio-dropdown",
                                "gradio-radio", "gradio-textbox") if k in classes)

    def get(self, elem_id):
        kind, root = self.kind(elem_id), f"#{elem_id}"
        if kind == "input-accordion":
            return self.find(f"{root}-visible-checkbox").get_property("checked")
        if kind == "gradio-checkbox":
            return self.find(f"{root} input[type=checkbox]").get_property("checked")
        if kind == "gradio-slider":
            return float(self.find(f"{root} input[type=number]").get_property("value"))
        if kind == "gradio-radio":
            return next(r.get_attribute("value") for r in self.find_all(f"{root} input[type=radio]")
                        if r.get_property("checked"))
        if kind == "gradio-dropdown":
            return self.find(f"{root} input").get_property("value")
        return self.find(f"{root} textarea").get_property("value")

    def set(self, elem_id, value):
        """Set a control the way a user does; returns once the page shows the new value."""
        from selenium.webdriver.common.keys import Keys
        kind, root = self.kind(elem_id), f"#{elem_id}"
        if kind in ("input-accordion", "gradio-checkbox"):
            box = self.find(f"{root}-visible-checkbox" if kind == "input-accordion" else f"{root} input[type=checkbox]")
            if box.get_property("checked") != value:
                self.show(box).click()
        elif kind == "gradio-slider":
            # typing a number and leaving the field is a user's edit: gradio sends change and release
            field = self.show(self.find(f"{root} input[type=number]"))
            self.wait(field.is_enabled, f"{elem_id} stays locked")     # e.g. until Auto T1/T2's untick is answered
            field.send_keys(Keys.CONTROL, "a")
            field.send_keys(str(value), Keys.TAB)
            value = float(value)
        elif kind == "gradio-radio":
            self.show(self.find(f"{root} input[type=radio][value='{value}']")).click()
        elif kind == "gradio-dropdown":
            self.show(self.find(f"{root} input")).click()
            option = self.wait(lambda: self.find_all(f"{root} li[data-value='{value}']"), f"{elem_id}: no {value}")[0]
            option.click()
        else:
            field = self.show(self.find(f"{root} textarea"))
            field.clear()
            field.send_keys(value)
        self.wait(lambda: self.get(elem_id) == value, lambda: f"{elem_id} shows {self.get(elem_id)!r}, not {value!r}")

    def interactive(self, elem_id):
        return not self.find(f"#{elem_id} input").get_property("disabled")

    def open_accordion(self, elem_id):
        """Click an accordion's header (an InputAccordion linked to its checkbox turns on as it opens)."""
        accordion = self.show(self.find(f"#{elem_id}"))
        if "input-accordion-open" not in accordion.get_attribute("class"):
            self.find(".label-wrap", accordion).click()
            self.wait(lambda: "input-accordion-open" in self.find(f"#{elem_id}").get_attribute("class"),
                      f"{elem_id} did not open")
        return accordion

    # --- generating ---

    def images(self, tab):
        """The gallery's images, in order (several show as thumbnails, one as the preview alone)."""
        thumbnails = self.find_all(f"#{tab}_gallery .thumbnail-item img") or self.find_all(f"#{tab}_gallery img")
        return list(dict.fromkeys(img.get_attribute("src") for img in thumbnails))

    def generate(self, tab):
        """Click Generate and wait for new images; returns the generation info (JSON: "infotexts", ...)."""
        before = self.images(tab)
        self.find(f"#{tab}_generate").click()
        self.wait(lambda: self.images(tab) and self.images(tab) != before, f"{tab}: no new image")
        return json.loads(self.find(f"#generation_info_{tab} textarea").get_property("value"))

    def download(self, src, path: Path) -> Path:
        with urllib.request.urlopen(src, timeout=TIMEOUT) as response:
            path.write_bytes(response.read())
        return path


def ours(tab, name):
    """elem_id of one of our controls."""
    return f"script_{tab}_{SCRIPT}_{name}"


def infotext_values(infotext: str) -> dict:
    """Our `Key: value` pairs of an infotext's last line (values never contain commas or colons)."""
    pairs = (item.split(":", 1) for item in infotext.splitlines()[-1].split(", ") if ":" in item)
    return {key.strip(): value.strip() for key, value in pairs if key.strip().startswith("HiDiffusion")}
