"""End to end: the demo pipeline (synthesise → prepare → train → animate → render) on a tiny corpus.

The default test checks the wiring and the mp4 (video and audio durations within one frame); the
`slow` test runs the real demo recipe and checks that the mouth follows the speech.
"""

import numpy as np
import pytest

from talkface.demo import run_demo


def _check_video(result):
    from talkface.render.video import probe_mp4

    info = probe_mp4(result.video)
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    assert info.video_frames > 10
    assert info.audio_duration is not None
    assert abs(info.audio_duration - info.video_frames / info.fps) <= 1.0 / info.fps + 1e-3


@pytest.mark.render
def test_demo_pipeline_tiny(tmp_path):
    result = run_demo(tmp_path / "demo", epochs=1, num_speakers=3, num_sentences=3, render_size=128)
    assert result.video.is_file() and result.animation.is_file()
    assert result.clips.get("train", 0) > 0
    assert result.loss_start > 0
    # every held-out clip is scored, the one shown among them
    assert len(result.test_correlations) == result.clips["test"]
    assert result.lip_correlation in result.test_correlations.values()
    assert all(-1.0 <= c <= 1.0 for c in result.test_correlations.values())
    assert any(key.startswith("  all ") for key in result.summary())
    # the headline: training speakers' held-out clips, the unseen speakers' beside it
    seen = [c for name, c in result.test_correlations.items() if name in result.seen_clips]
    unseen = [c for name, c in result.test_correlations.items() if name not in result.seen_clips]
    assert len(seen) == 2 and len(unseen) == 1  # 3 speakers: 2 train, 1 unseen
    assert result.seen_correlation == pytest.approx(sum(seen) / 2)
    assert result.unseen_correlation == pytest.approx(unseen[0])
    assert any("training speakers" in key for key in result.summary())
    # the ARKit-52 outputs: a Live Link Face take and a GLB with the 52 named targets, of the rendered clip
    from talkface.io.blendshapes import ARKIT_NAMES, read_livelink_csv
    from talkface.io.rig import load_rig

    csv, glb = result.rig_outputs
    assert csv.name == "demo_arkit.csv" and glb.name == "demo_arkit.glb"
    track = read_livelink_csv(csv)
    frames = np.load(result.animation)["vertices"].shape[0]
    assert track.weights.shape[0] == frames
    assert load_rig(glb).names == ARKIT_NAMES
    assert 0.0 <= result.rig_fit.explained <= 1.0 and any("ARKit" in key for key in result.summary())
    _check_video(result)


@pytest.mark.slow
@pytest.mark.render
def test_demo_mouth_follows_speech(tmp_path):
    result = run_demo(tmp_path / "demo")
    _check_video(result)
    assert result.loss_end < result.loss_start
    assert result.lip_correlation > 0.5, result.summary()
    # issue #27's acceptance: training speakers' held-out clips >= 0.85, unseen speakers >= 0.8
    assert result.seen_correlation >= 0.85 and result.unseen_correlation >= 0.8, result.summary()
    # issue #25's acceptance: the ARKit-52 rig of the synthetic head represents the demo model's motion
    assert result.rig_fit.explained >= 0.95, result.summary()
