"""The API surface in the real webui: script-info, bad payloads, the infotext round trip, XYZ cells."""
import json

import pytest

from webui_host.scenario import assert_xyz_choices, hidiffusion, observed, our_lines, request, xyz
from webui_host.server import decode, info

pytestmark = pytest.mark.webui

LABELS = ["HiDiffusion", "RAU-Net", "MSW-MSA", "Model preset", "Auto T1/T2", "T1", "T2", "Aggressive", "Apply to",
          "Only above native resolution", "RAU upsampling", "Window shift", "Extra args (must stay empty)"]


def test_installed_as_a_user_installs_it(webui):
    """A git clone in extensions/, whose install.py the webui ran without a word (nothing was missing), and
    which the webui loaded. The list comes from the webui's loader through the probe: its own
    /sdapi/v1/extensions also reads each clone's git metadata through a cache, and once, in a cold CI run
    where it came while the startup thread was still loading the model, answered 500 from inside that cache
    (`Extension.from_dict(None)`), which says nothing about this extension."""
    extension = webui.data / "extensions" / "sd-webui-hidiffusion"
    assert (extension / ".git").is_dir() and (extension / "install.py").is_file()
    assert webui.installer_output == ""
    assert "sd-webui-hidiffusion" in webui.probe("extensions")


def test_script_info_lists_the_args_in_the_documented_order(webui):
    infos = [s for s in webui.call("/sdapi/v1/script-info") if s["name"] == "hidiffusion"]
    assert {s["is_img2img"] for s in infos} == {False, True}
    for script in infos:
        assert script["is_alwayson"] and [a["label"] for a in script["args"]] == LABELS
        assert [a["value"] for a in script["args"]] == [False, True, True, "Auto", True, 0.4, 0.0, "Auto", "Both",
                                                       True, "nearest", "random", ""]


@pytest.mark.parametrize("args, message", [
    ([{"enable": True, "t1": "abc"}], "t1: expected a number from 0 to 1 or 'auto', got 'abc'"),
    (["yes please"], "enable: expected true or false, got 'yes please'"),
    ([True, "maybe"], "raunet: expected true or false, got 'maybe'"),
    ([{"enable": True, "t1": "nan"}], "t1: must be between 0 and 1, got 'nan'"),
    ([{"enable": True, "t2": "inf"}], "t2: must be between 0 and 1, got 'inf'"),
    ([{"enable": True, "t1": -0.2}], "t1: must be between 0 and 1, got -0.2"),
    ([{"enable": True, "t2": 1.5}], "t2: must be between 0 and 1, got 1.5"),
    ([{"enable": True, "strength": 2}], "unknown key(s) 'strength'"),
    ([{"enabel": True}], "unknown key(s) 'enabel'"),
    ([True, True, True, "Auto", True, 0.4, 0.0, "Auto", "Both", False, "nearest", "random", "surplus"],
     "too many positional args: HiDiffusion takes 12"),
    ([None], "enable: expected true or false, got None"),
    ([{"enable": None}], "enable: expected true or false, got None"),
    ([{"enable": True, "preset": 3}], "preset: expected one of"),
])
def test_bad_payloads_make_the_image_without_hidiffusion_and_say_why(webui, webui_without_extension, args, message):
    plain = decode(webui_without_extension.txt2img(**request()))
    webui.probe("reset")
    response = webui.call("/sdapi/v1/txt2img", request(alwayson_scripts={"HiDiffusion": {"args": args}}), check=False)
    log = webui.check_log()
    assert "images" in response, response                               # HTTP 200 with the image
    assert decode(response) == plain
    assert not any(observed(c)["rad"] or observed(c)["windowed"] for c in webui.probe("calls"))
    error = info(response)["extra_generation_params"]["HiDiffusion error"]
    assert message in error, error
    lines = our_lines(log)
    assert len(lines) == 1 and message in lines[0] and "generating without HiDiffusion" in lines[0], lines
    assert decode(webui.txt2img(**request())) == plain


def test_null_args_are_the_webuis_to_refuse(webui):
    """`"args": null` never reaches a script: the webui's own argument copy fails on it (HTTP 500)."""
    with webui.expect_error("object of type 'NoneType' has no len()"):
        response = webui.call("/sdapi/v1/txt2img", request(alwayson_scripts={"HiDiffusion": {"args": None}}),
                              check=False)
    assert response["status"] == 500 and "has no len" in response["errors"]


def test_infotext_round_trip_through_the_webuis_own_parser(webui):
    """png-info parses the infotext of an image we made; the `infotext` request field then fills the
    script args through our paste fields (the API path of the paste-back): every setting comes back."""
    chosen = hidiffusion(raunet=True, window_attention=True, preset="SD1.x", t1=0.55, t2=0.25, aggressive="Off",
                         passes="Both", rau_upsample="bicubic", window_shift="rotate")
    original = webui.txt2img(**request(alwayson_scripts=chosen))
    parsed = webui.call("/sdapi/v1/png-info", {"image": "data:image/png;base64," + original["images"][0]})
    text = parsed["info"]
    assert parsed["parameters"]["HiDiffusion T1"] == "0.55"
    ours = {k: v for k, v in info(original)["extra_generation_params"].items() if k.startswith("HiDiffusion")}

    again = webui.txt2img(**request(infotext=text))
    assert {k: v for k, v in info(again)["extra_generation_params"].items() if k.startswith("HiDiffusion")} == ours
    assert decode(again) == decode(original)

    auto = webui.txt2img(**request(alwayson_scripts=hidiffusion()))
    again = webui.txt2img(**request(infotext=info(auto)["infotexts"][0]))
    assert info(again)["extra_generation_params"]["HiDiffusion auto"] == "preset T1 T2 aggressive"
    assert decode(again) == decode(auto)


def test_an_infotext_without_our_keys_turns_hidiffusion_off(webui):
    plain = webui.txt2img(**request())
    response = webui.txt2img(**request(infotext=info(plain)["infotexts"][0]))
    assert "HiDiffusion" not in info(response)["extra_generation_params"]
    assert decode(response) == decode(plain)


@pytest.fixture(params=["webui", "webui_ui"])
def any_mode(request):
    """API-only mode registers XYZ axes at import; UI mode also through on_before_ui."""
    return request.getfixturevalue(request.param)


def test_xyz_cells_carry_their_own_values(any_mode):
    assert_xyz_choices(any_mode)
    args = xyz(any_mode, ("HiDiffusion T1", ["0.2", "0.7"]), ("HiDiffusion", ["True", "False"]))
    response = any_mode.txt2img(**request(script_name="x/y/z plot", script_args=args, alwayson_scripts=hidiffusion()))
    assert len(response["images"]) == 5                        # the grid, then the cells in order
    texts = info(response)["infotexts"][1:]
    cells = [(t1, enabled) for enabled in (True, False) for t1 in ("0.2", "0.7")]
    for text, image, (t1, enabled) in zip(texts, range(1, 5), cells):
        assert (f"HiDiffusion T1: {t1}" in text) == enabled, text
        assert ("HiDiffusion:" in text) == enabled, text
    off = [decode(response, i) for i in (3, 4)]
    assert off[0] == off[1] and decode(response, 1) != decode(response, 2) != off[0]
    plain = any_mode.txt2img(**request())
    assert decode(plain) == off[0]


def test_xyz_refuses_a_plot_with_a_cell_that_cannot_run(webui):
    args = xyz(webui, ("HiDiffusion preset", ["SD1.x", "SDXL"]))
    with webui.expect_error("does not fit this SD1 UNet"):
        response = webui.call("/sdapi/v1/txt2img", request(script_name="x/y/z plot", script_args=args,
                                                           alwayson_scripts=hidiffusion()), check=False)
    assert "does not fit this SD1 UNet" in json.dumps(response), response


def test_t2_above_t1_is_lowered_with_a_note_also_in_xyz_cells(webui):
    response = webui.txt2img(**request(alwayson_scripts=hidiffusion(t1=0.2, t2=0.5)))
    params = info(response)["extra_generation_params"]
    assert (params["HiDiffusion T1"], params["HiDiffusion T2"]) == (0.2, 0.2)
    assert "T2 lowered from 0.5 to T1 0.2" in params["HiDiffusion note"]
    args = xyz(webui, ("HiDiffusion T1", ["0.1", "0.6"]))
    plot = webui.txt2img(**request(script_name="x/y/z plot", script_args=args, alwayson_scripts=hidiffusion(t2=0.4)))
    low, high = info(plot)["infotexts"][1:3]
    assert "HiDiffusion T1: 0.1" in low and "HiDiffusion T2: 0.1" in low and "T2 lowered from 0.4 to T1 0.1" in low
    assert "HiDiffusion T1: 0.6" in high and "HiDiffusion T2: 0.4" in high
