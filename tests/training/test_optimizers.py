"""optimizer=muon: torch's Muon on the convolution filters (through matrix views of their memory), SGD on the rest."""

import pytest
import torch
import torch.optim._muon as torch_muon_module

from lightning_cifar.training import optimizers
from lightning_cifar.training.optimizers import MuonWithSGD, _matrix_view, newton_schulz
from tests.helpers.runs import SMALL_NET, TINY_DATA_ARGS

NS = {"ns_coefficients": (3.4445, -4.7750, 2.0315), "ns_steps": 5, "eps": 1e-7}  # torch.optim.Muon's defaults


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_filters_move_exactly_as_torch_muon_moves_their_matrix(channels_last):
    torch.manual_seed(0)
    filters, bias = torch.nn.Parameter(torch.randn(8, 4, 3, 3)), torch.nn.Parameter(torch.randn(8))
    if channels_last:
        filters.data = filters.data.to(memory_format=torch.channels_last)
    reference = torch.nn.Parameter(_matrix_view(filters.detach()).clone())
    ours = MuonWithSGD([filters, bias], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.0, muon_lr=0.05,
                       muon_momentum=0.9)
    ours.orthogonalise_dtype = None  # torch's own bfloat16, whatever this CPU would choose
    torch_muon = torch.optim.Muon([reference], lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.0)
    torch_sgd_bias = torch.nn.Parameter(bias.detach().clone())
    torch_sgd = torch.optim.SGD([torch_sgd_bias], lr=0.1, momentum=0.9, nesterov=True)
    for step in range(3):
        grad = torch.randn(8, 4, 3, 3)
        filters.grad = grad.contiguous(memory_format=torch.channels_last) if channels_last else grad.clone()
        reference.grad = (grad.permute(0, 2, 3, 1) if channels_last else grad).reshape(8, -1).clone()
        bias.grad = torch_sgd_bias.grad = torch.full((8,), float(step + 1))
        ours.step(), torch_muon.step(), torch_sgd.step()
    assert torch.allclose(_matrix_view(filters.detach()), reference.detach(), atol=1e-6)
    assert torch.allclose(bias.detach(), torch_sgd_bias.detach())
    assert filters.is_contiguous(memory_format=torch.channels_last) is channels_last  # updated in place
    ours.zero_grad()
    assert filters.grad is None and bias.grad is None


@pytest.mark.parametrize("channels_last", [False, True])
def test_normalize_filters_rescales_each_bank_to_norm_sqrt_out_before_the_muon_step(channels_last):
    """As airbench94_muon: the bank is first set to Frobenius norm sqrt(out channels), then Muon steps it."""
    torch.manual_seed(0)
    filters = torch.nn.Parameter(5.0 * torch.randn(8, 4, 3, 3))
    if channels_last:
        filters.data = filters.data.to(memory_format=torch.channels_last)
    reference = torch.nn.Parameter(_matrix_view(filters.detach()).clone())
    ours = MuonWithSGD([filters], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.0, muon_lr=0.05,
                       muon_momentum=0.9, normalize_filters=True)
    ours.orthogonalise_dtype = None  # torch's own bfloat16, whatever this CPU would choose
    torch_muon = torch.optim.Muon([reference], lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.0)
    for _ in range(2):
        grad = torch.randn(8, 4, 3, 3)
        filters.grad = grad.contiguous(memory_format=torch.channels_last) if channels_last else grad.clone()
        reference.grad = (grad.permute(0, 2, 3, 1) if channels_last else grad).reshape(8, -1).clone()
        with torch.no_grad():
            reference.mul_(8 ** 0.5 / reference.norm())
        ours.step(), torch_muon.step()
    assert torch.allclose(_matrix_view(filters.detach()), reference.detach(), atol=1e-5)
    # One Muon step of rate 0.05 moves a bank of norm sqrt(8) = 2.83 by little: far from the 5x-scaled start.
    assert abs(filters.detach().norm().item() - 8 ** 0.5) < 0.5


@pytest.mark.parametrize("shape", [(16, 72), (72, 16)])
def test_newton_schulz_in_bfloat16_is_torchs_own_bit_for_bit_and_leaves_its_input_alone(shape):
    torch.manual_seed(0)
    grad = torch.randn(*shape)
    kept = grad.clone()
    assert torch.equal(newton_schulz(grad, dtype=torch.bfloat16, **NS),
                       torch_muon_module._zeropower_via_newtonschulz(grad, **NS))
    in_float32 = newton_schulz(grad, **NS)
    assert in_float32.dtype == torch.float32 and in_float32.shape == grad.shape
    assert torch.equal(grad, kept)  # torch.optim.Muon hands it its momentum buffer when nesterov is off


@pytest.mark.parametrize("native", [False, True])
def test_muon_orthogonalises_in_float32_on_a_cpu_that_only_emulates_bfloat16(monkeypatch, native):
    monkeypatch.setattr(optimizers, "cpu_has_native_bf16", lambda: native)
    torch.manual_seed(0)
    filters = torch.nn.Parameter(torch.randn(16, 8, 3, 3))
    start = filters.detach().clone()
    opt = MuonWithSGD([filters], lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0, muon_lr=0.05,
                      muon_momentum=0.0)
    assert opt.orthogonalise_dtype == (None if native else torch.float32)
    grad = torch.randn(16, 8, 3, 3)
    filters.grad = grad.clone()
    original = torch_muon_module._zeropower_via_newtonschulz
    opt.step()
    assert torch_muon_module._zeropower_via_newtonschulz is original  # swapped for the step only
    # Without momentum the step is the orthogonalised gradient times the rate (Muon's scale is 1 for 16 x 72).
    moved = (start - filters.detach()).reshape(16, -1) / 0.05
    float32, bfloat16 = newton_schulz(grad.reshape(16, -1), **NS), newton_schulz(grad.reshape(16, -1),
                                                                                 dtype=torch.bfloat16, **NS)
    assert torch.allclose(moved, bfloat16.float() if native else float32, atol=1e-5)
    assert not torch.allclose(float32, bfloat16.float(), atol=1e-3)  # the two are told apart above


def test_one_schedule_scales_both_learning_rates_also_after_a_reload():
    filters, bias = torch.nn.Parameter(torch.randn(4, 3, 3, 3)), torch.nn.Parameter(torch.randn(4))
    opt = MuonWithSGD([filters, bias], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.0, muon_lr=0.02,
                      muon_momentum=0.95)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.05]
    opt.load_state_dict(opt.state_dict())
    opt.step()  # no gradients: nothing moves, but the schedule sees a step
    schedule.step()
    assert opt.muon.param_groups[0]["lr"] == 0.01 and opt.sgd.param_groups[0]["lr"] == 0.05


def test_a_network_without_filters_is_refused_in_one_line(tmp_path, tiny_cifar, cli):
    from tests.helpers.runs import one_line_error

    args = ["fit", f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS, "--model.backbone=mlp_seed",
            "--model.optimizer=muon", "--trainer.max_epochs=1"]
    assert "optimizer=muon: the network has no convolution filters" in one_line_error(cli(args, tmp_path, check=False))


def test_a_muon_run_trains_checkpoints_and_resumes(tmp_path, tiny_cifar, cli):
    data = [f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS, *SMALL_NET, "--model.optimizer=muon",
            "--trainer.precision=32-true"]
    cli(["fit", *data, "--trainer.max_epochs=1"], tmp_path)
    first = torch.load(tmp_path / "lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)
    state = first["optimizer_states"][0]
    assert set(state) == {"muon", "sgd"} and state["muon"]["state"]  # Muon's momentum buffers are saved
    cli(["fit", *data, "--trainer.max_epochs=2", "--ckpt_path=last"], tmp_path)
    second = torch.load(tmp_path / "lightning_logs/version_1/checkpoints/last.ckpt", weights_only=True)
    assert second["global_step"] == 2 * first["global_step"]
    moved = [k for k in first["state_dict"] if "features.0.weight" in k]
    assert not torch.equal(first["state_dict"][moved[0]], second["state_dict"][moved[0]])  # the filters trained


def test_lightnings_ema_callback_trains_saves_the_average_and_resumes(tmp_path, tiny_cifar, cli):
    """EMA of the weights is Lightning's own callback (the speedruns' weight averaging): our model must work with
    it, so that ``--trainer.callbacks+=EMAWeightAveraging`` is all a user needs."""
    data = [f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS, *SMALL_NET, "--trainer.precision=32-true",
            "--trainer.callbacks+=EMAWeightAveraging", "--trainer.callbacks.decay=0.5"]
    cli(["fit", *data, "--trainer.max_epochs=1"], tmp_path)
    first = torch.load(tmp_path / "lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)
    key = next(k for k in first["state_dict"] if k.endswith("features.0.weight"))
    assert not torch.equal(first["state_dict"][key], first["current_model_state"][key])  # the average is saved
    cli(["fit", *data, "--trainer.max_epochs=2", "--ckpt_path=last"], tmp_path)
    second = torch.load(tmp_path / "lightning_logs/version_1/checkpoints/last.ckpt", weights_only=True)
    assert second["global_step"] == 2 * first["global_step"]
    result = cli(["test", *data[:-2], "--ckpt_path=last"], tmp_path)
    assert "test/acc" in result.stdout


@pytest.mark.parametrize("optimizer", ["sgd", "adamw", "muon"])
def test_bias_lr_puts_the_vectors_in_their_own_group_at_the_same_decay_per_step(optimizer):
    from lightning_cifar import Classifier

    model = Classifier(backbone="convpool", backbone_kwargs={"widths": [8, 16], "kernels": [3, 3]},
                       optimizer=optimizer, lr=0.1, weight_decay=5e-4, bias_lr=2.0, scheduler="none")
    groups = model.configure_optimizers().param_groups
    vectors = [g for g in groups if g["lr"] == 2.0]
    assert len(vectors) == 1 and all(p.ndim == 1 for p in vectors[0]["params"])
    assert vectors[0]["weight_decay"] * 2.0 == pytest.approx(5e-4 * 0.1)  # rate x decay as at lr
    named = {id(p) for p in vectors[0]["params"]}
    assert {n for n, p in model.named_parameters() if id(p) in named} == {
        n for n, p in model.named_parameters() if p.ndim == 1}  # every bias and batch-norm vector, nothing else
    plain = Classifier(backbone="convpool", backbone_kwargs={"widths": [8, 16], "kernels": [3, 3]},
                       optimizer=optimizer, lr=0.1, scheduler="none").configure_optimizers().param_groups
    assert {g["lr"] for g in plain} == ({0.1, 0.02} if optimizer == "muon" else {0.1})


def test_a_bad_bias_lr_is_refused_in_one_line():
    from lightning_cifar import Classifier
    from lightning_cifar.errors import LightningCifarError

    with pytest.raises(LightningCifarError, match=r"bias_lr=0.0: must be > 0, or null for lr"):
        Classifier(bias_lr=0.0)
