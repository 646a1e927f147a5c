"""The model table: every id Model Studio's pages list, with its kind, interfaces and facts."""
import pytest

from qwen_image_dashscope.api import ValidationError
from qwen_image_dashscope.api.call.limiter import ModelLimits
from qwen_image_dashscope.api.catalog.models import MODELS, models_of, spec_for
from qwen_image_dashscope.api.catalog.pricing import usd_price
from qwen_image_dashscope.api.catalog.regions import REGIONS
from qwen_image_dashscope.api.catalog.specs import (
    ASYNC,
    IMAGE_EDIT,
    IMAGE_GENERATION_PATH,
    SYNC,
    TEXT2IMAGE_PATH,
    TEXT_TO_IMAGE,
    UNIFIED,
)
from qwen_image_dashscope.api.catalog.validation import validate
from qwen_image_dashscope.api.schema import ImageEditRequest, TextToImageRequest

SEED_T2I = ("qwen-image", "qwen-image-plus")
SEED_EDIT = ("qwen-image-edit", "qwen-image-edit-plus", "qwen-image-edit-plus-2025-10-30")
PAGE_T2I = ("qwen-image-max", "qwen-image-max-2025-12-30", "qwen-image-plus-2026-01-09")
PAGE_EDIT = ("qwen-image-edit-max", "qwen-image-edit-max-2026-01-16",
             "qwen-image-edit-plus-2025-12-15")
V2 = ("qwen-image-2.0", "qwen-image-2.0-2026-03-03", "qwen-image-2.0-pro",
      "qwen-image-2.0-pro-2026-06-22", "qwen-image-2.0-pro-2026-04-22",
      "qwen-image-2.0-pro-2026-03-03")
V3 = ("qwen-image-3.0", "qwen-image-3.0-pro")
V21 = ("qwen-image-2.1-pro", "qwen-image-2.1-turbo")
EVERY_ID = SEED_T2I + SEED_EDIT + PAGE_T2I + PAGE_EDIT + V2 + V3 + V21
BJ_SG = {"cn-beijing", "ap-southeast-1"}


def test_every_id_of_the_sheet_is_in_the_table_and_nothing_else():
    assert sorted(MODELS) == sorted(EVERY_ID)
    assert all(spec.id == model and spec.known for model, spec in MODELS.items())


@pytest.mark.parametrize("models, kind", [
    (SEED_T2I + PAGE_T2I, TEXT_TO_IMAGE),
    (SEED_EDIT + PAGE_EDIT, IMAGE_EDIT),
    (V2 + V3 + V21, UNIFIED),
])
def test_kinds(models, kind):
    assert {MODELS[m].kind for m in models} == {kind}


def test_unified_models_serve_both_request_types_and_the_others_one():
    assert set(models_of(TEXT_TO_IMAGE)) == set(SEED_T2I + PAGE_T2I + V2 + V3 + V21)
    assert set(models_of(IMAGE_EDIT)) == set(SEED_EDIT + PAGE_EDIT + V2 + V3 + V21)
    with pytest.raises(ValidationError) as caught:
        spec_for("qwen-image-max", IMAGE_EDIT)
    assert "is a text-to-image model, not image-edit" in str(caught.value)


def test_interfaces_and_async_paths():
    for model in SEED_T2I:
        assert MODELS[model].async_path == TEXT2IMAGE_PATH
        assert MODELS[model].interfaces == (SYNC, ASYNC)
    for model in V3:
        assert MODELS[model].async_path == IMAGE_GENERATION_PATH
    for model in set(EVERY_ID) - set(SEED_T2I) - set(V3):
        assert MODELS[model].async_path is None, model
        assert MODELS[model].interfaces == (SYNC,)


def test_resolve_interface_falls_back_to_sync_with_a_note():
    plus, plus_dated = MODELS["qwen-image-plus"], MODELS["qwen-image-plus-2026-01-09"]
    assert plus.resolve_interface(None) == (ASYNC, None)
    assert plus.resolve_interface(SYNC) == (SYNC, None)
    assert plus_dated.resolve_interface(None) == (SYNC, None)
    interface, note = plus_dated.resolve_interface(ASYNC)
    assert interface == SYNC and "has no asynchronous interface" in note
    with pytest.raises(ValidationError) as caught:
        plus.resolve_interface("batch")
    assert caught.value.parameter == "interface" and "Allowed: sync, async" in str(caught.value)


def test_n_ranges():
    assert {MODELS[m].n_max for m in SEED_T2I + PAGE_T2I + ("qwen-image-edit",)} == {1}
    assert {MODELS[m].n_max for m in V2 + V3 + PAGE_EDIT + SEED_EDIT[1:]} == {6}
    assert MODELS["qwen-image-2.1-pro"].n_max is None  # only third parties say 1-6


def test_size_rules_and_defaults():
    legacy, newer = MODELS["qwen-image-plus"].t2i_size, MODELS["qwen-image-max"].t2i_size
    assert legacy.default == "1328*1328" and newer.default == "1664*928"
    assert {"1472*1140", "1140*1472", "1472*1104", "1104*1472"} <= set(legacy.sizes)
    assert "1472*1104" in newer.sizes and newer.aliases["1472*1140"] == "1472*1104"
    assert MODELS["qwen-image-2.0"].default_size(TEXT_TO_IMAGE) == "2048*2048"
    assert MODELS["qwen-image-2.0"].default_size(IMAGE_EDIT) is None  # near the input's aspect
    assert MODELS["qwen-image-2.0"].edit_size.multiple == 16
    assert MODELS["qwen-image-edit-max"].edit_size.side == (512, 2048)
    for model in V3:  # omitted: the model decides
        assert MODELS[model].default_size(TEXT_TO_IMAGE) is None
        assert MODELS[model].t2i_size.max_aspect == 8
    edit = MODELS["qwen-image-edit"]
    assert edit.edit_size is None and "size" not in edit.takes
    assert "prompt_extend" not in edit.takes


def test_parameters_taken():
    v3_only = {"prompt_extend_mode", "enable_thinking"}
    for model in V3:
        assert v3_only <= MODELS[model].takes
    for model in SEED_T2I + PAGE_T2I + V2 + PAGE_EDIT + SEED_EDIT[1:]:
        assert MODELS[model].takes == {"negative_prompt", "size", "prompt_extend",
                                       "watermark", "seed"}, model


def test_prompt_limits():
    for model in SEED_T2I + SEED_EDIT:
        spec = MODELS[model]
        assert (spec.prompt.limit, spec.prompt.unit) == (800, "characters")
        assert (spec.negative_prompt.limit, spec.negative_prompt.unit) == (500, "characters")
    assert (MODELS["qwen-image-2.0"].prompt.limit, MODELS["qwen-image-2.0"].prompt.unit) == (
        1300, "tokens")
    assert MODELS["qwen-image-3.0"].prompt.limit == 4500
    assert (not MODELS["qwen-image-3.0"].prompt.cut
            and MODELS["qwen-image-3.0"].negative_prompt is None)


def test_input_images():
    assert MODELS["qwen-image-2.1-pro"].inputs.count == (1, 10)
    for model in V2 + V3 + SEED_EDIT + PAGE_EDIT:
        assert MODELS[model].inputs.count == (1, 3)
    assert MODELS["qwen-image-edit-plus"].inputs.side_required
    assert not MODELS["qwen-image-edit-max"].inputs.side_required  # "recommended"
    assert not MODELS["qwen-image-3.0"].agent_with_images


def test_regions():
    for model in V3:
        assert MODELS[model].regions == set(REGIONS)
    for model in SEED_T2I + SEED_EDIT + PAGE_T2I + PAGE_EDIT + V2:
        assert MODELS[model].regions == BJ_SG
    assert MODELS["qwen-image-2.1-pro"].regions is None  # no official page lists any


def test_rate_limits():
    plus, edit_plus, max_ = (MODELS[m] for m in ("qwen-image-plus", "qwen-image-edit-plus",
                                                 "qwen-image-max"))
    assert (plus.rate.requests, plus.rate.period, plus.rate.concurrent_tasks) == (2, 1.0, 2)
    assert plus.rate.sync_limited is True  # the text-to-image reference: 2 at once
    assert edit_plus.rate.sync_limited is False  # the edit reference: 同步介面無限制
    assert max_.rate.requests / max_.rate.period == pytest.approx(2 / 60)
    three = MODELS["qwen-image-3.0"]
    assert three.rate.requests is None
    assert (ModelLimits.from_spec(three).requests, ModelLimits.from_spec(three).period) == (2, 1.0)
    assert any("rate limits" in fact for fact in three.unconfirmed)


def test_unconfirmed_facts_are_listed_for_info():
    pro = MODELS["qwen-image-2.1-pro"]
    assert not pro.documented and any("10 reference images" in f for f in pro.unconfirmed)
    assert any("2560*2560" in fact for fact in MODELS["qwen-image-3.0"].unconfirmed)
    assert any("1 request per minute" in f for f in MODELS["qwen-image-3.0-pro"].unconfirmed)
    for model in SEED_T2I + ("qwen-image-edit",):
        assert MODELS[model].unconfirmed == () and MODELS[model].reported == ()


@pytest.mark.parametrize("model", EVERY_ID)
def test_a_request_with_only_the_required_fields_is_valid_for_every_model(model):
    spec = MODELS[model]
    region = "cn-beijing" if spec.regions else None
    for family, request in ((TEXT_TO_IMAGE, TextToImageRequest("a cat", model=model)),
                            (IMAGE_EDIT, ImageEditRequest("make it blue", ("https://e.x/a.png",),
                                                          model=model))):
        if spec.accepts(family):
            checked = validate(request, region)
            assert checked.spec is spec
            assert [n for n in checked.notes if "only some of its limits" not in n] == []


def test_2_1_turbo_is_a_reported_model_of_the_2_1_family_without_price_or_limits():
    turbo = MODELS["qwen-image-2.1-turbo"]
    assert turbo.kind == UNIFIED and not turbo.documented and turbo.known
    # The parameters reported for it are sent; 3.0's rewriting switches are not.
    assert turbo.takes == {"negative_prompt", "size", "prompt_extend", "watermark", "seed"}
    assert turbo.prices == {} and usd_price(turbo, "ap-southeast-1") is None
    assert turbo.n_max is None and turbo.inputs.count == (1, None) and turbo.regions is None
    assert any("price: none published" == fact for fact in turbo.unconfirmed)
    # Reported limits are notes, never refusals: the service judges them.
    checked = validate(TextToImageRequest("a cat", model=turbo.id, negative_prompt="n" * 501,
                                          size="4096*4096", n=9))
    assert checked.request.size == "4096*4096" and checked.request.n == 9
    notes = " ".join(checked.notes)
    assert "Unconfirmed limit: negative_prompt: is 501 characters long" in notes
    assert "Unconfirmed limit: size: 4096*4096 is 16,777,216 pixels" in notes
    checked = validate(TextToImageRequest("a cat", model=turbo.id, prompt_extend_mode="agent"))
    assert checked.request.prompt_extend_mode is None
    assert "prompt_extend_mode is not sent: qwen-image-2.1-turbo does not take it" in checked.notes


def test_unknown_ids_get_only_the_common_rules():
    t2i, edit = spec_for("qwen-image-9", TEXT_TO_IMAGE), spec_for("qwen-image-edit-9", IMAGE_EDIT)
    assert not t2i.known and t2i.async_path == TEXT2IMAGE_PATH and t2i.n_max is None
    assert edit.inputs.count == (1, None) and edit.regions is None and edit.prices == {}


def test_what_the_limiter_and_the_nodes_read_of_a_spec():
    plus, edit = MODELS["qwen-image-plus"], MODELS["qwen-image-edit"]
    assert plus.default_interface == ASYNC and plus.n_max == 1
    assert "prompt_extend" in plus.takes and "prompt_extend" not in edit.takes
    limits = ModelLimits.from_spec(plus)
    assert (limits.requests / limits.period, plus.concurrent_tasks) == (2.0, 2)
    assert usd_price(plus, "ap-southeast-1").output == 0.03
    assert MODELS["qwen-image-2.1-pro"].n_max is None  # not published: the service decides
    assert usd_price(MODELS["qwen-image-3.0-pro"], "ap-southeast-1").output_2k == 0.075
