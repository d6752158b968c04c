"""panns_infer.events: framewise probabilities to events, and events to TSV / JSON files."""

from __future__ import annotations

import csv
import importlib
import io
import json
import os
import re
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from panns_infer import Framewise
from panns_infer import results as results_module
from panns_infer.errors import InvalidArgumentError, PannsError
from panns_infer.events import Event, detect_events, events_to_json, events_to_tsv
from panns_infer.results import Timeline

HOP = 0.01


def column(*values: float) -> np.ndarray:
    """A (frames, 1) probability matrix."""
    return np.asarray(values, dtype=np.float64)[:, None]


def spans(events: list[Event]) -> list[tuple[str, float, float]]:
    return [(e.label, e.onset, e.offset) for e in events]


# --- detection ---------------------------------------------------------------------------


def test_single_block():
    p = np.zeros((10, 2))
    p[3:7, 1] = [0.6, 0.9, 0.8, 0.7]
    assert detect_events(p, ["a", "b"], HOP) == [Event("b", 0.03, 0.07, 0.9)]


def test_frame_t_covers_t_hop_to_t_plus_one_hop():
    events = detect_events(column(0, 1, 0), ["a"], 0.32)
    assert spans(events) == [("a", 0.32, 0.64)]


def test_event_at_first_frame_and_event_to_last_frame():
    events = detect_events(column(0.9, 0.9, 0, 0, 0, 0, 0, 0, 0.7, 0.7), ["a"], HOP)
    assert spans(events) == [("a", 0.0, 0.02), ("a", 0.08, 0.1)]


def test_event_over_every_frame():
    assert spans(detect_events(column(0.8, 0.8, 0.8), ["a"], HOP)) == [("a", 0.0, 0.03)]


def test_duration_clips_the_last_offset_and_drops_events_after_it():
    p = column(0, 0, 0, 0, 0, 0, 0, 0, 0.7, 0.7)
    assert spans(detect_events(p, ["a"], HOP, duration=0.095)) == [("a", 0.08, 0.095)]
    assert detect_events(p, ["a"], HOP, duration=0.08) == []
    assert spans(detect_events(p, ["a"], HOP, duration=5.0)) == [("a", 0.08, 0.1)]


def test_probability_equal_to_the_threshold_is_active():
    below = np.nextafter(0.5, 0.0)
    events = detect_events(column(0.5, below, 0.5), ["a"], HOP, threshold=0.5)
    assert spans(events) == [("a", 0.0, 0.01), ("a", 0.02, 0.03)]


def test_float32_ties_compare_in_the_probabilities_dtype():
    p = np.array([[0.7], [0.1]], dtype=np.float32)   # float32(0.7) < 0.7 as a float64
    assert spans(detect_events(p, ["a"], HOP, threshold=0.7)) == [("a", 0.0, 0.01)]


def test_hysteresis_keeps_the_event_through_a_dip_and_ends_it_below_the_offset_threshold():
    p = column(0.1, 0.6, 0.4, 0.6, 0.2, 0.1)
    assert spans(detect_events(p, ["a"], HOP, threshold=0.5, offset_threshold=0.3)) == [("a", 0.01, 0.04)]
    # without hysteresis the dip to 0.4 splits it in two
    assert spans(detect_events(p, ["a"], HOP, threshold=0.5)) == [("a", 0.01, 0.02), ("a", 0.03, 0.04)]


def test_hysteresis_starts_at_the_onset_threshold_not_at_the_offset_threshold():
    p = column(0.4, 0.4, 0.6, 0.4, 0.1, 0.4, 0.4, 0.1)
    # frames 0-1 are above the offset threshold but the event only starts at frame 2; the
    # run at frames 5-6 never reaches the onset threshold and holds no event
    assert spans(detect_events(p, ["a"], HOP, threshold=0.5, offset_threshold=0.3)) == [("a", 0.02, 0.04)]


def test_median_filter_removes_a_one_frame_spike_and_fills_a_one_frame_gap():
    spike = column(0, 0, 0, 0.9, 0, 0, 0)
    assert len(detect_events(spike, ["a"], HOP)) == 1
    assert detect_events(spike, ["a"], HOP, median_filter=0.03) == []
    gap = column(0.8, 0.8, 0.8, 0.0, 0.8, 0.8, 0.8)
    assert len(detect_events(gap, ["a"], HOP)) == 2
    assert spans(detect_events(gap, ["a"], HOP, median_filter=0.03)) == [("a", 0.0, 0.07)]


def test_median_filter_width_is_rounded_to_an_odd_number_of_frames():
    p = column(0, 0, 0.9, 0.9, 0, 0, 0)   # a 2-frame block survives 3 frames, not 5
    assert len(detect_events(p, ["a"], HOP, median_filter=0.02)) == 1   # 2 frames -> 3
    assert detect_events(p, ["a"], HOP, median_filter=0.04) == []       # 4 frames -> 5
    assert len(detect_events(p, ["a"], HOP, median_filter=0.01)) == 1   # 1 frame: no filter
    assert len(detect_events(p, ["a"], HOP, median_filter=0.0)) == 1


def test_median_filter_of_33_frames_is_a_no_op_on_decision_level_output():
    # the decision-level checkpoints hold each output for 32 frames (see the module docstring)
    torch = pytest.importorskip("torch")
    from panns_infer.models.blocks import upsample_framewise

    segments = torch.from_numpy(np.random.default_rng(0).random((1, 12, 6)))
    held = upsample_framewise(segments, 12 * 32 + 5, 32)[0].numpy()
    names = list("abcdef")
    assert detect_events(held, names, HOP, median_filter=0.33) == detect_events(held, names, HOP)
    assert detect_events(held, names, HOP, median_filter=0.65) != detect_events(held, names, HOP)


def test_score_is_the_max_probability_within_the_event():
    events = detect_events(column(0.2, 0.55, 0.97, 0.6, 0.2, 0.99), ["a"], HOP, threshold=0.5)
    assert [e.score for e in events] == [0.97, 0.99]


def test_min_duration_drops_short_events_and_keeps_one_exactly_that_long():
    p = column(0.9, 0, 0.9, 0.9, 0.9, 0, 0.9, 0.9)
    events = detect_events(p, ["a"], HOP, min_duration=0.03)
    assert spans(events) == [("a", 0.02, 0.05)]


def test_min_gap_merges_events_of_one_class_separated_by_less():
    p = np.zeros((10, 2))
    p[:, 0] = [0.9, 0.9, 0, 0.6, 0, 0, 0.8, 0, 0, 0]
    p[:, 1] = [0, 0, 0, 0, 0, 0, 0, 0, 0.7, 0.7]
    events = detect_events(p, ["a", "b"], HOP, min_gap=0.015)
    assert spans(events) == [("a", 0.0, 0.04), ("a", 0.06, 0.07), ("b", 0.08, 0.1)]
    assert events[0].score == 0.9
    # a gap of 0.02 s is not less than min_gap=0.02: no merge; 0.03 s merges everything of "a"
    assert spans(detect_events(p, ["a", "b"], HOP, min_gap=0.02, classes="a")) == \
        [("a", 0.0, 0.04), ("a", 0.06, 0.07)]
    assert spans(detect_events(p, ["a", "b"], HOP, min_gap=0.021, classes="a")) == [("a", 0.0, 0.07)]


def test_event_starting_at_the_clip_end_is_dropped_whatever_min_duration():
    # clipped to duration=0.02 it would last 0 s, which a min_duration below the 1e-9 s
    # tolerance would keep
    p = column(0, 0, 0.9)
    assert detect_events(p, ["a"], HOP, duration=0.02) == []
    assert detect_events(p, ["a"], HOP, duration=0.02, min_duration=1e-12) == []


def test_min_gap_then_min_duration():
    # two 1-frame events are each shorter than min_duration but merge into a long enough one
    p = column(0.9, 0, 0.9, 0, 0, 0, 0.9)
    assert spans(detect_events(p, ["a"], HOP, min_gap=0.015, min_duration=0.03)) == [("a", 0.0, 0.03)]


def test_per_class_thresholds_as_a_dict():
    p = np.full((3, 3), 0.4)
    events = detect_events(p, ["a", "b", "c"], HOP, threshold={"b": 0.3})
    assert [e.label for e in events] == ["b"]            # a and c keep the default 0.5
    events = detect_events(p, ["a", "b", "c"], HOP, threshold={"a": 0.3, "c": 0.4})
    assert [e.label for e in events] == ["a", "c"]


def test_per_class_thresholds_as_an_array():
    p = np.full((3, 3), 0.4)
    events = detect_events(p, ["a", "b", "c"], HOP, threshold=np.array([0.5, 0.4, 0.3]))
    assert [e.label for e in events] == ["b", "c"]


def test_per_class_offset_thresholds():
    p = np.array([[0.6, 0.6], [0.35, 0.35], [0.1, 0.1]])
    events = detect_events(p, ["a", "b"], HOP, offset_threshold={"a": 0.3})
    assert spans(events) == [("a", 0.0, 0.02), ("b", 0.0, 0.01)]


def test_classes_subset():
    p = np.full((2, 3), 0.9)
    assert [e.label for e in detect_events(p, ["a", "b", "c"], HOP, classes=["c", "a"])] == ["a", "c"]
    assert [e.label for e in detect_events(p, ["a", "b", "c"], HOP, classes="b")] == ["b"]
    assert detect_events(p, ["a", "b", "c"], HOP, classes=[]) == []


def test_events_are_sorted_by_onset_then_label():
    p = np.zeros((4, 3))
    p[2:, 0] = 0.9    # "z" at 0.02
    p[0:, 1] = 0.9    # "y" at 0.00
    p[2:, 2] = 0.9    # "a" at 0.02
    assert [(e.onset, e.label) for e in detect_events(p, ["z", "y", "a"], HOP)] == \
        [(0.0, "y"), (0.02, "a"), (0.02, "z")]


def test_no_events_and_empty_input():
    assert detect_events(np.zeros((50, 4)), list("abcd"), HOP) == []
    assert detect_events(np.zeros((0, 4)), list("abcd"), HOP) == []
    assert detect_events(np.zeros((0, 0)), [], HOP) == []


def test_times_have_no_float_noise():
    p = np.zeros((10, 1))
    p[3:7] = 1
    (event,) = detect_events(p, ["a"], 0.01)
    assert (event.onset, event.offset, event.duration) == (0.03, 0.07, 0.04)


@pytest.mark.parametrize("probabilities, names, hop, options", [
    (np.zeros(5), ["a"], HOP, {}),                                 # 1-D
    (np.zeros((2, 2, 2)), ["a", "b"], HOP, {}),                    # 3-D
    (np.array([[0.1], [np.nan]]), ["a"], HOP, {}),                 # NaN
    (np.array([["x"]]), ["a"], HOP, {}),                           # not numbers
    (np.zeros((3, 2)), ["a"], HOP, {}),                            # too few names
    (np.zeros((3, 1)), "a", HOP, {}),                              # a string, not a list
    (np.zeros((3, 1)), ["a"], 0, {}),
    (np.zeros((3, 1)), ["a"], -0.01, {}),
    (np.zeros((3, 1)), ["a"], float("nan"), {}),
    (np.zeros((3, 1)), ["a"], "0.01", {}),
    (np.zeros((3, 1)), ["a"], HOP, {"threshold": 1.5}),
    (np.zeros((3, 1)), ["a"], HOP, {"threshold": -0.1}),
    (np.zeros((3, 1)), ["a"], HOP, {"threshold": float("nan")}),
    (np.zeros((3, 1)), ["a"], HOP, {"threshold": True}),
    (np.zeros((3, 1)), ["a"], HOP, {"threshold": "0.5"}),
    (np.zeros((3, 1)), ["a"], HOP, {"threshold": None}),
    (np.zeros((3, 2)), ["a", "b"], HOP, {"threshold": [0.5, 0.5, 0.5]}),   # wrong length
    (np.zeros((3, 2)), ["a", "b"], HOP, {"threshold": [0.5, 2.0]}),
    (np.zeros((3, 1)), ["a"], HOP, {"threshold": {"A": 0.5}}),              # unknown class
    (np.zeros((3, 1)), ["a"], HOP, {"threshold": {"a": 2}}),
    (np.zeros((3, 1)), ["a"], HOP, {"threshold": 0.3, "offset_threshold": 0.5}),
    (np.zeros((3, 1)), ["a"], HOP, {"median_filter": -0.1}),
    (np.zeros((3, 1)), ["a"], HOP, {"min_duration": -1}),
    (np.zeros((3, 1)), ["a"], HOP, {"min_gap": float("nan")}),
    (np.zeros((3, 1)), ["a"], HOP, {"duration": -1.0}),
    (np.zeros((3, 1)), ["a"], HOP, {"classes": ["b"]}),
])
def test_invalid_arguments(probabilities, names, hop, options):
    with pytest.raises(InvalidArgumentError) as info:
        detect_events(probabilities, names, hop, **options)
    assert isinstance(info.value, ValueError) and isinstance(info.value, PannsError)


def test_unknown_class_error_suggests_the_close_name():
    with pytest.raises(InvalidArgumentError, match=r"'Speach'.*did you mean 'Speech'"):
        detect_events(np.zeros((2, 2)), ["Speech", "Dog"], HOP, classes=["Speach"])


def test_offset_threshold_error_names_the_class():
    with pytest.raises(InvalidArgumentError, match=r"'b'.*0\.6 > 0\.5"):
        detect_events(np.zeros((2, 2)), ["a", "b"], HOP, threshold={"a": 0.7}, offset_threshold=0.6)


def test_event_validation_and_to_dict():
    with pytest.raises(InvalidArgumentError):
        Event("a", 1.0, 0.5, 0.9)
    assert Event("a", 0.5, 1.0, 0.9).to_dict() == {"label": "a", "onset": 0.5, "offset": 1.0, "score": 0.9}


def test_zero_length_event_is_valid():
    assert Event("a", 1.0, 1.0, 0.5).duration == 0.0


def test_integer_probabilities_are_compared_as_numbers():
    # 0/1 integer decisions: the default threshold 0.5 must not be truncated to the integer 0
    p = np.array([[0], [1], [1], [0]])
    assert detect_events(p, ["a"], HOP) == [Event("a", 0.01, 0.03, 1.0)]


def test_single_frame_input():
    assert detect_events(column(0.9), ["a"], HOP) == [Event("a", 0.0, 0.01, 0.9)]


def test_empty_input_with_a_median_filter():
    assert detect_events(np.zeros((0, 2)), ["a", "b"], HOP, median_filter=0.05) == []


@pytest.mark.parametrize("zero, one", [(0.0, 1.0), ({"a": 0}, {"b": 1}), ([0.0, 0.5], [0.5, 1.0])],
                         ids=["number", "mapping", "array"])
def test_thresholds_of_zero_and_one_are_accepted(zero, one):
    p = np.array([[0.0, 1.0], [0.0, np.nextafter(1.0, 0.0)]])
    # threshold 0: every frame is active; threshold 1: only a probability of exactly 1
    assert spans(detect_events(p, ["a", "b"], HOP, threshold=zero, classes="a")) == [("a", 0.0, 0.02)]
    assert spans(detect_events(p, ["a", "b"], HOP, threshold=one, classes="b")) == [("b", 0.0, 0.01)]


def test_offset_threshold_mapping_leaves_the_onset_threshold_alone():
    # frame 0 (0.4) is above the offset threshold 0.3 but below the onset threshold 0.5
    p = column(0.4, 0.6, 0.35, 0.1)
    events = detect_events(p, ["a"], HOP, threshold=0.5, offset_threshold={"a": 0.3})
    assert spans(events) == [("a", 0.01, 0.03)]


def test_hysteresis_run_at_the_end_of_a_class_does_not_reach_into_the_next_class():
    # "a" stays between the offset and onset thresholds up to its last frame; "b" is active
    # from its first frame on: "a" holds no event
    p = np.array([[0.4, 0.9], [0.4, 0.9]])
    assert detect_events(p, ["a", "b"], HOP, offset_threshold=0.3) == [Event("b", 0.0, 0.02, 0.9)]


def test_min_gap_merges_two_events():
    assert spans(detect_events(column(0.9, 0, 0.9), ["a"], HOP, min_gap=0.015)) == [("a", 0.0, 0.03)]


def test_median_filter_pads_the_edges_by_repeating_the_first_and_last_frames():
    # a 5-frame filter at frame 0 sees 0.9 three times (twice repeated) and 0 twice
    assert spans(detect_events(column(0.9, 0.9, 0, 0, 0, 0, 0), ["a"], HOP, median_filter=0.05)) == \
        [("a", 0.0, 0.02)]
    assert spans(detect_events(column(0, 0, 0, 0, 0, 0.9, 0.9), ["a"], HOP, median_filter=0.05)) == \
        [("a", 0.05, 0.07)]


@pytest.mark.parametrize("frames, classes, median_filter", [(400_001, 2, 0.07), (1_000, 5, 0.03)])
def test_median_filter_works_on_bounded_blocks_of_classes(frames, classes, median_filter):
    """At most 4,000,000 window values at a time, each class filtered once."""
    p = np.zeros((frames, classes), np.float32)
    p[10:30] = 0.9
    seen = []
    real_median = np.median

    def median(windows, **kwargs):
        seen.append(windows.shape)
        return real_median(windows, **kwargs)

    with mock.patch.object(np, "median", median):
        events = detect_events(p, list("abcde")[:classes], HOP, median_filter=median_filter)
    assert spans(events) == [(name, 0.1, 0.3) for name in "abcde"[:classes]]
    assert all(np.prod(shape) <= 4_000_000 for shape in seen)
    assert sum(shape[1] for shape in seen) == classes

EVENT_ERRORS = [
    (np.zeros(5), ["a"], HOP, {}, "probabilities must be a (frames, classes) array, got shape (5,)"),
    (np.zeros((3, 1), complex), ["a"], HOP, {}, "probabilities must be real numbers, got dtype complex128"),
    (np.zeros((3, 1), bool), ["a"], HOP, {}, "probabilities must be real numbers, got dtype bool"),
    (np.array([[0.1], [np.inf]]), ["a"], HOP, {}, "probabilities contain NaN or infinite values"),
    (np.zeros((3, 1)), "a", HOP, {}, "class_names must be a sequence of names, got a single string"),
    (np.zeros((3, 1)), 5, HOP, {}, "class_names must be a sequence of names, got 5"),
    (np.zeros((3, 2)), ["a"], HOP, {}, "class_names has 1 names but probabilities have 2 columns"),
    (np.zeros((3, 1)), [1], HOP, {}, "class_names must all be strings"),
    (np.zeros((3, 1)), ["a"], 0, {}, "frame_hop must be a finite number of seconds > 0, got 0"),
    (np.zeros((3, 1)), ["a"], "0.01", {}, "frame_hop must be a number of seconds, got '0.01'"),
    (np.zeros((3, 1)), ["a"], HOP, {"min_duration": -1},
     "min_duration must be a finite number of seconds >= 0, got -1"),
    (np.zeros((3, 1)), ["a"], HOP, {"min_gap": float("nan")},
     "min_gap must be a finite number of seconds >= 0, got nan"),
    (np.zeros((3, 1)), ["a"], HOP, {"duration": -1.0}, "duration must be a finite number of seconds >= 0, got -1.0"),
    (np.zeros((3, 1)), ["a"], HOP, {"median_filter": -0.1},
     "median_filter must be a finite number of seconds >= 0, got -0.1"),
    (np.zeros((3, 1)), ["a"], HOP, {"threshold": 1.5}, "threshold must be a number in [0, 1], got 1.5"),
    (np.zeros((3, 1)), ["a"], HOP, {"offset_threshold": 1.5}, "offset_threshold must be a number in [0, 1], got 1.5"),
    (np.zeros((3, 1)), ["a"], HOP, {"threshold": None},
     "threshold must be a number, a mapping {class name: number} or one number per class, got None"),
    (np.zeros((3, 2)), ["a", "b"], HOP, {"threshold": ["x", "y"]},
     "threshold must be a number, a mapping {class name: number} or one number per class, got ['x', 'y']"),
    (np.zeros((3, 2)), ["a", "b"], HOP, {"threshold": [0.5, 0.5, 0.5]},
     "threshold as an array must have one value per class, shape (2,), got shape (3,)"),
    (np.zeros((3, 2)), ["a", "b"], HOP, {"threshold": [0.5, 2.0]},
     "threshold values must be in [0, 1], got 2.0 for class 'b'"),
    (np.zeros((3, 2)), ["a", "b"], HOP, {"offset_threshold": [0.5, None]},
     "offset_threshold must be a number, a mapping {class name: number} or one number per class, "
     "got [0.5, None]"),
    (np.zeros((3, 2)), ["a", "b"], HOP, {"threshold": ["0.5", "0.5"]},  # refused as the single "0.5" is
     "threshold must be a number, a mapping {class name: number} or one number per class, got ['0.5', '0.5']"),
    (np.zeros((3, 2)), ["a", "b"], HOP, {"threshold": np.array([True, False])},
     "threshold must be a number, a mapping {class name: number} or one number per class, "
     "got array([ True, False])"),
    (np.zeros((3, 2)), ["a", "b"], HOP, {"threshold": [0.5 + 0j, 0.5]},
     "threshold must be a number, a mapping {class name: number} or one number per class, "
     "got [(0.5+0j), 0.5]"),
    (np.zeros((3, 2)), ["a", "b"], HOP, {"threshold": [[0.5], 0.5]},  # ragged
     "threshold must be a number, a mapping {class name: number} or one number per class, got [[0.5], 0.5]"),
    (np.zeros((3, 2)), ["a", "b"], HOP, {"threshold": [0.5, float("nan")]},
     "threshold values must be in [0, 1], got nan for class 'b'"),
    (np.zeros((3, 1)), ["a"], HOP, {"threshold": {"a": 2}}, "threshold['a'] must be a number in [0, 1], got 2"),
    (np.zeros((3, 1)), ["a"], HOP, {"threshold": {"a": "0.5"}},
     "threshold['a'] must be a number in [0, 1], got '0.5'"),
    (np.zeros((3, 1)), ["a"], HOP, {"offset_threshold": {"a": True}},
     "offset_threshold['a'] must be a number in [0, 1], got True"),
    (np.zeros((3, 2)), ["Speech", "Dog"], HOP, {"threshold": {"Speach": 0.9}},
     "threshold names an unknown class 'Speach'; did you mean 'Speech'? "
     "(class names are case-sensitive; see Framewise.class_names)"),
    (np.zeros((3, 1)), ["1"], HOP, {"threshold": {1: 0.5}},
     "threshold names an unknown class 1 (class names are case-sensitive; see Framewise.class_names)"),
    (np.zeros((3, 2)), ["Dog", "Bird"], HOP, {"classes": ["Cat"]},
     "classes names an unknown class 'Cat' (class names are case-sensitive; see Framewise.class_names)"),
    (np.zeros((3, 5)), ["Speech", "Speeches", "Peach", "Screech", "Dog"], HOP, {"classes": "Speach"},
     "classes names an unknown class 'Speach'; did you mean 'Speech' or 'Peach' or 'Speeches'? "
     "(class names are case-sensitive; see Framewise.class_names)"),
    (np.zeros((3, 1)), ["a"], HOP, {"offset_threshold": {"a": 0.7}},
     "offset_threshold must not exceed the onset threshold, but for class 'a' it is 0.7 > 0.5; "
     "lower offset_threshold or raise threshold"),
]


@pytest.mark.parametrize("probabilities, names, hop, options, message", EVENT_ERRORS)
def test_invalid_argument_messages(probabilities, names, hop, options, message):
    with pytest.raises(InvalidArgumentError) as info:
        detect_events(probabilities, names, hop, **options)
    assert str(info.value) == message


def test_probabilities_that_are_no_array_name_the_expected_shape():
    with pytest.raises(InvalidArgumentError, match=r"^probabilities must be a \(frames, classes\) array: \w"):
        detect_events([[0.1], [0.2, 0.3]], ["a"], HOP)


def test_event_error_messages():
    with pytest.raises(InvalidArgumentError) as info:
        Event(1, 0.0, 1.0, 0.5)
    assert str(info.value) == "Event label must be a string, got 1"
    with pytest.raises(InvalidArgumentError) as info:
        Event("a", 1.0, 0.5, 0.9)
    assert str(info.value) == "Event offset must not precede its onset, got onset=1.0, offset=0.5"


# --- Framewise delegation ----------------------------------------------------------------


@pytest.fixture
def framewise() -> Framewise:
    p = np.zeros((100, 3), dtype=np.float32)
    p[10:40, 0] = 0.8
    p[50:, 2] = 0.6
    return Framewise(p, HOP, ["Speech", "Dog", "Inside, small room"], p.max(axis=0), "/data/clips/street.wav")


def test_framewise_events(framewise):
    assert spans(framewise.events()) == [("Speech", 0.1, 0.4), ("Inside, small room", 0.5, 1.0)]
    assert spans(framewise.events(threshold=0.7, duration=0.995)) == [("Speech", 0.1, 0.4)]


def test_framewise_to_tsv_and_to_json_name_the_source_path(framewise, tmp_path):
    framewise.to_tsv(tmp_path / "out.tsv", classes=["Speech"])
    assert (tmp_path / "out.tsv").read_text().splitlines()[1] == "/data/clips/street.wav\t0.100\t0.400\tSpeech"
    other = Framewise(framewise.probabilities, HOP, framewise.class_names, framewise.clipwise, "/data/other/street.wav")
    other.to_json(tmp_path / "other.json")
    framewise.to_json(tmp_path / "out.json")
    names = {json.loads((tmp_path / n).read_text())["path"] for n in ("out.json", "other.json")}
    assert names == {"/data/clips/street.wav", "/data/other/street.wav"}  # one base name, two files
    with pytest.raises(InvalidArgumentError, match="tab"):
        Framewise(framewise.probabilities, HOP, framewise.class_names, framewise.clipwise, "a\tb.wav").to_tsv(
            tmp_path / "bad.tsv")


def test_framewise_to_tsv_without_source_needs_a_filename(tmp_path):
    fw = Framewise(np.full((3, 1), 0.9), HOP, ["a"], np.array([0.9]))
    with pytest.raises(InvalidArgumentError, match="filename="):
        fw.to_tsv(tmp_path / "out.tsv")
    assert not (tmp_path / "out.tsv").exists()
    fw.to_tsv(tmp_path / "out.tsv", filename="clip.wav")
    assert (tmp_path / "out.tsv").read_text() == "filename\tonset\toffset\tevent_label\nclip.wav\t0.000\t0.030\ta\n"


def test_framewise_to_json(framewise, tmp_path):
    framewise.to_json(tmp_path / "out.json", min_duration=0.4)
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["path"] == framewise.source
    assert data["events"] == [{"label": "Inside, small room", "onset": 0.5, "offset": 1.0,
                               "score": pytest.approx(0.6)}]


# --- TSV and JSON ------------------------------------------------------------------------


EVENTS = [Event("Speech", 0.1, 0.42, 0.9), Event("Inside, small room", 1.2344, 2.0, 0.7)]


def read_tsv(path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f, delimiter="\t"))


def test_tsv_round_trip(tmp_path):
    path = tmp_path / "events.tsv"
    events_to_tsv(EVENTS, path, filename="street.wav")
    rows = read_tsv(path)
    assert rows[0] == ["filename", "onset", "offset", "event_label"]
    assert all(len(row) == 4 for row in rows)
    assert all(re.fullmatch(r"\d+\.\d{3,}", value) for row in rows[1:] for value in row[1:3])
    parsed = [(row[3], float(row[1]), float(row[2])) for row in rows[1:]]
    assert parsed == [("Speech", 0.1, 0.42), ("Inside, small room", 1.234, 2.0)]
    assert all(row[0] == "street.wav" for row in rows[1:])
    assert b"\r" not in path.read_bytes()


def test_tsv_of_several_files_and_of_no_events(tmp_path):
    events_to_tsv({"a.wav": EVENTS[:1], "b.wav": [], "c.wav": EVENTS[1:]}, tmp_path / "all.tsv")
    assert [row[0] for row in read_tsv(tmp_path / "all.tsv")] == ["filename", "a.wav", "c.wav"]
    events_to_tsv([], tmp_path / "none.tsv", filename="x.wav")
    assert (tmp_path / "none.tsv").read_text() == "filename\tonset\toffset\tevent_label\n"


def test_tsv_to_a_stream():
    buf = io.StringIO()
    events_to_tsv(EVENTS[:1], buf, filename="street.wav")
    assert buf.getvalue() == "filename\tonset\toffset\tevent_label\nstreet.wav\t0.100\t0.420\tSpeech\n"


@pytest.mark.parametrize("events, filename", [
    (EVENTS, None),                                   # filename missing
    ({"a.wav": EVENTS}, "a.wav"),                     # filename with a mapping
    (EVENTS, "a\tb.wav"),                             # tab in the file name
    ([Event("a\tb", 0, 1, 1)], "x.wav"),              # tab in a label
    ([("Speech", 0, 1, 1)], "x.wav"),                 # not an Event
])
def test_tsv_invalid_arguments(events, filename, tmp_path):
    with pytest.raises(InvalidArgumentError):
        events_to_tsv(events, tmp_path / "x.tsv", filename=filename)
    assert os.listdir(tmp_path) == []


def test_json_round_trip(tmp_path):
    events_to_json(EVENTS, tmp_path / "e.json", filename="street.wav")
    data = json.loads((tmp_path / "e.json").read_text())
    assert data == {"path": "street.wav", "events": [e.to_dict() for e in EVENTS]}
    assert [Event(**e) for e in data["events"]] == EVENTS
    events_to_json({"a.wav": EVENTS[:1], "b.wav": []}, tmp_path / "all.json")
    assert json.loads((tmp_path / "all.json").read_text()) == [
        {"path": "a.wav", "events": [EVENTS[0].to_dict()]}, {"path": "b.wav", "events": []}]


@pytest.mark.parametrize("write", [
    lambda path: events_to_tsv(EVENTS, path, filename="street.wav"),
    lambda path: events_to_json(EVENTS, path),
], ids=["tsv", "json"])
def test_atomic_write_leaves_no_temporary_file(write, tmp_path):
    write(tmp_path / "out")
    write(tmp_path / "out")          # overwriting works too
    assert os.listdir(tmp_path) == ["out"]


@pytest.mark.parametrize("broken", ["replace", "fsync"])
def test_failed_write_keeps_the_existing_file_and_no_temporary_file(broken, tmp_path, monkeypatch):
    path = tmp_path / "events.tsv"
    path.write_text("previous content\n")

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, broken, fail)
    with pytest.raises(OSError, match="No space left"):
        events_to_tsv(EVENTS, path, filename="street.wav")
    monkeypatch.undo()
    assert path.read_text() == "previous content\n"
    assert os.listdir(tmp_path) == ["events.tsv"]


def test_invalid_events_leave_the_existing_file_untouched(tmp_path):
    path = tmp_path / "events.tsv"
    path.write_text("previous content\n")
    with pytest.raises(InvalidArgumentError):
        events_to_tsv([EVENTS[0], Event("bad\nlabel", 0, 1, 1)], path, filename="street.wav")
    assert path.read_text() == "previous content\n"
    assert os.listdir(tmp_path) == ["events.tsv"]


WRITE_ERRORS = [
    (events_to_tsv, EVENTS, None,
     "the TSV's filename column needs filename= (the clip's file name, e.g. 'street.wav')"),
    (events_to_tsv, {"a.wav": EVENTS}, "a.wav", "give filename= only with a list of events, not with a mapping"),
    (events_to_json, {"a.wav": EVENTS}, "a.wav", "give filename= only with a list of events, not with a mapping"),
    (events_to_tsv, EVENTS, "a\tb.wav",
     "a TSV filename must be non-empty text without tabs or newlines, got 'a\\tb.wav'"),
    (events_to_tsv, EVENTS, "", "a TSV filename must be non-empty text without tabs or newlines, got ''"),
    (events_to_tsv, {"": EVENTS}, None, "a TSV filename must be non-empty text without tabs or newlines, got ''"),
    (events_to_tsv, [Event("a\nb", 0, 1, 1)], "x.wav",
     "a TSV event label must be non-empty text without tabs or newlines, got 'a\\nb'"),
    (events_to_tsv, [Event("", 0, 1, 1)], "x.wav",
     "a TSV event label must be non-empty text without tabs or newlines, got ''"),
    (events_to_tsv, "Speech", "x.wav", "events must be a list of Event, got 'Speech'"),
    (events_to_json, EVENTS[0], None,
     "events must be a list of Event, got Event(label='Speech', onset=0.1, offset=0.42, score=0.9)"),
    (events_to_tsv, [("Speech", 0, 1, 1)], "x.wav", "events must be a list of Event, got an item ('Speech', 0, 1, 1)"),
    (events_to_json, {"a.wav": [("Speech", 0, 1, 1)]}, None,
     "events must be a list of Event, got an item ('Speech', 0, 1, 1)"),
]


@pytest.mark.parametrize("write, events, filename, message", WRITE_ERRORS)
def test_write_error_messages(write, events, filename, message, tmp_path):
    with pytest.raises(InvalidArgumentError) as info:
        write(events, tmp_path / "out", filename=filename)
    assert str(info.value) == message
    assert os.listdir(tmp_path) == []


def test_tsv_labels_may_hold_any_other_character():
    buf = io.StringIO()
    events_to_tsv([Event("Xylophone, \"mallet\" (X)", 0.0, 1.0, 0.9)], buf, filename="X 1.wav")
    assert buf.getvalue().splitlines()[1] == "X 1.wav\t0.000\t1.000\tXylophone, \"mallet\" (X)"


def test_json_file_is_indented_by_two_spaces_unless_told(tmp_path):
    events_to_json(EVENTS[:1], tmp_path / "e.json", filename="street.wav")
    assert (tmp_path / "e.json").read_text() == (
        '{\n  "path": "street.wav",\n  "events": [\n    {\n      "label": "Speech",\n      "onset": 0.1,\n'
        '      "offset": 0.42,\n      "score": 0.9\n    }\n  ]\n}\n')
    events_to_json(EVENTS[:1], tmp_path / "e.json", filename="street.wav", indent=None)
    assert (tmp_path / "e.json").read_text() == \
        '{"path": "street.wav", "events": [{"label": "Speech", "onset": 0.1, "offset": 0.42, "score": 0.9}]}\n'


# --- third-party readers (optional) ------------------------------------------------------


def _import_or_skip(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as exc:   # ModuleNotFoundError: not installed, or a dependency missing
        hint = (" (dcase_util, which it imports, needs pkg_resources: setuptools<81)"
                if "pkg_resources" in str(exc) else "")
        pytest.skip(f"{name} is not importable: {exc}{hint}")


def test_sed_eval_reads_our_tsv_and_scores_it_perfectly(tmp_path):
    sed_eval = _import_or_skip("sed_eval")
    p = np.zeros((300, 2))
    p[50:120, 0] = 0.9
    p[200:260, 1] = 0.8
    events = detect_events(p, ["Speech", "Inside, small room"], HOP)
    events_to_tsv(events, tmp_path / "est.tsv", filename="clip.wav")
    (tmp_path / "ref.tsv").write_text("filename\tonset\toffset\tevent_label\n"
                                      "clip.wav\t0.5\t1.2\tSpeech\nclip.wav\t2.0\t2.6\tInside, small room\n")
    estimated = sed_eval.io.load_event_list(str(tmp_path / "est.tsv"))
    reference = sed_eval.io.load_event_list(str(tmp_path / "ref.tsv"))
    assert [(e["filename"], e["onset"], e["offset"], e["event_label"]) for e in estimated] == \
        [("clip.wav", 0.5, 1.2, "Speech"), ("clip.wav", 2.0, 2.6, "Inside, small room")]
    metrics = sed_eval.sound_event.EventBasedMetrics(
        event_label_list=["Speech", "Inside, small room"], t_collar=0.2)
    metrics.evaluate(reference_event_list=reference, estimated_event_list=estimated)
    assert metrics.results_overall_metrics()["f_measure"]["f_measure"] == 1.0


def test_sed_scores_eval_reads_our_tsv(tmp_path):
    _import_or_skip("sed_scores_eval")
    from sed_scores_eval.base_modules.io import read_ground_truth_events

    events_to_tsv({"a.wav": EVENTS, "b.wav": EVENTS[:1]}, tmp_path / "est.tsv")
    assert read_ground_truth_events(tmp_path / "est.tsv") == {
        "a": [[0.1, 0.42, "Speech"], [1.234, 2.0, "Inside, small room"]],
        "b": [[0.1, 0.42, "Speech"]],
    }


# --- one validation and one result, whatever the length ----------------------------------

AUDIOSET = [f"class {i}" for i in range(527)]
AUDIOSET[0] = "Speech"


def _decision_level(num_segments: int, classes: list[str], seed: int = 0) -> Framewise:
    """A decision-level result: segment rows held for 32 frames, as the SED checkpoints give."""
    rng = np.random.default_rng(seed)
    segments = rng.random((num_segments, len(classes))).astype(np.float32)
    return Framewise.from_segments(segments, frames_per_segment=32, num_frames=num_segments * 32 + 1,
                                   frame_hop=HOP, class_names=classes, clipwise=segments.max(axis=0))


BAD_EVENT_OPTIONS = [
    {"classes": ["Speach"]},
    {"classes": "Speach"},
    {"threshold": {"Speach": 0.9}},
    {"offset_threshold": {"Speach": 0.1}},
    {"threshold": np.full(526, 0.5)},
    {"threshold": np.full(600, 0.5)},
    {"offset_threshold": np.full(526, 0.2)},
    {"threshold": 0.3, "offset_threshold": 0.5},
    {"threshold": 1.5},
    {"min_duration": -1.0},
    {"duration": float("nan")},
    {"median_filter": "wide"},
]


@pytest.mark.parametrize("options", BAD_EVENT_OPTIONS, ids=lambda o: ",".join(o))
@pytest.mark.parametrize("segments", [10, 300], ids=["short", "long"])
def test_framewise_events_validate_alike_for_short_and_long_inputs(options, segments):
    fw = _decision_level(segments, AUDIOSET)
    assert (fw.num_frames > 7958) == (segments == 300)  # past this the classes go in blocks
    with pytest.raises(InvalidArgumentError) as info:
        fw.events(**options)
    with pytest.raises(InvalidArgumentError) as whole:
        detect_events(np.zeros((3, 527), np.float32), AUDIOSET, HOP, **options)
    assert str(info.value) == str(whole.value)


def test_long_framewise_events_equal_the_whole_matrix_on_audioset_classes():
    fw = _decision_level(300, AUDIOSET, seed=3)
    options = {"threshold": np.linspace(0.6, 0.95, 527), "classes": ["Speech", "class 300", "class 526"],
               "min_gap": 0.5, "duration": 90.0}
    blocks = fw.events(**options)
    assert blocks and blocks == detect_events(fw.probabilities, AUDIOSET, HOP, **options)


_thresholds = st.one_of(st.floats(0.05, 0.95), st.lists(st.floats(0.05, 0.95), min_size=6, max_size=6))
_event_options = st.fixed_dictionaries({}, optional={
    "threshold": _thresholds,
    "offset_threshold": st.floats(0.0, 0.5),
    "median_filter": st.sampled_from([None, 0.05, 0.5]),
    "min_duration": st.floats(0.0, 1.0),
    "min_gap": st.floats(0.0, 1.0),
    "classes": st.lists(st.sampled_from(["a", "b", "c", "d", "e", "f", "Speach"]), max_size=3),
    "duration": st.floats(0.0, 3.0),
})


@settings(max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(segments=st.integers(1, 8), seed=st.integers(0, 1000), options=_event_options)
def test_block_and_whole_event_detection_agree(segments, seed, options):
    """The bounded-memory path (classes in blocks) gives the whole-matrix result or its error."""
    classes = ["a", "b", "c", "d", "e", "f"]
    fw = _decision_level(segments, classes, seed)

    def outcome(run):
        try:
            return run()
        except InvalidArgumentError as exc:
            return ("error", str(exc))

    whole = outcome(lambda: detect_events(fw.probabilities, classes, HOP, **options))
    with mock.patch.object(results_module, "_EXPAND_LIMIT", 4 * fw.num_frames * 2):  # blocks of 2 classes
        blocks = outcome(lambda: _decision_level(segments, classes, seed).events(**options))
    assert blocks == whole


def _timeline(values: list[float], *, segment: float = 2.0, hop: float = 1.0) -> Timeline:
    starts = np.arange(len(values)) * hop
    ends = np.minimum(starts + segment, (len(values) - 1) * hop + segment)
    return Timeline(np.asarray(values, np.float32)[:, None], starts, ends, hop, ["Dog"])


def test_timeline_min_duration_filters_the_reported_lengths():
    tl = _timeline([0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])  # 10 s, segment 2 s, hop 1 s
    [event] = tl.events()
    assert (event.onset, event.offset) == (0.0, 1.5)               # the first cell reaches back to 0
    assert tl.events(min_duration=1.2) == [event]                   # 1.5 s long: kept
    assert tl.events(min_duration=1.6) == []


def test_timeline_events_never_run_past_duration():
    tl = _timeline([0.1, 0.1, 0.1, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1])
    [event] = tl.events()
    assert (event.onset, event.offset) == (5.5, 6.5)
    [clipped] = tl.events(duration=6.0)
    assert (clipped.onset, clipped.offset) == (5.5, 6.0)
    assert tl.events(duration=6.0, min_duration=0.6) == []         # 0.5 s once clipped
    assert tl.events(duration=5.5) == []
    with pytest.raises(InvalidArgumentError, match="Speach"):
        tl.events(classes=["Speach"])
    with pytest.raises(InvalidArgumentError, match="Speach"):
        _timeline([]).events(classes=["Speach"])                     # checked even with nothing to find


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(values=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=12), duration=st.floats(0.0, 14.0),
       min_duration=st.floats(0.0, 3.0), min_gap=st.floats(0.0, 2.0))
def test_timeline_events_lie_within_duration_and_last_at_least_min_duration(values, duration, min_duration,
                                                                            min_gap):
    tl = _timeline(values)
    unfiltered = tl.events(duration=duration, min_gap=min_gap)
    found = tl.events(duration=duration, min_gap=min_gap, min_duration=min_duration)
    assert all(0 <= e.onset < e.offset <= min(duration, tl.duration) for e in found)
    assert found == [e for e in unfiltered if e.offset - e.onset >= min_duration - 1e-9]
