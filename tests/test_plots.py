"""RESULTS.md's plots: ticks at the measured values, seeds shown beside mean ± std, a distinct
colour per series, and y ranges that do not magnify seed noise into a slope."""
import pytest

from spatialssl.studies.plots import STYLES, Panel, padded_limits

plt = pytest.importorskip("matplotlib.pyplot")


def test_a_narrow_range_is_widened_to_the_minimum_span_around_the_data():
    low, high = padded_limits([40.1, 40.3, 40.5], minimum_span=10.0)
    assert high - low >= 10.0 and low < 40.1 and high > 40.5
    assert (low + high) / 2 == pytest.approx(40.3)  # centred: no side is favoured
    wide = padded_limits([10.0, 60.0], minimum_span=10.0)
    assert wide[0] < 10.0 and wide[1] > 60.0 and wide[1] - wide[0] == pytest.approx(55.0)  # 10% margin
    assert padded_limits([0.1, 0.2], minimum_span=0.5, floor=0.0)[0] == 0.0  # errors never below zero


def test_a_panel_ticks_the_measured_values_and_shows_every_seed():
    figure, axis = plt.subplots()
    try:
        panel = Panel(axis, [0, 1, 3, 5, 9])
        panel.add([[40.0, 41.0], [42.0, 42.5], [], [44.0, 45.0], [45.0, 45.2]], "a")
        panel.add([[30.0], [31.0], [32.0], [33.0], [34.0]], "b")
        panel.finish("accuracy", minimum_span=10.0)
        assert list(axis.get_xticks()) == [0, 1, 3, 5, 9]
        low, high = axis.get_ylim()
        assert high - low >= 10.0 and low < 30.0 and high > 45.2
        dots = [c for c in axis.collections if c.get_offsets().shape[0] in (8, 5)]
        assert sorted(c.get_offsets().shape[0] for c in dots) == [5, 8]  # 8 seeds of "a", 5 of "b"
        bars = {c.get_label(): c.lines[0].get_color() for c in axis.containers}
        assert set(bars) == {"a (mean ± std)", "b (mean ± std)"} and len(set(bars.values())) == 2
    finally:
        plt.close(figure)


def test_the_palette_gives_every_series_its_own_colour_and_marker():
    assert len({c for c, _ in STYLES}) == len(STYLES) == len({m for _, m in STYLES})
