import pytest
import torch
from torch import nn

from tsrl_env.student import Student


def test_timm_student_returns_logits_and_features_from_one_forward():
    student = Student.from_timm("test_resnet")
    features_calls = []
    original = student.model.forward_features
    student.model.forward_features = lambda x: features_calls.append(1) or original(x)
    logits, features = student(torch.randn(3, 3, 32, 32))
    assert logits.shape == (3, 2)
    assert features.shape == (3, student.num_features)
    assert len(features_calls) == 1
    assert torch.allclose(logits, student.model.get_classifier()(features))


def test_any_module_can_be_wrapped_by_naming_its_classifier():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 7), nn.ReLU(), nn.Linear(7, 2))
    student = Student(model, classifier_layer="3")
    logits, features = student(torch.randn(4, 3, 2, 2))
    assert student.num_features == 7
    assert features.shape == (4, 7)
    assert torch.allclose(logits, model[3](features))


def test_wrapping_a_layer_that_is_not_linear_is_refused():
    with pytest.raises(TypeError, match="must be the final nn.Linear"):
        Student(nn.Sequential(nn.Flatten(), nn.ReLU()), classifier_layer="1")


def test_unknown_backbone_suggests_close_names():
    with pytest.raises(ValueError, match="did you mean.*resnet10t"):
        Student.from_timm("resnet10")


def test_frozen_batch_statistics_leave_running_stats_untouched():
    student = Student.from_timm("test_resnet")
    student.train()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    with torch.no_grad(), student.frozen_batch_statistics():
        student(torch.randn(4, 3, 32, 32))
    after = student.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    student(torch.randn(4, 3, 32, 32))
    assert any(not torch.equal(before[k], student.state_dict()[k]) for k in before if "running_mean" in k)


def test_frozen_batch_statistics_normalise_with_the_batch_as_training_mode_does():
    student = Student.from_timm("test_resnet")
    student.model.bn1.momentum = None  # a cumulative-average layer is frozen too
    student.train()
    images = torch.randn(4, 3, 32, 32)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    with torch.no_grad(), student.frozen_batch_statistics():
        frozen_logits, _ = student(images)
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())
    assert all(m.track_running_stats for m in student.modules() if isinstance(m, nn.BatchNorm2d))
    with torch.no_grad():
        training_logits, _ = student(images)
    torch.testing.assert_close(frozen_logits, training_logits)
