"""Prices in USD: Singapore's as published, other regions' CNY at the seeds' rate."""
import pytest

from qwen_image_dashscope.api.catalog.models import MODELS, spec_for
from qwen_image_dashscope.api.catalog.pricing import CNY_PER_USD, cost_usd, estimate_usd, usd_price
from qwen_image_dashscope.api.schema import Usage

SG, BJ, US, FRA, TYO, HK = ("ap-southeast-1", "cn-beijing", "us-east-1", "eu-central-1",
                            "ap-northeast-1", "cn-hongkong")


def usd(cny):
    return cny / CNY_PER_USD


def test_the_rate_is_the_one_the_seeds_imply():
    assert CNY_PER_USD == pytest.approx(6.976, abs=5e-4)
    assert estimate_usd(MODELS["qwen-image-plus"], BJ, 1) == 0.028671  # as in the seed


@pytest.mark.parametrize("model, singapore, beijing_cny", [
    ("qwen-image-plus", 0.03, 0.2),
    ("qwen-image-plus-2026-01-09", 0.03, 0.2),
    ("qwen-image", 0.035, 0.25),
    ("qwen-image-max", 0.075, 0.5),
    ("qwen-image-2.0", 0.035, 0.2),
    ("qwen-image-2.0-pro-2026-06-22", 0.075, 0.5),
    ("qwen-image-edit-max", 0.075, 0.5),
    ("qwen-image-edit-plus-2025-12-15", 0.03, 0.2),
    ("qwen-image-edit", 0.045, 0.3),
])
def test_one_price_models(model, singapore, beijing_cny):
    spec = MODELS[model]
    assert estimate_usd(spec, SG, 2, "1024*1024") == pytest.approx(2 * singapore)
    assert estimate_usd(spec, BJ, 1) == pytest.approx(usd(beijing_cny), abs=1e-6)
    for region in (US, FRA, TYO, HK):  # not listed for these models
        assert estimate_usd(spec, region, 1) is None


def test_3_0_pro_tiers_by_output_area_and_inputs():
    pro = MODELS["qwen-image-3.0-pro"]
    assert estimate_usd(pro, SG, 2, "1024*1024") == pytest.approx(0.08)
    assert estimate_usd(pro, SG, 1, "1500*1500") == pytest.approx(0.04)  # 2,250,000 px: 1K
    assert estimate_usd(pro, SG, 1, "1501*1500") == pytest.approx(0.075)
    assert estimate_usd(pro, SG, 1, "2048*2048") == pytest.approx(0.075)
    assert estimate_usd(pro, SG, 1, None) == pytest.approx(0.075)  # the model picks: upper
    assert estimate_usd(pro, SG, 1, "1024*1024", 3) == pytest.approx(0.04 + 3 * 0.003)
    assert estimate_usd(pro, BJ, 1, "2048*2048", 1) == pytest.approx(usd(0.5) + usd(0.02),
                                                                     abs=1e-6)
    assert estimate_usd(pro, FRA, 1, "1024*1024") == estimate_usd(pro, BJ, 1, "1024*1024")
    assert estimate_usd(pro, TYO, 1) == estimate_usd(pro, BJ, 1)
    assert estimate_usd(pro, US, 1) is None and estimate_usd(pro, HK, 1) is None


def test_3_0_has_one_output_price_and_the_input_price():
    three = MODELS["qwen-image-3.0"]
    assert estimate_usd(three, SG, 1, "2048*2048") == estimate_usd(three, SG, 1, "512*512") == 0.03
    assert estimate_usd(three, SG, 2, None, 2) == pytest.approx(0.066)
    assert usd_price(three, BJ).input == pytest.approx(usd(0.02))


def test_no_official_price_is_an_unknown_cost():
    assert estimate_usd(MODELS["qwen-image-2.1-pro"], SG, 1) is None
    assert estimate_usd(spec_for("qwen-image-9", "text-to-image"), SG, 1) is None
    assert cost_usd(MODELS["qwen-image-2.1-pro"], BJ, Usage(output_images=1), 1) is None


def test_cost_from_what_the_service_reported():
    pro, plus = MODELS["qwen-image-3.0-pro"], MODELS["qwen-image-plus"]
    reported = Usage(output_images=2, input_images=1, width=1024, height=1024,
                     output_tier="qima_output_1k", input_tier="qima_input_1k")
    assert cost_usd(pro, SG, reported, url_count=2) == pytest.approx(2 * 0.04 + 0.003)
    # The tier the service names wins over the size; without either, the upper tier.
    assert cost_usd(pro, SG, Usage(output_images=1, output_tier="qima_output_2k",
                                   width=1024, height=1024), 1) == pytest.approx(0.075)
    assert cost_usd(pro, SG, Usage(output_images=1, width=2048, height=2048), 1) == 0.075
    assert cost_usd(pro, SG, Usage(), url_count=1) == pytest.approx(0.075)
    # Inputs: the service's count, else the caller's.
    assert cost_usd(pro, SG, Usage(output_images=1, output_tier="qima_output_1k"), 1,
                    input_images=2) == pytest.approx(0.046)
    # Billed outputs: usage's count, else the URLs returned.
    assert cost_usd(plus, SG, Usage(), url_count=3) == pytest.approx(0.09)
    assert cost_usd(plus, SG, Usage(output_images=1, width=1328, height=1328),
                    url_count=2) == pytest.approx(0.03)
    assert cost_usd(plus, BJ, Usage(output_images=1), 1) == 0.028671
