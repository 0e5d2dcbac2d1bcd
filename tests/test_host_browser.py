"""The HiDiffusion panel in the real webui page, driven by a headless Chromium (see webui_host/browser.py).

Each test loads a fresh page (every control at its default) on the session's UI-mode webui. Values are
read back from the page and from the generation info the webui shows under the image, never assumed.
Screenshots go to the artifacts folder; HIDIFFUSION_README_PICTURE=1 also copies the panel's to docs/.
"""
import os
import re
import shutil

import pytest
from PIL import Image

from webui_host.browser import Page, infotext_values, ours
from webui_host.environment import ROOT
from webui_host.server import artifacts

pytestmark = pytest.mark.webui

NAMES = ("enable", "raunet", "window_attention", "preset", "auto_timing", "t1", "t2", "aggressive", "passes",
         "native_guard", "rau_upsample", "window_shift")          # the positional order; auto_timing before t1/t2
DEFAULTS = dict(enable=False, raunet=True, window_attention=True, preset="Auto", auto_timing=True, t1=0.4, t2=0.0,
                aggressive="Auto", passes="Both", native_guard=True, rau_upsample="nearest", window_shift="random")
CHOSEN = dict(enable=True, raunet=True, window_attention=False, preset="SD1.x", auto_timing=False, t1=0.55,
              t2=0.25, aggressive="Off", passes="First pass", native_guard=False, rau_upsample="bicubic",
              window_shift="rotate")          # every control away from its default
CHOSEN_INFOTEXT = {"HiDiffusion": "RAU-Net", "HiDiffusion passes": "First pass", "HiDiffusion preset": "SD1.x",
                   "HiDiffusion T1": "0.55", "HiDiffusion T2": "0.25", "HiDiffusion aggressive": "False",
                   "HiDiffusion native guard": "False", "HiDiffusion RAU upsample": "bicubic",
                   "HiDiffusion window shift": "rotate"}
PLAIN_INFOTEXT = "a plain image\nSteps: 6, Sampler: Euler, CFG scale: 5, Seed: 1, Size: 256x256"


def values(page, tab):
    return {name: page.get(ours(tab, name)) for name in NAMES}


def wait_for_values(page, tab, expected, what):
    page.wait(lambda: values(page, tab) == expected, lambda: f"{what}: {tab} shows {values(page, tab)}")


def choose(page, tab, chosen):
    page.open_accordion(ours(tab, "enable"))
    for name in NAMES:
        page.set(ours(tab, name), chosen[name])


def small(page, tab):
    """A tiny, quick generation: 256x256, 6 steps."""
    for control, value in (("width", 256), ("height", 256), ("steps", 6)):
        page.set(f"{tab}_{control}", value)


def line(page, tab):
    return page.find(f"#{ours(tab, 'auto_info')}").text


def wait_for_line(page, tab, pattern):
    """The resolved-settings line once it matches `pattern` (a regex); the match."""
    page.wait(lambda: re.search(pattern, line(page, tab)),
              lambda: f"{tab}: the line never matched {pattern!r}; it reads {line(page, tab)!r}")
    return re.search(pattern, line(page, tab))


def drag(page, elem_id, pixels):
    """Drag a slider's handle from the middle of its track to the right, in small moves as a hand does."""
    from selenium.webdriver import ActionChains
    chain = ActionChains(page.driver).click_and_hold(page.show(page.find(f"#{elem_id} input[type=range]")))
    for _ in range(15):
        chain.move_by_offset(pixels // 15, 0)
    chain.release().perform()


def screenshot(element, name):
    folder = artifacts() / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    element.screenshot(str(folder / name))
    return folder / name


def checkpoint_titles(server):
    return {m["model_name"]: m["title"] for m in server.call("/sdapi/v1/sd-models")}


@pytest.fixture
def restore_checkpoint(webui_ui):
    """Tests that switch the checkpoint in the page leave the session's server on tiny-sd15."""
    yield
    webui_ui.call("/sdapi/v1/options", {"sd_model_checkpoint": checkpoint_titles(webui_ui)["tiny-sd15"]})


def test_the_panel_sits_with_hires_fix_and_refiner_closed_and_its_checkbox_turns_it_on(page):
    for tab in ("txt2img", "img2img"):
        page.tab(tab)
        row = page.find(f"#{tab}_accordions")
        accordions = [a.get_attribute("id") for a in page.find_all(":scope > .input-accordion", row)]
        neighbours = ["txt2img_hr", "txt2img_enable"] if tab == "txt2img" else ["img2img_enable"]  # Hires. fix, Refiner
        assert ours(tab, "enable") in accordions and set(neighbours) <= set(accordions), accordions
        panel = page.find(f"#{ours(tab, 'enable')}")
        assert "input-accordion-open" not in panel.get_attribute("class")
        assert not page.find(f"#{ours(tab, 'auto_info')}").is_displayed()
        assert values(page, tab) == DEFAULTS

        page.set(ours(tab, "enable"), True)           # the header's checkbox: on, still closed
        assert page.find(f"#{ours(tab, 'enable')}-checkbox input").get_property("checked")    # what gradio sends
        assert "input-accordion-open" not in panel.get_attribute("class")
        page.set(ours(tab, "enable"), False)
        assert not page.find(f"#{ours(tab, 'enable')}-checkbox input").get_property("checked")

        # Open, it takes the row's width like Hires. fix and Refiner, and stays compact
        page.open_accordion(ours(tab, "enable"))
        assert panel.size["width"] >= 0.95 * row.size["width"], (panel.size, row.size)
        if tab == "txt2img":
            hires = page.open_accordion("txt2img_hr")
            assert panel.size["height"] <= 2 * hires.size["height"], (panel.size, hires.size)


def test_the_line_follows_size_hires_and_checkpoint_and_auto_shows_in_the_sliders(page, webui_ui, restore_checkpoint):
    tab = "txt2img"
    page.open_accordion(ours(tab, "enable"))
    wait_for_line(page, tab, r"^first pass 512x512: not applied \(not above native 512 px\)$")
    page.set("txt2img_width", 1024)
    wait_for_line(page, tab, r"^first pass 1024x512: SD1\.x · T1 0\.4, T2 0 · MSW-MSA$")
    assert [page.get(ours(tab, t)) for t in ("t1", "t2")] == [0.4, 0.0]
    assert not page.interactive(ours(tab, "t1")) and not page.interactive(ours(tab, "t2"))

    drag(page, "txt2img_width", 150)          # many change events while dragging, one release at the end
    width = int(page.get("txt2img_width"))
    assert width not in (512, 1024)
    wait_for_line(page, tab, rf"^first pass {width}x512: SD1\.x · T1 0\.4, T2 0 · MSW-MSA$")

    page.set(ours(tab, "window_attention"), False)                                    # our own controls
    wait_for_line(page, tab, rf"^first pass {width}x512: SD1\.x · T1 0\.4, T2 0$")
    page.set(ours(tab, "window_attention"), True)
    for side in ("width", "height"):
        page.set(f"txt2img_{side}", 2048)
    wait_for_line(page, tab, r"^first pass 2048x2048: SD1\.x · T1 0\.7, T2 0\.3 · MSW-MSA$")
    page.wait(lambda: [page.get(ours(tab, t)) for t in ("t1", "t2")] == [0.7, 0.3], "the sliders kept 0.4/0")
    page.set(ours(tab, "auto_timing"), False)                    # the sliders are the user's again
    page.wait(lambda: page.interactive(ours(tab, "t1")) and page.interactive(ours(tab, "t2")), "still locked")
    page.set(ours(tab, "t1"), 0.5)
    wait_for_line(page, tab, r"^first pass 2048x2048: SD1\.x · T1 0\.5, T2 0\.3 · MSW-MSA$")
    page.set(ours(tab, "auto_timing"), True)
    page.wait(lambda: page.get(ours(tab, "t1")) == 0.7 and not page.interactive(ours(tab, "t1")), "not Auto again")

    for side in ("width", "height"):
        page.set(f"txt2img_{side}", 1024)
    page.set("txt2img_hr", True)                                # Hires. fix on (its header), upscale by 2
    wait_for_line(page, tab, r"^first pass 1024x1024: SD1\.x · T1 0\.4, T2 0 · MSW-MSA\n"
                             r"hires pass 2048x2048: SD1\.x · T1 0\.7, T2 0\.3 · MSW-MSA$")
    page.wait(lambda: page.get(ours(tab, "t1")) == 0.7, "the sliders do not show the hires pass's values")
    picture = screenshot(page.show(page.find("#txt2img_accordions")), "panel-txt2img.png")
    if os.environ.get("HIDIFFUSION_README_PICTURE") == "1":
        shutil.copyfile(picture, ROOT / "docs" / "panel.png")
    page.open_accordion("txt2img_hr")
    page.set("txt2img_hr_scale", 1.5)
    wait_for_line(page, tab, r"\nhires pass 1536x1536: SD1\.x · T1 0\.4, T2 0 · MSW-MSA$")
    page.set("txt2img_hr_resize_x", 1280)
    wait_for_line(page, tab, r"\nhires pass 1280x1280: ")
    page.set("txt2img_hr", False)
    wait_for_line(page, tab, r"^first pass 1024x1024: SD1\.x · T1 0\.4, T2 0 · MSW-MSA$")

    page.set("setting_sd_model_checkpoint", checkpoint_titles(webui_ui)["tiny-sdxl"])
    wait_for_line(page, tab, r"^first pass 1024x1024: not applied \(not above native 1024 px\)$")
    page.set("txt2img_width", 1536)
    wait_for_line(page, tab, r"^first pass 1536x1024: SDXL · T1 0\.4, T2 0, aggressive · MSW-MSA$")


def test_the_line_is_wired_when_the_sizes_come_before_the_accordions(webui_ui_reordered, chromium):
    """With Width/Height built first (Settings → UI item order), ui() is the one to wire the line."""
    page = Page(chromium, webui_ui_reordered.url).open()
    for tab in ("txt2img", "img2img"):
        page.tab(tab)
        order = page.script("return [...document.querySelectorAll(arguments[0])].map(e => e.id)",
                            f"#{tab}_width, #{tab}_accordions")
        assert order == [f"{tab}_width", f"{tab}_accordions"], order       # document order
        page.open_accordion(ours(tab, "enable"))
        page.set(f"{tab}_width", 1024)
        wait_for_line(page, tab, r"^first pass 1024x512: SD1\.x · T1 0\.4, T2 0 · MSW-MSA$")


def resize_tab(page, label):
    next(b for b in page.find_all("#img2img_tabs_resize > .tab-nav > button") if b.text.strip() == label).click()


def test_img2img_line_follows_resize_to_and_resize_by(page, tmp_path):
    tab = "img2img"
    page.tab(tab)
    Image.new("RGB", (320, 256), (90, 120, 160)).save(tmp_path / "source.png")
    page.find("#img2img_image input[type=file]").send_keys(str(tmp_path / "source.png"))
    page.open_accordion(ours(tab, "enable"))
    page.set(ours(tab, "native_guard"), False)
    wait_for_line(page, tab, r"^first pass 512x512: SD1\.x · T1 0\.4")
    resize_tab(page, "Resize by")
    wait_for_line(page, tab, r"^first pass 320x256: ")          # scale 1 of the source image
    page.set("img2img_scale", 2)
    wait_for_line(page, tab, r"^first pass 640x512: SD1\.x · T1 0\.4")
    resize_tab(page, "Resize to")
    wait_for_line(page, tab, r"^first pass 512x512: ")


def test_the_line_shows_what_the_engine_then_uses(page, webui_ui, restore_checkpoint):
    tab = "txt2img"
    page.open_accordion(ours(tab, "enable"))
    page.set(ours(tab, "native_guard"), False)
    small(page, tab)
    for checkpoint, preset in (("tiny-sd15", "SD1.x"), ("tiny-sdxl", "SDXL")):
        page.set("setting_sd_model_checkpoint", checkpoint_titles(webui_ui)[checkpoint])
        shown = wait_for_line(page, tab, rf"^first pass 256x256: ({re.escape(preset)}) · T1 ([\d.]+), T2 ([\d.]+)"
                                         r"(, aggressive)? · MSW-MSA$")
        used = infotext_values(page.generate(tab)["infotexts"][0])
        assert (used["HiDiffusion preset"], float(used["HiDiffusion T1"]), float(used["HiDiffusion T2"]),
                used["HiDiffusion aggressive"]) == (shown[1], float(shown[2]), float(shown[3]), str(bool(shown[4])))
        assert [page.get(ours(tab, t)) for t in ("t1", "t2")] == [float(shown[2]), float(shown[3])]


def test_paste_back_through_the_prompt_and_png_info(page, tmp_path):
    tab = "txt2img"
    small(page, tab)
    choose(page, tab, CHOSEN)
    generated = page.generate(tab)
    infotext = generated["infotexts"][0]
    assert infotext_values(infotext) == CHOSEN_INFOTEXT
    png = page.download(page.images(tab)[0], tmp_path / "generated.png")
    assert Image.open(png).info["parameters"] == infotext

    page.open()                                                 # every control back to its default
    page.set("txt2img_prompt", infotext)
    page.find("#txt2img_tools #paste").click()
    wait_for_values(page, tab, CHOSEN, "the paste did not restore the controls")

    page.set("txt2img_prompt", PLAIN_INFOTEXT)                 # no HiDiffusion keys: off, defaults
    page.find("#txt2img_tools #paste").click()
    page.wait(lambda: not page.get(ours(tab, "enable")), "an infotext without our keys left HiDiffusion on")
    wait_for_values(page, tab, DEFAULTS, "not the defaults")

    page.tab("pnginfo")
    page.find("#pnginfo_image input[type=file]").send_keys(str(png))
    page.wait(lambda: "HiDiffusion" in page.find("#tab_pnginfo").text, "PNG Info did not read the image")
    page.find("#tab_pnginfo #txt2img_tab").click()
    page.wait(lambda: page.find("#tab_txt2img").is_displayed(), "Send to txt2img did not switch tabs")
    wait_for_values(page, tab, CHOSEN, "PNG Info did not restore the controls")


def test_send_to_img2img_and_inpaint_carry_the_settings(page):
    small(page, "txt2img")
    choose(page, "txt2img", CHOSEN)
    page.generate("txt2img")
    for button in ("img2img", "inpaint"):
        page.find(f"#txt2img_send_to_{button}").click()
        page.wait(lambda: page.find("#tab_img2img").is_displayed(), f"Send to {button} did not switch tabs")
        wait_for_values(page, "img2img", CHOSEN, f"Send to {button} did not carry the settings")
        page.set("img2img_prompt", PLAIN_INFOTEXT)             # back to the defaults for the next button
        page.find("#img2img_tools #paste").click()
        wait_for_values(page, "img2img", DEFAULTS, "img2img did not return to the defaults")
        page.tab("txt2img")


def test_xyz_plot_over_t1_from_the_page(page):
    tab = "txt2img"
    small(page, tab)
    page.open_accordion(ours(tab, "enable"))
    page.set(ours(tab, "native_guard"), False)
    page.set("script_list", "X/Y/Z plot")
    page.set("script_txt2img_xyz_plot_x_type", "HiDiffusion T1")
    page.set("script_txt2img_xyz_plot_x_values", "0.2, 0.7")
    page.set("script_txt2img_xyz_plot_include_lone_images", True)
    generated = page.generate(tab)
    cells = [infotext_values(text) for text in generated["infotexts"][1:]]
    assert [cell["HiDiffusion T1"] for cell in cells] == ["0.2", "0.7"]
    assert all(cell["HiDiffusion preset"] == "SD1.x" for cell in cells)
    folder = screenshot(page.show(page.find(f"#{tab}_gallery")), "xyz-t1-page.png").parent
    grid, *cells = [Image.open(page.download(src, folder / f"xyz-t1-{i}.png"))
                    for i, src in enumerate(page.images(tab))]
    assert grid.width == 2 * 256 and grid.height > 256          # two cells side by side under their labels
    assert len(cells) == 2 and cells[0].tobytes() != cells[1].tobytes()


def test_every_control_explains_itself_on_hover(page):
    from selenium.webdriver import ActionChains
    tab = "txt2img"
    page.open_accordion(ours(tab, "enable"))
    titles = {}
    for name in NAMES:
        control = page.show(page.find(f"#{ours(tab, name)}" + (" .label-wrap" if name == "enable" else "")))
        ActionChains(page.driver).move_to_element(control).perform()
        titles[name] = page.script("var box = arguments[0].getBoundingClientRect();"
                                   "var x = box.x + box.width / 2, y = box.y + box.height / 2;"
                                   "var under = document.elementFromPoint(x, y).closest('[title]');"
                                   "return under ? under.title : '';", control)
    assert all(len(title) > 30 for title in titles.values()), titles
    assert len(set(titles.values())) == len(NAMES), titles


def test_paste_back_in_forges_page(forge_ui, chromium):
    """Forge's page (gradio 4; Forge Classic's gradio 3): an infotext pasted through the prompt box (↙)
    sets every control of ours, and one without our keys turns HiDiffusion off."""
    page = Page(chromium, forge_ui.url).open()
    infotext = PLAIN_INFOTEXT + ", " + ", ".join(f"{key}: {value}" for key, value in CHOSEN_INFOTEXT.items())
    page.set("txt2img_prompt", infotext)
    page.find("#txt2img_tools #paste").click()
    wait_for_values(page, "txt2img", CHOSEN, "the paste did not restore the controls")
    page.set("txt2img_prompt", PLAIN_INFOTEXT)
    page.find("#txt2img_tools #paste").click()
    wait_for_values(page, "txt2img", DEFAULTS, "not the defaults")
