"""Device profiles and the virtual clock of one round: exact ratios, seeded fleets, one-line
errors for bad files."""

import pytest

from clients.devices import (
    DeviceClass,
    DeviceProfileError,
    classes_of,
    load_profiles,
    round_time,
)

TWO = """
[[class]]
name = "fast"
share = 0.25
gflops-fp32 = 40.0
gflops-int8 = 120.0
memory-gib = 8
uplink-mbps = 20
downlink-mbps = 100
rtt-ms = 40
compute-w = 4.0
radio-w = 2.0
source = "illustrative"

[[class]]
name = "slow"
share = 0.75
gflops-fp32 = 10.0
gflops-int8 = 30.0
memory-gib = 4
uplink-mbps = 5
downlink-mbps = 25
rtt-ms = 40
"""


@pytest.fixture
def two(tmp_path):
    path = tmp_path / "fleet.toml"
    path.write_text(TWO)
    return load_profiles(path)


def test_a_slower_class_takes_longer_by_exactly_its_profiles_ratio(two):
    fast, slow = two
    work = round_time(fast, 0, 8 * 10**9, 0), round_time(slow, 0, 8 * 10**9, 0)
    assert work[0].compute_s == 0.2 and work[1].compute_s == 0.8  # 8 GFLOP at 40 and 10 GFLOP/s
    assert work[1].compute_s / work[0].compute_s == fast.gflops_fp32 / slow.gflops_fp32
    up = round_time(fast, 0, 0, 10**6), round_time(slow, 0, 0, 10**6)  # 8 Mbit up at 20 and 5 Mbps
    assert (up[0].radio_s, up[1].radio_s) == (0.4, 1.6)
    assert up[0].latency_s == up[1].latency_s == 0.08  # a round trip each way
    assert round_time(slow, 0, 3 * 10**10, 0, quantized=True).compute_s == 1.0  # int8: 30 GFLOP/s


def test_a_round_adds_its_parts_and_energy_needs_power_figures(two):
    fast, slow = two
    t = round_time(fast, 25 * 10**5, 4 * 10**9, 5 * 10**5)  # 20 Mbit down, 4 up
    assert (t.latency_s, t.radio_s, t.compute_s) == (0.08, 0.2 + 0.2, 0.1)
    assert t.total_s == pytest.approx(0.58, abs=1e-12)
    assert t.energy_j == pytest.approx(0.1 * 4.0 + (0.4 + 0.08) * 2.0, abs=1e-12)
    assert round_time(slow, 1, 1, 1).energy_j is None


def test_the_fleet_is_a_seeded_draw_over_the_shares(two):
    fleet = classes_of(two, 4000, seed=7)
    assert fleet == classes_of(two, 4000, seed=7)  # same seed, same fleet
    assert fleet != classes_of(two, 4000, seed=8)
    assert abs(fleet.count(0) / 4000 - 0.25) < 0.03  # about its share


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("share = 0.75", "share = 0.7"), "shares sum to 0.95, not 1"),
    (lambda t: t.replace("gflops-fp32 = 10.0", "gflops-fp32 = 0"), "gflops-fp32 must be > 0"),
    (lambda t: t.replace("rtt-ms = 40\n", "rtt-ms = -1\n", 1), "rtt-ms must be >= 0"),
    (lambda t: t.replace("uplink-mbps = 5", "uplink-mbps = \"fast\""), "must be a number"),
    (lambda t: t.replace("uplink-mbps = 5", "uplink = 5"), "unknown field 'uplink'"),
    (lambda t: t.replace('name = "slow"', 'name = "fast"'), "class names repeat"),
    (lambda t: t.replace("[[class]]", "[[classes]]"), "no [[class]] tables"),
    (lambda t: t + "[[", "not TOML"),
])
def test_bad_profile_files_are_one_line_errors(tmp_path, edit, message):
    path = tmp_path / "bad.toml"
    path.write_text(edit(TWO))
    with pytest.raises(DeviceProfileError, match=message.replace("[", r"\[")):
        load_profiles(path)
    with pytest.raises(DeviceProfileError, match="cannot read device profiles"):
        load_profiles(tmp_path / "missing.toml")


def test_a_class_without_latency_or_power_is_valid():
    device = DeviceClass("x", 1.0, 1.0, 1.0, 1.0, 8.0, 8.0, 0.0)
    assert round_time(device, 10**6, 10**9, 10**6).total_s == 3.0  # 1 s down, 1 s work, 1 s up
