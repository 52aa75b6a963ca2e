"""The streamed executor on the CPU: same results as the sequential pipeline, in order, bounded."""

import pytest
import torch
from test_pipeline import STAGES, make_pipeline, random_images

from sparserefine_ros.method.streaming import StreamedPipeline


def frames(count=4, batch=1):
    # Different sizes too: a stream may switch cameras or resolutions between batches.
    return [random_images(batch, 30 + 2 * (i % 2), 44, seed=10 + i) for i in range(count)]


def assert_same(result, expected):
    for field in ("classes", "dense_classes", "entropy", "refine_mask"):
        assert torch.equal(getattr(result, field), getattr(expected, field)), field
    assert result.num_selected == expected.num_selected
    assert result.dense_size == expected.dense_size
    assert set(result.timings_ms) == STAGES and all(t >= 0 for t in result.timings_ms.values())


@pytest.mark.parametrize("max_in_flight", [1, 2, 3])
def test_run_stream_equals_sequential_in_order(max_in_flight):
    pipeline = make_pipeline(max_fraction=0.3)
    batches = frames(5, batch=2)
    streamed = StreamedPipeline(pipeline, max_in_flight=max_in_flight)
    results = list(streamed.run_stream(batches))
    assert len(results) == len(batches)
    for images, result in zip(batches, results, strict=True):
        assert_same(result, pipeline(images))


def test_handles_collected_out_of_order_and_in_flight_bounded():
    pipeline = make_pipeline()
    batches = frames(5)
    streamed = StreamedPipeline(pipeline, max_in_flight=2)
    handles = []
    for images in batches:
        handles.append(streamed.submit(images))
        assert len(streamed._in_flight) <= 2
    # Only the last two were still pending; the rest were finished by submit to respect the bound.
    assert sum(h._result is None for h in handles) == 2
    for index in (4, 0, 2, 1, 3):
        assert_same(handles[index].result(), pipeline(batches[index]))
    assert not streamed._in_flight


def test_sparse_stage_of_a_batch_waits_for_the_next_submit_or_result():
    streamed = StreamedPipeline(make_pipeline(), max_in_flight=3)
    first = streamed.submit(frames(1)[0])
    assert not first._launched()
    second = streamed.submit(frames(2)[1])
    assert first._launched() and not second._launched()
    second.result()
    assert first._result is not None and not streamed._in_flight


def test_empty_selection():
    pipeline = make_pipeline(tau=100.0)
    images = random_images()
    result = next(StreamedPipeline(pipeline).run_stream([images]))
    assert result.num_selected == [0, 0]
    assert_same(result, pipeline(images))


def test_a_failing_batch_raises_from_its_result_and_the_stream_goes_on():
    pipeline = make_pipeline()
    streamed = StreamedPipeline(pipeline)
    good = frames(2)
    first = streamed.submit(good[0])
    bad = streamed.submit(torch.zeros(1, 4, 8, 8, dtype=torch.uint8))
    last = streamed.submit(good[1])
    with pytest.raises(ValueError, match="uint8 RGB"):
        bad.result()
    assert_same(first.result(), pipeline(good[0]))
    assert_same(last.result(), pipeline(good[1]))


def test_precision_bf16_runs_and_mostly_agrees():
    pipeline = make_pipeline(max_fraction=0.3)
    batches = frames(3, batch=2)
    reference = [pipeline(images) for images in batches]
    streamed = StreamedPipeline(pipeline, precision="bf16")
    results = list(streamed.run_stream(batches))
    agree = torch.cat(
        [(r.classes == e.classes).flatten() for r, e in zip(results, reference, strict=True)]
    )
    print(f"bf16 vs fp32 class agreement: {agree.float().mean():.2%}")
    assert agree.float().mean() > 0.9
    for result in results:
        assert result.entropy.dtype == torch.float32 and result.classes.dtype == torch.uint8


def test_invalid_settings():
    with pytest.raises(ValueError, match="precision"):
        StreamedPipeline(make_pipeline(), precision="fp8")
    with pytest.raises(ValueError, match="max_in_flight"):
        StreamedPipeline(make_pipeline(), max_in_flight=0)
