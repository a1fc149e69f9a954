import numpy as np
import pytest

from talkface.errors import ConfigError, TemplateError
from talkface.inference import choose_template, parse_style

SPEAKERS = ("A", "B", "C")


def test_single_style_is_one_hot():
    [s] = parse_style("B", SPEAKERS)
    assert s.label == "B" and s.weights.tolist() == [0, 1, 0]


def test_mix_and_all():
    [s] = parse_style("A:0.7,B:0.3", SPEAKERS)
    np.testing.assert_allclose(s.weights, [0.7, 0.3, 0])
    assert [s.label for s in parse_style("all", SPEAKERS)] == list(SPEAKERS)


@pytest.mark.parametrize("spec, needle", [("Z", "valid styles are: A, B, C"), ("", "empty"), (",", "names no speaker"),
                                          ("A:0.5,B:0.2", "sum to 0.7"), ("A:x", "not a number"),
                                          ("A:-1,B:2", ">= 0")])
def test_style_errors(spec, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_style(spec, SPEAKERS)


def test_template_choice(tmp_path):
    templates = {"A": np.zeros((4, 3)), "B": np.ones((4, 3))}
    [s] = parse_style("B", SPEAKERS)
    name, v, _ = choose_template(templates, subject=None, style=s, speakers=SPEAKERS, template_file=None,
                                 num_vertices=4)
    assert name == "B" and v.sum() == 12
    with pytest.raises(TemplateError, match="known subjects: A, B"):
        choose_template(templates, subject="Q", style=s, speakers=SPEAKERS, template_file=None, num_vertices=4)
    np.save(tmp_path / "t.npy", np.zeros((5, 3)))
    with pytest.raises(TemplateError, match="5 vertices but the model expects 4"):
        choose_template(templates, subject=None, style=s, speakers=SPEAKERS, template_file=tmp_path / "t.npy",
                        num_vertices=4)


def test_evaluation_styles_follow_faceformer_protocol():
    from talkface.inference import evaluation_styles

    [own] = evaluation_styles("B", SPEAKERS)
    assert own.label == "B" and own.weights.tolist() == [0, 1, 0]
    unseen = evaluation_styles("Q", SPEAKERS)
    assert [s.label for s in unseen] == list(SPEAKERS)
    np.testing.assert_array_equal(np.stack([s.weights for s in unseen]), np.eye(3))


def test_non_finite_output_names_the_nan_weights(tiny_model_config, tiny_encoder_config):
    import torch

    from talkface.errors import CheckpointError
    from talkface.inference import check_finite_output
    from talkface.model import TalkFaceModel

    model = TalkFaceModel(tiny_model_config, tiny_encoder_config)
    good = np.zeros((3, 10, 3), np.float32)
    assert check_finite_output(good, model, checkpoint="ckpt", audio="a.wav") is good
    bad = good.copy()
    bad[1, 2, 0] = np.inf
    with pytest.raises(CheckpointError, match="ckpt.*a.wav.*weights are finite"):
        check_finite_output(bad, model, checkpoint="ckpt", audio="a.wav")
    with torch.no_grad():
        model.motion_head.weight.fill_(float("nan"))
    with pytest.raises(CheckpointError, match="weights hold NaN/inf.*motion_head.weight"):
        check_finite_output(bad, model, checkpoint="ckpt", audio="a.wav")
